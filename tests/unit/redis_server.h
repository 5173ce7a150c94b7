/* Test helper: a private redis-server (the Debian package, declared by
 * install-deps) on a free loopback port in its own directory, with AOF so a
 * stop + start keeps the data like a production Redis with persistence.
 * Stopped by pid. A missing redis-server fails the test (it is a declared
 * dependency, not optional). */
#ifndef SCENECOMP_TESTS_REDIS_SERVER_H
#define SCENECOMP_TESTS_REDIS_SERVER_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

typedef struct test_redis {
    pid_t pid;
    int port;
    char dir[64];
    char url[96];
} test_redis_t;

static int test_redis_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int test_redis_ping(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    int ok = 0;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

/* Starts (or restarts, same port and dir) the server. 0 or -1. */
static int test_redis_start(test_redis_t *t)
{
    if (!t->dir[0]) {
        snprintf(t->dir, sizeof t->dir, "/tmp/sc_redis_test_XXXXXX");
        if (!mkdtemp(t->dir))
            return -1;
        t->port = test_redis_free_port();
        snprintf(t->url, sizeof t->url, "redis://127.0.0.1:%d/0", t->port);
    }
    char port[16];
    snprintf(port, sizeof port, "%d", t->port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir",
               t->dir, "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
               "--protected-mode", "yes", (char *)NULL);
        _exit(127);
    }
    t->pid = pid;
    for (int i = 0; i < 200; i++) { /* up to 10 s on a busy machine */
        if (test_redis_ping(t->port))
            return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "redis-server exited (is it installed? ./scripts/install-deps.sh)\n");
            t->pid = 0;
            return -1;
        }
        usleep(50000);
    }
    return -1;
}

/* SIGTERM (Redis finishes its AOF) and wait. */
static void test_redis_stop(test_redis_t *t)
{
    if (t->pid > 0) {
        kill(t->pid, SIGTERM);
        waitpid(t->pid, NULL, 0);
        t->pid = 0;
    }
}

/* Stops the server and removes its directory. */
static void test_redis_cleanup(test_redis_t *t)
{
    test_redis_stop(t);
    if (t->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", t->dir);
    }
}

#endif
