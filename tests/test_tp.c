/* test_tp.c - transport URLs, TCP listeners/connections (IPv4 and IPv6) and
 * the event loop driving an in-process service over loopback. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "codec.h"
#include "flash_sim.h"
#include "loop.h"
#include "svc_core.h"
#include "tp.h"

static void test_urls(void)
{
    tp_url_t u;
    char err[200];

    CHECK_EQ(tp_url_parse("tcp://127.0.0.1:7071", &u, err, sizeof(err)), 0);
    CHECK(strcmp(u.scheme, "tcp") == 0 && strcmp(u.host, "127.0.0.1") == 0);
    CHECK_EQ(u.port, 7071);
    CHECK_EQ(tp_url_parse("tcp://device.local", &u, err, sizeof(err)), 0);
    CHECK_EQ(u.port, 7070);
    CHECK(strcmp(u.host, "device.local") == 0);
    CHECK_EQ(tp_url_parse("tcp://[::1]:0", &u, err, sizeof(err)), 0);
    CHECK(strcmp(u.host, "::1") == 0);
    CHECK_EQ(u.port, 0);
    CHECK_EQ(tp_url_parse("tcp://[fe80::1]", &u, err, sizeof(err)), 0);
    CHECK_EQ(u.port, 7070);
    CHECK_EQ(tp_url_parse("tcp://127.0.0.1:7070/", &u, err, sizeof(err)), 0);
    CHECK_EQ(tp_url_parse("tls://example.org", &u, err, sizeof(err)), 0);
    CHECK_EQ(u.port, 7443);
    CHECK(strcmp(u.scheme, "tls") == 0);
    CHECK_EQ(tp_url_parse("uart:/dev/ttyUSB0?baud=921600", &u, err,
                          sizeof(err)), 0);
    CHECK(strcmp(u.scheme, "uart") == 0);
    CHECK(strcmp(u.path, "/dev/ttyUSB0") == 0);
    CHECK_EQ(u.baud, 921600);
    CHECK_EQ(tp_url_parse("uart:/dev/ttyS1", &u, err, sizeof(err)), 0);
    CHECK_EQ(u.baud, 115200);

    const char *bad[] = {
        "http://x", "tcp://", "tcp://:80", "tcp://::1:80", "tcp://h:99999",
        "tcp://h:-1", "tcp://h:8o", "tcp://[::1", "tcp://[::1]x", "uart:",
        "uart:/dev/x?baud=", "uart:/dev/x?speed=9", "tcp://a b:1", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = 0;
        int rc = tp_url_parse(bad[i], &u, err, sizeof(err));
        if (rc != -EINVAL || !strstr(err, "bad URL"))
            fprintf(stderr, "accepted bad URL \"%s\"\n", bad[i]);
        CHECK_EQ(rc, -EINVAL);
    }
    char hp[64];
    CHECK(strcmp(tp_format_hostport("::1", 5, hp, sizeof(hp)), "[::1]:5") == 0);
    CHECK(strcmp(tp_format_hostport("10.0.0.1", 7070, hp, sizeof(hp)),
                 "10.0.0.1:7070") == 0);
}

static int send_all(tp_conn_t *c, const uint8_t *p, size_t n)
{
    while (n) {
        int k = tp_send(c, p, n);
        if (k == TP_WANT_WRITE) {
            struct pollfd pf = { .fd = c->fd, .events = POLLOUT };
            poll(&pf, 1, 1000);
            continue;
        }
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Pump the loop until the client has one whole reply (or ~5 s). */
static int pump_reply(loop_t *lp, tp_conn_t *cl, cellar_Response *r)
{
    static uint8_t acc[CODEC_BUF_MIN];
    size_t have = 0;
    for (int i = 0; i < 2000; i++) {
        CHECK_EQ(loop_turn(lp, 5), 0);
        int k = tp_recv(cl, acc + have, sizeof(acc) - have);
        if (k == 0 || (k < 0 && k != TP_WANT_READ))
            return -1;
        if (k > 0)
            have += (size_t)k;
        if (have >= 4 && have >= 4 + codec_get_len(acc))
            return codec_decode_response(r, acc + 4, codec_get_len(acc), NULL);
    }
    return -2;
}

static void test_loop(const char *url_s)
{
    static svc_t svc;
    static cellar_Request rq;
    static cellar_Response rs;
    static uint8_t buf[CODEC_BUF_MIN];
    tp_url_t url;
    tp_listener_t *l = NULL;
    char err[300];

    CHECK_EQ(tp_url_parse(url_s, &url, err, sizeof(err)), 0);
    int rc = tp_tcp_listen(&url, &l, err, sizeof(err));
    if (rc && strchr(url_s, '[')) {
        printf("test_tp: no IPv6 loopback here (%s), skipped\n", err);
        return;
    }
    CHECK_EQ(rc, 0);
    if (rc)
        return;
    /* port 0 became a real port */
    tp_url_t bound;
    CHECK_EQ(tp_url_parse(l->url, &bound, err, sizeof(err)), 0);
    CHECK(bound.port != 0);
    CHECK(strcmp(bound.host, url.host) == 0);

    flash_sim_t *sim = flash_sim_new(&(flash_sim_config_t){ .block_count = 128 });
    svc_config_t cfg = { .dev = flash_sim_dev(sim), .provision = true };
    CHECK_EQ(svc_setup(&svc, &cfg), 0);
    loop_t *lp;
    CHECK_EQ(loop_new(&lp, &svc, &(loop_config_t){ .max_conns = 2 }), 0);
    CHECK_EQ(loop_add_listener(lp, l), 0);

    tp_conn_t *cl = NULL;
    CHECK_EQ(tp_tcp_connect(&bound, 2000, &cl, err, sizeof(err)), 0);
    CHECK(cl != NULL && strncmp(cl->peer, "tcp ", 4) == 0);
    if (!cl)
        goto out;

    /* a ping, split in two sends with loop turns in between */
    memset(&rq, 0, sizeof(rq));
    rq.id = 5;
    rq.which_body = cellar_Request_ping_tag;
    rq.body.ping.payload.size = 3;
    memcpy(rq.body.ping.payload.bytes, "abc", 3);
    int n = codec_encode_request(&rq, buf, sizeof(buf));
    CHECK_EQ(send_all(cl, buf, 3), 0);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(loop_turn(lp, 5), 0);
    CHECK_EQ(loop_conns(lp), 1);
    CHECK_EQ(send_all(cl, buf + 3, (size_t)n - 3), 0);
    CHECK_EQ(pump_reply(lp, cl, &rs), 0);
    CHECK_EQ(rs.id, 5);
    CHECK_EQ(rs.body.ping.payload.size, 3);

    /* a 16 KiB write and read back through the loop */
    memset(&rq, 0, sizeof(rq));
    rq.id = 6;
    rq.which_body = cellar_Request_open_tag;
    strcpy(rq.body.open.path, "/usr/t");
    rq.body.open.flags = cellar_OpenFlags_O_READ | cellar_OpenFlags_O_WRITE |
                         cellar_OpenFlags_O_CREATE;
    n = codec_encode_request(&rq, buf, sizeof(buf));
    CHECK_EQ(send_all(cl, buf, (size_t)n), 0);
    CHECK_EQ(pump_reply(lp, cl, &rs), 0);
    CHECK(!rs.has_error);
    uint32_t h = rs.body.open.handle;
    memset(&rq, 0, sizeof(rq));
    rq.id = 7;
    rq.which_body = cellar_Request_write_tag;
    rq.body.write.handle = h;
    rq.body.write.data.size = 16384;
    memset(rq.body.write.data.bytes, 0x3c, 16384);
    n = codec_encode_request(&rq, buf, sizeof(buf));
    CHECK_EQ(send_all(cl, buf, (size_t)n), 0);
    CHECK_EQ(pump_reply(lp, cl, &rs), 0);
    CHECK(!rs.has_error && rs.body.write.written == 16384);
    memset(&rq, 0, sizeof(rq));
    rq.id = 8;
    rq.which_body = cellar_Request_read_tag;
    rq.body.read.handle = h;
    rq.body.read.length = 16384;
    n = codec_encode_request(&rq, buf, sizeof(buf));
    CHECK_EQ(send_all(cl, buf, (size_t)n), 0);
    CHECK_EQ(pump_reply(lp, cl, &rs), 0);
    CHECK(!rs.has_error && rs.body.read.data.size == 16384 &&
          rs.body.read.data.bytes[16383] == 0x3c);

    /* over the connection limit (2): the third gets ENOMEM and is closed */
    tp_conn_t *c2 = NULL, *c3 = NULL;
    CHECK_EQ(tp_tcp_connect(&bound, 2000, &c2, err, sizeof(err)), 0);
    CHECK_EQ(tp_tcp_connect(&bound, 2000, &c3, err, sizeof(err)), 0);
    if (c2 && c3) {
        for (int i = 0; i < 10; i++)
            CHECK_EQ(loop_turn(lp, 5), 0);
        CHECK_EQ(loop_conns(lp), 2);
        CHECK_EQ(pump_reply(lp, c3, &rs), 0);
        CHECK(rs.has_error && rs.error.code == cellar_Code_ENOMEM);
        CHECK_EQ(rs.id, 0);
    }
    tp_close(c3);
    tp_close(c2);

    /* the peer goes away: the loop closes its side */
    tp_close(cl);
    for (int i = 0; i < 20 && loop_conns(lp) > 0; i++)
        CHECK_EQ(loop_turn(lp, 5), 0);
    CHECK_EQ(loop_conns(lp), 0);

    /* a stop flag ends loop_run */
    volatile sig_atomic_t stop = 1;
    CHECK_EQ(loop_run(lp, &stop), 0);
out:
    loop_free(lp);
    CHECK_EQ(svc_free(&svc), 0);
    flash_sim_free(sim);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_urls();
    test_loop("tcp://127.0.0.1:0");
    test_loop("tcp://[::1]:0");
    /* a port that is taken */
    tp_url_t u;
    tp_listener_t *a = NULL, *b = NULL;
    char err[300];
    CHECK_EQ(tp_url_parse("tcp://127.0.0.1:0", &u, err, sizeof(err)), 0);
    CHECK_EQ(tp_tcp_listen(&u, &a, err, sizeof(err)), 0);
    if (a) {
        CHECK_EQ(tp_url_parse(a->url, &u, err, sizeof(err)), 0);
        CHECK(tp_tcp_listen(&u, &b, err, sizeof(err)) < 0);
        CHECK(strstr(err, "cannot listen") != NULL);
        tp_listener_close(a);
    }
    /* nobody listening: refused, with a reason */
    tp_conn_t *c = NULL;
    CHECK(tp_tcp_connect(&u, 1000, &c, err, sizeof(err)) < 0);
    CHECK(c == NULL);
    return check_summary("tp");
}
