/* libFuzzer target for the parts of the Replicate client that read untrusted
 * upstream bytes without curl: the error-body reason extractor (problem+json,
 * HTML, text) and the base64 decoder used for data: outputs. Includes client.c
 * to reach its static helpers. Build with -DSC_FUZZ=ON (clang). */
#include "../../src/replicate/client.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sc_config_t cfg;
    if (!g.cfg) {
        sc_config_defaults(&cfg);
        snprintf(cfg.replicate_api_token, sizeof cfg.replicate_api_token, "r8_fuzz");
        g.cfg = &cfg; /* for scrub_token; the I/O thread is never started */
    }
    char reason[300];
    body_reason((const char *)data, size, reason, sizeof reason);
    if (strlen(reason) >= sizeof reason || strstr(reason, "r8_fuzz"))
        __builtin_trap();
    for (const char *p = reason; *p; p++)
        if ((unsigned char)*p < 0x20)
            __builtin_trap(); /* one log line, no control characters */

    uint8_t *out = NULL;
    size_t n = 0;
    if (sc_base64_decode((const char *)data, size, &out, &n) == 0) {
        /* whatever decodes re-encodes to the same bytes */
        char *enc = malloc(sc_base64_encoded_len(n) + 1);
        uint8_t *back = NULL;
        size_t bn = 0;
        if (!enc)
            __builtin_trap();
        sc_base64_encode(out, n, enc);
        if (sc_base64_decode(enc, strlen(enc), &back, &bn) != 0 || bn != n ||
            (n && memcmp(back, out, n) != 0))
            __builtin_trap();
        free(back);
        free(enc);
        free(out);
    }
    return 0;
}
