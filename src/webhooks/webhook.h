/* Client webhooks (API.md "Asynchronous composites, records, webhooks"):
 * Standard Webhooks signatures and the request-forgery (SSRF) checks.
 *
 * Signature: webhook-signature = "v1," + base64(HMAC-SHA256(key, id + "." +
 * timestamp + "." + body)), computed with OpenSSL. The key follows the Standard
 * Webhooks convention when WEBHOOK_SECRET looks like one of its secrets:
 * "whsec_" + base64 -> the decoded bytes; any other value is used as it is
 * (its bytes are the key). So a secret generated as `whsec_<base64>` works
 * with the Standard Webhooks libraries unchanged, and a plain secret works
 * with a hand-written `hmac.new(secret.encode(), ...)`.
 *
 * SSRF: a webhook URL must be http or https. Unless its host is listed in
 * WEBHOOK_ALLOWED_HOSTS (comma list of host names or IPs, compared case-
 * insensitively; `*` allows every host), every address the host resolves to
 * must be public: loopback (127/8, ::1), private (10/8, 172.16/12,
 * 192.168/16, 100.64/10, fc00::/7, fec0::/10), link-local (169.254/16,
 * fe80::/10) and unspecified (0/8, ::) are refused, also inside IPv4-mapped
 * IPv6 (::ffff:a.b.c.d). This check runs when the request is accepted
 * (sc_webhooks_check_url, a 400 for the HTTP layer) and again on the address
 * each delivery actually connects to (delivery.c), so DNS that changes
 * between the two (rebinding) gains nothing; redirects are never followed.
 *
 * Thread-safe; no shared state. sc_webhooks_check_url resolves the host
 * (getaddrinfo), which can block for the resolver's timeout. */
#ifndef SCENECOMP_WEBHOOKS_WEBHOOK_H
#define SCENECOMP_WEBHOOKS_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* "v1," + 44 base64 chars + NUL */
#define SC_WEBHOOKS_SIG_LEN 48
#define SC_WEBHOOKS_URL_MAX 2048

/* Writes "v1,<base64 HMAC-SHA256>" of id.timestamp.body into out, the key
 * derived from secret as described above. Returns 0, or -1 (empty secret,
 * out of memory, OpenSSL failure). */
int sc_webhooks_sign(const char *secret, const char *msg_id, long long timestamp, const void *body,
                     size_t len, char out[SC_WEBHOOKS_SIG_LEN]);

/* The category name ("loopback", "private", "link-local", "unspecified") of a
 * forbidden address, or NULL for an address a webhook may reach. */
const char *sc_webhooks_addr_forbidden(const struct sockaddr *sa);

/* True when host (as in a URL: "[::1]" or "::1" both match "::1") is in the
 * comma list allowed_hosts, or the list holds "*". */
bool sc_webhooks_host_allowed(const char *host, const char *allowed_hosts);

/* Splits url into its lower-case scheme and its host (brackets of an IPv6
 * literal removed). Returns 0, or -1 with a message in err (not a URL, not
 * http/https, no host, too long, control characters). */
int sc_webhooks_parse_url(const char *url, char *scheme, size_t scheme_cap, char *host,
                          size_t host_cap, char *err, size_t errlen);

/* The accept-time check for a `webhook` field: 0 when url may be used, or -1
 * with a message for 400 invalid_parameter (bad URL, host not resolving, or
 * resolving to a forbidden address without being allow-listed). */
int sc_webhooks_check_url(const char *url, const char *allowed_hosts, char *err, size_t errlen);

/* What the HTTP layer calls for a `webhook` form field: -1 with the message
 * for 400 invalid_parameter when the service has no WEBHOOK_SECRET (secret
 * NULL or "") or when sc_webhooks_check_url refuses url; 0 when accepted. */
int sc_webhooks_accept(const char *url, const char *secret, const char *allowed_hosts, char *err,
                       size_t errlen);

#endif
