/* Idempotency keys (API.md "Idempotency-Key"): the checks and the request
 * fingerprint; the claim itself lives in the limits store (fleet-wide with
 * Redis: idem_claim(key, fingerprint, record_id, ttl) -> claimed | existing).
 *
 * How the HTTP layer uses it: validate the header with
 * sc_idempotency_key_valid (else 400 invalid_parameter); fingerprint the
 * request (every form field and file by name, or a JSON body); claim
 * (key, fingerprint, new record id). Claimed: go on. Existing with the same
 * fingerprint: answer the stored record (Idempotent-Replayed: true, 202 when
 * the record's respond_async is set, else 200), start nothing. Existing with
 * another fingerprint: 422 idempotency_conflict. Store unavailable: 503
 * server_busy with Retry-After (never run a request whose key cannot be
 * claimed: that is how a second prediction would be paid).
 *
 * The fingerprint is SHA-256 (OpenSSL) over the route and each part's name
 * and content digest, sorted by name, so it does not depend on the order of
 * the multipart fields, and any other field value or file gives another one.
 * Thread-safe (no shared state); a fingerprint object belongs to one thread. */
#ifndef SCENECOMP_RECORDS_IDEMPOTENCY_H
#define SCENECOMP_RECORDS_IDEMPOTENCY_H

#include <stdbool.h>
#include <stddef.h>

#define SC_IDEMPOTENCY_KEY_MAX 255
#define SC_IDEMPOTENCY_FP_LEN 64 /* lowercase hex of SHA-256 */
#define SC_IDEMPOTENCY_PARTS_MAX 64

/* True when key (len bytes) is 1..255 printable ASCII characters (0x20-0x7e),
 * not starting or ending with a space. */
bool sc_idempotency_key_valid(const char *key, size_t len);

typedef struct sc_idempotency_fp sc_idempotency_fp_t;

/* Starts a fingerprint for route (e.g. "POST /api/composite"). NULL on OOM. */
sc_idempotency_fp_t *sc_idempotency_fp_new(const char *route);
/* Adds one part (a form field or a file) by name; data is hashed at once, not
 * kept. Returns 0, or -1 (OOM, more than SC_IDEMPOTENCY_PARTS_MAX parts). */
int sc_idempotency_fp_add(sc_idempotency_fp_t *fp, const char *name, const void *data, size_t len);
/* Writes the fingerprint (64 hex + NUL). Returns 0 or -1. fp stays usable. */
int sc_idempotency_fp_final(sc_idempotency_fp_t *fp, char out[SC_IDEMPOTENCY_FP_LEN + 1]);
void sc_idempotency_fp_free(sc_idempotency_fp_t *fp);

/* The fingerprint of a JSON request body (POST /api/scenes): each top-level
 * member is a part (so key order and whitespace do not matter); a body that is
 * not a JSON object is one part. Returns 0 or -1 (OOM). */
int sc_idempotency_fp_json(const char *route, const char *body, size_t len,
                           char out[SC_IDEMPOTENCY_FP_LEN + 1]);

#endif
