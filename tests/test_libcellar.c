/*
 * test_libcellar.c - libcellar against a real cellard on loopback.
 *
 * Starts cellard children (temp flash files, tcp://127.0.0.1:0) and checks
 * every call of include/cellar.h and its errors: URLs and transports,
 * every RPC, paging, pipelined put/get at chunk boundaries and of 1 and
 * 16 MiB, 1,000 small files, trees, 32 concurrent clients, clients killed
 * mid-transfer, a full device, corruption in transit caught by SHA-256,
 * and one update bundle built once and pushed to two devices (one after
 * the other, then from two threads at once).
 *
 * cellard is $CELLARD, or ../cellard beside this program's directory
 * (build/san/tests/test_libcellar -> build/san/cellard).
 */
#include "cellar.h"
#include "check.h"
#include "cli.h" /* the CLI helpers are linked into every test */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

/* ---- helpers ---------------------------------------------------------------- */
static char g_tmp[256]; /* scratch directory for local files */

typedef struct daemon {
    pid_t pid;
    char dir[512];
    char url[64];
    uint16_t port;
} daemon_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fill_random(void *buf, size_t n, uint64_t seed)
{
    uint8_t *p = buf;
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

static const char *cellard_path(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("CELLARD");
    if (env && *env)
        return env;
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 16);
    if (n <= 0)
        return "build/san/cellard";
    path[n] = 0;
    for (int i = 0; i < 2; i++) {
        char *s = strrchr(path, '/');
        if (s)
            *s = 0;
    }
    strcat(path, "/cellard");
    return path;
}

static void rm_rf(const char *path)
{
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: %s failed\n", cmd);
}

static int start_daemon(daemon_t *d, const char *flash_size)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->dir, sizeof(d->dir), "%s/cellard-XXXXXX", g_tmp);
    if (!mkdtemp(d->dir))
        return -1;
    char flash[PATH_MAX + 16], log[PATH_MAX + 16];
    snprintf(flash, sizeof(flash), "%s/flash.img", d->dir);
    snprintf(log, sizeof(log), "%s/log", d->dir);
    const char *bin = cellard_path();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, bin, "--flash", flash, "--flash-size", flash_size, "--listen",
              "tcp://127.0.0.1:0", "--idle-timeout", "0", (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    d->pid = pid;
    double t0 = now_s();
    while (now_s() - t0 < 60) {
        FILE *f = fopen(log, "r");
        char line[512];
        while (f && fgets(line, sizeof(line), f)) {
            const char *p = strstr(line, "listening on tcp://127.0.0.1:");
            if (p) {
                d->port = (uint16_t)atoi(p + strlen("listening on tcp://127.0.0.1:"));
                snprintf(d->url, sizeof(d->url), "tcp://127.0.0.1:%u", d->port);
                fclose(f);
                return 0;
            }
        }
        if (f)
            fclose(f);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "cellard (%s) exited early; log:\n", bin);
            char cmd[PATH_MAX + 64];
            snprintf(cmd, sizeof(cmd), "cat '%s' >&2", log);
            if (system(cmd) != 0)
                fprintf(stderr, "(no log)\n");
            d->pid = 0;
            return -1;
        }
        usleep(20000);
    }
    fprintf(stderr, "cellard did not start within 60 s\n");
    return -1;
}

static void stop_daemon(daemon_t *d)
{
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        int st = 0;
        double t0 = now_s();
        while (waitpid(d->pid, &st, WNOHANG) == 0) {
            if (now_s() - t0 > 20) {
                kill(d->pid, SIGKILL);
                waitpid(d->pid, &st, 0);
                break;
            }
            usleep(10000);
        }
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0); /* clean shutdown */
        d->pid = 0;
    }
    if (d->dir[0])
        rm_rf(d->dir);
}

static int write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    ssize_t w = len ? write(fd, data, len) : 0;
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static bool remote_exists(cellar_t *c, const char *path)
{
    cellar_stat_t st;
    return cellar_stat(c, path, &st) == 0;
}

/* ---- URLs, connection errors --------------------------------------------------- */
static void test_urls(void)
{
    cellar_url_t u;
    CHECK_EQ(cellar_url_parse("tcp://127.0.0.1:7071", &u), 0);
    CHECK(u.kind == CELLAR_URL_TCP && u.port == 7071 && !strcmp(u.host, "127.0.0.1"));
    CHECK_EQ(cellar_url_parse("tcp://example.org", &u), 0);
    CHECK(u.port == CELLAR_DEFAULT_PORT && !strcmp(u.host, "example.org"));
    CHECK_EQ(cellar_url_parse("tcp://[::1]:7000", &u), 0);
    CHECK(u.port == 7000 && !strcmp(u.host, "::1"));
    CHECK_EQ(cellar_url_parse("tcp://[fe80::1]", &u), 0);
    CHECK(u.port == 7070 && !strcmp(u.host, "fe80::1"));
    CHECK_EQ(cellar_url_parse("localhost:9", &u), 0);
    CHECK(u.kind == CELLAR_URL_TCP && u.port == 9);
    CHECK_EQ(cellar_url_parse("tls://dev.local", &u), 0);
    CHECK(u.kind == CELLAR_URL_TLS && u.port == CELLAR_DEFAULT_TLS_PORT);
    CHECK_EQ(cellar_url_parse("uart:/dev/ttyUSB0?baud=921600", &u), 0);
    CHECK(u.kind == CELLAR_URL_UART && u.baud == 921600 &&
          !strcmp(u.device, "/dev/ttyUSB0"));
    CHECK_EQ(cellar_url_parse("uart:/dev/ttyS1", &u), 0);
    CHECK(u.baud == 115200);
    CHECK_EQ(cellar_url_parse("tcp://host:0", &u), CELLAR_ERR_INVAL);
    CHECK_EQ(cellar_url_parse("tcp://host:70000", &u), CELLAR_ERR_INVAL);
    CHECK_EQ(cellar_url_parse("tcp://host:x", &u), CELLAR_ERR_INVAL);
    CHECK_EQ(cellar_url_parse("tcp://", &u), CELLAR_ERR_INVAL);
    CHECK_EQ(cellar_url_parse("http://host", &u), CELLAR_ERR_INVAL);
    CHECK_EQ(cellar_url_parse("uart:/dev/x?baud=", &u), CELLAR_ERR_INVAL);
    CHECK_EQ(cellar_url_parse("", &u), CELLAR_ERR_INVAL);
    CHECK_EQ(cellar_url_parse(NULL, &u), CELLAR_ERR_INVAL);

    cellar_t c;
    cellar_init(&c, NULL);
    CHECK(!cellar_connected(&c));
    CHECK_EQ(cellar_ping(&c, NULL, 0), CELLAR_ERR_NOTCONN);
    cellar_stat_t st;
    CHECK_EQ(cellar_stat(&c, "/usr", &st), CELLAR_ERR_NOTCONN);
    /* issue 13: tls:// without a CA or PSK is refused before connecting */
    unsetenv("CELLAR_CA");
    unsetenv("CELLAR_PSK");
    CHECK_EQ(cellar_connect(&c, "tls://127.0.0.1:7443"), CELLAR_ERR_INVAL);
    CHECK(strstr(cellar_errmsg(&c), "CA") != NULL);
    /* issue 12: a serial port that is not there */
    CHECK(cellar_connect(&c, "uart:/dev/cellar-no-such-tty?baud=115200") < 0);
    CHECK(strstr(cellar_errmsg(&c), "cellar-no-such-tty") != NULL);
    CHECK_EQ(cellar_connect(&c, "ftp://x"), CELLAR_ERR_INVAL);
    CHECK(strstr(cellar_errmsg(&c), "ftp://x") != NULL);

    /* A port nobody listens on: take one and close it. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    CHECK(bind(s, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(getsockname(s, (struct sockaddr *)&a, &al) == 0);
    close(s);
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%u", ntohs(a.sin_port));
    CHECK_EQ(cellar_connect(&c, url), CELLAR_ERR_CONNREFUSED);
    CHECK(strstr(cellar_errmsg(&c), "refused") != NULL);
    CHECK_EQ(cellar_connect(&c, "tcp://no-such-host.invalid:7070"),
             CELLAR_ERR_HOSTUNREACH);
    cellar_close(&c);
    cellar_close(&c);
    cellar_close(NULL);

    /* A peer that is not a cellar device (closes at once). */
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_port = 0;
    CHECK(bind(ls, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(ls, 4) == 0);
    al = sizeof(a);
    CHECK(getsockname(ls, (struct sockaddr *)&a, &al) == 0);
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%u", ntohs(a.sin_port));
    pid_t pid = fork();
    if (pid == 0) {
        int x = accept(ls, NULL, NULL);
        const char junk[] = "HTTP/1.0 400 Bad Request\r\n\r\n";
        if (write(x, junk, sizeof(junk) - 1) < 0)
            _exit(1);
        usleep(100000);
        _exit(0);
    }
    int err = cellar_connect(&c, url);
    CHECK(err == CELLAR_ERR_PROTO || err == CELLAR_ERR_PIPE);
    CHECK(!cellar_connected(&c));
    waitpid(pid, NULL, 0);
    close(ls);

    CHECK(!strcmp(cellar_strerror(CELLAR_ERR_NOENT), "no such file or directory"));
    CHECK(!strcmp(cellar_strerror(2), "no such file or directory"));
    CHECK(!strcmp(cellar_errname(CELLAR_ERR_NOSPC), "ENOSPC"));
    CHECK(!strcmp(cellar_strerror(-9999), "unknown error"));
}

/* ---- every RPC ------------------------------------------------------------------- */
static void test_rpcs(const char *url)
{
    uint8_t *cbuf = aligned_alloc(16, CELLAR_BUFFER_SIZE);
    cellar_config_t cfg = {.client_name = "test_libcellar", .timeout_ms = 20000,
                           .buffer = cbuf};
    cellar_t c;
    cellar_init(&c, &cfg);
    CHECK_EQ(cellar_connect(&c, url), 0);
    CHECK(cellar_connected(&c));
    const cellar_info_t *in = cellar_info(&c);
    CHECK(in->version >= 1);
    CHECK(in->max_chunk >= 1024 && in->max_chunk <= CELLAR_CHUNK);
    CHECK(in->max_inflight >= 1);
    CHECK(in->max_handles >= 1);
    CHECK_EQ(in->block_size, 4096);
    CHECK(in->npartitions == 2);
    CHECK(!strcmp(in->partitions[0].path, "/usr") && !in->partitions[0].read_only);
    CHECK(!strcmp(in->partitions[1].path, "/bak") && in->partitions[1].read_only);
    CHECK(strstr(in->firmware, "cellard") != NULL);

    CHECK_EQ(cellar_ping(&c, "hello", 5), 0);
    CHECK_EQ(cellar_ping(&c, NULL, 0), 0);
    uint8_t big[100] = {0};
    CHECK_EQ(cellar_ping(&c, big, sizeof(big)), CELLAR_ERR_MSGSIZE);

    /* directories */
    CHECK_EQ(cellar_mkdir(&c, "/usr/t", false), 0);
    CHECK_EQ(cellar_mkdir(&c, "/usr/t", false), CELLAR_ERR_EXIST);
    CHECK(strstr(cellar_errmsg(&c), "/usr/t") != NULL); /* device names the path */
    CHECK(!strcmp(cellar_errpath(&c), ":/usr/t"));
    CHECK_EQ(cellar_mkdir(&c, "/usr/t", true), 0);
    CHECK_EQ(cellar_mkdir(&c, "/usr/t/a/b/c", true), 0);
    CHECK_EQ(cellar_mkdir(&c, "/usr/t/x/y", false), CELLAR_ERR_NOENT);
    cellar_stat_t st;
    CHECK_EQ(cellar_stat(&c, "/usr/t/a/b", &st), 0);
    CHECK(st.type == CELLAR_TYPE_DIR);
    CHECK_EQ(cellar_stat(&c, "t/a", &st), 0); /* relative to /usr */
    CHECK(st.type == CELLAR_TYPE_DIR);
    CHECK_EQ(cellar_stat(&c, "/usr/t/nope", &st), CELLAR_ERR_NOENT);
    CHECK_EQ(cellar_rmdir(&c, "/usr/t/a"), CELLAR_ERR_NOTEMPTY);
    CHECK_EQ(cellar_rmdir(&c, "/usr/t/a/b/c"), 0);
    CHECK_EQ(cellar_stat(&c, "/", &st), 0);
    CHECK(st.type == CELLAR_TYPE_DIR);
    CHECK_EQ(cellar_stat(&c, "/nopart/x", &st), CELLAR_ERR_NOENT);

    /* files: open, write, read, seek, truncate, sync, close */
    cellar_fh_t fh, fh2;
    uint64_t size = 99;
    CHECK_EQ(cellar_file_open(&c, "/usr/t/f.txt", CELLAR_O_READ, &fh, NULL),
             CELLAR_ERR_NOENT);
    CHECK_EQ(cellar_file_open(&c, "/usr/t/f.txt",
                              CELLAR_O_RDWR | CELLAR_O_CREATE | CELLAR_O_TRUNC, &fh, &size),
             0);
    CHECK_EQ(size, 0);
    CHECK_EQ(cellar_file_write(&c, fh, 0, "hello world", 11), 11);
    CHECK_EQ(cellar_file_sync(&c, fh), 0);
    char rb[64] = {0};
    CHECK_EQ(cellar_file_read(&c, fh, 0, rb, sizeof(rb)), 11);
    CHECK(!memcmp(rb, "hello world", 11));
    CHECK_EQ(cellar_file_read(&c, fh, 6, rb, 5), 5);
    CHECK(!memcmp(rb, "world", 5));
    CHECK_EQ(cellar_file_read(&c, fh, 11, rb, 5), 0);
    CHECK_EQ(cellar_file_read(&c, fh, 100, rb, 5), 0);
    CHECK_EQ(cellar_file_write(&c, fh, 6, "WORLD", 5), 5);
    CHECK_EQ(cellar_file_seek(&c, fh, 0, 2, &size), 11);
    CHECK_EQ(size, 11);
    CHECK_EQ(cellar_file_seek(&c, fh, 3, 0, NULL), 3);
    CHECK_EQ(cellar_file_seek(&c, fh, 2, 1, NULL), 5);
    CHECK_EQ(cellar_file_seek(&c, fh, 0, 7, NULL), CELLAR_ERR_INVAL);
    CHECK_EQ(cellar_file_truncate(&c, fh, 5), 0);
    CHECK_EQ(cellar_file_seek(&c, fh, 0, 2, &size), 5);
    CHECK_EQ(cellar_file_close(&c, fh), 0);
    CHECK_EQ(cellar_file_close(&c, fh), CELLAR_ERR_BADF);
    CHECK_EQ(cellar_file_read(&c, fh, 0, rb, 4), CELLAR_ERR_BADF);
    CHECK_EQ(cellar_file_write(&c, fh, 0, "x", 1), CELLAR_ERR_BADF);
    CHECK_EQ(cellar_file_sync(&c, fh), CELLAR_ERR_BADF);
    CHECK_EQ(cellar_file_open(&c, "/usr/t/f.txt", CELLAR_O_READ, &fh, &size), 0);
    CHECK_EQ(size, 5);
    CHECK_EQ(cellar_file_read(&c, fh, 0, rb, sizeof(rb)), 5);
    CHECK(!memcmp(rb, "hello", 5));
    CHECK_EQ(cellar_file_write(&c, fh, 0, "x", 1), CELLAR_ERR_BADF); /* read-only */
    CHECK_EQ(cellar_file_close(&c, fh), 0);
    CHECK_EQ(cellar_file_open(&c, "/usr/t/f.txt",
                              CELLAR_O_WRITE | CELLAR_O_CREATE | CELLAR_O_EXCL, &fh, NULL),
             CELLAR_ERR_EXIST);
    CHECK_EQ(cellar_file_open(&c, "/usr/t/f.txt", CELLAR_O_WRITE | CELLAR_O_APPEND, &fh,
                              NULL), 0);
    CHECK_EQ(cellar_file_write(&c, fh, 0, "!!", 2), 2);
    CHECK_EQ(cellar_file_close(&c, fh), 0);
    CHECK_EQ(cellar_stat(&c, "/usr/t/f.txt", &st), 0);
    CHECK(st.type == CELLAR_TYPE_FILE && st.size == 7);
    CHECK(!strcmp(st.name, "/usr/t/f.txt"));
    CHECK(st.mtime > 1600000000u);
    CHECK_EQ(cellar_truncate(&c, "/usr/t/f.txt", 2), 0);
    CHECK_EQ(cellar_stat(&c, "/usr/t/f.txt", &st), 0);
    CHECK_EQ(st.size, 2);
    CHECK_EQ(cellar_truncate(&c, "/usr/t/none", 2), CELLAR_ERR_NOENT);
    CHECK_EQ(cellar_file_open(&c, "/usr/t", CELLAR_O_READ, &fh, NULL), CELLAR_ERR_ISDIR);
    CHECK_EQ(cellar_file_open(&c, "/usr/t/f.txt", 0, &fh, NULL), CELLAR_ERR_INVAL);

    /* a large pipelined write and read through a handle */
    size_t n = 200000;
    uint8_t *w = malloc(n), *r = malloc(n);
    fill_random(w, n, 7);
    CHECK_EQ(cellar_file_open(&c, "/usr/t/big", CELLAR_O_RDWR | CELLAR_O_CREATE, &fh, NULL), 0);
    CHECK_EQ(cellar_file_open(&c, "/usr/t/f.txt", CELLAR_O_READ, &fh2, NULL), 0);
    CHECK(fh != fh2);
    CHECK_EQ(cellar_file_write(&c, fh, 0, w, (uint32_t)n), (int32_t)n);
    CHECK_EQ(cellar_file_read(&c, fh, 0, r, (uint32_t)n), (int32_t)n);
    CHECK(!memcmp(w, r, n));
    CHECK_EQ(cellar_file_read(&c, fh, 1000, r, (uint32_t)n), (int32_t)(n - 1000));
    CHECK(!memcmp(w + 1000, r, n - 1000));
    CHECK_EQ(cellar_file_close(&c, fh), 0);
    CHECK_EQ(cellar_file_close(&c, fh2), 0);

    /* handles are limited per connection */
    cellar_fh_t hs[64];
    int opened = 0, err = 0;
    for (; opened < 64; opened++) {
        err = cellar_file_open(&c, "/usr/t/f.txt", CELLAR_O_READ, &hs[opened], NULL);
        if (err < 0)
            break;
    }
    CHECK(opened >= 1 && (uint32_t)opened <= in->max_handles);
    CHECK_EQ(err, CELLAR_ERR_NOMEM);
    for (int i = 0; i < opened; i++)
        CHECK_EQ(cellar_file_close(&c, hs[i]), 0);

    /* hash */
    uint8_t sha[32], want[32];
    uint64_t hashed = 0;
    CHECK_EQ(cellar_hash(&c, "/usr/t/big", 0, 0, sha, &hashed), 0);
    cellar_sha256(w, n, want);
    CHECK_EQ(hashed, n);
    CHECK(!memcmp(sha, want, 32));
    CHECK_EQ(cellar_hash(&c, "/usr/t/big", 100, 1000, sha, &hashed), 0);
    cellar_sha256(w + 100, 1000, want);
    CHECK_EQ(hashed, 1000);
    CHECK(!memcmp(sha, want, 32));
    CHECK_EQ(cellar_hash(&c, "/usr/t/none", 0, 0, sha, NULL), CELLAR_ERR_NOENT);
    char hex[65];
    cellar_sha256("", 0, sha);
    CHECK(!strcmp(cellar_sha256_hex(sha, hex),
                  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));

    /* rename, remove */
    CHECK_EQ(cellar_rename(&c, "/usr/t/f.txt", "/usr/t/g.txt"), 0);
    CHECK(!remote_exists(&c, "/usr/t/f.txt") && remote_exists(&c, "/usr/t/g.txt"));
    CHECK_EQ(cellar_rename(&c, "/usr/t/big", "/usr/t/g.txt"), 0); /* replaces */
    CHECK_EQ(cellar_stat(&c, "/usr/t/g.txt", &st), 0);
    CHECK_EQ(st.size, n);
    CHECK_EQ(cellar_rename(&c, "/usr/t/none", "/usr/t/x"), CELLAR_ERR_NOENT);
    CHECK_EQ(cellar_remove(&c, "/usr/t/g.txt"), 0);
    CHECK_EQ(cellar_remove(&c, "/usr/t/g.txt"), CELLAR_ERR_NOENT);

    /* bad paths */
    char longp[400];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = 0;
    CHECK_EQ(cellar_stat(&c, longp, &st), CELLAR_ERR_NAMETOOLONG);
    CHECK_EQ(cellar_stat(&c, "/usr/../bak", &st), CELLAR_ERR_INVAL);
    CHECK(cellar_connected(&c));

    /* /bak is read-only */
    cellar_fh_t bh;
    err = cellar_file_open(&c, "/bak/x", CELLAR_O_WRITE | CELLAR_O_CREATE, &bh, NULL);
    CHECK(err == CELLAR_ERR_ACCES || err == CELLAR_ERR_ROFS);
    err = cellar_put_mem(&c, "abc", 3, "/bak/x", NULL);
    CHECK(err == CELLAR_ERR_ACCES || err == CELLAR_ERR_ROFS);
    err = cellar_mkdir(&c, "/bak/d", false);
    CHECK(err == CELLAR_ERR_ACCES || err == CELLAR_ERR_ROFS);

    /* statfs */
    cellar_statfs_t fsst;
    CHECK_EQ(cellar_statfs(&c, "/usr", &fsst), 0);
    CHECK(fsst.total > 0 && fsst.used <= fsst.total && fsst.block_size == 4096);
    CHECK(fsst.dirs >= 1 && fsst.erase_max >= fsst.erase_min);
    CHECK_EQ(cellar_statfs(&c, NULL, &fsst), 0);
    CHECK_EQ(cellar_statfs(&c, "/bak", &fsst), 0);
    CHECK(fsst.total > 0);

    /* list with paging */
    CHECK_EQ(cellar_mkdir(&c, "/usr/pages", false), 0);
    for (int i = 0; i < 70; i++) {
        char p[64];
        snprintf(p, sizeof(p), "/usr/pages/f%02d", i);
        CHECK_EQ(cellar_put_mem(&c, p, strlen(p), p, NULL), 0);
    }
    cellar_stat_t page[CELLAR_LIST_PAGE];
    uint32_t cursor = 0, total = 0, pages = 0;
    bool seen[70] = {false};
    do {
        int got = cellar_list(&c, "/usr/pages", &cursor, page, 10);
        CHECK(got >= 0 && got <= 10);
        if (got < 0)
            break;
        for (int i = 0; i < got; i++) {
            int k = atoi(page[i].name + 1);
            if (k >= 0 && k < 70 && !seen[k] && page[i].size == 14) {
                seen[k] = true;
                total++;
            }
        }
        pages++;
    } while (cursor != 0 && pages < 100);
    CHECK_EQ(total, 70);
    CHECK(pages >= 7);
    cellar_stat_t *all = NULL;
    CHECK_EQ(cellar_list_alloc(&c, "/usr/pages", &all), 70);
    free(all);
    CHECK_EQ(cellar_list_alloc(&c, "/usr/none", &all), CELLAR_ERR_NOENT);
    CHECK_EQ(cellar_list_alloc(&c, "/", &all), 2);
    if (all)
        CHECK((!strcmp(all[0].name, "usr") && !strcmp(all[1].name, "bak")) ||
              (!strcmp(all[0].name, "bak") && !strcmp(all[1].name, "usr")));
    free(all);
    cursor = 0;
    CHECK_EQ(cellar_list(&c, "/usr/pages/f01", &cursor, page, 0), CELLAR_ERR_NOTDIR);
    CHECK_EQ(cellar_remove_tree(&c, "/usr/pages"), 0);
    CHECK(!remote_exists(&c, "/usr/pages"));
    CHECK_EQ(cellar_remove_tree(&c, "/usr/t"), 0);
    CHECK(!remote_exists(&c, "/usr/t"));

    /* format /usr */
    CHECK_EQ(cellar_put_mem(&c, "x", 1, "/usr/before-format", NULL), 0);
    CHECK_EQ(cellar_format(&c, "/usr"), 0);
    CHECK(!remote_exists(&c, "/usr/before-format"));
    CHECK_EQ(cellar_format(&c, "/nope"), CELLAR_ERR_NOENT);
    CHECK_EQ(cellar_ping(&c, "ok", 2), 0);

    /* reconnect on the same handle */
    CHECK_EQ(cellar_connect(&c, url), 0);
    CHECK_EQ(cellar_ping(&c, NULL, 0), 0);
    cellar_close(&c);
    CHECK(!cellar_connected(&c));
    free(w);
    free(r);
    free(cbuf);
}

/* ---- whole files ------------------------------------------------------------------ */
typedef struct prog {
    uint64_t last_done, total;
    unsigned calls;
} prog_t;

static void on_progress(void *ctx, const char *path, uint64_t done, uint64_t total)
{
    prog_t *p = ctx;
    p->last_done = done;
    p->total = total;
    p->calls++;
}

static void test_put_get(const char *url)
{
    cellar_t c;
    cellar_init(&c, NULL);
    CHECK_EQ(cellar_connect(&c, url), 0);
    static const size_t sizes[] = {0, 1, 16383, 16384, 16385, 1u << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        uint8_t *data = malloc(n + 1);
        fill_random(data, n, n + 1);
        char local[PATH_MAX], back[PATH_MAX], remote[64], tmpname[80];
        snprintf(local, sizeof(local), "%s/up-%zu", g_tmp, n);
        snprintf(back, sizeof(back), "%s/down-%zu", g_tmp, n);
        snprintf(remote, sizeof(remote), "/usr/sz/f-%zu.bin", n);
        snprintf(tmpname, sizeof(tmpname), "/usr/sz/.f-%zu.bin.cellar-tmp", n);
        CHECK_EQ(write_file(local, data, n), 0);
        CHECK_EQ(cellar_mkdir(&c, "/usr/sz", true), 0);
        prog_t pg = {0};
        cellar_xfer_t x = {.progress = on_progress, .progress_ctx = &pg,
                           .skip_unchanged = true};
        CHECK_EQ(cellar_put_file(&c, local, remote, &x), 0);
        CHECK_EQ(pg.last_done, n);
        CHECK_EQ(pg.total, n);
        CHECK(!remote_exists(&c, tmpname));
        cellar_stat_t st;
        CHECK_EQ(cellar_stat(&c, remote, &st), 0);
        CHECK_EQ(st.size, n);
        /* unchanged: skipped both ways */
        CHECK_EQ(cellar_put_file(&c, local, remote, &x), CELLAR_SKIPPED);
        x.skip_unchanged = false;
        CHECK_EQ(cellar_put_file(&c, local, remote, &x), 0);
        pg = (prog_t){0};
        CHECK_EQ(cellar_get_file(&c, remote, back, &x), 0);
        CHECK_EQ(pg.last_done, n);
        size_t bl = 0;
        uint8_t *b = read_file(back, &bl);
        CHECK(b != NULL && bl == n && (n == 0 || !memcmp(b, data, n)));
        free(b);
        struct stat lst;
        /* the forced put above wrote it again: take its mtime now */
        CHECK_EQ(cellar_stat(&c, remote, &st), 0);
        CHECK(stat(back, &lst) == 0 && (uint32_t)lst.st_mtime == st.mtime);
        x.skip_unchanged = true;
        CHECK_EQ(cellar_get_file(&c, remote, back, &x), CELLAR_SKIPPED);
        void *m = NULL;
        size_t ml = 0;
        CHECK_EQ(cellar_get_mem(&c, remote, n + 1, &m, &ml), 0);
        CHECK(ml == n && (n == 0 || !memcmp(m, data, n)));
        free(m);
        if (n > 0)
            CHECK_EQ(cellar_get_mem(&c, remote, n - 1, &m, &ml), CELLAR_ERR_FBIG);
        /* both verification modes: one Hash at the end, and small ranges
         * (not a multiple of the chunk) pipelined with the data */
        static const uint32_t ranges[] = {UINT32_MAX, 20000};
        for (int k = 0; k < 2; k++) {
            cellar_xfer_t xr = {.verify_range = ranges[k], .chunk = 4096 * (uint32_t)(k + 1)};
            CHECK_EQ(cellar_put_file(&c, local, remote, &xr), 0);
            unlink(back);
            CHECK_EQ(cellar_get_file(&c, remote, back, &xr), 0);
            b = read_file(back, &bl);
            CHECK(b != NULL && bl == n && (n == 0 || !memcmp(b, data, n)));
            free(b);
        }
        /* a changed local file is copied again */
        if (n > 0) {
            data[n / 2] ^= 0x5a;
            CHECK_EQ(write_file(local, data, n), 0);
            CHECK_EQ(cellar_put_file(&c, local, remote, &x), 0);
            CHECK_EQ(cellar_get_mem(&c, remote, n, &m, &ml), 0);
            CHECK(ml == n && !memcmp(m, data, n));
            free(m);
        }
        unlink(local);
        unlink(back);
        free(data);
    }
    /* errors */
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/does-not-exist", g_tmp);
    CHECK_EQ(cellar_put_file(&c, p, "/usr/x", NULL), -ENOENT);
    CHECK(!strcmp(cellar_errpath(&c), p));
    CHECK_EQ(cellar_put_file(&c, g_tmp, "/usr/x", NULL), CELLAR_ERR_ISDIR);
    CHECK_EQ(cellar_get_file(&c, "/usr/nope", p, NULL), CELLAR_ERR_NOENT);
    CHECK(!strcmp(cellar_errpath(&c), ":/usr/nope"));
    CHECK(access(p, F_OK) != 0);
    CHECK_EQ(cellar_get_file(&c, "/usr/sz", p, NULL), CELLAR_ERR_ISDIR);
    CHECK_EQ(cellar_put_mem(&c, "x", 1, "/usr/nodir/x", NULL), CELLAR_ERR_NOENT);
    CHECK_EQ(cellar_put_mem(&c, "x", 1, "/usr/sz", NULL) < 0, 1);
    CHECK(remote_exists(&c, "/usr/sz/f-1.bin"));
    int devnull = open("/dev/null", O_WRONLY);
    CHECK_EQ(cellar_get_fd(&c, "/usr/sz/f-16385.bin", devnull, NULL), 0);
    close(devnull);

    /* trees */
    char src[PATH_MAX], dst[PATH_MAX], cmd[6 * PATH_MAX];
    snprintf(src, sizeof(src), "%s/tree-src", g_tmp);
    snprintf(dst, sizeof(dst), "%s/tree-dst", g_tmp);
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/a/b/c %s/empty && echo one > %s/1.txt && "
             "head -c 50000 /dev/urandom > %s/a/b/c/r.bin && echo deep > %s/a/b/d.txt",
             src, src, src, src, src);
    CHECK(system(cmd) == 0);
    CHECK_EQ(cellar_put_tree(&c, src, "/usr/tree", NULL), 0);
    CHECK_EQ(cellar_get_tree(&c, "/usr/tree", dst, NULL), 0);
    snprintf(cmd, sizeof(cmd), "diff -r %s %s", src, dst);
    CHECK(system(cmd) == 0);
    rm_rf(dst);
    rm_rf(src);
    CHECK_EQ(cellar_remove_tree(&c, "/usr/tree"), 0);
    CHECK_EQ(cellar_remove_tree(&c, "/usr/sz"), 0);
    cellar_close(&c);
}

typedef struct counts {
    unsigned copied, skipped, failed, dirs;
} counts_t;

static void count_file(void *ctx, const char *src, const char *dst, bool is_dir,
                       int result)
{
    counts_t *k = ctx;
    if (is_dir)
        k->dirs++;
    else if (result == CELLAR_SKIPPED)
        k->skipped++;
    else if (result == 0)
        k->copied++;
    else
        k->failed++;
}

static void test_tree_skip(const char *url)
{
    cellar_t c;
    cellar_init(&c, NULL);
    CHECK_EQ(cellar_connect(&c, url), 0);
    char src[PATH_MAX], cmd[4 * PATH_MAX];
    snprintf(src, sizeof(src), "%s/skip-src", g_tmp);
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/d && echo a > %s/a && echo b > %s/d/b", src,
             src, src);
    CHECK(system(cmd) == 0);
    counts_t k = {0};
    cellar_xfer_t x = {.skip_unchanged = true, .on_file = count_file, .on_file_ctx = &k};
    CHECK_EQ(cellar_put_tree(&c, src, "/usr/skip", &x), 0);
    CHECK(k.copied == 2 && k.skipped == 0 && k.failed == 0 && k.dirs == 2);
    k = (counts_t){0};
    CHECK_EQ(cellar_put_tree(&c, src, "/usr/skip", &x), 0);
    CHECK(k.copied == 0 && k.skipped == 2);
    snprintf(cmd, sizeof(cmd), "echo changed > %s/d/b", src);
    CHECK(system(cmd) == 0);
    k = (counts_t){0};
    CHECK_EQ(cellar_put_tree(&c, src, "/usr/skip", &x), 0);
    CHECK(k.copied == 1 && k.skipped == 1);
    CHECK_EQ(cellar_remove_tree(&c, "/usr/skip"), 0);
    rm_rf(src);
    cellar_close(&c);
}

/* ---- big and many ------------------------------------------------------------------ */
static void test_big(const char *url)
{
    cellar_t c;
    cellar_init(&c, NULL);
    CHECK_EQ(cellar_connect(&c, url), 0);
    size_t n = 16u << 20;
    uint8_t *data = malloc(n);
    fill_random(data, n, 16);
    double t0 = now_s();
    CHECK_EQ(cellar_put_mem(&c, data, n, "/usr/big16.bin", NULL), 0);
    double t1 = now_s();
    void *back = NULL;
    size_t bl = 0;
    CHECK_EQ(cellar_get_mem(&c, "/usr/big16.bin", n, &back, &bl), 0);
    double t2 = now_s();
    CHECK(bl == n && back && !memcmp(back, data, n));
    printf("16 MiB: put %.2f s, get %.2f s (ASan build, informational)\n", t1 - t0,
           t2 - t1);
    free(back);
    CHECK_EQ(cellar_remove(&c, "/usr/big16.bin"), 0);
    free(data);
    cellar_close(&c);
}

static void test_many(const char *url)
{
    cellar_t c;
    cellar_init(&c, NULL);
    CHECK_EQ(cellar_connect(&c, url), 0);
    CHECK_EQ(cellar_mkdir(&c, "/usr/many", false), 0);
    int fails = 0;
    for (int i = 0; i < 1000; i++) {
        char p[64], body[64];
        snprintf(p, sizeof(p), "/usr/many/f%04d.txt", i);
        int len = snprintf(body, sizeof(body), "file %d\n", i);
        if (cellar_put_mem(&c, body, (size_t)len, p, NULL) != 0)
            fails++;
    }
    CHECK_EQ(fails, 0);
    cellar_stat_t *all = NULL;
    CHECK_EQ(cellar_list_alloc(&c, "/usr/many", &all), 1000);
    bool *seen = calloc(1000, 1);
    int good = 0;
    for (int i = 0; all && i < 1000; i++) {
        int k = atoi(all[i].name + 1);
        if (k >= 0 && k < 1000 && !seen[k]) {
            seen[k] = true;
            good++;
        }
    }
    CHECK_EQ(good, 1000);
    free(seen);
    free(all);
    char dst[PATH_MAX];
    snprintf(dst, sizeof(dst), "%s/many", g_tmp);
    counts_t k = {0};
    cellar_xfer_t x = {.on_file = count_file, .on_file_ctx = &k};
    CHECK_EQ(cellar_get_tree(&c, "/usr/many", dst, &x), 0);
    CHECK_EQ(k.copied, 1000);
    int ok = 0;
    for (int i = 0; i < 1000; i += 1) {
        char p[PATH_MAX + 32], want[64];
        snprintf(p, sizeof(p), "%s/f%04d.txt", dst, i);
        int len = snprintf(want, sizeof(want), "file %d\n", i);
        size_t bl = 0;
        uint8_t *b = read_file(p, &bl);
        if (b && bl == (size_t)len && !memcmp(b, want, bl))
            ok++;
        free(b);
    }
    CHECK_EQ(ok, 1000);
    rm_rf(dst);
    CHECK_EQ(cellar_remove_tree(&c, "/usr/many"), 0);
    cellar_close(&c);
}

/* ---- concurrency ---------------------------------------------------------------------- */
/* The device keeps at most CFS_MAX_OPEN (64) files open per partition, all
 * connections together (docs/PROTOCOL.md, "Limits"): one more open gets
 * ENOMEM "too many files open on the device". The 32 clients below all
 * transfer at once (the gate only bounds them by that limit). */
enum { DEVICE_OPEN_FILES = 64 };

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int free;
} gate_t;

static gate_t g_gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void gate_enter(gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    while (g->free == 0)
        pthread_cond_wait(&g->cv, &g->mu);
    g->free--;
    pthread_mutex_unlock(&g->mu);
}

static void gate_leave(gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->free++;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

typedef struct worker {
    const char *url;
    int id;
    int err;
    bool ok;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    cellar_t c;
    cellar_init(&c, NULL);
    w->err = cellar_connect(&c, w->url);
    if (w->err < 0)
        return NULL;
    size_t n = 50000 + (size_t)w->id * 3001;
    uint8_t *data = malloc(n);
    w->ok = true;
    for (int round = 0; round < 2 && w->ok; round++) {
        fill_random(data, n, (uint64_t)w->id * 100 + (uint64_t)round);
        char p[64];
        snprintf(p, sizeof(p), "/usr/conc/w%02d.bin", w->id);
        gate_enter(&g_gate);
        int err = cellar_put_mem(&c, data, n, p, NULL);
        void *back = NULL;
        size_t bl = 0;
        if (err == 0)
            err = cellar_get_mem(&c, p, n, &back, &bl);
        gate_leave(&g_gate);
        if (err < 0 || bl != n || memcmp(back, data, n)) {
            w->ok = false;
            w->err = err;
        }
        free(back);
        if (cellar_ping(&c, "x", 1) != 0)
            w->ok = false;
    }
    free(data);
    cellar_close(&c);
    return NULL;
}

static void test_concurrent(const char *url)
{
    cellar_t c;
    cellar_init(&c, NULL);
    CHECK_EQ(cellar_connect(&c, url), 0);
    CHECK_EQ(cellar_mkdir(&c, "/usr/conc", true), 0);
    /* The device-wide limit itself: DEVICE_OPEN_FILES files open over
     * connections of 8 handles each, then one more open, from another
     * connection, is refused until one is closed. */
    {
        enum { PER = 8, NC = DEVICE_OPEN_FILES / PER, LIM = DEVICE_OPEN_FILES };
        cellar_t hc[NC + 1];
        cellar_fh_t fh[LIM + 1];
        char p[64];
        for (int k = 0; k <= NC; k++) {
            cellar_init(&hc[k], NULL);
            CHECK_EQ(cellar_connect(&hc[k], url), 0);
        }
        for (int i = 0; i < LIM; i++) {
            snprintf(p, sizeof(p), "/usr/conc/lim%02d", i);
            CHECK_EQ(cellar_file_open(&hc[i / PER], p, CELLAR_O_WRITE | CELLAR_O_CREATE,
                                      &fh[i], NULL), 0);
        }
        snprintf(p, sizeof(p), "/usr/conc/lim%02d", LIM);
        CHECK_EQ(cellar_file_open(&hc[NC], p, CELLAR_O_WRITE | CELLAR_O_CREATE, &fh[LIM],
                                  NULL),
                 CELLAR_ERR_NOMEM);
        CHECK(strstr(cellar_errmsg(&hc[NC]), "too many files open on the device") != NULL);
        CHECK_EQ(cellar_file_close(&hc[0], fh[0]), 0);
        CHECK_EQ(cellar_file_open(&hc[NC], p, CELLAR_O_WRITE | CELLAR_O_CREATE, &fh[LIM], NULL),
                 0);
        for (int i = 1; i <= LIM; i++)
            CHECK_EQ(cellar_file_close(&hc[i == LIM ? NC : i / PER], fh[i]), 0);
        for (int k = 0; k <= NC; k++)
            cellar_close(&hc[k]);
        for (int i = 0; i <= LIM; i++) {
            snprintf(p, sizeof(p), "/usr/conc/lim%02d", i);
            CHECK_EQ(cellar_remove(&c, p), 0);
        }
    }
    g_gate.free = DEVICE_OPEN_FILES;
    enum { N = 32 };
    pthread_t th[N];
    worker_t w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (worker_t){.url = url, .id = i};
        CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    int good = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (w[i].ok && w[i].err == 0)
            good++;
        else
            fprintf(stderr, "worker %d failed: %d (%s)\n", i, w[i].err,
                    cellar_strerror(w[i].err));
    }
    CHECK_EQ(good, N);
    /* every file intact and distinct */
    int intact = 0;
    for (int i = 0; i < N; i++) {
        size_t n = 50000 + (size_t)i * 3001;
        uint8_t *want = malloc(n);
        fill_random(want, n, (uint64_t)i * 100 + 1);
        char p[64];
        snprintf(p, sizeof(p), "/usr/conc/w%02d.bin", i);
        void *b = NULL;
        size_t bl = 0;
        if (cellar_get_mem(&c, p, n, &b, &bl) == 0 && bl == n && !memcmp(b, want, n))
            intact++;
        free(b);
        free(want);
    }
    CHECK_EQ(intact, N);
    CHECK_EQ(cellar_remove_tree(&c, "/usr/conc"), 0);
    cellar_close(&c);
}

/* ---- broken transfers --------------------------------------------------------------------- */
static void die_after(void *ctx, const char *path, uint64_t done, uint64_t total)
{
    if (done >= *(uint64_t *)ctx)
        raise(SIGKILL);
}

static void test_killed_clients(const char *url)
{
    cellar_t c;
    cellar_init(&c, NULL);
    CHECK_EQ(cellar_connect(&c, url), 0);
    /* An old version exists under the real name: it must survive intact. */
    size_t n = 1u << 20;
    uint8_t *old = malloc(n), *fresh = malloc(n);
    fill_random(old, n, 1);
    fill_random(fresh, n, 2);
    CHECK_EQ(cellar_put_mem(&c, old, n, "/usr/killed.bin", NULL), 0);
    const int kills = 20; /* more than the device's open-file table */
    int killed = 0;
    for (int i = 0; i < kills; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            cellar_t k;
            cellar_init(&k, NULL);
            if (cellar_connect(&k, url) < 0)
                _exit(3);
            uint64_t limit = 64 * 1024 + (uint64_t)i * 16384;
            cellar_xfer_t x = {.progress = die_after, .progress_ctx = &limit};
            /* The device may not have noticed the previous killed client
             * yet: its temporary is still open for writing (EBUSY). Try
             * again (bounded) until this one gets far enough to die. */
            for (int tries = 0; tries < 3000; tries++) {
                int rc = cellar_put_mem(&k, fresh, n, "/usr/killed.bin", &x);
                if (rc != CELLAR_ERR_BUSY)
                    break;
                usleep(10000);
            }
            _exit(4); /* should have been killed */
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
            killed++;
    }
    CHECK_EQ(killed, kills);
    /* The device closes the dead clients' handles: the temporary can be
     * removed (it is not held open) - poll while the device notices. */
    int err = -1;
    for (int tries = 0; tries < 6000; tries++) {
        err = cellar_remove(&c, "/usr/.killed.bin.cellar-tmp");
        if (err == 0 || err == CELLAR_ERR_NOENT)
            break;
        usleep(10000);
    }
    CHECK(err == 0 || err == CELLAR_ERR_NOENT);
    void *b = NULL;
    size_t bl = 0;
    CHECK_EQ(cellar_get_mem(&c, "/usr/killed.bin", n, &b, &bl), 0);
    CHECK(bl == n && b && !memcmp(b, old, n));
    free(b);
    /* A new file killed mid-way never appears under its real name. */
    pid_t pid = fork();
    if (pid == 0) {
        cellar_t k;
        cellar_init(&k, NULL);
        if (cellar_connect(&k, url) < 0)
            _exit(3);
        uint64_t limit = 200000;
        cellar_xfer_t x = {.progress = die_after, .progress_ctx = &limit};
        (void)cellar_put_mem(&k, fresh, n, "/usr/never.bin", &x);
        _exit(4);
    }
    waitpid(pid, NULL, 0);
    CHECK(!remote_exists(&c, "/usr/never.bin"));
    /* No handle leaked: as many files as the device allows open at once. */
    cellar_fh_t hs[8];
    int opened = 0;
    for (; opened < 8 && (uint32_t)opened < cellar_info(&c)->max_handles; opened++)
        if (cellar_file_open(&c, "/usr/killed.bin", CELLAR_O_READ, &hs[opened], NULL) < 0)
            break;
    CHECK(opened == 8 || (uint32_t)opened == cellar_info(&c)->max_handles);
    for (int i = 0; i < opened; i++)
        cellar_file_close(&c, hs[i]);
    /* and a fresh upload works */
    CHECK_EQ(cellar_put_mem(&c, fresh, n, "/usr/killed.bin", NULL), 0);
    CHECK_EQ(cellar_get_mem(&c, "/usr/killed.bin", n, &b, &bl), 0);
    CHECK(bl == n && b && !memcmp(b, fresh, n));
    free(b);
    for (int tries = 0; tries < 6000; tries++) {
        err = cellar_remove(&c, "/usr/.never.bin.cellar-tmp");
        if (err == 0 || err == CELLAR_ERR_NOENT)
            break;
        usleep(10000);
    }
    CHECK(err == 0 || err == CELLAR_ERR_NOENT);
    CHECK_EQ(cellar_remove(&c, "/usr/killed.bin"), 0);

    /* A socket closed in the middle of a Write frame. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    const char *colon = strrchr(url, ':');
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    CHECK(connect(s, (struct sockaddr *)&a, sizeof(a)) == 0);
    uint8_t frame[16] = {0xff, 0x3f, 0x00, 0x00, 0x08, 0x01}; /* 16 KiB claimed */
    CHECK(write(s, frame, sizeof(frame)) == (ssize_t)sizeof(frame));
    close(s);
    CHECK_EQ(cellar_ping(&c, "alive", 5), 0);
    free(old);
    free(fresh);
    cellar_close(&c);
}

/* ---- corruption in transit: a transport that flips one byte ---------------------------- */
typedef struct flip {
    int fd;
    uint64_t sent, recvd;
    int64_t flip_send_at, flip_recv_at; /* absolute stream offsets, -1 = off */
} flip_t;

static int flip_send(void *ctx, const void *buf, size_t len, uint32_t timeout_ms)
{
    flip_t *f = ctx;
    uint8_t tmp[65536];
    if (len > sizeof(tmp))
        len = sizeof(tmp);
    memcpy(tmp, buf, len);
    if (f->flip_send_at >= 0 && (uint64_t)f->flip_send_at >= f->sent &&
        (uint64_t)f->flip_send_at < f->sent + len) {
        tmp[f->flip_send_at - (int64_t)f->sent] ^= 0x01;
        f->flip_send_at = -1;
    }
    ssize_t n = send(f->fd, tmp, len, MSG_NOSIGNAL);
    if (n < 0)
        return -errno;
    f->sent += (uint64_t)n;
    return (int)n;
}

static int flip_recv(void *ctx, void *buf, size_t len, uint32_t timeout_ms)
{
    flip_t *f = ctx;
    struct pollfd p = {.fd = f->fd, .events = POLLIN};
    if (poll(&p, 1, (int)timeout_ms) == 0)
        return CELLAR_ERR_TIMEDOUT;
    ssize_t n = recv(f->fd, buf, len, 0);
    if (n < 0)
        return -errno;
    if (f->flip_recv_at >= 0 && (uint64_t)f->flip_recv_at >= f->recvd &&
        (uint64_t)f->flip_recv_at < f->recvd + (uint64_t)n) {
        ((uint8_t *)buf)[f->flip_recv_at - (int64_t)f->recvd] ^= 0x01;
        f->flip_recv_at = -1;
    }
    f->recvd += (uint64_t)n;
    return (int)n;
}

static void flip_close(void *ctx)
{
    close(((flip_t *)ctx)->fd);
}

static const cellar_transport_t flip_tp = {
    .name = "flip", .send = flip_send, .recv = flip_recv, .close = flip_close,
};

static void test_corruption(const char *url)
{
    const char *colon = strrchr(url, ':');
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)atoi(colon + 1))};
    flip_t f = {.fd = socket(AF_INET, SOCK_STREAM, 0), .flip_send_at = -1,
                .flip_recv_at = -1};
    CHECK(connect(f.fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    cellar_t c;
    cellar_init(&c, NULL);
    CHECK_EQ(cellar_connect_transport(&c, &flip_tp, &f), 0);
    size_t n = 100000;
    uint8_t *data = malloc(n);
    fill_random(data, n, 99);
    /* Upload: flip a byte deep inside the first Write's data. */
    f.flip_send_at = (int64_t)f.sent + 2000; /* Stat + Open frames are < 600 B */
    int err = cellar_put_mem(&c, data, n, "/usr/flip.bin", NULL);
    CHECK_EQ(err, CELLAR_ERR_BADMSG);
    CHECK(strstr(cellar_errmsg(&c), "SHA-256") != NULL);
    CHECK(!remote_exists(&c, "/usr/flip.bin"));
    CHECK(!remote_exists(&c, "/usr/.flip.bin.cellar-tmp"));
    CHECK_EQ(cellar_put_mem(&c, data, n, "/usr/flip.bin", NULL), 0);
    /* Download: flip a byte inside the first Read reply's data. */
    char local[PATH_MAX];
    snprintf(local, sizeof(local), "%s/flip.bin", g_tmp);
    f.flip_recv_at = (int64_t)f.recvd + 2000;
    err = cellar_get_file(&c, "/usr/flip.bin", local, NULL);
    CHECK_EQ(err, CELLAR_ERR_BADMSG);
    CHECK(access(local, F_OK) != 0); /* nothing under the real name */
    CHECK_EQ(cellar_get_file(&c, "/usr/flip.bin", local, NULL), 0);
    size_t bl = 0;
    uint8_t *b = read_file(local, &bl);
    CHECK(b && bl == n && !memcmp(b, data, n));
    free(b);
    unlink(local);
    CHECK_EQ(cellar_remove(&c, "/usr/flip.bin"), 0);

    /* Range mode (3 MiB, 1 MiB ranges set explicitly): a flip in the third range. */
    size_t big = 3u << 20;
    uint8_t *bd = malloc(big);
    fill_random(bd, big, 98);
    f.flip_send_at = (int64_t)f.sent + (int64_t)(2u << 20) + 300000;
    cellar_xfer_t xr = {.verify_range = 1u << 20};
    err = cellar_put_mem(&c, bd, big, "/usr/flip3.bin", &xr);
    CHECK_EQ(err, CELLAR_ERR_BADMSG);
    CHECK(strstr(cellar_errmsg(&c), "mismatch in bytes 2097152..3145728") != NULL);
    CHECK(!remote_exists(&c, "/usr/flip3.bin"));
    CHECK(!remote_exists(&c, "/usr/.flip3.bin.cellar-tmp"));
    CHECK_EQ(cellar_put_mem(&c, bd, big, "/usr/flip3.bin", NULL), 0);
    f.flip_recv_at = (int64_t)f.recvd + (int64_t)(1u << 20) + 200000;
    err = cellar_get_file(&c, "/usr/flip3.bin", local, &xr);
    CHECK_EQ(err, CELLAR_ERR_BADMSG);
    CHECK(strstr(cellar_errmsg(&c), "mismatch in bytes 1048576..2097152") != NULL);
    CHECK(access(local, F_OK) != 0);
    CHECK(cellar_connected(&c));
    void *m = NULL;
    size_t ml = 0;
    CHECK_EQ(cellar_get_mem(&c, "/usr/flip3.bin", big, &m, &ml), 0);
    CHECK(ml == big && m && !memcmp(m, bd, big));
    free(m);
    free(bd);
    CHECK_EQ(cellar_remove(&c, "/usr/flip3.bin"), 0);
    cellar_close(&c); /* closes f.fd through the transport */
    free(data);
}

/* ---- a full device ------------------------------------------------------------------------ */
static void test_full(void)
{
    daemon_t d;
    if (start_daemon(&d, "1M") != 0) {
        CHECK(!"cellard with 1 MiB flash started");
        stop_daemon(&d);
        return;
    }
    cellar_t c;
    cellar_init(&c, NULL);
    CHECK_EQ(cellar_connect(&c, d.url), 0);
    cellar_statfs_t before, after;
    CHECK_EQ(cellar_statfs(&c, "/usr", &before), 0);
    size_t n = 2u << 20;
    uint8_t *data = malloc(n);
    fill_random(data, n, 5);
    int err = cellar_put_mem(&c, data, n, "/usr/huge.bin", NULL);
    CHECK_EQ(err, CELLAR_ERR_NOSPC);
    CHECK(cellar_connected(&c));
    CHECK(!remote_exists(&c, "/usr/huge.bin"));
    CHECK(!remote_exists(&c, "/usr/.huge.bin.cellar-tmp"));
    CHECK_EQ(cellar_ping(&c, "still", 5), 0);
    CHECK_EQ(cellar_put_mem(&c, data, 10000, "/usr/small.bin", NULL), 0);
    void *b = NULL;
    size_t bl = 0;
    CHECK_EQ(cellar_get_mem(&c, "/usr/small.bin", 10000, &b, &bl), 0);
    CHECK(bl == 10000 && !memcmp(b, data, 10000));
    free(b);
    CHECK_EQ(cellar_statfs(&c, "/usr", &after), 0);
    CHECK_EQ(after.files, before.files + 1);
    /* Another client was never disturbed. */
    cellar_t c2;
    cellar_init(&c2, NULL);
    CHECK_EQ(cellar_connect(&c2, d.url), 0);
    CHECK_EQ(cellar_ping(&c2, NULL, 0), 0);
    cellar_close(&c2);
    cellar_close(&c);
    free(data);
    stop_daemon(&d);
}

/* ---- one bundle built once, pushed to two devices ----------------------------------- */
static void count_warn(void *ctx, const char *local, const char *why)
{
    (void)local;
    (void)why;
    (*(int *)ctx)++;
}

/* The digest of a device's /usr manifest, listed afresh. */
static int usr_digest(cellar_t *c, uint8_t out[CELLAR_SHA256_SIZE])
{
    cellar_mentry_t *m = NULL;
    size_t n = 0;
    int err = cellar_manifest_list(c, "/usr", &m, &n);
    if (err == 0)
        err = cellar_manifest_digest(m, n, out);
    free(m);
    return err;
}

/* One device's push of a shared bundle, on its own thread. */
typedef struct fleet_push {
    const cellar_bundle_t *b;
    const char *url;
    int connect_err, push_err;
    cellar_push_report_t rep;
} fleet_push_t;

static void *fleet_push_main(void *arg)
{
    fleet_push_t *f = arg;
    cellar_t c;
    cellar_init(&c, NULL);
    f->connect_err = cellar_connect(&c, f->url);
    f->push_err = f->connect_err ? 0 : cellar_bundle_push(&c, f->b, NULL, &f->rep);
    cellar_close(&c);
    return NULL;
}

static void test_bundle_fleet(void)
{
    daemon_t d[2];
    int started = 0;
    for (; started < 2; started++)
        if (start_daemon(&d[started], "8M") != 0)
            break;
    if (started < 2) {
        CHECK(!"two cellard for the bundle test started");
        for (int i = 0; i <= started && i < 2; i++)
            stop_daemon(&d[i]);
        return;
    }
    /* the local tree: 4 files (one empty), 2 directories, 1 symbolic link */
    char dir[PATH_MAX], p[PATH_MAX + 64];
    snprintf(dir, sizeof(dir), "%s/fleet", g_tmp);
    CHECK(mkdir(dir, 0755) == 0);
    snprintf(p, sizeof(p), "%s/sub", dir);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(p, sizeof(p), "%s/sub/deep", dir);
    CHECK(mkdir(p, 0755) == 0);
    static const struct { const char *name; size_t size; } files[] = {
        {"a.bin", 100000}, {"e", 0}, {"sub/b.txt", 17}, {"sub/deep/c.bin", 40000},
    };
    uint8_t *data[4];
    uint64_t total = 0;
    for (int i = 0; i < 4; i++) {
        data[i] = malloc(files[i].size + 1);
        fill_random(data[i], files[i].size, 100 + (uint64_t)i);
        snprintf(p, sizeof(p), "%s/%s", dir, files[i].name);
        CHECK(write_file(p, data[i], files[i].size) == 0);
        total += files[i].size;
    }
    snprintf(p, sizeof(p), "%s/link", dir);
    CHECK(symlink("a.bin", p) == 0);

    /* build once, with no connection */
    cellar_t c;
    cellar_init(&c, NULL);
    cellar_bundle_t *b = (cellar_bundle_t *)1;
    int warned = 0;
    CHECK_EQ(cellar_bundle_build(&c, dir, "/bak/x", NULL, NULL, &b), CELLAR_ERR_INVAL);
    CHECK(b == NULL);
    snprintf(p, sizeof(p), "%s/none", dir);
    CHECK_EQ(cellar_bundle_build(&c, p, "/usr/fleet", NULL, NULL, &b), -ENOENT);
    CHECK(b == NULL && !strcmp(cellar_errpath(&c), p));
    CHECK_EQ(cellar_bundle_build(NULL, dir, "/usr/fleet/", count_warn, &warned, &b), 0);
    CHECK(b != NULL);
    CHECK_EQ(warned, 1);
    CHECK_EQ(cellar_bundle_count(b), 4);
    CHECK_EQ(cellar_bundle_bytes(b), total);
    CHECK(cellar_bundle_entry(b, 4) == NULL);
    for (size_t i = 0; i < cellar_bundle_count(b); i++) {
        const cellar_push_entry_t *e = cellar_bundle_entry(b, i);
        char want[CELLAR_PATH_MAX + 1];
        uint8_t sha[CELLAR_SHA256_SIZE];
        snprintf(want, sizeof(want), "/usr/fleet/%s", files[i].name);
        CHECK(!strcmp(e->path, want)); /* sorted by device path */
        CHECK_EQ(e->size, files[i].size);
        cellar_sha256(data[i], files[i].size, sha);
        CHECK(!memcmp(e->sha256, sha, sizeof(sha)));
        CHECK(!e->remove && e->action == 0);
    }
    uint8_t id[CELLAR_SHA256_SIZE];
    cellar_bundle_id(b, id);

    /* pushing needs a connection and a bundle */
    cellar_push_report_t r[2];
    CHECK_EQ(cellar_bundle_push(&c, b, NULL, &r[0]), CELLAR_ERR_NOTCONN);
    cellar_push_report_free(&r[0]);

    /* push the same bundle to both devices */
    uint8_t dig[2][CELLAR_SHA256_SIZE];
    for (int k = 0; k < 2; k++) {
        CHECK_EQ(cellar_connect(&c, d[k].url), 0);
        CHECK_EQ(cellar_bundle_push(&c, NULL, NULL, &r[k]), CELLAR_ERR_INVAL);
        CHECK_EQ(cellar_bundle_push(&c, b, NULL, &r[k]), 0);
        CHECK(r[k].committed && r[k].have_digest);
        CHECK_EQ(r[k].nnew, 4);
        CHECK_EQ(r[k].nentries, 4);
        CHECK_EQ(r[k].nskipped_local, 1);
        CHECK_EQ(r[k].bundle_bytes, total);
        CHECK_EQ(r[k].bytes_sent, total);
        CHECK(!memcmp(r[k].bundle, id, sizeof(id)));
        CHECK_EQ(usr_digest(&c, dig[k]), 0);
        CHECK(!memcmp(dig[k], r[k].digest, sizeof(dig[k])));
        void *got = NULL;
        size_t gl = 0;
        CHECK_EQ(cellar_get_mem(&c, "/usr/fleet/sub/deep/c.bin", 1 << 20, &got, &gl), 0);
        CHECK(gl == files[3].size && !memcmp(got, data[3], gl));
        free(got);
        cellar_close(&c);
    }
    CHECK(!memcmp(dig[0], dig[1], sizeof(dig[0]))); /* the same manifest */
    CHECK(!memcmp(r[0].digest, r[1].digest, sizeof(r[0].digest)));
    for (int k = 0; k < 2; k++)
        cellar_push_report_free(&r[k]);
    /* the bundle is unchanged by its pushes */
    for (size_t i = 0; i < cellar_bundle_count(b); i++)
        CHECK(cellar_bundle_entry(b, i)->action == 0 && cellar_bundle_entry(b, i)->sent == 0);

    /* again: nothing to send; cellar_push of the tree names the same bundle */
    CHECK_EQ(cellar_connect(&c, d[0].url), 0);
    CHECK_EQ(cellar_bundle_push(&c, b, NULL, &r[0]), 0);
    CHECK_EQ(r[0].nunchanged, 4);
    CHECK_EQ(r[0].bytes_sent, 0);
    CHECK(!memcmp(r[0].digest, dig[0], sizeof(dig[0])));
    cellar_push_report_free(&r[0]);
    cellar_push_opts_t po = {.warn = count_warn, .warn_ctx = &warned};
    CHECK_EQ(cellar_push(&c, dir, "/usr/fleet", &po, &r[0]), 0);
    CHECK(!memcmp(r[0].bundle, id, sizeof(id)));
    CHECK_EQ(r[0].nunchanged, 4);
    CHECK_EQ(warned, 2);
    cellar_push_report_free(&r[0]);
    cellar_close(&c);

    /* a new build of the changed tree, pushed from two threads at once:
     * each push only reads the bundle */
    fill_random(data[0], files[0].size, 999);
    snprintf(p, sizeof(p), "%s/%s", dir, files[0].name);
    CHECK(write_file(p, data[0], files[0].size) == 0);
    cellar_bundle_t *b2 = NULL;
    CHECK_EQ(cellar_bundle_build(&c, dir, "/usr/fleet", NULL, NULL, &b2), 0);
    if (b2) {
        uint8_t id2[CELLAR_SHA256_SIZE];
        cellar_bundle_id(b2, id2);
        CHECK(memcmp(id2, id, sizeof(id)) != 0);
        fleet_push_t fp[2];
        pthread_t th[2];
        for (int k = 0; k < 2; k++) {
            memset(&fp[k], 0, sizeof(fp[k]));
            fp[k].b = b2;
            fp[k].url = d[k].url;
            CHECK(pthread_create(&th[k], NULL, fleet_push_main, &fp[k]) == 0);
        }
        for (int k = 0; k < 2; k++)
            pthread_join(th[k], NULL);
        for (int k = 0; k < 2; k++) {
            CHECK_EQ(fp[k].connect_err, 0);
            CHECK_EQ(fp[k].push_err, 0);
            CHECK(fp[k].rep.committed && fp[k].rep.have_digest);
            CHECK_EQ(fp[k].rep.nchanged, 1);
            CHECK_EQ(fp[k].rep.nunchanged, 3);
            CHECK_EQ(fp[k].rep.bytes_sent, files[0].size);
            CHECK(!memcmp(fp[k].rep.bundle, id2, sizeof(id2)));
        }
        CHECK(!memcmp(fp[0].rep.digest, fp[1].rep.digest, sizeof(fp[0].rep.digest)));
        CHECK(memcmp(fp[0].rep.digest, dig[0], sizeof(dig[0])) != 0);
        for (int k = 0; k < 2; k++)
            cellar_push_report_free(&fp[k].rep);
        cellar_bundle_free(b2);
    }

    cellar_bundle_free(b);
    cellar_bundle_free(NULL);
    for (int i = 0; i < 4; i++)
        free(data[i]);
    rm_rf(dir);
    for (int k = 0; k < 2; k++)
        stop_daemon(&d[k]);
}

/* ---- CLI helpers (clients/cli_util.c) --------------------------------------------- */
static void test_cli_helpers(void)
{
    static const struct { const char *in, *out; } paths[] = {
        {":", "/usr"}, {"", "/usr"}, {":main.py", "/usr/main.py"},
        {":lib/", "/usr/lib"}, {":/usr//lib/./x", "/usr/lib/x"}, {":/", "/"},
        {":/bak/a", "/bak/a"}, {":a/../b", "/usr/b"}, {":/../..", "/"},
        {"x.py", "/usr/x.py"}, {":..", "/"},
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        char out[CELLAR_PATH_MAX + 1] = "";
        CHECK_EQ(cli_devpath(paths[i].in, out), 0);
        if (strcmp(out, paths[i].out))
            fprintf(stderr, "cli_devpath(%s) = %s, want %s\n", paths[i].in, out,
                    paths[i].out);
        CHECK(!strcmp(out, paths[i].out));
    }
    char longp[600], out[CELLAR_PATH_MAX + 1];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = 0;
    CHECK_EQ(cli_devpath(longp, out), CELLAR_ERR_NAMETOOLONG);
    uint64_t v = 0;
    CHECK(cli_parse_size("4M", &v) == 0 && v == 4u << 20);
    CHECK(cli_parse_size("64MiB", &v) == 0 && v == 64u << 20);
    CHECK(cli_parse_size("512k", &v) == 0 && v == 512u << 10);
    CHECK(cli_parse_size("4096", &v) == 0 && v == 4096);
    CHECK(cli_parse_size("0x1000", &v) == 0 && v == 4096);
    CHECK(cli_parse_size("1G", &v) == 0 && v == 1u << 30);
    CHECK(cli_parse_size("12Q", &v) < 0);
    CHECK(cli_parse_size("-1", &v) < 0);
    CHECK(cli_parse_size("", &v) < 0);
    CHECK(cli_parse_size("4MX", &v) < 0);
    char h[32];
    CHECK(!strcmp(cli_human(1536, h, sizeof(h)), "1.5 KiB"));
    CHECK(!strcmp(cli_human(10, h, sizeof(h)), "10 B"));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *t = getenv("TMPDIR");
    snprintf(g_tmp, sizeof(g_tmp), "%s/test_libcellar-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    double t0 = now_s();
    test_cli_helpers();
    test_urls();
    daemon_t d;
    if (start_daemon(&d, "64M") != 0) {
        CHECK(!"cellard started");
        stop_daemon(&d);
        rm_rf(g_tmp);
        return check_summary("test_libcellar");
    }
    struct { const char *name; void (*fn)(const char *); } steps[] = {
        {"rpcs", test_rpcs},
        {"put/get", test_put_get},
        {"tree skip", test_tree_skip},
        {"16 MiB", test_big},
        {"1000 files", test_many},
        {"32 clients", test_concurrent},
        {"killed clients", test_killed_clients},
        {"corruption", test_corruption},
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        double s = now_s();
        steps[i].fn(d.url);
        printf("  %-16s %.2f s\n", steps[i].name, now_s() - s);
        fflush(stdout);
    }
    stop_daemon(&d);
    double s = now_s();
    test_full();
    printf("  %-16s %.2f s\n", "full device", now_s() - s);
    s = now_s();
    test_bundle_fleet();
    printf("  %-16s %.2f s\n", "bundle x2", now_s() - s);
    printf("  total            %.2f s\n", now_s() - t0);
    rm_rf(g_tmp);
    return check_summary("test_libcellar");
}
