/* test_link.c - the serial link layer (transport/link/link.c, issue 12)
 * over an in-memory channel on emulated time: each direction carries one
 * byte per byte time (10 bits a byte at the baud rate), after a delay, with
 * bit errors, dropped and duplicated bytes, dropped bursts, stalls and
 * garbage, all from a seed. Checks every byte of both streams, resets of
 * either end, negotiation, the RAM bound (sizeof) and the round-trip
 * contract at 115200 baud, measured in emulated time. Every run is bounded
 * in emulated time and in steps. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "link.h"
#include "tp.h"
#include "tp_link.h"

/* ---- the emulated wire ------------------------------------------------------- */

typedef struct fault {
    double ber;        /* per data bit */
    double drop, dup;  /* per byte */
    double burst;      /* per byte: drop the next 8..64 bytes */
    double garbage;    /* per byte: insert 1..40 random bytes */
    uint32_t stall_every_ms, stall_ms; /* nothing moves for stall_ms */
} fault_t;

#define QCAP (1u << 16)
typedef struct chan {
    uint8_t b[QCAP];
    uint64_t at[QCAP]; /* arrival, us */
    uint32_t head, len;
    uint64_t busy_until; /* the sender's wire is busy until then, us */
    int burst_left;
    uint64_t wire_bytes; /* bytes paced onto the wire */
} chan_t;

typedef struct end {
    link_t l;
    uint8_t mem[LINK_MEM_SIZE(LINK_MAX_PAYLOAD, LINK_MAX_WINDOW)];
    link_config_t cfg;
    /* the application: a pattern stream out, checked stream in */
    uint64_t sent, to_send, got;
    uint32_t seed_out, seed_in; /* pattern generators */
    int bad;
} end_t;

typedef struct sim {
    end_t e[2];
    chan_t c[2]; /* c[i]: from e[i] to e[1-i] */
    fault_t f;
    uint64_t now_us, byte_us, delay_us;
    uint64_t rng;
} sim_t;

static uint64_t rnd(sim_t *s)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return s->rng;
}

static double rndf(sim_t *s)
{
    return (double)(rnd(s) >> 11) / 9007199254740992.0;
}

static uint8_t pat(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (uint8_t)(*seed >> 16);
}

static void q_push(chan_t *c, uint8_t b, uint64_t at)
{
    if (c->len == QCAP)
        return; /* overflow: lost, like an overrun */
    uint32_t i = (c->head + c->len++) % QCAP;
    c->b[i] = b;
    c->at[i] = at;
}

static bool stalled(const sim_t *s)
{
    if (!s->f.stall_every_ms)
        return false;
    uint64_t ms = s->now_us / 1000;
    return ms % s->f.stall_every_ms < s->f.stall_ms && ms > s->f.stall_every_ms;
}

static void end_start(sim_t *s, int i, uint32_t nonce)
{
    end_t *e = &s->e[i];
    e->cfg.nonce = nonce;
    e->cfg.byte_time_us = (uint32_t)s->byte_us;
    CHECK_EQ(link_init(&e->l, &e->cfg, e->mem, sizeof(e->mem), s->now_us / 1000), 0);
}

static void sim_init(sim_t *s, uint32_t baud, uint64_t seed,
                     const link_config_t *a, const link_config_t *b)
{
    memset(s, 0, sizeof(*s));
    s->rng = seed * 0x9E3779B97F4A7C15ull + 1;
    s->byte_us = 10000000u / baud;
    s->delay_us = 200;
    s->e[0].cfg = *a;
    s->e[1].cfg = *b;
    s->e[0].seed_out = s->e[1].seed_in = (uint32_t)seed;
    s->e[1].seed_out = s->e[0].seed_in = (uint32_t)seed ^ 0x5555u;
    end_start(s, 0, 0x1000u + (uint32_t)seed);
    end_start(s, 1, 0x2000u + (uint32_t)seed * 7u);
}

/* One wire byte from end i, with the faults. */
static void wire_byte(sim_t *s, int i, uint8_t b)
{
    chan_t *c = &s->c[i];
    c->wire_bytes++;
    uint64_t at = s->now_us + s->byte_us + s->delay_us;
    if (c->burst_left > 0) {
        c->burst_left--;
        return;
    }
    if (s->f.burst && rndf(s) < s->f.burst) {
        c->burst_left = 8 + (int)(rnd(s) % 57);
        return;
    }
    if (s->f.drop && rndf(s) < s->f.drop)
        return;
    if (s->f.ber)
        for (int bit = 0; bit < 8; bit++)
            if (rndf(s) < s->f.ber)
                b ^= (uint8_t)(1u << bit);
    if (s->f.garbage && rndf(s) < s->f.garbage) {
        int n = 1 + (int)(rnd(s) % 40);
        for (int k = 0; k < n; k++)
            q_push(c, (uint8_t)(rnd(s) & 1 ? LINK_SYNC0 : rnd(s)), at);
    }
    q_push(c, b, at);
    if (s->f.dup && rndf(s) < s->f.dup)
        q_push(c, b, at);
}

/* The application side of end i: write its stream, read and check. */
static void app(sim_t *s, int i)
{
    end_t *e = &s->e[i];
    uint64_t ms = s->now_us / 1000;
    if (!link_is_open(&e->l))
        return;
    while (e->sent < e->to_send) {
        uint8_t buf[700];
        size_t n = e->to_send - e->sent < sizeof(buf) ? e->to_send - e->sent
                                                      : sizeof(buf);
        uint32_t sd = e->seed_out;
        for (size_t k = 0; k < n; k++)
            buf[k] = pat(&sd);
        int w = link_write(&e->l, buf, n, ms);
        if (w <= 0)
            break;
        sd = e->seed_out;
        for (int k = 0; k < w; k++)
            (void)pat(&sd);
        e->seed_out = sd;
        e->sent += (uint64_t)w;
    }
    uint8_t in[512];
    int r;
    while ((r = link_read(&e->l, in, sizeof(in), ms)) > 0) {
        for (int k = 0; k < r; k++)
            if (in[k] != pat(&e->seed_in))
                e->bad++;
        e->got += (uint64_t)r;
    }
}

/* Advance one byte time. */
static void step(sim_t *s)
{
    uint64_t ms = s->now_us / 1000;
    for (int i = 0; i < 2; i++) {
        end_t *e = &s->e[i];
        chan_t *in = &s->c[1 - i];
        uint8_t buf[64];
        size_t n = 0;
        if (!stalled(s))
            while (in->len && in->at[in->head] <= s->now_us && n < sizeof(buf)) {
                buf[n++] = in->b[in->head];
                in->head = (in->head + 1) % QCAP;
                in->len--;
            }
        if (n)
            link_input(&e->l, buf, n, ms);
        uint64_t d = link_deadline(&e->l);
        if (d && d <= ms)
            link_poll(&e->l, ms);
        app(s, i);
        chan_t *out = &s->c[i];
        if (out->busy_until <= s->now_us) {
            const uint8_t *p;
            if (link_tx_peek(&e->l, &p, ms)) {
                uint8_t b = *p;
                link_tx_consume(&e->l, 1, ms);
                wire_byte(s, i, b);
                out->busy_until = s->now_us + s->byte_us;
            }
        }
    }
    s->now_us += s->byte_us;
}

static bool done(const sim_t *s)
{
    return s->e[0].got == s->e[1].to_send && s->e[1].got == s->e[0].to_send &&
           link_tx_idle(&s->e[0].l) && link_tx_idle(&s->e[1].l);
}

/* Run for ms of emulated time. */
static void idle(sim_t *s, uint64_t ms)
{
    uint64_t end = s->now_us + ms * 1000;
    while (s->now_us < end)
        step(s);
}

/* Run until both streams are through (true) or max_ms of emulated time. */
static bool run(sim_t *s, uint64_t max_ms)
{
    uint64_t end = s->now_us + max_ms * 1000;
    while (s->now_us < end) {
        step(s);
        if (done(s))
            return true;
    }
    return false;
}

static const link_config_t host_cfg = { .max_payload = 1024, .window = 8 };
static const link_config_t dev_cfg = { .max_payload = 512, .window = 2 };

/* ---- tests ---------------------------------------------------------------- */

static void test_crc(void)
{
    CHECK_EQ(link_crc32(0, "123456789", 9), 0xCBF43926u);
    CHECK_EQ(link_crc32(link_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
}

static void test_ram(void)
{
    /* The device's smallest and default windows, buffers included. */
    size_t small = sizeof(link_t) + LINK_MEM_SIZE(256, 1);
    size_t dev = sizeof(link_t) + LINK_MEM_SIZE(512, 2);
    printf("link RAM: link_t %zu B; p=256 w=1: %zu B; p=512 w=2: %zu B; "
           "p=1024 w=8: %zu B\n", sizeof(link_t), small, dev,
           sizeof(link_t) + LINK_MEM_SIZE(1024, 8));
    CHECK(small <= 4096);
    CHECK(dev <= 4096);
    link_t l;
    uint8_t mem[16];
    link_config_t bad = { .max_payload = 8 };
    CHECK_EQ(link_init(&l, &bad, mem, sizeof(mem), 0), LINK_ERR_INVAL);
    link_config_t big = { .max_payload = 512, .window = 2 };
    CHECK_EQ(link_init(&l, &big, mem, sizeof(mem), 0), LINK_ERR_INVAL);
}

static sim_t S; /* big: static */

static void transfer(const char *name, uint32_t baud, const fault_t *f,
                     uint64_t a2b, uint64_t b2a, uint64_t max_ms,
                     const link_config_t *a, const link_config_t *b,
                     double min_ratio)
{
    sim_init(&S, baud, 42, a, b);
    if (f)
        S.f = *f;
    /* Set-up first (its filler and SYNs are not the transfer's). */
    for (int k = 0; k < 2000000 && !(link_is_open(&S.e[0].l) &&
                                     link_is_open(&S.e[1].l)); k++)
        step(&S);
    S.c[0].wire_bytes = S.c[1].wire_bytes = 0;
    S.e[0].to_send = a2b;
    S.e[1].to_send = b2a;
    bool ok = run(&S, max_ms);
    uint64_t wire = S.c[0].wire_bytes + S.c[1].wire_bytes;
    double ratio = (double)(a2b + b2a) / (double)(wire ? wire : 1);
    printf("%-22s %7.0f ms  ratio %.3f  retx %u/%u  rto %u dup %u bad hdr %u crc %u  payload %u/%u\n",
           name, (double)S.now_us / 1000.0, ratio,
           S.e[0].l.st.retransmits + S.e[1].l.st.retransmits,
           S.e[0].l.st.data_tx + S.e[1].l.st.data_tx,
           S.e[0].l.st.timeouts + S.e[1].l.st.timeouts,
           S.e[0].l.st.dup_rx + S.e[1].l.st.dup_rx,
           S.e[0].l.st.bad_hdr + S.e[1].l.st.bad_hdr,
           S.e[0].l.st.bad_crc + S.e[1].l.st.bad_crc,
           S.e[0].l.payload, S.e[0].l.cur_payload);
    CHECK(ok);
    CHECK_EQ(S.e[0].bad + S.e[1].bad, 0);
    CHECK_EQ(S.e[1].got, a2b);
    CHECK_EQ(S.e[0].got, b2a);
    if (min_ratio > 0)
        CHECK(ratio >= min_ratio);
}

static void test_clean(void)
{
    transfer("clean 115200 up", 115200, NULL, 64 * 1024, 0, 20000, &host_cfg,
             &host_cfg, 0.96);
    transfer("clean 921600 both", 921600, NULL, 128 * 1024, 128 * 1024, 20000,
             &host_cfg, &host_cfg, 0.96);
    transfer("clean device window", 115200, NULL, 32 * 1024, 32 * 1024, 20000,
             &host_cfg, &dev_cfg, 0.90);
}

static void test_faults(void)
{
    fault_t f;
    memset(&f, 0, sizeof(f));
    f.ber = 1e-5;
    transfer("ber 1e-5", 921600, &f, 128 * 1024, 16 * 1024, 60000, &host_cfg,
             &host_cfg, 0.85);
    f.ber = 1e-4;
    transfer("ber 1e-4", 921600, &f, 64 * 1024, 16 * 1024, 60000, &host_cfg,
             &host_cfg, 0);
    memset(&f, 0, sizeof(f));
    f.drop = 3e-4;
    transfer("drop 3e-4", 921600, &f, 64 * 1024, 16 * 1024, 60000, &host_cfg,
             &host_cfg, 0);
    memset(&f, 0, sizeof(f));
    f.dup = 3e-4;
    transfer("dup 3e-4", 921600, &f, 64 * 1024, 16 * 1024, 60000, &host_cfg,
             &host_cfg, 0);
    memset(&f, 0, sizeof(f));
    f.burst = 1e-4;
    f.ber = 1e-4;
    transfer("burst + ber 1e-4", 921600, &f, 64 * 1024, 16 * 1024, 60000,
             &host_cfg, &host_cfg, 0);
    memset(&f, 0, sizeof(f));
    f.garbage = 1e-3;
    transfer("garbage", 921600, &f, 64 * 1024, 16 * 1024, 60000, &host_cfg,
             &host_cfg, 0);
    memset(&f, 0, sizeof(f));
    f.stall_every_ms = 300;
    f.stall_ms = 120;
    transfer("stalls", 921600, &f, 64 * 1024, 16 * 1024, 60000, &host_cfg,
             &host_cfg, 0);
    memset(&f, 0, sizeof(f));
    f.ber = 1e-4;
    f.drop = 1e-4;
    f.dup = 1e-4;
    transfer("all, device window", 115200, &f, 16 * 1024, 16 * 1024, 120000,
             &host_cfg, &dev_cfg, 0);
}

static void test_negotiation(void)
{
    link_config_t a = { .max_payload = 256, .window = 2 };
    link_config_t b = { .max_payload = 2048, .window = 8 };
    sim_init(&S, 115200, 7, &a, &b);
    idle(&S, 1000);
    CHECK(link_is_open(&S.e[0].l) && link_is_open(&S.e[1].l));
    CHECK_EQ(S.e[0].l.payload, 256);
    CHECK_EQ(S.e[1].l.payload, 256);
    CHECK_EQ(S.e[0].l.win, 2);
    CHECK_EQ(S.e[1].l.win, 2);
    transfer("negotiated 256x2", 115200, NULL, 8000, 8000, 20000, &a, &b, 0.85);
    /* Set-up through a lossy line still converges. */
    fault_t f = { .ber = 1e-3 };
    sim_init(&S, 115200, 9, &host_cfg, &dev_cfg);
    S.f = f;
    idle(&S, 3000);
    CHECK(link_is_open(&S.e[0].l) && link_is_open(&S.e[1].l));
}

/* Either end restarts mid-transfer: the other sees LINK_ERR_RESET, starts a
 * fresh link (as the device does: a new service connection) and both are
 * open again and carry a new stream. */
static void test_reset(int who)
{
    sim_init(&S, 115200, 11 + (uint64_t)who, &host_cfg, &dev_cfg);
    S.e[0].to_send = 1u << 20;
    S.e[1].to_send = 1u << 20;
    idle(&S, 500);
    CHECK(S.e[1].got > 0 && S.e[0].got > 0);
    /* End `who` restarts. */
    end_start(&S, who, 0x7777u + (uint32_t)who);
    int other = 1 - who;
    int rc = 0;
    for (int k = 0; k < 20000 && rc == 0; k++) {
        step(&S);
        uint8_t b;
        rc = link_read(&S.e[other].l, &b, 0, S.now_us / 1000);
        if (rc == 0)
            rc = link_write(&S.e[other].l, &b, 0, S.now_us / 1000) < 0 ? -1 : 0;
    }
    CHECK_EQ(S.e[other].l.state, LINK_RESET);
    end_start(&S, other, 0x8888u + (uint32_t)who);
    for (int i = 0; i < 2; i++) {
        S.e[i].sent = S.e[i].got = 0;
        S.e[i].to_send = 20000;
        S.e[i].seed_out = S.e[1 - i].seed_in = 99u + (uint32_t)i;
    }
    CHECK(run(&S, 20000));
    CHECK_EQ(S.e[0].bad + S.e[1].bad, 0);
    CHECK_EQ(S.e[0].got, 20000);
    CHECK_EQ(S.e[1].got, 20000);
}

/* FIN: the closing end's data arrives, then the other sees the end. */
static void test_fin(void)
{
    sim_init(&S, 921600, 5, &host_cfg, &host_cfg);
    S.e[0].to_send = 5000;
    CHECK(run(&S, 5000));
    link_close(&S.e[0].l);
    for (int k = 0; k < 5000 && !link_eof(&S.e[1].l); k++)
        step(&S);
    CHECK(link_eof(&S.e[1].l));
}

/* The round-trip contract: at 115200 a request/answer round trip takes at
 * most the wire time of the bytes it carries plus 2 frame times (of a
 * full frame), in emulated time. */
static void test_round_trip(void)
{
    static const size_t sizes[][2] = { { 20, 40 }, { 300, 60 }, { 40, 4000 },
                                       { 5000, 5000 } };
    for (size_t t = 0; t < sizeof(sizes) / sizeof(sizes[0]); t++) {
        sim_init(&S, 115200, 3, &host_cfg, &dev_cfg);
        idle(&S, 1000); /* set up */
        size_t req = sizes[t][0], ans = sizes[t][1];
        uint64_t t0 = S.now_us;
        S.e[0].to_send = req;
        while (S.e[1].got < req && S.now_us - t0 < 10000000)
            step(&S);
        S.e[1].to_send = ans;
        while (S.e[0].got < ans && S.now_us - t0 < 10000000)
            step(&S);
        uint64_t rtt = S.now_us - t0;
        uint64_t carried = (uint64_t)(req + ans) * S.byte_us;
        uint64_t frame = (uint64_t)(S.e[1].l.payload + LINK_OVERHEAD) * S.byte_us;
        printf("round trip %zu + %zu B at 115200: %.2f ms (bytes %.2f ms, "
               "frame %.2f ms)\n", req, ans, (double)rtt / 1000.0,
               (double)carried / 1000.0, (double)frame / 1000.0);
        CHECK(rtt <= carried + 2 * frame);
    }
}

/* uart: URL options (tp.c, issue 12). */
static void test_urls(void)
{
    tp_url_t u;
    char err[200];
    CHECK_EQ(tp_url_parse("uart:/dev/ttyUSB0?baud=921600&rtscts=1&frame=512&window=2",
                          &u, err, sizeof(err)), 0);
    CHECK_EQ(u.baud, 921600);
    CHECK_EQ(u.rtscts, 1);
    CHECK_EQ(u.frame, 512);
    CHECK_EQ(u.window, 2);
    CHECK_EQ(tp_url_parse("uart:/dev/ttyS0", &u, err, sizeof(err)), 0);
    CHECK(u.baud == 115200 && u.rtscts == 0 && u.frame == 0 && u.window == 0);
    CHECK_EQ(tp_url_parse("uart:/dev/ttyS0?rtscts=1", &u, err, sizeof(err)), 0);
    CHECK(u.baud == 115200 && u.rtscts == 1);
    static const char *bad[] = { "uart:/dev/x?rtscts=2", "uart:/dev/x?frame=32",
                                 "uart:/dev/x?window=9", "uart:/dev/x?baud=9600&",
                                 "uart:/dev/x?baud=9600&x=1", "uart:/dev/x?rtscts",
                                 "uart:/dev/x?baud=12x" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_EQ(tp_url_parse(bad[i], &u, err, sizeof(err)), -22);
}

/* tp_link over an in-memory pair (real time, no faults): the handshake is
 * the set-up, bytes go both ways, a restart of one end is -ECONNRESET on
 * the other. */
static tp_link_t TL[2];
static uint8_t TLM[2][LINK_MEM_SIZE(512, 2)];

static int hs_both(void)
{
    int rc[2] = { TP_WANT_READ, TP_WANT_READ };
    for (int k = 0; k < 200000 && (rc[0] || rc[1]); k++)
        for (int i = 0; i < 2; i++)
            if (rc[i])
                rc[i] = tp_handshake(&TL[i].conn);
    return rc[0] ? rc[0] : rc[1];
}

static void test_tp_link(void)
{
    tp_conn_t *a, *b;
    CHECK_EQ(tp_mem_pair(4096, &a, &b), 0);
    /* A fast line (1 us a byte), so the link's pacing does not wait. */
    link_config_t c0 = { .max_payload = 512, .window = 2, .nonce = 11,
                         .byte_time_us = 1 };
    link_config_t c1 = { .max_payload = 512, .window = 2, .nonce = 22,
                         .byte_time_us = 1 };
    CHECK_EQ(tp_link_init(&TL[0], a, &c0, TLM[0], sizeof(TLM[0]), "link a", NULL), 0);
    CHECK_EQ(tp_link_init(&TL[1], b, &c1, TLM[1], sizeof(TLM[1]), "link b", NULL), 0);
    CHECK_EQ(hs_both(), 0);
    static uint8_t out[20000], in[20000];
    for (size_t i = 0; i < sizeof(out); i++)
        out[i] = (uint8_t)(i * 7 + 3);
    size_t sent = 0, got = 0;
    int odd = 0;
    for (int k = 0; k < 2000000 && got < sizeof(out) && !odd; k++) {
        if (sent < sizeof(out)) {
            int n = tp_send(&TL[0].conn, out + sent, sizeof(out) - sent);
            if (n > 0)
                sent += (size_t)n;
            else if (n != TP_WANT_READ && n != TP_WANT_WRITE)
                odd = n;
        }
        int r = tp_recv(&TL[1].conn, in + got, sizeof(in) - got);
        if (r > 0)
            got += (size_t)r;
        else if (r != TP_WANT_READ)
            odd = r;
        for (int i = 0; i < 2; i++)
            if (TL[i].conn.deadline_ms && tp_now_ms() >= TL[i].conn.deadline_ms &&
                tp_on_timer(&TL[i].conn, tp_now_ms()) < 0)
                odd = -1;
    }
    CHECK_EQ(odd, 0);
    CHECK_EQ(got, sizeof(out));
    CHECK(memcmp(in, out, sizeof(out)) == 0);
    CHECK(tp_link_stats(&TL[1].conn)->stream_rx == sizeof(out));
    /* b restarts on the same inner stream: a sees the reset. */
    tp_conn_t *inner_b = TL[1].conn.inner;
    link_config_t c2 = { .max_payload = 512, .window = 2, .nonce = 33,
                         .byte_time_us = 1 };
    CHECK_EQ(tp_link_init(&TL[1], inner_b, &c2, TLM[1], sizeof(TLM[1]), "link b2", NULL), 0);
    int r = TP_WANT_READ;
    for (int k = 0; k < 200000 && r == TP_WANT_READ; k++) {
        (void)tp_handshake(&TL[1].conn);
        uint8_t x;
        r = tp_recv(&TL[0].conn, &x, 1);
    }
    CHECK_EQ(r, -104); /* -ECONNRESET */
    tp_close(&TL[0].conn);
    tp_close(&TL[1].conn);
}

int main(void)
{
    test_urls();
    test_tp_link();
    test_crc();
    test_ram();
    test_clean();
    test_faults();
    test_negotiation();
    test_reset(0);
    test_reset(1);
    test_fin();
    test_round_trip();
    return check_summary("test_link");
}
