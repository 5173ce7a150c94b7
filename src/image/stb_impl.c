/* The only translation unit that compiles stb_image / stb_image_write (STYLE
 * rule 18): PNG and JPEG decoders only, a dimension cap, and the PNG writer's
 * deflate replaced by libdeflate through STBIW_ZLIB_COMPRESS. */
#include <stdlib.h>

#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STBI_MAX_DIMENSIONS (1 << 16)
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>

#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
