/* Standard base64 (RFC 4648 §4, with padding) for data URIs: encoding model inputs
 * and decoding `data:` outputs. Pure functions, thread-safe. */
#ifndef SCENECOMP_REPLICATE_BASE64_H
#define SCENECOMP_REPLICATE_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Number of characters sc_base64_encode writes for n bytes (without the NUL). */
size_t sc_base64_encoded_len(size_t n);

/* Writes the encoding of data[0..n) plus a NUL into out, which must hold
 * sc_base64_encoded_len(n) + 1 bytes. Returns the characters written. */
size_t sc_base64_encode(const uint8_t *data, size_t n, char *out);

/* Decodes s[0..n) (padding optional; ASCII whitespace ignored) into a malloc'd
 * buffer (caller frees). Returns 0, or -1 on a character outside the alphabet,
 * bad padding or out of memory (*out left NULL). */
int sc_base64_decode(const char *s, size_t n, uint8_t **out, size_t *out_len);

#endif
