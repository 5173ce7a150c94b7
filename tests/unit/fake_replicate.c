/* The fake Replicate driver shared by replicate_client_test and
 * replicate_files_test (see fake_replicate.h). */
#include "fake_replicate.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"

char test_fake_root[64];
static pid_t g_fake_pid = -1;

static int fake_start(const char *token)
{
    int fds[2], port = 0;
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl("/usr/bin/python3", "python3", "tests/fake/fake_replicate.py", "--port", "0",
              "--token", token, "--quiet", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    g_fake_pid = pid;
    FILE *f = fdopen(fds[0], "r");
    char line[128] = "";
    if (!f || !fgets(line, sizeof line, f)) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    if (sscanf(line, "READY port=%d", &port) != 1)
        return -1;
    snprintf(test_fake_root, sizeof test_fake_root, "http://127.0.0.1:%d", port);
    return 0;
}

static void fake_stop(void)
{
    if (g_fake_pid > 0) {
        kill(g_fake_pid, SIGTERM);
        waitpid(g_fake_pid, NULL, 0);
        g_fake_pid = -1;
    }
}

int test_fake_setup(char *logdir, const char *token, sc_config_t *cfg)
{
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!mkdtemp(logdir) || fake_start(token) != 0) {
        fprintf(stderr, "cannot start the fake Replicate server\n");
        fake_stop();
        return -1;
    }
    sc_log_open(logdir);
    sc_config_defaults(cfg);
    snprintf(cfg->replicate_api_token, sizeof cfg->replicate_api_token, "%s", token);
    snprintf(cfg->replicate_api_base, sizeof cfg->replicate_api_base, "%s/v1", test_fake_root);
    return 0;
}

void test_fake_teardown(const char *logdir)
{
    sc_log_close();
    fake_stop();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", logdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", logdir);
    curl_global_cleanup();
}

static size_t collect(char *p, size_t s, size_t n, void *ud)
{
    return sc_buf_append(ud, p, s * n) == 0 ? s * n : 0;
}

cJSON *test_fake_control(const char *method, const char *path, const char *body)
{
    char url[128];
    snprintf(url, sizeof url, "%s%s", test_fake_root, path);
    CURL *e = curl_easy_init();
    sc_buf_t b = SC_BUF_INIT;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 10L);
    if (strcmp(method, "POST") == 0)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
    CURLcode rc = curl_easy_perform(e);
    long http = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &http);
    curl_easy_cleanup(e);
    cJSON *j = (rc == CURLE_OK && http == 200) ? cJSON_Parse(b.data ? b.data : "") : NULL;
    if (!j)
        fprintf(stderr, "control %s %s failed: %d %ld %s\n", method, path, rc, http,
                b.data ? b.data : "");
    sc_buf_free(&b);
    return j;
}

int test_fake_configure(const char *json)
{
    cJSON *r = test_fake_control("POST", "/_control/reset", NULL);
    int ok = r != NULL;
    cJSON_Delete(r);
    r = test_fake_control("POST", "/_control/config", json);
    ok += r != NULL;
    cJSON_Delete(r);
    return ok == 2 ? 0 : -1;
}

int test_fake_stat_int(const char *key)
{
    cJSON *s = test_fake_control("GET", "/_control/stats", NULL);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(s, key);
    int n = cJSON_IsNumber(v) ? v->valueint : -1;
    cJSON_Delete(s);
    return n;
}
