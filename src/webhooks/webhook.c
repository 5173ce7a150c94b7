/* Standard Webhooks signatures and SSRF checks (see webhook.h). */
#include "webhooks/webhook.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* ==== Signing ==== */

/* Decodes "whsec_<base64>" into key (caller frees); returns its length, or 0
 * when secret is not of that form (then the raw secret is the key). */
static size_t whsec_key(const char *secret, unsigned char **key)
{
    *key = NULL;
    if (strncmp(secret, "whsec_", 6) != 0)
        return 0;
    const char *b64 = secret + 6;
    size_t n = strlen(b64);
    if (n == 0 || n % 4 != 0)
        return 0;
    unsigned char *out = malloc(n / 4 * 3 + 1);
    if (!out)
        return 0;
    int len = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)n);
    if (len <= 0) {
        free(out);
        return 0;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    size_t pad = (b64[n - 1] == '=') + (b64[n - 2] == '=');
    if ((size_t)len <= pad) {
        free(out);
        return 0;
    }
    *key = out;
    return (size_t)len - pad;
}

int sc_webhooks_sign(const char *secret, const char *msg_id, long long timestamp, const void *body,
                     size_t len, char out[SC_WEBHOOKS_SIG_LEN])
{
    if (!secret || !secret[0] || !msg_id)
        return -1;
    char ts[24];
    int tn = snprintf(ts, sizeof ts, "%lld", timestamp);
    size_t idn = strlen(msg_id), total = idn + 1 + (size_t)tn + 1 + len;
    unsigned char *msg = malloc(total ? total : 1);
    if (!msg)
        return -1;
    memcpy(msg, msg_id, idn);
    msg[idn] = '.';
    memcpy(msg + idn + 1, ts, (size_t)tn);
    msg[idn + 1 + (size_t)tn] = '.';
    if (len)
        memcpy(msg + idn + 2 + (size_t)tn, body, len);

    unsigned char *key = NULL;
    size_t keylen = whsec_key(secret, &key);
    const unsigned char *k = key ? key : (const unsigned char *)secret;
    if (!key)
        keylen = strlen(secret);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    int rc = -1;
    if (HMAC(EVP_sha256(), k, (int)keylen, msg, total, mac, &maclen) && maclen == 32) {
        memcpy(out, "v1,", 3);
        EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)maclen); /* 44 chars + NUL */
        rc = 0;
    }
    if (key) {
        OPENSSL_cleanse(key, keylen);
        free(key);
    }
    free(msg);
    return rc;
}

/* ==== Addresses ==== */

static const char *v4_forbidden(uint32_t a)
{
    if ((a >> 24) == 0)
        return "unspecified";
    if ((a >> 24) == 127)
        return "loopback";
    if ((a >> 24) == 10 || (a >> 20) == (172u << 4 | 1) || (a >> 16) == (192u << 8 | 168) ||
        (a >> 22) == (100u << 2 | 1)) /* 100.64/10, carrier-grade NAT */
        return "private";
    if ((a >> 16) == (169u << 8 | 254))
        return "link-local";
    return NULL;
}

const char *sc_webhooks_addr_forbidden(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return v4_forbidden(ntohl(in->sin_addr.s_addr));
    }
    if (sa->sa_family != AF_INET6)
        return "unspecified"; /* not an internet address at all */
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    const uint8_t *b = a->s6_addr;
    if (IN6_IS_ADDR_UNSPECIFIED(a))
        return "unspecified";
    if (IN6_IS_ADDR_LOOPBACK(a))
        return "loopback";
    if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a)) {
        uint32_t v4 = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
        return v4_forbidden(v4);
    }
    if ((b[0] & 0xfe) == 0xfc || IN6_IS_ADDR_SITELOCAL(a))
        return "private";
    if (IN6_IS_ADDR_LINKLOCAL(a))
        return "link-local";
    return NULL;
}

/* ==== URLs and hosts ==== */

bool sc_webhooks_host_allowed(const char *host, const char *allowed_hosts)
{
    if (!host || !allowed_hosts)
        return false;
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        host++;
        hl -= 2;
    }
    const char *p = allowed_hosts;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        size_t n = (size_t)(end - start);
        if (n >= 2 && start[0] == '[' && end[-1] == ']') {
            start++;
            n -= 2;
        }
        if (n == 1 && start[0] == '*')
            return true;
        if (n > 0 && n == hl && strncasecmp(start, host, n) == 0)
            return true;
    }
    return false;
}

int sc_webhooks_parse_url(const char *url, char *scheme, size_t scheme_cap, char *host,
                          size_t host_cap, char *err, size_t errlen)
{
    int rc = -1;
    char *s = NULL, *h = NULL;
    CURLU *u = NULL;
    if (!url || !url[0]) {
        snprintf(err, errlen, "webhook must be an http or https URL");
        return -1;
    }
    if (strlen(url) >= SC_WEBHOOKS_URL_MAX) {
        snprintf(err, errlen, "webhook URL is longer than %d bytes", SC_WEBHOOKS_URL_MAX - 1);
        return -1;
    }
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= 0x20 || *p == 0x7f) {
            snprintf(err, errlen, "webhook URL must not contain spaces or control characters");
            return -1;
        }
    u = curl_url();
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &s, 0) != CURLUE_OK) {
        snprintf(err, errlen, "webhook must be an http or https URL");
        goto out;
    }
    if (strcasecmp(s, "http") != 0 && strcasecmp(s, "https") != 0) {
        snprintf(err, errlen, "webhook URL scheme must be http or https (got '%.16s')", s);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK || !h[0]) {
        snprintf(err, errlen, "webhook URL has no host");
        goto out;
    }
    size_t hl = strlen(h);
    const char *hp = h;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        hp = h + 1;
        hl -= 2;
    }
    if (hl >= host_cap || strlen(s) >= scheme_cap) {
        snprintf(err, errlen, "webhook URL host is too long");
        goto out;
    }
    memcpy(host, hp, hl);
    host[hl] = '\0';
    for (size_t i = 0; s[i]; i++)
        scheme[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    scheme[strlen(s)] = '\0';
    rc = 0;
out:
    curl_free(s);
    curl_free(h);
    curl_url_cleanup(u);
    return rc;
}

int sc_webhooks_check_url(const char *url, const char *allowed_hosts, char *err, size_t errlen)
{
    char scheme[16], host[256];
    if (sc_webhooks_parse_url(url, scheme, sizeof scheme, host, sizeof host, err, errlen) != 0)
        return -1;
    if (sc_webhooks_host_allowed(host, allowed_hosts))
        return 0;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0 || !res) {
        snprintf(err, errlen, "webhook host '%.200s' does not resolve (%s)", host,
                 gai ? gai_strerror(gai) : "no address");
        if (res)
            freeaddrinfo(res);
        return -1;
    }
    int rc = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        const char *why = sc_webhooks_addr_forbidden(ai->ai_addr);
        if (!why)
            continue;
        char ip[INET6_ADDRSTRLEN] = "?";
        const void *a = ai->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        inet_ntop(ai->ai_family, a, ip, sizeof ip);
        snprintf(err, errlen,
                 "webhook host '%.200s' resolves to a %s address (%s); webhooks may only reach "
                 "public addresses unless the host is listed in WEBHOOK_ALLOWED_HOSTS",
                 host, why, ip);
        rc = -1;
        break;
    }
    freeaddrinfo(res);
    return rc;
}

int sc_webhooks_accept(const char *url, const char *secret, const char *allowed_hosts, char *err,
                       size_t errlen)
{
    if (!secret || !secret[0]) {
        snprintf(err, errlen,
                 "webhook needs WEBHOOK_SECRET to be set on the service (deliveries are signed)");
        return -1;
    }
    return sc_webhooks_check_url(url, allowed_hosts, err, errlen);
}
