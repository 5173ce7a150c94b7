#include "image/image.h"

#include <stdlib.h>

int sc_image_alloc(sc_image_t *img, int width, int height, int channels)
{
    img->pixels = NULL;
    img->width = img->height = img->channels = 0;
    if (width <= 0 || height <= 0 || (channels != 3 && channels != 4))
        return -1;
    size_t n = (size_t)width * (size_t)height;
    if (n / (size_t)width != (size_t)height || n > ((size_t)-1) / 8)
        return -1;
    img->pixels = malloc(n * (size_t)channels);
    if (!img->pixels)
        return -1;
    img->width = width;
    img->height = height;
    img->channels = channels;
    return 0;
}

void sc_image_free(sc_image_t *img)
{
    free(img->pixels);
    img->pixels = NULL;
    img->width = img->height = img->channels = 0;
}

bool sc_image_has_transparency(const sc_image_t *img)
{
    if (img->channels != 4 || !img->pixels)
        return false;
    size_t n = (size_t)img->width * (size_t)img->height;
    for (size_t i = 0; i < n; i++)
        if (img->pixels[4 * i + 3] != 255)
            return true;
    return false;
}
