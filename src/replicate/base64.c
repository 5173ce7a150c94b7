#include "replicate/base64.h"

#include <stdlib.h>

static const char k_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t sc_base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

size_t sc_base64_encode(const uint8_t *data, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)data[i] << 16) | ((uint32_t)data[i + 1] << 8) | data[i + 2];
        out[o++] = k_alphabet[(v >> 18) & 63];
        out[o++] = k_alphabet[(v >> 12) & 63];
        out[o++] = k_alphabet[(v >> 6) & 63];
        out[o++] = k_alphabet[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)data[i + 1] << 8;
        out[o++] = k_alphabet[(v >> 18) & 63];
        out[o++] = k_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < n ? k_alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* 0..63 for alphabet characters, 64 for whitespace (skipped), 65 for '=', 255 otherwise. */
static unsigned char b64_class(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return (unsigned char)(c - 'A');
    if (c >= 'a' && c <= 'z')
        return (unsigned char)(c - 'a' + 26);
    if (c >= '0' && c <= '9')
        return (unsigned char)(c - '0' + 52);
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
        return 64;
    if (c == '=')
        return 65;
    return 255;
}

int sc_base64_decode(const char *s, size_t n, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    if (!buf)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0, quad = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = b64_class((unsigned char)s[i]);
        if (c == 64)
            continue;
        if (c == 255)
            goto fail;
        if (c == 65) {
            pad++;
            if (quad + pad > 4 || quad < 2)
                goto fail;
            continue;
        }
        if (pad) /* data after padding */
            goto fail;
        acc = (acc << 6) | c;
        bits += 6;
        quad = (quad + 1) & 3;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (quad == 1) /* a lone sextet cannot encode a byte */
        goto fail;
    *out = buf;
    *out_len = o;
    return 0;
fail:
    free(buf);
    return -1;
}
