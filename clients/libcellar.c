/*
 * libcellar.c - the bottom of libcellar: errors, URLs, the connection and
 * its handle lifecycle, framing and the RPC plumbing every other file of
 * libcellar sends its requests through (see libcellar_int.h). It calls no
 * other file of libcellar; the map of the files is in docs/ARCHITECTURE.md
 * ("Clients").
 *
 * The client shares the daemon's layers: URLs are parsed by tp_url_parse,
 * TCP connections made by tp_tcp_connect (transport/tp.h), and frames
 * encoded, length-checked and decoded by service/codec.h. What is the
 * client's own is the blocking adapter below: cellar calls wait (with the
 * handle's timeouts) where a tp_conn_t never does.
 */
#include "libcellar_int.h"

#include <errno.h>
#include <stddef.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pb_encode.h>

#include "codec.h"
#include "tp.h"
#include "tls/tp_tls.h" /* issue 13 */

/* ---- buffer layout --------------------------------------------------------- */
#define ALIGN16(x) (((x) + 15u) & ~(size_t)15u)
#define REQ_OFF 0u
#define RESP_OFF ALIGN16(REQ_OFF + sizeof(cellar_Request))
#define TX_OFF ALIGN16(RESP_OFF + sizeof(cellar_Response))
#define TX_SIZE (4u + cellar_Request_size)
#define RX_OFF ALIGN16(TX_OFF + TX_SIZE)
#define RX_SIZE (CELLAR_BUFFER_SIZE - RX_OFF)

_Static_assert(RX_OFF + 4 * (cellar_Response_size + 4) <= CELLAR_BUFFER_SIZE,
               "CELLAR_BUFFER_SIZE too small for the protocol's messages");
_Static_assert(RX_SIZE >= CODEC_BUF_MIN && TX_SIZE <= CODEC_BUF_MIN,
               "frames of the codec do not fit the connection buffer");
_Static_assert(CELLAR_CHUNK <= sizeof(((cellar_WriteRequest *)0)->data.bytes),
               "CELLAR_CHUNK larger than WriteRequest.data");
_Static_assert(CELLAR_LIST_PAGE == sizeof(((cellar_ListReply *)0)->entries) /
                                       sizeof(cellar_FileInfo),
               "CELLAR_LIST_PAGE differs from ListReply.entries");
_Static_assert(CELLAR_MAX_PARTITIONS >= sizeof(((cellar_HelloReply *)0)->partitions) /
                                            sizeof(cellar_Partition),
               "CELLAR_MAX_PARTITIONS below HelloReply.partitions");

cellar_Request *cellar__req(cellar_t *c)
{
    return (cellar_Request *)(void *)(c->buf + REQ_OFF);
}

cellar_Response *cellar__resp(cellar_t *c)
{
    return (cellar_Response *)(void *)(c->buf + RESP_OFF);
}

/* ---- errors ------------------------------------------------------------------
 * The protocol's codes come from the codec's one list (CODEC_CODES); the
 * client's own codes (transport and connection failures) follow. */
static const struct {
    int code;
    const char *name;
    const char *text;
} err_table[] = {
#define ERR_ROW(num, name, text) {num, #name, text},
    CODEC_CODES(ERR_ROW)
#undef ERR_ROW
    {32, "EPIPE", "connection closed"},
    {77, "ENOTMOUNTED", "no filesystem on the partition"},
    {104, "ECONNRESET", "connection reset by the device"},
    {107, "ENOTCONN", "not connected"},
    {111, "ECONNREFUSED", "connection refused"},
    {113, "EHOSTUNREACH", "host unreachable"},
    {-1, "EHOSTUNKNOWN", "unknown host"},
};

const char *cellar_strerror(int err)
{
    int code = err < 0 ? -err : err;
    for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
        if (err_table[i].code == code)
            return err_table[i].text;
    return "unknown error";
}

const char *cellar_errname(int err)
{
    int code = err < 0 ? -err : err;
    for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
        if (err_table[i].code == code)
            return err_table[i].name;
    return "EUNKNOWN";
}

int cellar__fail(cellar_t *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
    va_end(ap);
    c->errpath[0] = 0;
    return err;
}

/* Record the device path a failure is about (keeps the message). */
int cellar__at_path(cellar_t *c, int err, const char *path)
{
    if (err < 0 && path)
        snprintf(c->errpath, sizeof(c->errpath), ":%s", path);
    return err;
}

/* A failure about a local path: errmsg = "path: [what: ]strerror",
 * errpath = path. */
int cellar__local_fail(cellar_t *c, int err, const char *path, const char *what)
{
    char buf[128];
    const char *text = strerror_r(-err, buf, sizeof(buf)); /* GNU: thread-safe */
    cellar__fail(c, err, "%s: %s%s%s", path, what ? what : "", what ? ": " : "",
                 text);
    snprintf(c->errpath, sizeof(c->errpath), "%s", path);
    return err;
}

const char *cellar_errmsg(const cellar_t *c)
{
    return c ? c->errmsg : "";
}

const char *cellar_errpath(const cellar_t *c)
{
    return c ? c->errpath : "";
}

/* ---- URLs ------------------------------------------------------------------
 * The transport layer's parser (one syntax for the daemon and the clients,
 * see tp.h); a device URL must also be connectable (not port 0). */
_Static_assert(sizeof(((cellar_url_t *)0)->host) == sizeof(((tp_url_t *)0)->host) &&
               sizeof(((cellar_url_t *)0)->device) == sizeof(((tp_url_t *)0)->path),
               "cellar_url_t and tp_url_t differ");

static int parse_url(const char *url, tp_url_t *t, cellar_url_t *u)
{
    memset(u, 0, sizeof(*u));
    if (tp_url_parse(url, t, NULL, 0) < 0 || tp_url_connectable(t, NULL, 0) < 0)
        return CELLAR_ERR_INVAL;
    u->kind = strcmp(t->scheme, "tls") == 0    ? CELLAR_URL_TLS
              : strcmp(t->scheme, "uart") == 0 ? CELLAR_URL_UART
                                               : CELLAR_URL_TCP;
    memcpy(u->host, t->host, sizeof(u->host));
    u->port = t->port;
    memcpy(u->device, t->path, sizeof(u->device));
    u->baud = t->baud;
    return 0;
}

int cellar_url_parse(const char *url, cellar_url_t *u)
{
    tp_url_t t;
    return parse_url(url, &t, u);
}

/* ---- the blocking adapter over a transport connection ----------------------------
 * A cellar_transport_t whose ctx is a non-blocking tp_conn_t: each call
 * waits, at most timeout_ms, for the events the connection's last call
 * asked for (tp_events: a TLS send may wait for readability), running the
 * connection's timers (deadline_ms) meanwhile. */
static int tpa_wait(tp_conn_t *t, unsigned ev, uint32_t timeout_ms)
{
    uint64_t end = tp_now_ms() + timeout_ms;
    for (;;) {
        uint64_t now = tp_now_ms();
        if (t->deadline_ms && now >= t->deadline_ms) {
            int err = tp_on_timer(t, now);
            if (err < 0)
                return err;
            continue;
        }
        if (t->fd < 0 && (tp_ready(t) & ev))
            return 0;
        /* issue 12: a timer (a UART link's) may have taken the bytes off
         * the descriptor already: they are buffered, the fd stays quiet. */
        if ((ev & TP_EV_READ) && tp_pending(t))
            return 0;
        uint64_t left = now < end ? end - now : 0, wait = left;
        if (t->deadline_ms && t->deadline_ms - now < wait)
            wait = t->deadline_ms - now;
        if (t->fd < 0 && wait > 1)
            wait = 1; /* no descriptor: look at tp_ready again soon */
        struct pollfd p = {
            .fd = t->fd,
            .events = (short)((ev & TP_EV_READ ? POLLIN : 0) |
                              (ev & TP_EV_WRITE ? POLLOUT : 0)),
        };
        int n = poll(&p, 1, (int)wait);
        if (n > 0 && t->fd >= 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n == 0 && wait == left)
            return t->fd < 0 && (tp_ready(t) & ev) ? 0 : CELLAR_ERR_TIMEDOUT;
    }
}

static int tpa_send(void *ctx, const void *buf, size_t len, uint32_t timeout_ms)
{
    tp_conn_t *t = ctx;
    for (;;) {
        int n = tp_send(t, buf, len);
        if (n > 0)
            return n;
        if (n != TP_WANT_READ && n != TP_WANT_WRITE)
            return n < 0 ? n : CELLAR_ERR_PIPE;
        int err = tpa_wait(t, tp_events(t, 0, 1), timeout_ms);
        if (err < 0)
            return err;
    }
}

static int tpa_recv(void *ctx, void *buf, size_t len, uint32_t timeout_ms)
{
    tp_conn_t *t = ctx;
    for (;;) {
        int n = tp_recv(t, buf, len);
        if (n != TP_WANT_READ && n != TP_WANT_WRITE)
            return n;
        int err = tpa_wait(t, tp_events(t, 1, 0), timeout_ms);
        if (err < 0)
            return err;
    }
}

static void tpa_close(void *ctx)
{
    tp_close(ctx);
}

static const cellar_transport_t tp_adapter = {
    .name = "tp", .send = tpa_send, .recv = tpa_recv, .close = tpa_close,
};

/* Run a connection's handshake to its end (plain TCP: at once). */
static int tpa_handshake(tp_conn_t *t, uint32_t timeout_ms)
{
    for (;;) {
        int rc = tp_handshake(t);
        if (rc != TP_WANT_READ && rc != TP_WANT_WRITE)
            return rc;
        int err = tpa_wait(t, tp_handshake_events(t), timeout_ms);
        if (err < 0)
            return err;
    }
}

/* ---- lifecycle ---------------------------------------------------------------- */
void cellar_init(cellar_t *c, const cellar_config_t *cfg)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    if (cfg)
        c->cfg = *cfg;
    if (!c->cfg.timeout_ms)
        c->cfg.timeout_ms = CELLAR_TIMEOUT_MS;
    if (!c->cfg.connect_timeout_ms)
        c->cfg.connect_timeout_ms = CELLAR_CONNECT_TIMEOUT_MS;
    c->next_id = 1;
}

void cellar_set_timeout(cellar_t *c, uint32_t timeout_ms)
{
    c->cfg.timeout_ms = timeout_ms ? timeout_ms : CELLAR_TIMEOUT_MS;
}

bool cellar_connected(const cellar_t *c)
{
    return c && c->tp && !c->broken;
}

int cellar_hello_status(cellar_t *c)
{
    if (c->hello_pending)
        (void)cellar__hello_wait(c);
    return c->hello_err;
}

const cellar_info_t *cellar_info(const cellar_t *c)
{
    /* a pipelined Hello: its answer first (issue 11) */
    if (c && c->hello_pending)
        (void)cellar__hello_wait((cellar_t *)(uintptr_t)c);
    return &c->info;
}

void cellar_close(cellar_t *c)
{
    if (!c)
        return;
    if (c->tp && c->tp->close)
        c->tp->close(c->tp_ctx);
    c->tp = NULL;
    c->tp_ctx = NULL;
    c->fd = -1;
    if (c->tls) { /* issue 13: after the connection that used it */
        tp_tls_config_free(c->tls);
        free(c->tls);
        c->tls = NULL;
    }
    c->tls_conn = NULL;
    if (c->own_buf)
        free(c->buf);
    c->buf = NULL;
    c->own_buf = false;
    c->broken = false;
    c->rx_start = c->rx_end = 0;
    c->hello_pending = false;
}

static int get_buffer(cellar_t *c)
{
    if (c->buf)
        return 0;
    if (c->cfg.buffer) {
        c->buf = c->cfg.buffer;
        c->own_buf = false;
        return 0;
    }
    c->buf = aligned_alloc(16, CELLAR_BUFFER_SIZE);
    if (!c->buf)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    c->own_buf = true;
    return 0;
}

static void hello_info(cellar_t *c);

static int hello(cellar_t *c)
{
    cellar_Request *req = cellar__new_req(c, cellar_Request_hello_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    req->body.hello.version = CELLAR_PROTOCOL_VERSION;
    const char *name = c->cfg.client_name ? c->cfg.client_name
                                          : "libcellar/" CELLAR_LIB_VERSION;
    snprintf(req->body.hello.client, sizeof(req->body.hello.client), "%s", name);
    c->hello_sent_us = cellar__now_us();
    if (c->cfg.hello_pipelined) {
        /* issue 11: do not wait; the answer is taken before the first
         * reply (cellar__recv) or by cellar_info */
        int64_t id = cellar__send(c);
        if (id < 0)
            return (int)id;
        c->hello_id = (uint32_t)id;
        c->hello_pending = true;
        return 0;
    }
    int err = cellar__rpc(c, cellar_Response_hello_tag);
    if (err < 0)
        return err;
    cellar__rtt_sample(c, cellar__now_us() - c->hello_sent_us);
    hello_info(c);
    return 0;
}

/* The answer of a pipelined Hello (issue 11): taken before any other. */
int cellar__hello_wait(cellar_t *c)
{
    if (!c->hello_pending)
        return 0;
    c->hello_pending = false;
    int err = cellar__recv(c);
    /* an error with id 0 before Hello's answer: the device refused the
     * connection (too many connections, an idle timeout): its message */
    if (err == 0 && cellar__resp(c)->id != c->hello_id &&
        !(cellar__resp(c)->id == 0 && cellar__resp(c)->has_error)) {
        c->broken = true;
        err = cellar__fail(c, CELLAR_ERR_PROTO, "the first reply is not Hello's");
    }
    if (err == 0)
        err = cellar__check(c, cellar_Response_hello_tag);
    if (err < 0) {
        char msg[sizeof(c->errmsg)];
        snprintf(msg, sizeof(msg), "%s", c->errmsg);
        c->broken = true;
        return c->hello_err = cellar__fail(c, err, "hello: %s", msg);
    }
    cellar__rtt_sample(c, cellar__now_us() - c->hello_sent_us);
    hello_info(c);
    return 0;
}

static void hello_info(cellar_t *c)
{
    const cellar_HelloReply *h = &cellar__resp(c)->body.hello;
    cellar_info_t *in = &c->info;
    memset(in, 0, sizeof(*in));
    in->version = h->version;
    snprintf(in->device, sizeof(in->device), "%s", h->device);
    snprintf(in->firmware, sizeof(in->firmware), "%s", h->firmware);
    in->max_frame = h->max_frame;
    in->max_inflight = h->max_inflight ? h->max_inflight : 1;
    in->max_path = h->max_path ? h->max_path : CELLAR_PATH_MAX;
    in->max_chunk = h->max_chunk ? h->max_chunk : 4096;
    in->max_handles = h->max_handles;
    in->max_items = h->max_items ? h->max_items : 16; /* issue 14 */
    in->block_size = h->block_size;
    in->block_count = h->block_count;
    in->page_size = h->page_size;
    in->npartitions = h->partitions_count;
    if (in->npartitions > CELLAR_MAX_PARTITIONS)
        in->npartitions = CELLAR_MAX_PARTITIONS;
    for (uint32_t i = 0; i < in->npartitions; i++) {
        cellar_partition_t *p = &in->partitions[i];
        snprintf(p->path, sizeof(p->path), "%s", h->partitions[i].path);
        p->first_block = h->partitions[i].first_block;
        p->block_count = h->partitions[i].block_count;
        p->read_only = h->partitions[i].read_only;
        p->state = (uint32_t)h->partitions[i].state;
        p->kind = (uint32_t)h->partitions[i].kind; /* issue 15 */
    }
    in->nproblems = h->problems_count;
    if (in->nproblems > CELLAR_MAX_PROBLEMS)
        in->nproblems = CELLAR_MAX_PROBLEMS;
    for (uint32_t i = 0; i < in->nproblems; i++)
        snprintf(in->problems[i], sizeof(in->problems[i]), "%s",
                 h->problems[i]);
    /* issue 13: identity and role */
    snprintf(in->identity, sizeof(in->identity), "%s", h->identity);
    snprintf(in->role, sizeof(in->role), "%s", h->role);
    in->nprefixes = h->prefixes_count < 4 ? h->prefixes_count : 4;
    for (uint32_t i = 0; i < in->nprefixes; i++)
        snprintf(in->prefixes[i], sizeof(in->prefixes[i]), "%s",
                 h->prefixes[i]);
    c->errmsg[0] = 0;
}

/* Attach a transport to a closed handle and say Hello. */
static int attach(cellar_t *c, const cellar_transport_t *tp, void *tp_ctx)
{
    int err = get_buffer(c);
    if (err < 0) {
        if (tp->close)
            tp->close(tp_ctx);
        return err;
    }
    c->tp = tp;
    c->tp_ctx = tp_ctx;
    c->broken = false;
    c->rx_start = c->rx_end = 0;
    err = hello(c);
    if (err < 0) {
        char msg[sizeof(c->errmsg)];
        snprintf(msg, sizeof(msg), "%s", c->errmsg);
        cellar_close(c);
        cellar__fail(c, err, "hello: %s", msg);
    }
    return err;
}

int cellar_connect_transport(cellar_t *c, const cellar_transport_t *tp,
                             void *tp_ctx)
{
    cellar_close(c);
    c->errmsg[0] = c->errpath[0] = 0;
    return attach(c, tp, tp_ctx);
}

/* ---- tls:// (issue 13) ------------------------------------------------------------ */
static const char *tls_opt(const char *v, const char *env)
{
    if (!v)
        v = getenv(env);
    return v && *v ? v : NULL;
}

static int tls_connect(cellar_t *c, const tp_url_t *url, tp_conn_t **conn,
                       char *why, size_t whylen)
{
    tp_tls_files_t f = {
        .cert = tls_opt(c->cfg.tls_cert, "CELLAR_CERT"),
        .key = tls_opt(c->cfg.tls_key, "CELLAR_KEY"),
        .ca = tls_opt(c->cfg.tls_ca, "CELLAR_CA"),
        .psk = tls_opt(c->cfg.tls_psk, "CELLAR_PSK"),
    };
    tp_tls_config_t *cfg = malloc(sizeof(*cfg));
    if (!cfg)
        return CELLAR_ERR_NOMEM;
    int err = tp_tls_host_config(cfg, false, &f, why, whylen);
    if (err < 0) {
        free(cfg);
        return err == -ENOENT || err == -EACCES || err == -EINVAL
               ? CELLAR_ERR_INVAL : err;
    }
    c->tls = cfg;
    if (c->tls_session_len && !f.psk)
        (void)tp_tls_session_load(cfg, c->tls_session, c->tls_session_len);
    uint32_t tmo = c->cfg.connect_timeout_ms;
    cfg->handshake_ms = tmo;
    err = tp_tls_connect(url, tmo > 600000 ? 600000 : (int)tmo, cfg, conn,
                         why, whylen);
    if (err < 0) {
        tp_tls_config_free(cfg);
        free(cfg);
        c->tls = NULL;
    }
    return err;
}

int cellar_tls_info(const cellar_t *c, cellar_tls_info_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!cellar_connected(c))
        return CELLAR_ERR_NOTCONN;
    if (!c->tls_conn)
        return 0;
    tp_tls_stats_t st = tp_tls_stats(c->tls_conn);
    out->tls = true;
    out->resumed = st.resumed;
    out->psk = st.psk;
    out->round_trips = st.round_trips;
    out->hs_bytes_out = st.hs_bytes_out;
    out->hs_bytes_in = st.hs_bytes_in;
    snprintf(out->suite, sizeof(out->suite), "%s", st.suite ? st.suite : "");
    return 0;
}

int cellar_connect(cellar_t *c, const char *url)
{
    cellar_close(c);
    c->errmsg[0] = c->errpath[0] = 0;
    cellar_url_t u;
    tp_url_t t;
    if (parse_url(url, &t, &u) < 0)
        return cellar__fail(c, CELLAR_ERR_INVAL,
                            "%s: invalid device URL (expected tcp://HOST:PORT, "
                            "tls://HOST:PORT or uart:/dev/ttyX?baud=N)",
                            url ? url : "(null)");
    tp_conn_t *conn = NULL;
    char why[300];
    uint32_t tmo = c->cfg.connect_timeout_ms;
    int err = u.kind == CELLAR_URL_TLS ? tls_connect(c, &t, &conn, why, sizeof(why))
            : u.kind == CELLAR_URL_UART /* issue 12: the serial link */
                ? tp_uart_connect(&t, &conn, why, sizeof(why))
                : tp_tcp_connect(&t, tmo > 600000 ? 600000 : (int)tmo, &conn, why,
                                 sizeof(why));
    if (err < 0)
        return cellar__fail(c, err, "%s: %s", url, why);
    err = tpa_handshake(conn, tmo);
    if (err < 0) {
        char tw[100];
        snprintf(tw, sizeof(tw), "%s", tp_tls_error(conn));
        tp_close(conn);
        cellar_close(c);
        return cellar__fail(c, err, "%s: handshake: %s", url,
                            tw[0] ? tw : cellar_strerror(err));
    }
    if (u.kind == CELLAR_URL_TLS) { /* keep the session for the next connect */
        int n = tp_tls_session_save(c->tls, c->tls_session,
                                    sizeof(c->tls_session));
        if (n > 0)
            c->tls_session_len = (uint32_t)n;
        c->tls_conn = conn;
    }
    c->fd = conn->fd;
    err = attach(c, &tp_adapter, conn);
    if (err < 0) {
        char msg[sizeof(c->errmsg)];
        snprintf(msg, sizeof(msg), "%s", c->errmsg);
        cellar__fail(c, err, "%s: %s", url, msg);
    }
    return err;
}

/* ---- framing ------------------------------------------------------------------ */
static int broken(cellar_t *c, int err, const char *what)
{
    c->broken = true;
    return cellar__fail(c, err, "connection %s: %s", what, cellar_strerror(err));
}

static int ready(cellar_t *c)
{
    if (!c->tp || !c->buf)
        return cellar__fail(c, CELLAR_ERR_NOTCONN, "not connected");
    if (c->broken)
        return cellar__fail(c, CELLAR_ERR_NOTCONN,
                            "connection lost earlier; reconnect");
    return 0;
}

/* Bytes of the request body member of a tag (clearing the whole 16 KiB
 * union for every small request would cost more than sending it). */
static size_t body_size(pb_size_t which)
{
    const cellar_Request *r = NULL;
    switch (which) {
    case cellar_Request_read_tag: return sizeof(r->body.read);
    case cellar_Request_sync_tag: return sizeof(r->body.sync);
    case cellar_Request_close_tag: return sizeof(r->body.close);
    case cellar_Request_seek_tag: return sizeof(r->body.seek);
    case cellar_Request_ping_tag: return sizeof(r->body.ping);
    default: return sizeof(r->body);
    }
}

cellar_Request *cellar__new_req(cellar_t *c, pb_size_t which)
{
    if (ready(c) < 0)
        return NULL;
    cellar_Request *req = cellar__req(c);
    memset(req, 0, offsetof(cellar_Request, body) + body_size(which));
    req->which_body = which;
    return req;
}

int64_t cellar__send(cellar_t *c)
{
    int err = ready(c);
    if (err < 0)
        return err;
    cellar_Request *req = cellar__req(c);
    req->id = c->next_id++;
    if (c->next_id == 0)
        c->next_id = 1;
    uint8_t *tx = c->buf + TX_OFF;
    int n = codec_encode_request(req, tx, TX_SIZE);
    if (n < 0)
        return cellar__fail(c, CELLAR_ERR_MSGSIZE,
                            "encoding request: does not fit a frame");
    if (c->info.max_frame && (uint32_t)n - CODEC_HDR > c->info.max_frame)
        return cellar__fail(c, CELLAR_ERR_MSGSIZE, /* issue 14 */
                            "request of %d bytes is above the device's max_frame (%u)",
                            n - (int)CODEC_HDR, (unsigned)c->info.max_frame);
    size_t off = 0, len = (size_t)n;
    while (off < len) {
        int w = c->tp->send(c->tp_ctx, tx + off, len - off, c->cfg.timeout_ms);
        if (w <= 0)
            return broken(c, w < 0 ? w : CELLAR_ERR_PIPE, "send");
        off += (size_t)w;
    }
    return req->id;
}

/* Make at least n bytes available at rx + rx_start. */
static int fill(cellar_t *c, uint32_t n)
{
    uint8_t *rx = c->buf + RX_OFF;
    if (c->rx_end - c->rx_start >= n)
        return 0;
    if (c->rx_start + n > RX_SIZE) {
        memmove(rx, rx + c->rx_start, c->rx_end - c->rx_start);
        c->rx_end -= c->rx_start;
        c->rx_start = 0;
    }
    while (c->rx_end - c->rx_start < n) {
        int r = c->tp->recv(c->tp_ctx, rx + c->rx_end, RX_SIZE - c->rx_end,
                            c->cfg.timeout_ms);
        if (r == 0)
            return broken(c, CELLAR_ERR_PIPE, "closed by the device");
        if (r < 0)
            return broken(c, r, "receive");
        c->rx_end += (uint32_t)r;
    }
    return 0;
}

/* Bytes of the next frame (with its length prefix) if known, else 4. */
static uint32_t next_frame_bytes(const cellar_t *c)
{
    if (c->rx_end - c->rx_start < 4)
        return 4;
    uint32_t n;
    if (codec_frame_len(c->buf + RX_OFF + c->rx_start, &n) < 0)
        return 4; /* cellar__recv reports it */
    return 4 + n;
}

int cellar__reply_ready(cellar_t *c)
{
    int err = ready(c);
    if (err < 0)
        return err;
    uint32_t need = next_frame_bytes(c);
    if (c->hello_pending) {
        /* a pipelined Hello (issue 11): take its answer only once it is
         * here; never wait for it in a call that must not block */
        if (c->rx_end - c->rx_start < need) {
            int r0 = c->tp->recv(c->tp_ctx, c->buf + RX_OFF + c->rx_end,
                                 RX_SIZE - c->rx_end, 0);
            if (r0 == CELLAR_ERR_TIMEDOUT)
                return 0;
            if (r0 == 0)
                return broken(c, CELLAR_ERR_PIPE, "closed by the device");
            if (r0 < 0)
                return broken(c, r0, "receive");
            c->rx_end += (uint32_t)r0;
            need = next_frame_bytes(c);
            if (c->rx_end - c->rx_start < need)
                return 0;
        }
        if ((err = cellar__hello_wait(c)) < 0)
            return err;
        need = next_frame_bytes(c);
    }
    if (c->rx_end - c->rx_start >= need)
        return 1;
    uint8_t *rx = c->buf + RX_OFF;
    if (c->rx_start + need > RX_SIZE || c->rx_end == RX_SIZE) {
        memmove(rx, rx + c->rx_start, c->rx_end - c->rx_start);
        c->rx_end -= c->rx_start;
        c->rx_start = 0;
    }
    int r = c->tp->recv(c->tp_ctx, rx + c->rx_end, RX_SIZE - c->rx_end, 0);
    if (r == CELLAR_ERR_TIMEDOUT)
        return 0;
    if (r == 0)
        return broken(c, CELLAR_ERR_PIPE, "closed by the device");
    if (r < 0)
        return broken(c, r, "receive");
    c->rx_end += (uint32_t)r;
    need = next_frame_bytes(c);
    return c->rx_end - c->rx_start >= need;
}

int cellar__recv(cellar_t *c)
{
    int err = ready(c);
    if (err < 0)
        return err;
    if (c->hello_pending) { /* issue 11: a pipelined Hello's answer first */
        err = cellar__hello_wait(c);
        if (err < 0)
            return err;
    }
    err = fill(c, 4);
    if (err < 0)
        return err;
    const uint8_t *p = c->buf + RX_OFF + c->rx_start;
    uint32_t n;
    if (codec_frame_len(p, &n) < 0) {
        c->broken = true;
        return cellar__fail(c, CELLAR_ERR_PROTO,
                            "bad frame length %u from the device", (unsigned)n);
    }
    err = fill(c, 4 + n);
    if (err < 0)
        return err;
    p = c->buf + RX_OFF + c->rx_start + 4;
    cellar_Response *resp = cellar__resp(c);
    const char *why = NULL;
    int bad = codec_decode_response(resp, p, n, &why);
    c->rx_start += 4 + n;
    if (c->rx_start == c->rx_end)
        c->rx_start = c->rx_end = 0;
    if (bad < 0) {
        c->broken = true;
        return cellar__fail(c, CELLAR_ERR_PROTO, "malformed reply: %s",
                            why ? why : "does not decode");
    }
    return 0;
}

int cellar__check(cellar_t *c, pb_size_t which)
{
    cellar_Response *resp = cellar__resp(c);
    if (resp->has_error && resp->error.code != 0) {
        int code = (int)resp->error.code;
        if (code < 0 || code > 4095)
            code = -CELLAR_ERR_IO;
        resp->error.message[sizeof(resp->error.message) - 1] = 0;
        if (resp->error.message[0])
            cellar__fail(c, -code, "%s", resp->error.message);
        else
            cellar__fail(c, -code, "%s", cellar_strerror(code));
        return -code;
    }
    if (which && resp->which_body != which)
        return cellar__fail(c, CELLAR_ERR_PROTO,
                            "unexpected reply (body %u, expected %u)",
                            (unsigned)resp->which_body, (unsigned)which);
    return 0;
}

int cellar__rpc(cellar_t *c, pb_size_t which)
{
    int64_t id = cellar__send(c);
    if (id < 0)
        return (int)id;
    int err = cellar__recv(c);
    if (err < 0)
        return err;
    cellar_Response *resp = cellar__resp(c);
    if (resp->id != (uint32_t)id) {
        if (resp->id == 0 && resp->has_error)
            return cellar__check(c, which); /* unsolicited error */
        c->broken = true;
        return cellar__fail(c, CELLAR_ERR_PROTO,
                            "reply id %u does not match request id %u",
                            (unsigned)resp->id, (unsigned)id);
    }
    return cellar__check(c, which);
}

int cellar__path(cellar_t *c, char *dst, size_t cap, const char *path)
{
    if (!path)
        return cellar__fail(c, CELLAR_ERR_INVAL, "no path given");
    size_t n = strlen(path);
    if (n >= cap || n > CELLAR_PATH_MAX) {
        cellar__fail(c, CELLAR_ERR_NAMETOOLONG, "%.64s...: path too long",
                     path);
        return CELLAR_ERR_NAMETOOLONG;
    }
    memcpy(dst, path, n + 1);
    return 0;
}

cellar_Request *cellar__path_req(cellar_t *c, pb_size_t which, const char *path,
                                 int *err)
{
    cellar_Request *req = cellar__new_req(c, which);
    if (!req) {
        *err = CELLAR_ERR_NOTCONN;
        return NULL;
    }
    char *dst;
    size_t cap;
#define PATH_FIELD(f) (dst = req->body.f, cap = sizeof(req->body.f))
    switch (which) {
    case cellar_Request_stat_tag: PATH_FIELD(stat.path); break;
    case cellar_Request_list_tag: PATH_FIELD(list.path); break;
    case cellar_Request_open_tag: PATH_FIELD(open.path); break;
    case cellar_Request_truncate_tag: PATH_FIELD(truncate.path); break;
    case cellar_Request_remove_tag: PATH_FIELD(remove.path); break;
    case cellar_Request_mkdir_tag: PATH_FIELD(mkdir.path); break;
    case cellar_Request_rmdir_tag: PATH_FIELD(rmdir.path); break;
    case cellar_Request_rename_tag: PATH_FIELD(rename.from); break;
    case cellar_Request_statfs_tag: PATH_FIELD(statfs.path); break;
    case cellar_Request_hash_tag: PATH_FIELD(hash.path); break;
    default:
        *err = cellar__fail(c, CELLAR_ERR_INVAL, "request %u has no path",
                            (unsigned)which);
        return NULL;
    }
#undef PATH_FIELD
    *err = cellar__path(c, dst, cap, path);
    return *err < 0 ? NULL : req;
}

int cellar__hash_req(cellar_t *c, const char *path, uint64_t off, uint64_t len)
{
    int err;
    cellar_Request *req = cellar__path_req(c, cellar_Request_hash_tag, path, &err);
    if (!req)
        return err;
    req->body.hash.offset = off;
    req->body.hash.length = len;
    return 0;
}

int cellar__handle_req(cellar_t *c, pb_size_t which, cellar_fh_t handle)
{
    cellar_Request *req = cellar__new_req(c, which);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    switch (which) {
    case cellar_Request_sync_tag: req->body.sync.handle = handle; break;
    case cellar_Request_close_tag: req->body.close.handle = handle; break;
    case cellar_Request_truncate_tag: req->body.truncate.handle = handle; break;
    default:
        return cellar__fail(c, CELLAR_ERR_INVAL, "request %u has no handle",
                            (unsigned)which);
    }
    return 0;
}

/* ---- slow requests ------------------------------------------------------------- */
/* An RPC whose answer may take the device a while (it hashes files). */
int cellar__slow_rpc(cellar_t *c, pb_size_t which)
{
    uint32_t saved = c->cfg.timeout_ms;
    if (c->cfg.timeout_ms < CELLAR_SLOW_TIMEOUT_MS)
        c->cfg.timeout_ms = CELLAR_SLOW_TIMEOUT_MS;
    int err = cellar__rpc(c, which);
    c->cfg.timeout_ms = saved;
    return err;
}

/* ---- transfer parameters ------------------------------------------------------ */
uint32_t cellar__chunk(const cellar_t *c, const cellar_xfer_t *x)
{
    if (c->hello_pending) /* sized from HelloReply (issue 11) */
        (void)cellar__hello_wait((cellar_t *)(uintptr_t)c);
    uint32_t chunk = (x && x->chunk) ? x->chunk : CELLAR_CHUNK;
    if (chunk > CELLAR_CHUNK)
        chunk = CELLAR_CHUNK;
    if (c->info.max_chunk && chunk > c->info.max_chunk)
        chunk = c->info.max_chunk;
    return chunk ? chunk : 1;
}

size_t cellar__items(const cellar_t *c, size_t page)
{
    /* the device's limits: a pipelined Hello's answer first (a caller
     * that must not wait sizes for CELLAR__MIN_ITEMS itself) */
    if (c->hello_pending)
        (void)cellar__hello_wait((cellar_t *)(uintptr_t)c);
    if (c->info.max_items && page > c->info.max_items)
        page = c->info.max_items;
    return page ? page : 1;
}

size_t cellar__fit(cellar_t *c, pb_size_t *count)
{
    if (c->hello_pending)
        (void)cellar__hello_wait(c);
    const cellar_Request *req = cellar__req(c);
    size_t size;
    while (c->info.max_frame && *count > 1 &&
           pb_get_encoded_size(&size, cellar_Request_fields, req) &&
           size > c->info.max_frame)
        (*count)--;
    return *count;
}

uint32_t cellar__window(const cellar_t *c, const cellar_xfer_t *x)
{
    if (c->hello_pending)
        (void)cellar__hello_wait((cellar_t *)(uintptr_t)c);
    uint32_t w = c->info.max_inflight ? c->info.max_inflight : 1;
    if (x && x->inflight && x->inflight < w)
        w = x->inflight;
    /* issue 11: no more chunks than the bytes the link holds */
    uint32_t chunk = cellar__chunk(c, x);
    uint64_t wb = cellar__window_bytes((cellar_t *)(uintptr_t)c, chunk);
    uint64_t wr = (wb + chunk - 1) / chunk;
    if (wr < w)
        w = (uint32_t)wr;
    if (w > CELLAR_MAX_INFLIGHT)
        w = CELLAR_MAX_INFLIGHT;
    return w ? w : 1;
}

/* ---- the link estimate (issue 11, docs/PIPELINING.md "The window") ------------------ */
void cellar__rtt_sample(cellar_t *c, uint64_t us)
{
    if (us == 0)
        us = 1;
    if (us > UINT32_MAX)
        us = UINT32_MAX;
    if (c->rtt_us == 0 || us < c->rtt_us)
        c->rtt_us = (uint32_t)us;
}

void cellar__rate_sample(cellar_t *c, uint64_t bytes, uint64_t us)
{
    /* only transfers long enough to say something about the link */
    if (bytes < 65536 || us < 1000)
        return;
    uint64_t bps = bytes * 8u * 1000000u / us;
    c->rate_bps = c->rate_bps ? (c->rate_bps + bps) / 2 : bps;
}

/* Bytes in flight: twice the bandwidth-delay product (so the link stays
 * full while answers travel back), at least 8 chunks, at most what the
 * device accepts (max_inflight frames of max_frame bytes). Before a
 * transfer has measured the rate: the device's limit. */
uint64_t cellar__window_bytes(cellar_t *c, uint32_t chunk)
{
    if (c->hello_pending)
        (void)cellar__hello_wait(c);
    uint64_t frame = c->info.max_frame ? c->info.max_frame : (uint64_t)chunk + 64;
    uint64_t dev = (uint64_t)(c->info.max_inflight ? c->info.max_inflight : 1) * frame;
    if (!c->rate_bps || !c->rtt_us)
        return dev;
    uint64_t bdp = c->rate_bps / 8u * c->rtt_us / 1000000u;
    uint64_t w = 2 * bdp + 2 * (uint64_t)chunk;
    if (w < 8 * (uint64_t)chunk)
        w = 8 * (uint64_t)chunk;
    return w < dev ? w : dev;
}
