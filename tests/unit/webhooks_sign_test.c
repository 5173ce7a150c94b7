/* Webhook signatures (the Standard Webhooks test vector, raw secrets checked
 * against Python's hmac) and the SSRF checks on URLs and addresses. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "test.h"
#include "webhooks/webhook.h"

static void test_sign(void)
{
    char sig[SC_WEBHOOKS_SIG_LEN];
    const char *body = "{\"test\": 2432232314}";
    /* The vector published with the Standard Webhooks reference libraries:
     * a whsec_ secret is base64-decoded into the key. */
    CHECK(sc_webhooks_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                           1614265330, body, strlen(body), sig) == 0);
    CHECK_STR(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");

    /* A plain secret is used byte for byte: checked against Python's hmac,
     * an implementation independent of ours. */
    const char *secret = "s3cr3t-not-whsec", *id = "0123456789abcdef0123456789abcdef";
    const char *rbody = "{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"succeeded\"}";
    CHECK(sc_webhooks_sign(secret, id, 1764547200, rbody, strlen(rbody), sig) == 0);
    char cmd[1024], expect[128] = "";
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import hmac,hashlib,base64,sys;"
             "m=sys.argv[2]+\".\"+sys.argv[3]+\".\"+sys.argv[4];"
             "print(\"v1,\"+base64.b64encode(hmac.new(sys.argv[1].encode(),m.encode(),"
             "hashlib.sha256).digest()).decode())' '%s' '%s' 1764547200 '%s'",
             secret, id, rbody);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (p) {
        if (!fgets(expect, sizeof expect, p))
            expect[0] = '\0';
        pclose(p);
        expect[strcspn(expect, "\n")] = '\0';
    }
    CHECK_STR(sig, expect);

    /* A "whsec_" value that is not base64 is a plain secret, not an error. */
    CHECK(sc_webhooks_sign("whsec_not base64!", id, 1, "{}", 2, sig) == 0);
    char sig2[SC_WEBHOOKS_SIG_LEN];
    CHECK(sc_webhooks_sign("whsec_not base64!", id, 2, "{}", 2, sig2) == 0);
    CHECK(strcmp(sig, sig2) != 0); /* the timestamp is signed */
    CHECK(sc_webhooks_sign("", id, 1, "{}", 2, sig) == -1);
    CHECK(sc_webhooks_sign(NULL, id, 1, "{}", 2, sig) == -1);
}

static const char *forbidden_str(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, ip, &s6->sin6_addr) != 1)
            return "bad test address";
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        if (inet_pton(AF_INET, ip, &s4->sin_addr) != 1)
            return "bad test address";
    }
    return sc_webhooks_addr_forbidden((struct sockaddr *)&ss);
}

static void test_addresses(void)
{
    static const struct {
        const char *ip, *why; /* why NULL = allowed */
    } cases[] = {
        {"127.0.0.1", "loopback"},
        {"127.255.0.9", "loopback"},
        {"10.1.2.3", "private"},
        {"172.16.0.1", "private"},
        {"172.31.255.255", "private"},
        {"172.32.0.1", NULL},
        {"172.15.255.255", NULL},
        {"192.168.1.1", "private"},
        {"192.169.1.1", NULL},
        {"100.64.0.1", "private"},
        {"169.254.169.254", "link-local"},
        {"0.0.0.0", "unspecified"},
        {"8.8.8.8", NULL},
        {"93.184.216.34", NULL},
        {"::1", "loopback"},
        {"::", "unspecified"},
        {"fc00::1", "private"},
        {"fd12:3456::1", "private"},
        {"fe80::1", "link-local"},
        {"::ffff:127.0.0.1", "loopback"},
        {"::ffff:10.0.0.1", "private"},
        {"::ffff:8.8.8.8", NULL},
        {"2001:4860:4860::8888", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = forbidden_str(cases[i].ip);
        bool ok = cases[i].why ? got && strcmp(got, cases[i].why) == 0 : got == NULL;
        if (!ok)
            fprintf(stderr, "%s: expected %s, got %s\n", cases[i].ip,
                    cases[i].why ? cases[i].why : "allowed", got ? got : "allowed");
        CHECK(ok);
    }
}

static void test_urls(void)
{
    char err[512];
    static const struct {
        const char *url, *allowed, *needle; /* needle NULL = accepted */
    } cases[] = {
        {"http://127.0.0.1:9/hook", "", "loopback"},
        {"http://10.0.0.7/hook", "", "private"},
        {"http://172.16.5.4/hook", "", "private"},
        {"http://192.168.0.10/hook", "", "private"},
        {"http://169.254.169.254/latest/meta-data", "", "link-local"},
        {"http://[::1]:8080/hook", "", "loopback"},
        {"http://[fc00::5]/hook", "", "private"},
        {"http://0.0.0.0:8000/", "", "unspecified"},
        {"http://2130706433/", "", "loopback"}, /* 127.0.0.1 as one number */
        {"http://localhost:9/hook", "", "loopback"},
        {"http://LOCALHOST:9/hook", NULL, "loopback"},
        {"ftp://example.com/x", "*", "http or https"},
        {"file:///etc/passwd", "*", "http or https"},
        {"gopher://127.0.0.1/", "*", "http or https"},
        {"not a url", "*", "spaces"},
        {"http://", "*", "http or https"},
        {"", "*", "http or https"},
        {"http://no-such-host.invalid/hook", "", "does not resolve"},
        /* the allow-list: exact hosts, case-insensitive, IPv6 with or without brackets */
        {"http://127.0.0.1:9/hook", "127.0.0.1", NULL},
        {"http://127.0.0.1:9/hook", "example.com, 127.0.0.1", NULL},
        {"http://localhost:9/hook", "LocalHost", NULL},
        {"http://localhost:9/hook", "127.0.0.1", "loopback"}, /* by name, not by address */
        {"http://[::1]:9/hook", "::1", NULL},
        {"http://[::1]:9/hook", "[::1]", NULL},
        {"http://10.0.0.7/hook", "*", NULL},
        {"https://192.168.0.10/hook", " * ", NULL},
        {"http://10.0.0.70/hook", "10.0.0.7", "private"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        int rc = sc_webhooks_check_url(cases[i].url, cases[i].allowed, err, sizeof err);
        bool ok = cases[i].needle ? rc == -1 && strstr(err, cases[i].needle) != NULL : rc == 0;
        if (!ok)
            fprintf(stderr, "case %zu %s [%s]: rc=%d err='%s'\n", i, cases[i].url,
                    cases[i].allowed ? cases[i].allowed : "(null)", rc, err);
        CHECK(ok);
    }
    /* A public address literal is accepted without an allow-list (no DNS). */
    CHECK(sc_webhooks_check_url("https://93.184.216.34/hook?x=1", NULL, err, sizeof err) == 0);

    /* No secret on the service: refused before anything else. */
    CHECK(sc_webhooks_accept("https://93.184.216.34/hook", "", "*", err, sizeof err) == -1);
    CHECK(strstr(err, "WEBHOOK_SECRET") != NULL);
    CHECK(sc_webhooks_accept("https://93.184.216.34/hook", NULL, "*", err, sizeof err) == -1);
    CHECK(sc_webhooks_accept("https://93.184.216.34/hook", "s", NULL, err, sizeof err) == 0);
    CHECK(sc_webhooks_accept("http://127.0.0.1/hook", "s", NULL, err, sizeof err) == -1);
    CHECK(strstr(err, "loopback") != NULL);

    char scheme[16], host[64];
    CHECK(sc_webhooks_parse_url("HTTPS://Example.COM:8443/a?b#c", scheme, sizeof scheme, host,
                                sizeof host, err, sizeof err) == 0);
    CHECK_STR(scheme, "https");
    CHECK(strcasecmp(host, "example.com") == 0);
    CHECK(sc_webhooks_parse_url("http://[2001:db8::1]/", scheme, sizeof scheme, host, sizeof host,
                                err, sizeof err) == 0);
    CHECK_STR(host, "2001:db8::1");
    char longurl[SC_WEBHOOKS_URL_MAX + 10];
    memset(longurl, 'a', sizeof longurl);
    memcpy(longurl, "http://x/", 9);
    longurl[sizeof longurl - 1] = '\0';
    CHECK(sc_webhooks_parse_url(longurl, scheme, sizeof scheme, host, sizeof host, err,
                                sizeof err) == -1);
    CHECK(strstr(err, "longer") != NULL);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_sign();
    test_addresses();
    test_urls();
    curl_global_cleanup();
    return test_report("webhooks_sign_test");
}
