/* Random 128-bit identifiers as 32 lowercase hex characters, from getrandom(2).
 * Thread-safe. Used for composite/scene ids that become file names. */
#ifndef SCENECOMP_CORE_IDS_H
#define SCENECOMP_CORE_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define SC_ID_LEN 32

/* Writes SC_ID_LEN hex chars and a NUL into out. */
void sc_id_new(char out[SC_ID_LEN + 1]);
/* True when s is exactly SC_ID_LEN lowercase hex chars (safe to use in a path). */
bool sc_id_valid(const char *s, size_t len);

#endif
