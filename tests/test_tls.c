/* test_tls.c - the TLS transport (issue 13): handshakes over the in-memory
 * pair (client certificate checked against the CA, none, another CA's,
 * expired, PSK right / wrong / unknown, device certificate against the wrong
 * CA, host name check, a resumed session in one round trip, data both
 * ways), the daemon's loop serving libcellar over TLS on an in-memory
 * pair (no descriptor: tls_ready), and over TCP with the loop and libcellar (files up and
 * down, resumption, bad TLS records and a client stalled mid-handshake
 * leave another client served; the staller is dropped after the handshake
 * timeout). Certificates are made with cellar pki's writer (cli_pki.c). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cellar.h"
#include "check.h"
#include "cli_pki.h"
#include "flash_sim.h"
#include "inproc.h"
#include "loop.h"
#include "svc_core.h"
#include "tls/tp_tls.h"
#include "tp.h"

static char dir[64], other[80];

static void path(char *out, size_t cap, const char *d, const char *f)
{
    snprintf(out, cap, "%s/%s", d, f);
}

static void make_pki(void)
{
    char err[300];
    strcpy(dir, "/tmp/cellar-test-tls-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    snprintf(other, sizeof(other), "%s/other", dir);
    CHECK_EQ(pki_issue(dir, "cellar-ca", PKI_CA, NULL, NULL, 30, err, sizeof(err)), 0);
    CHECK_EQ(pki_issue(dir, "dev1", PKI_DEVICE, NULL, NULL, 30, err, sizeof(err)), 0);
    CHECK_EQ(pki_issue(dir, "alice", PKI_CLIENT, NULL, NULL, 30, err, sizeof(err)), 0);
    CHECK_EQ(pki_issue(dir, "old", PKI_CLIENT, "20200101000000",
                       "20210101000000", 0, err, sizeof(err)), 0);
    CHECK_EQ(pki_issue(other, "evil-ca", PKI_CA, NULL, NULL, 30, err, sizeof(err)), 0);
    CHECK_EQ(pki_issue(other, "mallory", PKI_CLIENT, NULL, NULL, 30, err, sizeof(err)), 0);
    /* bad input changes nothing: an existing name is refused */
    CHECK_EQ(pki_issue(dir, "alice", PKI_CLIENT, NULL, NULL, 30, err, sizeof(err)), -EEXIST);
    CHECK_EQ(pki_issue(dir, "a/b", PKI_CLIENT, NULL, NULL, 30, err, sizeof(err)), -EINVAL);
    char line[200];
    CHECK_EQ(pki_psk_line("bob", line, sizeof(line)), 0);
    CHECK(strlen(line) == 4 + 64);
}

static void cleanup_pki(void)
{
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK_EQ(system(cmd), 0);
}

/* Server config: dev1, client CA, PSK identity "bob". */
static const char PSK_HEX[] = "00112233445566778899aabbccddeeff";
static int server_cfg(tp_tls_config_t *cfg, bool with_ca, uint32_t hs_ms)
{
    char crt[200], key[200], ca[200], pf[200], err[400];
    path(crt, sizeof(crt), dir, "dev1.crt");
    path(key, sizeof(key), dir, "dev1.key");
    path(ca, sizeof(ca), dir, "ca.crt");
    path(pf, sizeof(pf), dir, "psk.txt");
    FILE *f = fopen(pf, "w");
    fprintf(f, "# identities\nbob %s\n\ncarol 0102030405060708\n", PSK_HEX);
    fclose(f);
    tp_tls_files_t files = { .cert = crt, .key = key, .ca = with_ca ? ca : NULL,
                             .psk_file = pf };
    int rc = tp_tls_host_config(cfg, true, &files, err, sizeof(err));
    if (rc)
        fprintf(stderr, "server_cfg: %s\n", err);
    cfg->handshake_ms = hs_ms;
    return rc;
}

/* Client config: who = client cert name in d (NULL: none), ca_dir for the
 * CA file, psk "ID:HEX" or NULL. */
static int client_cfg(tp_tls_config_t *cfg, const char *d, const char *who,
                      const char *ca_dir, const char *psk)
{
    char crt[200], key[200], ca[200], err[400];
    snprintf(crt, sizeof(crt), "%s/%s.crt", d, who ? who : "");
    snprintf(key, sizeof(key), "%s/%s.key", d, who ? who : "");
    path(ca, sizeof(ca), ca_dir, "ca.crt");
    tp_tls_files_t files = { .cert = who ? crt : NULL, .key = who ? key : NULL,
                             .ca = psk ? NULL : ca, .psk = psk };
    int rc = tp_tls_host_config(cfg, false, &files, err, sizeof(err));
    if (rc)
        fprintf(stderr, "client_cfg: %s\n", err);
    return rc;
}

/* ---- in-memory pair: both ends in this thread ------------------------------------- */
typedef struct hs {
    tp_conn_t *c, *s;
    int crc, src;
} hs_t;

static void hs_run(hs_t *h, tp_tls_config_t *sc, tp_tls_config_t *cc,
                   const char *hostname)
{
    tp_conn_t *a, *b;
    CHECK_EQ(tp_mem_pair(0, &a, &b), 0);
    CHECK_EQ(tp_tls_wrap(cc, a, hostname, &h->c), 0);
    CHECK_EQ(tp_tls_wrap(sc, b, NULL, &h->s), 0);
    h->crc = h->src = TP_WANT_READ;
    for (int i = 0; i < 100; i++) {
        bool cw = h->crc == TP_WANT_READ || h->crc == TP_WANT_WRITE;
        bool sw = h->src == TP_WANT_READ || h->src == TP_WANT_WRITE;
        if (!cw && !sw)
            break;
        if (cw)
            h->crc = tp_handshake(h->c);
        if (sw)
            h->src = tp_handshake(h->s);
        /* one side failed and the other waits for it: done */
        if ((h->crc < 0 && h->crc != TP_WANT_READ && h->crc != TP_WANT_WRITE &&
             sw && i > 20) ||
            (h->src < 0 && h->src != TP_WANT_READ && h->src != TP_WANT_WRITE &&
             cw && i > 20))
            break;
    }
}

static void hs_close(hs_t *h)
{
    tp_close(h->c);
    tp_close(h->s);
}

static void test_mem(void)
{
    static tp_tls_config_t sc, cc, c2;
    CHECK_EQ(server_cfg(&sc, true, 0), 0);
    CHECK_EQ(client_cfg(&cc, dir, "alice", dir, NULL), 0);
    hs_t h;

    /* a full handshake: mutual authentication, 2 round trips */
    hs_run(&h, &sc, &cc, NULL);
    CHECK_EQ(h.crc, 0);
    CHECK_EQ(h.src, 0);
    CHECK(strcmp(tp_identity(h.s), "alice") == 0);
    tp_tls_stats_t st = tp_tls_stats(h.c);
    CHECK_EQ(st.round_trips, 2);
    CHECK(!st.resumed && !st.psk);
    CHECK(st.suite && strstr(st.suite, "ECDHE-ECDSA-WITH-CHACHA20") != NULL);
    CHECK(st.hs_bytes_out > 300 && st.hs_bytes_in > 500);
    CHECK(st.hs_bytes_out + st.hs_bytes_in < 4096); /* P-256 certificates */
    printf("full handshake: %u bytes out, %u in, %u round trips, %s\n",
           st.hs_bytes_out, st.hs_bytes_in, st.round_trips, st.suite);
    /* data both ways, more than one record */
    static uint8_t big[100000], back[100000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + (i >> 8));
    size_t sent = 0, got = 0;
    for (int i = 0; i < 1000 && got < sizeof(big); i++) {
        if (sent < sizeof(big)) {
            int n = tp_send(h.c, big + sent, sizeof(big) - sent);
            if (n > 0)
                sent += (size_t)n;
            else
                CHECK(n == TP_WANT_WRITE || n == TP_WANT_READ);
        }
        int n = tp_recv(h.s, back + got, sizeof(back) - got);
        if (n > 0)
            got += (size_t)n;
        else
            CHECK(n == TP_WANT_READ);
    }
    CHECK_EQ(got, sizeof(big));
    CHECK(memcmp(big, back, sizeof(big)) == 0);
    CHECK(tp_send(h.s, "pong", 4) == 4);
    char pong[8];
    CHECK_EQ(tp_recv(h.c, pong, sizeof(pong)), 4);
    hs_close(&h);

    /* resumed from the ticket: one round trip, same identity */
    hs_run(&h, &sc, &cc, NULL);
    CHECK_EQ(h.crc, 0);
    CHECK_EQ(h.src, 0);
    st = tp_tls_stats(h.c);
    CHECK(st.resumed);
    CHECK_EQ(st.round_trips, 1);
    CHECK(tp_tls_stats(h.s).resumed);
    CHECK(strcmp(tp_identity(h.s), "alice") == 0);
    /* the device sends no certificate again: under 300 bytes back (the
     * ticket the client sends carries the session, up to about 1 KB) */
    CHECK(st.hs_bytes_in < 300);
    CHECK(st.hs_bytes_out < 1200);
    printf("resumed handshake: %u bytes out, %u in, %u round trip\n",
           st.hs_bytes_out, st.hs_bytes_in, st.round_trips);
    hs_close(&h);
    /* the saved session survives a save/load (a new process) */
    static uint8_t sess[2048];
    int sl = tp_tls_session_save(&cc, sess, sizeof(sess));
    CHECK(sl > 0);
    CHECK_EQ(client_cfg(&c2, dir, "alice", dir, NULL), 0);
    CHECK_EQ(tp_tls_session_load(&c2, sess, (size_t)sl), 0);
    hs_run(&h, &sc, &c2, NULL);
    CHECK_EQ(h.crc, 0);
    CHECK_EQ(tp_tls_stats(h.c).round_trips, 1);
    hs_close(&h);
    tp_tls_config_free(&c2);
    tp_tls_config_free(&cc);

    /* the host name: right CN passes, another fails on the client */
    CHECK_EQ(client_cfg(&cc, dir, "alice", dir, NULL), 0);
    cc.no_resume = true;
    hs_run(&h, &sc, &cc, "dev1");
    CHECK_EQ(h.crc, 0);
    hs_close(&h);
    hs_run(&h, &sc, &cc, "dev2.example");
    CHECK_EQ(h.crc, -EACCES);
    CHECK(strstr(tp_tls_error(h.c), "name") != NULL);
    CHECK(h.src != 0);
    hs_close(&h);
    tp_tls_config_free(&cc);

    /* no client certificate */
    CHECK_EQ(client_cfg(&cc, dir, NULL, dir, NULL), 0);
    hs_run(&h, &sc, &cc, NULL);
    CHECK(h.crc != 0);
    CHECK_EQ(h.src, -EACCES);
    CHECK(strcmp(tp_identity(h.s), TP_ANONYMOUS) == 0);
    printf("no certificate: server \"%s\", client \"%s\"\n",
           tp_tls_error(h.s), tp_tls_error(h.c));
    hs_close(&h);
    tp_tls_config_free(&cc);

    /* a certificate of another CA */
    CHECK_EQ(client_cfg(&cc, other, "mallory", dir, NULL), 0);
    hs_run(&h, &sc, &cc, NULL);
    CHECK(h.crc != 0);
    CHECK_EQ(h.src, -EACCES);
    CHECK(strstr(tp_tls_error(h.s), "not signed by the trusted CA") != NULL);
    hs_close(&h);
    tp_tls_config_free(&cc);

    /* an expired certificate */
    CHECK_EQ(client_cfg(&cc, dir, "old", dir, NULL), 0);
    hs_run(&h, &sc, &cc, NULL);
    CHECK(h.crc != 0);
    CHECK_EQ(h.src, -EACCES);
    CHECK(strstr(tp_tls_error(h.s), "expired") != NULL);
    hs_close(&h);
    tp_tls_config_free(&cc);

    /* the client trusts another CA: the device certificate is refused */
    CHECK_EQ(client_cfg(&cc, dir, "alice", other, NULL), 0);
    hs_run(&h, &sc, &cc, NULL);
    CHECK_EQ(h.crc, -EACCES);
    CHECK(strstr(tp_tls_error(h.c), "not signed by the trusted CA") != NULL);
    CHECK(h.src != 0);
    hs_close(&h);
    tp_tls_config_free(&cc);

    /* PSK: right, wrong key, unknown identity */
    char psk[100];
    snprintf(psk, sizeof(psk), "bob:%s", PSK_HEX);
    CHECK_EQ(client_cfg(&cc, dir, NULL, dir, psk), 0);
    hs_run(&h, &sc, &cc, NULL);
    CHECK_EQ(h.crc, 0);
    CHECK_EQ(h.src, 0);
    CHECK(strcmp(tp_identity(h.s), "bob") == 0);
    st = tp_tls_stats(h.c);
    CHECK(st.psk);
    CHECK_EQ(st.round_trips, 2);
    CHECK(st.hs_bytes_out + st.hs_bytes_in < 1000); /* no certificates */
    printf("PSK handshake: %u bytes out, %u in, %u round trips, %s\n",
           st.hs_bytes_out, st.hs_bytes_in, st.round_trips, st.suite);
    hs_close(&h);
    tp_tls_config_free(&cc);
    CHECK_EQ(client_cfg(&cc, dir, NULL, dir,
                        "bob:00112233445566778899aabbccddeefe"), 0);
    hs_run(&h, &sc, &cc, NULL);
    CHECK(h.crc != 0);
    CHECK(h.src != 0);
    CHECK(strcmp(tp_identity(h.s), TP_ANONYMOUS) == 0);
    hs_close(&h);
    tp_tls_config_free(&cc);
    CHECK_EQ(client_cfg(&cc, dir, NULL, dir, "eve:0011"), 0);
    hs_run(&h, &sc, &cc, NULL);
    CHECK(h.crc != 0);
    CHECK_EQ(h.src, -EACCES);
    CHECK(strstr(tp_tls_error(h.s), "unknown PSK identity") != NULL);
    hs_close(&h);
    tp_tls_config_free(&cc);

    /* bad client options are refused before any connection */
    char err[300];
    tp_tls_files_t bad = { .psk = "nocolon" };
    CHECK_EQ(tp_tls_host_config(&cc, false, &bad, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "IDENTITY:HEXKEY") != NULL);
    tp_tls_files_t none = { 0 };
    CHECK_EQ(tp_tls_host_config(&cc, false, &none, err, sizeof(err)), -EINVAL);
    tp_tls_files_t half = { .cert = "x.crt" };
    CHECK_EQ(tp_tls_host_config(&cc, true, &half, err, sizeof(err)), -EINVAL);

    /* a server without a client CA: anonymous, certificate or not */
    static tp_tls_config_t open_sc;
    CHECK_EQ(server_cfg(&open_sc, false, 0), 0);
    CHECK_EQ(client_cfg(&cc, dir, NULL, dir, NULL), 0);
    hs_run(&h, &open_sc, &cc, NULL);
    CHECK_EQ(h.crc, 0);
    CHECK_EQ(h.src, 0);
    CHECK(strcmp(tp_identity(h.s), TP_ANONYMOUS) == 0);
    hs_close(&h);
    tp_tls_config_free(&cc);
    tp_tls_config_free(&open_sc);

    /* a stalled handshake times out on its deadline */
    static tp_tls_config_t slow;
    CHECK_EQ(server_cfg(&slow, true, 50), 0);
    tp_conn_t *a, *b, *s;
    CHECK_EQ(tp_mem_pair(0, &a, &b), 0);
    CHECK_EQ(tp_tls_wrap(&slow, b, NULL, &s), 0);
    CHECK_EQ(tp_handshake(s), TP_WANT_READ);
    CHECK(s->deadline_ms != 0);
    CHECK_EQ(tp_on_timer(s, s->deadline_ms - 1), 0);
    CHECK_EQ(tp_on_timer(s, s->deadline_ms), -ETIMEDOUT);
    tp_close(s);
    tp_close(a);
    tp_tls_config_free(&slow);
    tp_tls_config_free(&sc);
}

/* ---- over TCP: the daemon's loop in a thread, libcellar in this one -------------- */
/* The server's TLS log lines (from the loop's thread; read after join). */
static char tls_log[8192];
static size_t tls_log_len;
static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    size_t l = strlen(line);
    if (tls_log_len + l + 2 < sizeof(tls_log)) {
        memcpy(tls_log + tls_log_len, line, l);
        tls_log_len += l;
        tls_log[tls_log_len++] = '\n';
        tls_log[tls_log_len] = 0;
    }
}

typedef struct srv {
    flash_sim_t *sim;
    svc_t svc;
    loop_t *lp;
    tp_tls_config_t tls;
    volatile sig_atomic_t stop;
    pthread_t th;
    char url[300];
} srv_t;

static void *srv_main(void *arg)
{
    srv_t *s = arg;
    (void)loop_run(s->lp, &s->stop);
    return NULL;
}

static void srv_up(srv_t *s)
{
    s->sim = flash_sim_new(&(flash_sim_config_t){ .block_count = 256 });
    svc_config_t cfg = { .dev = flash_sim_dev(s->sim), .provision = true };
    CHECK_EQ(svc_setup(&s->svc, &cfg), 0);
    CHECK_EQ(loop_new(&s->lp, &s->svc, NULL), 0);
    CHECK_EQ(server_cfg(&s->tls, true, 300), 0);
    s->tls.log = log_line;
    tp_url_t u;
    tp_listener_t *l;
    char err[300];
    CHECK_EQ(tp_url_parse("tls://127.0.0.1:0", &u, err, sizeof(err)), 0);
    CHECK_EQ(tp_tls_listen(&u, &s->tls, &l, err, sizeof(err)), 0);
    CHECK(strncmp(l->url, "tls://127.0.0.1:", 16) == 0);
    snprintf(s->url, sizeof(s->url), "%s", l->url);
    CHECK_EQ(loop_add_listener(s->lp, l), 0);
    CHECK_EQ(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_down(srv_t *s)
{
    s->stop = 1;
    pthread_join(s->th, NULL);
    loop_free(s->lp);
    CHECK_EQ(svc_free(&s->svc), 0);
    flash_sim_free(s->sim);
    tp_tls_config_free(&s->tls);
}

static int raw_connect(const char *url)
{
    tp_url_t u;
    tp_conn_t *c;
    char err[300];
    if (tp_url_parse(url, &u, err, sizeof(err)))
        return -1;
    strcpy(u.scheme, "tcp");
    if (tp_tcp_connect(&u, 2000, &c, err, sizeof(err)))
        return -1;
    int fd = dup(c->fd);
    tp_close(c);
    return fd;
}

/* Wait (bounded) for the server to close fd: true on end of stream. */
static bool closed_by_peer(int fd)
{
    for (int i = 0; i < 100; i++) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 100) <= 0)
            continue;
        char b[512];
        ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
    }
    return false;
}

static void served(const char *url, const char *who)
{
    char crt[200], key[200], ca[200];
    path(crt, sizeof(crt), dir, "alice.crt");
    path(key, sizeof(key), dir, "alice.key");
    path(ca, sizeof(ca), dir, "ca.crt");
    cellar_config_t cfg = { .tls_cert = crt, .tls_key = key, .tls_ca = ca,
                            .tls_psk = "" };
    cellar_t c;
    cellar_init(&c, &cfg);
    CHECK_EQ(cellar_connect(&c, url), 0);
    cellar_stat_t st;
    CHECK_EQ(cellar_stat(&c, "/usr/nope", &st), CELLAR_ERR_NOENT);
    cellar_close(&c);
    (void)who;
}

static void test_tcp(void)
{
    static srv_t s;
    srv_up(&s);
    char crt[200], key[200], ca[200];
    path(crt, sizeof(crt), dir, "alice.crt");
    path(key, sizeof(key), dir, "alice.key");
    path(ca, sizeof(ca), dir, "ca.crt");
    cellar_config_t cfg = { .tls_cert = crt, .tls_key = key, .tls_ca = ca,
                            .tls_psk = "" };
    cellar_t c;
    cellar_init(&c, &cfg);
    CHECK_EQ(cellar_connect(&c, s.url), 0);
    cellar_tls_info_t ti;
    CHECK_EQ(cellar_tls_info(&c, &ti), 0);
    CHECK(ti.tls && !ti.resumed && ti.round_trips == 2);
    size_t n = 300000;
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 13 + (i >> 10));
    CHECK_EQ(cellar_put_mem(&c, data, n, "/usr/tls.bin", NULL), 0);
    cellar_close(&c);
    /* again: resumed in one round trip, the file is there */
    CHECK_EQ(cellar_connect(&c, s.url), 0);
    CHECK_EQ(cellar_tls_info(&c, &ti), 0);
    CHECK(ti.resumed);
    CHECK_EQ(ti.round_trips, 1);
    void *back = NULL;
    size_t bl = 0;
    CHECK_EQ(cellar_get_mem(&c, "/usr/tls.bin", n, &back, &bl), 0);
    CHECK(back && bl == n && memcmp(back, data, n) == 0);
    free(back);
    free(data);

    /* a stalled client (half a record header) and one sending garbage */
    int stall = raw_connect(s.url);
    CHECK(stall >= 0);
    CHECK_EQ(send(stall, "\x16\x03", 2, MSG_NOSIGNAL), 2);
    int junk = raw_connect(s.url);
    CHECK(junk >= 0);
    static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK_EQ(send(junk, http, sizeof(http) - 1, MSG_NOSIGNAL),
             (ssize_t)sizeof(http) - 1);
    /* a record with a bad MAC inside an established session: a fake
     * application-data record on a fresh handshake's socket is refused */
    int bad = raw_connect(s.url);
    CHECK(bad >= 0);
    uint8_t rec[5 + 64];
    memset(rec, 0xA5, sizeof(rec));
    rec[0] = 0x17; rec[1] = 3; rec[2] = 3; rec[3] = 0; rec[4] = 64;
    CHECK_EQ(send(bad, rec, sizeof(rec), MSG_NOSIGNAL), (ssize_t)sizeof(rec));
    CHECK(closed_by_peer(junk));
    CHECK(closed_by_peer(bad));
    /* the established client is served meanwhile, and a new one */
    cellar_stat_t st;
    CHECK_EQ(cellar_stat(&c, "/usr/tls.bin", &st), 0);
    CHECK_EQ(st.size, n);
    served(s.url, "alice");
    /* the staller goes after the 300 ms handshake timeout */
    CHECK(closed_by_peer(stall));
    CHECK_EQ(cellar_stat(&c, "/usr/tls.bin", &st), 0);
    close(stall);
    close(junk);
    close(bad);
    cellar_close(&c);

    /* libcellar's refusals: no CA given, a wrong PSK */
    cellar_config_t none = { .tls_cert = "", .tls_key = "", .tls_ca = "",
                             .tls_psk = "" };
    cellar_init(&c, &none);
    CHECK_EQ(cellar_connect(&c, s.url), CELLAR_ERR_INVAL);
    CHECK(strstr(cellar_errmsg(&c), "CA") != NULL);
    cellar_close(&c);
    cellar_config_t wrong = { .tls_cert = "", .tls_key = "", .tls_ca = "",
                              .tls_psk = "bob:0102" };
    cellar_init(&c, &wrong);
    int rc = cellar_connect(&c, s.url);
    CHECK(rc == CELLAR_ERR_ACCES || rc == CELLAR_ERR_CONNRESET);
    printf("wrong PSK: %s\n", cellar_errmsg(&c));
    cellar_close(&c);
    char psk[100];
    snprintf(psk, sizeof(psk), "bob:%s", PSK_HEX);
    cellar_config_t good = { .tls_cert = "", .tls_key = "", .tls_ca = "",
                             .tls_psk = psk };
    cellar_init(&c, &good);
    CHECK_EQ(cellar_connect(&c, s.url), 0);
    CHECK_EQ(cellar_tls_info(&c, &ti), 0);
    CHECK(ti.psk);
    cellar_close(&c);
    srv_down(&s);
    /* every handshake counted and logged: 4 good ones (alice full and
     * resumed, served()'s new handle, bob's PSK), the staller timed out,
     * junk, the bad record and the wrong PSK failed */
    CHECK_EQ(s.tls.handshakes_ok, 4);
    CHECK_EQ(s.tls.handshakes_resumed, 1);
    CHECK_EQ(s.tls.handshakes_timed_out, 1);
    CHECK_EQ(s.tls.handshakes_failed, 3);
    CHECK(strstr(tls_log, "TLS as alice (resumed)") != NULL);
    CHECK(strstr(tls_log, "TLS as bob") != NULL);
    CHECK(strstr(tls_log, "TLS handshake timed out") != NULL);
    CHECK(strstr(tls_log, "TLS handshake failed") != NULL);
    printf("%s", tls_log);
}

/* ---- the loop over an in-memory pair (fd -1: tls_ready) ---------------------------- */
static void test_loop_mem(void)
{
    static const cellar_transport_t inproc_tp = {
        .name = "tls-mem", .send = inproc_send, .recv = inproc_recv,
        .close = inproc_close,
    };
    static tp_tls_config_t sc, cc;
    CHECK_EQ(server_cfg(&sc, true, 0), 0);
    CHECK_EQ(client_cfg(&cc, dir, "alice", dir, NULL), 0);
    flash_sim_t *sim = flash_sim_new(&(flash_sim_config_t){ .block_count = 128 });
    static svc_t svc;
    svc_config_t scfg = { .dev = flash_sim_dev(sim), .provision = true };
    CHECK_EQ(svc_setup(&svc, &scfg), 0);
    loop_t *lp;
    CHECK_EQ(loop_new(&lp, &svc, NULL), 0);
    tp_conn_t *a, *b, *srv, *cl;
    CHECK_EQ(tp_mem_pair(3000, &a, &b), 0); /* small: partial records */
    CHECK_EQ(tp_tls_wrap(&sc, b, NULL, &srv), 0);
    CHECK_EQ(srv->fd, -1);
    CHECK_EQ(loop_add_conn(lp, srv), 0);
    CHECK_EQ(tp_tls_wrap(&cc, a, NULL, &cl), 0);
    int rc = TP_WANT_READ;
    for (int i = 0; i < 1000 && (rc == TP_WANT_READ || rc == TP_WANT_WRITE); i++) {
        rc = tp_handshake(cl);
        CHECK_EQ(loop_turn(lp, 0), 0);
    }
    CHECK_EQ(rc, 0);
    inproc_t ip = { .c = cl, .lp = lp };
    cellar_t c;
    cellar_init(&c, NULL);
    CHECK_EQ(cellar_connect_transport(&c, &inproc_tp, &ip), 0);
    size_t n = 150000;
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 29 + (i >> 11));
    CHECK_EQ(cellar_put_mem(&c, data, n, "/usr/mem.bin", NULL), 0);
    void *back = NULL;
    size_t bl = 0;
    CHECK_EQ(cellar_get_mem(&c, "/usr/mem.bin", n, &back, &bl), 0);
    CHECK(back && bl == n && memcmp(back, data, n) == 0);
    free(back);
    free(data);
    cellar_close(&c);
    for (int i = 0; i < 20 && loop_conns(lp) > 0; i++)
        CHECK_EQ(loop_turn(lp, 0), 0);
    CHECK_EQ(loop_conns(lp), 0);
    loop_free(lp);
    CHECK_EQ(svc_free(&svc), 0);
    flash_sim_free(sim);
    tp_tls_config_free(&cc);
    tp_tls_config_free(&sc);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    make_pki();
    test_mem();
    test_loop_mem();
    test_tcp();
    cleanup_pki();
    return check_summary("test_tls");
}
