/* The EXIF Orientation tag (1..8) of JPEG (APP1 "Exif\0\0") and PNG (eXIf)
 * files, and applying it to decoded pixels. Only IFD0's tag 0x0112 is read;
 * every offset is checked against the data, so any input is safe. Missing,
 * malformed or out-of-range tags count as 1 (as shot). Thread-safe. */
#ifndef SCENECOMP_IMAGE_EXIF_H
#define SCENECOMP_IMAGE_EXIF_H

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"

/* Orientation of a TIFF structure (header "II*\0" / "MM\0*", IFD0). 1..8. */
int sc_exif_orientation_tiff(const uint8_t *tiff, size_t len);
/* Orientation of a whole JPEG or PNG file (others: 1). JPEG: the first APP1
 * Exif segment before the first scan; PNG: the first eXIf chunk before IEND. */
int sc_exif_orientation(const uint8_t *data, size_t len);

/* True when the orientation swaps width and height (5..8). */
int sc_exif_swaps(int orientation);

/* Turns img, stored as the file holds it, into the upright image (the
 * transform Pillow's ImageOps.exif_transpose applies): 2 mirror, 3 rotate 180,
 * 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
 * counter-clockwise. Returns 0 (img replaced), or -1 out of memory (img kept). */
int sc_exif_apply(sc_image_t *img, int orientation);

#endif
