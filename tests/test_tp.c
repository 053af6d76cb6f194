/* test_tp.c - transport URLs, TCP listeners/connections (IPv4 and IPv6),
 * the in-memory pair, the event loop driving an in-process service over
 * loopback and over in-memory pairs (handshake, deadline, stacked
 * transport), and libcellar over an in-memory pair. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cellar.h"
#include "check.h"
#include "codec.h"
#include "flash_sim.h"
#include "inproc.h"
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
    /* one syntax with libcellar: no scheme means tcp */
    CHECK_EQ(tp_url_parse("localhost:9", &u, err, sizeof(err)), 0);
    CHECK(strcmp(u.scheme, "tcp") == 0 && strcmp(u.host, "localhost") == 0);
    CHECK_EQ(u.port, 9);
    CHECK_EQ(tp_url_parse("uart:///dev/ttyS2", &u, err, sizeof(err)), 0);
    CHECK(strcmp(u.path, "/dev/ttyS2") == 0);
    CHECK_EQ(tp_url_parse("[::1]:7", &u, err, sizeof(err)), 0);
    CHECK(strcmp(u.host, "::1") == 0 && u.port == 7);
    /* port 0 parses (listeners) but is not connectable */
    CHECK_EQ(tp_url_parse("tcp://h:0", &u, err, sizeof(err)), 0);
    CHECK_EQ(tp_url_connectable(&u, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "port 0") != NULL);
    tp_conn_t *nc = NULL;
    CHECK_EQ(tp_tcp_connect(&u, 100, &nc, err, sizeof(err)), -EINVAL);
    CHECK(nc == NULL);
    CHECK_EQ(tp_url_parse("tcp://h:1", &u, err, sizeof(err)), 0);
    CHECK_EQ(tp_url_connectable(&u, err, sizeof(err)), 0);
    /* both parsers agree (cellar_url_parse wraps tp_url_parse) */
    const char *same[] = { "tcp://[::1]:7000", "localhost:9", "tcp://fe80::1",
                           "uart:dev", "tcp://h:7/", "tls://x", "ftp://x" };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        cellar_url_t cu;
        int a = tp_url_parse(same[i], &u, NULL, 0);
        int b = cellar_url_parse(same[i], &cu);
        CHECK_EQ(a == 0, b == 0);
        if (a == 0 && b == 0)
            CHECK(strcmp(u.host, cu.host) == 0 && u.port == cu.port);
    }

    const char *bad[] = {
        "http://x", "tcp://", "tcp://:80", "tcp://::1:80", "tcp://h:99999",
        "tcp://h:-1", "tcp://h:8o", "tcp://[::1", "tcp://[::1]x", "uart:",
        "uart:/dev/x?baud=", "uart:/dev/x?speed=9", "tcp://a b:1", "",
        "uart:ttyS0", "::1", "h:x",
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
    CHECK(strcmp(cl->identity, "anonymous") == 0 && cl->inner == NULL);
    CHECK_EQ(tp_handshake(cl), 0); /* plain TCP: open at once */

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

/* ---- the in-memory pair ------------------------------------------------------ */

static void test_mem_pair(void)
{
    tp_conn_t *a, *b;
    uint8_t buf[16];
    CHECK_EQ(tp_mem_pair(4, &a, &b), 0);
    CHECK_EQ(a->fd, -1);
    CHECK(strcmp(tp_identity(a), "anonymous") == 0);
    CHECK_EQ(tp_handshake(a), 0);
    CHECK_EQ(tp_ready(a), TP_EV_WRITE);
    CHECK_EQ(tp_recv(b, buf, sizeof(buf)), TP_WANT_READ);
    CHECK_EQ(tp_events(b, 1, 0), TP_EV_READ);
    /* a tiny capacity forces partial sends, then TP_WANT_WRITE */
    CHECK_EQ(tp_send(a, "abcdef", 6), 4);
    CHECK_EQ(tp_ready(a), 0);
    CHECK_EQ(tp_send(a, "ef", 2), TP_WANT_WRITE);
    CHECK_EQ(tp_events(a, 0, 1), TP_EV_WRITE);
    CHECK_EQ(tp_ready(b), TP_EV_READ | TP_EV_WRITE);
    CHECK_EQ(tp_recv(b, buf, 3), 3);
    CHECK(memcmp(buf, "abc", 3) == 0);
    CHECK_EQ(tp_send(a, "ef", 2), 2); /* wraps around the ring */
    CHECK_EQ(tp_recv(b, buf, sizeof(buf)), 3);
    CHECK(memcmp(buf, "def", 3) == 0);
    CHECK_EQ(tp_send(b, "xy", 2), 2);
    /* close: the other side reads what is left, then the end of stream;
     * sending to a closed side is EPIPE */
    tp_close(b);
    CHECK_EQ(tp_send(a, "z", 1), -EPIPE);
    CHECK_EQ(tp_ready(a), TP_EV_READ | TP_EV_WRITE);
    CHECK_EQ(tp_recv(a, buf, sizeof(buf)), 2);
    CHECK_EQ(tp_recv(a, buf, sizeof(buf)), 0);
    tp_close(a);
}

/* A send that needs to read (as a TLS one may) is waited for as readable. */
static int want_read_send(tp_conn_t *c, const uint8_t *p, size_t n)
{
    return TP_WANT_READ;
}
static int want_write_recv(tp_conn_t *c, uint8_t *p, size_t n)
{
    return TP_WANT_WRITE;
}
static void test_dispatch(void)
{
    static const tp_conn_type_t t = { .name = "odd", .send = want_read_send,
                                      .recv = want_write_recv };
    tp_conn_t c = { .type = &t, .fd = -1 };
    uint8_t b[1];
    CHECK_EQ(tp_events(&c, 1, 1), TP_EV_READ | TP_EV_WRITE);
    CHECK_EQ(tp_send(&c, b, 1), TP_WANT_READ);
    CHECK_EQ(tp_events(&c, 0, 1), TP_EV_READ);
    CHECK_EQ(tp_recv(&c, b, 1), TP_WANT_WRITE);
    CHECK_EQ(tp_events(&c, 1, 0), TP_EV_WRITE);
    CHECK_EQ(tp_ready(&c), 0);
    CHECK(strcmp(tp_identity(&c), "anonymous") == 0);
    c.deadline_ms = 5;
    CHECK_EQ(tp_on_timer(&c, 6), 0); /* no on_timer: the deadline is cleared */
    CHECK_EQ(c.deadline_ms, 0);
}

/* ---- a stacked transport: "gate", a handshake over an inner connection ----------
 * The client must send "HELO" + a name byte first; until then the
 * connection is in its handshake state. A deadline that passes before the
 * handshake fails the connection. */
typedef struct gate {
    tp_conn_t conn;
    uint8_t got[5];
    size_t ngot;
    int timers;
} gate_t;

static int gate_send(tp_conn_t *c, const uint8_t *p, size_t n)
{
    return tp_send(c->inner, p, n);
}
static int gate_recv(tp_conn_t *c, uint8_t *p, size_t n)
{
    return tp_recv(c->inner, p, n);
}
static unsigned gate_ready(tp_conn_t *c)
{
    return tp_ready(c->inner);
}
static void gate_close(tp_conn_t *c)
{
    tp_close(c->inner);
    free(c);
}
static int gate_handshake(tp_conn_t *c)
{
    gate_t *g = (gate_t *)c;
    while (g->ngot < sizeof(g->got)) {
        int n = tp_recv(c->inner, g->got + g->ngot, sizeof(g->got) - g->ngot);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0)
            return n;
        g->ngot += (size_t)n;
    }
    if (memcmp(g->got, "HELO", 4) != 0)
        return -EACCES;
    snprintf(c->identity, sizeof(c->identity), "gate:%c", g->got[4]);
    c->deadline_ms = 0;
    return 0;
}
static int gate_timer(tp_conn_t *c, uint64_t now)
{
    gate_t *g = (gate_t *)c;
    g->timers++;
    c->deadline_ms = 0;
    return g->ngot < sizeof(g->got) ? -ETIMEDOUT : 0;
}
static const tp_conn_type_t gate_type = {
    .name = "gate", .send = gate_send, .recv = gate_recv, .close = gate_close,
    .handshake = gate_handshake, .ready = gate_ready, .on_timer = gate_timer,
};
static gate_t *gate_new(tp_conn_t *inner)
{
    gate_t *g = calloc(1, sizeof(*g));
    g->conn.type = &gate_type;
    g->conn.fd = inner->fd;
    g->conn.inner = inner;
    snprintf(g->conn.peer, sizeof(g->conn.peer), "gate over %.40s", inner->peer);
    return g;
}

typedef struct rig {
    flash_sim_t *sim;
    svc_t svc;
    loop_t *lp;
} rig_t;

static void rig_up(rig_t *r, uint32_t max_conns)
{
    r->sim = flash_sim_new(&(flash_sim_config_t){ .block_count = 128 });
    svc_config_t cfg = { .dev = flash_sim_dev(r->sim), .provision = true };
    CHECK_EQ(svc_setup(&r->svc, &cfg), 0);
    CHECK_EQ(loop_new(&r->lp, &r->svc,
                      &(loop_config_t){ .max_conns = max_conns }), 0);
}

static void rig_down(rig_t *r)
{
    loop_free(r->lp);
    CHECK_EQ(svc_free(&r->svc), 0);
    flash_sim_free(r->sim);
}

/* Send all of p through the loop (the client side of a pair). */
static int mem_send_all(loop_t *lp, tp_conn_t *c, const uint8_t *p, size_t n)
{
    for (int i = 0; n && i < 100000; i++) {
        int k = tp_send(c, p, n);
        if (k == TP_WANT_WRITE) {
            CHECK_EQ(loop_turn(lp, 0), 0);
            continue;
        }
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return n ? -2 : 0;
}

static int rpc(loop_t *lp, tp_conn_t *c, cellar_Request *rq, cellar_Response *rs)
{
    static uint8_t buf[CODEC_BUF_MIN];
    int n = codec_encode_request(rq, buf, sizeof(buf));
    if (n < 0 || mem_send_all(lp, c, buf, (size_t)n) < 0)
        return -1;
    return pump_reply(lp, c, rs);
}

static void test_loop_mem(void)
{
    static rig_t r;
    static cellar_Request rq;
    static cellar_Response rs;
    rig_up(&r, 2);

    /* a service served through the loop over a pair with 61-byte buffers:
     * every frame goes in and out in pieces */
    tp_conn_t *cl, *sv;
    CHECK_EQ(tp_mem_pair(61, &cl, &sv), 0);
    CHECK_EQ(loop_add_conn(r.lp, sv), 0);
    CHECK_EQ(loop_conns(r.lp), 1);
    memset(&rq, 0, sizeof(rq));
    rq.id = 9;
    rq.which_body = cellar_Request_ping_tag;
    rq.body.ping.payload.size = 5;
    memcpy(rq.body.ping.payload.bytes, "hello", 5);
    CHECK_EQ(rpc(r.lp, cl, &rq, &rs), 0);
    CHECK_EQ(rs.id, 9);
    CHECK(rs.body.ping.payload.size == 5 &&
          memcmp(rs.body.ping.payload.bytes, "hello", 5) == 0);

    memset(&rq, 0, sizeof(rq));
    rq.id = 10;
    rq.which_body = cellar_Request_open_tag;
    strcpy(rq.body.open.path, "/usr/m");
    rq.body.open.flags = cellar_OpenFlags_O_READ | cellar_OpenFlags_O_WRITE |
                         cellar_OpenFlags_O_CREATE;
    CHECK_EQ(rpc(r.lp, cl, &rq, &rs), 0);
    CHECK(!rs.has_error);
    uint32_t h = rs.body.open.handle;
    memset(&rq, 0, sizeof(rq));
    rq.id = 11;
    rq.which_body = cellar_Request_write_tag;
    rq.body.write.handle = h;
    rq.body.write.data.size = 16384;
    for (int i = 0; i < 16384; i++)
        rq.body.write.data.bytes[i] = (uint8_t)(i * 7);
    CHECK_EQ(rpc(r.lp, cl, &rq, &rs), 0);
    CHECK(!rs.has_error && rs.body.write.written == 16384);
    memset(&rq, 0, sizeof(rq));
    rq.id = 12;
    rq.which_body = cellar_Request_read_tag;
    rq.body.read.handle = h;
    rq.body.read.length = 16384;
    CHECK_EQ(rpc(r.lp, cl, &rq, &rs), 0);
    CHECK(!rs.has_error && rs.body.read.data.size == 16384 &&
          rs.body.read.data.bytes[16383] == (uint8_t)(16383 * 7));

    /* a stacked transport in its handshake state does not reach the
     * service; the handshake completes when its bytes arrive */
    tp_conn_t *gc, *gs;
    CHECK_EQ(tp_mem_pair(0, &gc, &gs), 0);
    gate_t *g = gate_new(gs);
    CHECK_EQ(loop_add_conn(r.lp, &g->conn), 0);
    memset(&rq, 0, sizeof(rq));
    rq.id = 13;
    rq.which_body = cellar_Request_ping_tag;
    static uint8_t buf[CODEC_BUF_MIN];
    int n = codec_encode_request(&rq, buf, sizeof(buf));
    CHECK_EQ(tp_send(gc, buf, (size_t)n), n); /* the request, too early */
    /* the handshake reads the request's first bytes as its greeting: they
     * are not "HELO", it fails and the connection is closed without ever
     * reaching the service (no reply, end of stream) */
    CHECK_EQ(loop_conns(r.lp), 2);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(loop_turn(r.lp, 0), 0);
    CHECK_EQ(loop_conns(r.lp), 1);
    uint8_t tmp[8];
    CHECK_EQ(tp_recv(gc, tmp, sizeof(tmp)), 0);
    tp_close(gc);

    CHECK_EQ(tp_mem_pair(0, &gc, &gs), 0);
    g = gate_new(gs);
    CHECK_EQ(loop_add_conn(r.lp, &g->conn), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(loop_turn(r.lp, 0), 0);
    CHECK_EQ(tp_send(gc, "HEL", 3), 3);
    CHECK_EQ(loop_turn(r.lp, 0), 0);
    CHECK(strcmp(tp_identity(&g->conn), "anonymous") == 0);
    CHECK_EQ(tp_send(gc, "Ox", 2), 2);
    rq.id = 14;
    CHECK_EQ(rpc(r.lp, gc, &rq, &rs), 0);
    CHECK_EQ(rs.id, 14);
    CHECK(strcmp(tp_identity(&g->conn), "gate:x") == 0);
    CHECK_EQ(g->timers, 0);

    /* the connection limit (2) counts handshaking connections; the one
     * over it gets the service's ENOMEM refusal (svc_reject_conn) */
    tp_conn_t *xc, *xs;
    CHECK_EQ(tp_mem_pair(0, &xc, &xs), 0);
    CHECK_EQ(loop_add_conn(r.lp, xs), -ENOSPC);
    tp_close(xs);
    tp_close(xc);
    tp_close(gc); /* peer gone: the loop closes the gate and its inner */
    for (int i = 0; i < 5; i++)
        CHECK_EQ(loop_turn(r.lp, 0), 0);
    CHECK_EQ(loop_conns(r.lp), 1);

    /* a deadline is honoured: a handshake that times out is closed */
    CHECK_EQ(tp_mem_pair(0, &gc, &gs), 0);
    g = gate_new(gs);
    g->conn.deadline_ms = 1; /* long past on the loop's clock */
    CHECK_EQ(loop_add_conn(r.lp, &g->conn), 0);
    CHECK_EQ(loop_conns(r.lp), 2);
    CHECK_EQ(loop_turn(r.lp, 1000), 0); /* due: does not sleep */
    CHECK_EQ(loop_conns(r.lp), 1);
    CHECK_EQ(tp_recv(gc, tmp, sizeof(tmp)), 0);
    tp_close(gc);

    /* the refusal bytes come from the service */
    uint8_t rb[256];
    int rn = svc_reject_conn(&r.svc, rb, sizeof(rb));
    CHECK(rn > 4);
    CHECK_EQ(codec_decode_response(&rs, rb + 4, codec_get_len(rb), NULL), 0);
    CHECK(rs.has_error && rs.error.code == cellar_Code_ENOMEM && rs.id == 0);
    CHECK(strstr(rs.error.message, "too many connections") != NULL);

    /* the first client closes: EOF reaches the service, the loop closes */
    tp_close(cl);
    for (int i = 0; i < 10 && loop_conns(r.lp) > 0; i++)
        CHECK_EQ(loop_turn(r.lp, 0), 0);
    CHECK_EQ(loop_conns(r.lp), 0);
    rig_down(&r);
}

/* ---- libcellar over an in-memory pair ---------------------------------------------
 * A cellar_transport_t whose waits turn the daemon's loop: one thread is
 * both ends. */
static void test_libcellar_mem(void)
{
    static rig_t r;
    static const cellar_transport_t inproc_tp = {
        .name = "mem", .send = inproc_send, .recv = inproc_recv,
        .close = inproc_close,
    };
    rig_up(&r, 4);
    tp_conn_t *cl, *sv;
    CHECK_EQ(tp_mem_pair(1000, &cl, &sv), 0);
    CHECK_EQ(loop_add_conn(r.lp, sv), 0);
    inproc_t ip = { .c = cl, .lp = r.lp };
    cellar_t c;
    cellar_init(&c, NULL);
    CHECK_EQ(cellar_connect_transport(&c, &inproc_tp, &ip), 0);
    CHECK(cellar_connected(&c));
    CHECK(cellar_info(&c)->max_inflight >= 1);
    size_t n = 200000;
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 31 + (i >> 9));
    CHECK_EQ(cellar_put_mem(&c, data, n, "/usr/mem.bin", NULL), 0);
    void *back = NULL;
    size_t bl = 0;
    CHECK_EQ(cellar_get_mem(&c, "/usr/mem.bin", n, &back, &bl), 0);
    CHECK(back && bl == n && memcmp(back, data, n) == 0);
    free(back);
    free(data);
    cellar_stat_t st;
    CHECK_EQ(cellar_stat(&c, "/usr/nope", &st), CELLAR_ERR_NOENT);
    cellar_close(&c);
    CHECK(ip.c == NULL);
    for (int i = 0; i < 10 && loop_conns(r.lp) > 0; i++)
        CHECK_EQ(loop_turn(r.lp, 0), 0);
    CHECK_EQ(loop_conns(r.lp), 0);
    rig_down(&r);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_urls();
    test_mem_pair();
    test_dispatch();
    test_loop_mem();
    test_libcellar_mem();
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
