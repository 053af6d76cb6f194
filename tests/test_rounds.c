/*
 * test_rounds.c - issue 11: the round trips of libcellar's helpers, counted
 * by the client's own transport (docs/PIPELINING.md). A round is counted
 * each time the library has to wait for an answer after sending something
 * since its last wait; reading answers that are already there is not a
 * wait. With Hello pipelined (cellar_config_t.hello_pipelined), a helper
 * whose requests do not depend on each other costs one round including
 * Hello. Checked here: tree listing (one round per level), hashes and
 * StatFs of many paths, unchanged tree copies both ways, an unchanged
 * push, removing a tree; and that the answers are right.
 *
 * Needs cellard: $CELLARD or build/san/cellard.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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

#include "cellar.h"
#include "check.h"

static char g_tmp[PATH_MAX];

/* ---- a TCP transport that counts rounds ----------------------------------------- */
typedef struct ctp {
    int fd;
    bool sent;      /* something sent since the last wait */
    unsigned rounds;
} ctp_t;

static int ctp_send(void *ctx, const void *buf, size_t len, uint32_t timeout_ms)
{
    ctp_t *t = ctx;
    (void)timeout_ms;
    ssize_t n = send(t->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0)
        return -errno;
    t->sent = true;
    return (int)n;
}

static int ctp_recv(void *ctx, void *buf, size_t len, uint32_t timeout_ms)
{
    ctp_t *t = ctx;
    struct pollfd p = {.fd = t->fd, .events = POLLIN};
    int r = poll(&p, 1, 0);
    if (r == 0) {
        if (timeout_ms == 0)
            return CELLAR_ERR_TIMEDOUT;
        if (t->sent) {
            t->rounds++;
            t->sent = false;
        }
        r = poll(&p, 1, (int)timeout_ms);
        if (r == 0)
            return CELLAR_ERR_TIMEDOUT;
    }
    if (r < 0)
        return -errno;
    ssize_t n = recv(t->fd, buf, len, 0);
    return n < 0 ? -errno : (int)n;
}

static void ctp_close(void *ctx)
{
    ctp_t *t = ctx;
    close(t->fd);
    t->fd = -1;
}

static const cellar_transport_t ctp_ops = {
    .name = "counting-tcp", .send = ctp_send, .recv = ctp_recv, .close = ctp_close,
};

static uint16_t g_port;

/* A fresh connection with Hello pipelined; t counts its rounds. */
static int conn(cellar_t *c, ctp_t *t)
{
    memset(t, 0, sizeof(*t));
    t->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(g_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (t->fd < 0 || connect(t->fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        return -1;
    int one = 1;
    setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    cellar_config_t cfg = {.hello_pipelined = true, .client_name = "test_rounds"};
    cellar_init(c, &cfg);
    return cellar_connect_transport(c, &ctp_ops, t);
}

/* ---- the daemon ------------------------------------------------------------------- */
static pid_t start_daemon(void)
{
    char flash[PATH_MAX + 16], log[PATH_MAX + 16];
    snprintf(flash, sizeof(flash), "%s/flash.img", g_tmp);
    snprintf(log, sizeof(log), "%s/cellard.log", g_tmp);
    const char *bin = getenv("CELLARD");
    if (!bin || !*bin)
        bin = "build/san/cellard";
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, bin, "--flash", flash, "--flash-size", "8M", "--listen",
              "tcp://127.0.0.1:0", "--idle-timeout", "0", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 600 && pid > 0; i++) { /* bounded: 30 s */
        FILE *f = fopen(log, "r");
        char line[512];
        while (f && fgets(line, sizeof(line), f)) {
            const char *p = strstr(line, "listening on tcp://127.0.0.1:");
            if (p)
                g_port = (uint16_t)atoi(p + strlen("listening on tcp://127.0.0.1:"));
        }
        if (f)
            fclose(f);
        if (g_port)
            return pid;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return -1;
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static void write_file(const char *path, size_t n, unsigned seed)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    for (size_t i = 0; i < n; i++)
        fputc((int)((i * 131u + seed * 7u) & 0xff), f);
    fclose(f);
}

static void count_each(void *ctx, size_t i, int err)
{
    (void)i;
    (void)err;
    (*(unsigned *)ctx)++;
}

static void record_each(void *ctx, size_t i, int err)
{
    ((int *)ctx)[i] = err;
}

static void test_rounds(void)
{
    char src[PATH_MAX + 8], sub[PATH_MAX + 16], back[PATH_MAX + 8], p[PATH_MAX + 64];
    snprintf(src, sizeof(src), "%s/src", g_tmp);
    snprintf(sub, sizeof(sub), "%s/sub", src);
    snprintf(back, sizeof(back), "%s/back", g_tmp);
    CHECK(mkdir(src, 0777) == 0 && mkdir(sub, 0777) == 0);
    for (unsigned i = 0; i < 50; i++) {
        snprintf(p, sizeof(p), "%s/f%02u", src, i);
        write_file(p, 1000 + i, i);
    }
    for (unsigned i = 0; i < 5; i++) {
        snprintf(p, sizeof(p), "%s/g%u", sub, i);
        write_file(p, 3000, 100 + i);
    }
    cellar_t c;
    ctp_t t;
    cellar_xfer_t x = {.skip_unchanged = true};

    /* a first copy: data (not counted), then the same again: one batch */
    CHECK_EQ(conn(&c, &t), 0);
    CHECK_EQ(cellar_put_tree(&c, src, "/usr/t", &x), 0);
    cellar_close(&c);
    CHECK_EQ(conn(&c, &t), 0);
    CHECK_EQ(cellar_put_tree(&c, src, "/usr/t", &x), 0);
    CHECK(t.rounds <= 1);
    printf("  unchanged put_tree of 55 files: %u round(s)\n", t.rounds);
    cellar_close(&c);

    /* the tree: two levels, two rounds; pre-order, everything there */
    CHECK_EQ(conn(&c, &t), 0);
    cellar_tree_t tr;
    CHECK_EQ(cellar_tree_list(&c, "/usr/t", 0, &tr), 0);
    CHECK(t.rounds <= 2);
    CHECK_EQ((int)tr.n, 56);
    CHECK(tr.root.type == CELLAR_TYPE_DIR);
    bool ordered = true;
    for (size_t i = 1; i < tr.n; i++)
        ordered = ordered && strcmp(tr.v[i - 1].path, tr.v[i].path) < 0;
    CHECK(ordered);
    CHECK(tr.n == 56 && !strcmp(tr.v[50].path, "/usr/t/sub") && tr.v[51].depth == 2);
    cellar_tree_free(&tr);
    cellar_close(&c);

    /* hashes of 50 paths, and StatFs of two: one round each with Hello */
    CHECK_EQ(conn(&c, &t), 0);
    const char *paths[51];
    char names[51][64];
    for (unsigned i = 0; i < 50; i++) {
        snprintf(names[i], sizeof(names[i]), "/usr/t/f%02u", i);
        paths[i] = names[i];
    }
    snprintf(names[50], sizeof(names[50]), "/usr/t/missing");
    paths[50] = names[50];
    uint8_t (*sha)[CELLAR_SHA256_SIZE] = calloc(51, CELLAR_SHA256_SIZE);
    uint64_t sizes[51];
    int errs[51];
    CHECK_EQ(cellar_hash_many(&c, 51, paths, sha, sizes, errs), CELLAR_ERR_NOENT);
    CHECK(t.rounds <= 1);
    uint8_t want[CELLAR_SHA256_SIZE];
    snprintf(p, sizeof(p), "%s/f07", src);
    CHECK_EQ(cellar_sha256_file(p, want), 0);
    CHECK(sha && !memcmp(sha[7], want, sizeof(want)) && sizes[7] == 1007 && errs[7] == 0);
    CHECK_EQ(errs[50], CELLAR_ERR_NOENT);
    free(sha);
    unsigned before = t.rounds;
    const char *parts[2] = {"/usr", "/bak"};
    cellar_statfs_t fs[2];
    int ferr[2];
    CHECK_EQ(cellar_statfs_many(&c, 2, parts, fs, ferr), 0);
    CHECK(t.rounds - before <= 1 && fs[0].total > 0 && fs[1].total > 0);
    cellar_close(&c);

    /* an unchanged download: the levels, then one batch of hashes */
    CHECK_EQ(conn(&c, &t), 0);
    CHECK_EQ(cellar_get_tree(&c, "/usr/t", back, &x), 0);
    cellar_close(&c);
    CHECK_EQ(conn(&c, &t), 0);
    CHECK_EQ(cellar_get_tree(&c, "/usr/t", back, &x), 0);
    CHECK(t.rounds <= 3);
    printf("  unchanged get_tree of 55 files: %u round(s)\n", t.rounds);
    snprintf(p, sizeof(p), "%s/sub/g3", back);
    uint8_t got[CELLAR_SHA256_SIZE];
    snprintf(names[0], sizeof(names[0]), "%s", "");
    CHECK_EQ(cellar_sha256_file(p, got), 0);
    snprintf(p, sizeof(p), "%s/g3", sub);
    CHECK_EQ(cellar_sha256_file(p, want), 0);
    CHECK(!memcmp(got, want, sizeof(got)));
    cellar_close(&c);

    /* push: the second, unchanged, in at most 3 rounds */
    cellar_push_report_t rep;
    CHECK_EQ(conn(&c, &t), 0);
    CHECK_EQ(cellar_push(&c, src, "/usr/p", NULL, &rep), 0);
    cellar_push_report_free(&rep);
    cellar_close(&c);
    CHECK_EQ(conn(&c, &t), 0);
    CHECK_EQ(cellar_push(&c, src, "/usr/p", NULL, &rep), 0);
    CHECK(t.rounds <= 3 && rep.nunchanged == 55 && rep.have_digest);
    printf("  unchanged push of 55 files: %u round(s)\n", t.rounds);
    cellar_push_report_free(&rep);
    cellar_close(&c);

    /* several paths at once: one round per batch (mkdir, stat, rename,
     * remove, rmdir); touch two per max_handles - 1 paths */
    CHECK_EQ(conn(&c, &t), 0);
    enum { NM = 20 };
    char dn[NM][32], fn[NM][40], gn[NM][40];
    const char *dv[NM], *fv[NM], *gv[NM];
    for (unsigned i = 0; i < NM; i++) {
        snprintf(dn[i], sizeof(dn[i]), "/usr/m/d%02u", i);
        snprintf(fn[i], sizeof(fn[i]), "/usr/m/d%02u/f", i);
        snprintf(gn[i], sizeof(gn[i]), "/usr/m/g%02u", i);
        dv[i] = dn[i];
        fv[i] = fn[i];
        gv[i] = gn[i];
    }
    unsigned calls = 0;
    CHECK_EQ(cellar_mkdir_many(&c, NM, dv, true, count_each, &calls), 0);
    CHECK(t.rounds <= 1 && calls == NM);
    before = t.rounds;
    CHECK_EQ(cellar_touch_many(&c, NM, fv, NULL, NULL), 0);
    uint32_t mh = cellar_info(&c)->max_handles;
    unsigned chunks = (NM + (mh - 1) - 1) / (mh - 1);
    CHECK(mh > 1 && t.rounds - before <= 2 * chunks + 1);
    printf("  touch of %u files: %u round(s), %u handles\n", NM, t.rounds - before, mh);
    before = t.rounds;
    cellar_stat_t sv[NM];
    CHECK_EQ(cellar_stat_many(&c, NM, fv, sv, NULL, NULL), 0);
    CHECK(t.rounds - before <= 1 && sv[7].type == CELLAR_TYPE_FILE && sv[7].size == 0);
    before = t.rounds;
    CHECK_EQ(cellar_rename_many(&c, NM, fv, gv, NULL, NULL), 0);
    CHECK(t.rounds - before <= 1);
    /* a path that fails does not stop the others: every answer reported */
    calls = 0;
    gv[3] = "/usr/m/missing";
    CHECK_EQ(cellar_remove_many(&c, NM, gv, count_each, &calls), CELLAR_ERR_NOENT);
    CHECK(calls == NM && !strcmp(cellar_errpath(&c), ":/usr/m/missing"));
    gv[3] = gn[3];
    CHECK_EQ(cellar_remove(&c, gn[3]), 0);
    before = t.rounds;
    CHECK_EQ(cellar_rmdir_many(&c, NM, dv, NULL, NULL), 0);
    CHECK(t.rounds - before <= 1);
    int serr[NM];
    calls = 0;
    CHECK_EQ(cellar_stat_many(&c, NM, gv, sv, record_each, serr), CELLAR_ERR_NOENT);
    CHECK(serr[0] == CELLAR_ERR_NOENT && serr[NM - 1] == CELLAR_ERR_NOENT);
    cellar_close(&c);

    /* removing the tree: two levels + the removals */
    CHECK_EQ(conn(&c, &t), 0);
    CHECK_EQ(cellar_remove_tree(&c, "/usr/t"), 0);
    CHECK(t.rounds <= 3);
    cellar_stat_t st;
    CHECK_EQ(cellar_stat(&c, "/usr/t", &st), CELLAR_ERR_NOENT);
    cellar_close(&c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *t = getenv("TMPDIR");
    snprintf(g_tmp, sizeof(g_tmp), "%s/test_rounds-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    pid_t pid = start_daemon();
    CHECK(pid > 0);
    if (pid > 0)
        test_rounds();
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_tmp);
    return check_summary("test_rounds");
}
