/* tp_link.c - a tp_conn_t over the link layer (see tp_link.h). Portable. */
#include "tp_link.h"

#include <errno.h>
#include <string.h>

#define TP_LINK_HOUSEKEEPING_MS 20

static tp_link_t *tlink(tp_conn_t *c)
{
    return (tp_link_t *)c; /* conn is the first member */
}

/* Move bytes: the inner stream's input into the link, the link's timers,
 * the link's output into the inner stream; then the next deadline. */
static void pump(tp_link_t *tl)
{
    tp_conn_t *in = tl->conn.inner;
    link_t *l = &tl->link;
    uint64_t now = tp_now_ms();
    uint8_t buf[512];

    for (int i = 0; i < 64 && !tl->inner_err && !tl->inner_eof; i++) {
        int n = tp_recv(in, buf, sizeof(buf));
        if (n > 0) {
            link_input(l, buf, (size_t)n, now);
            continue;
        }
        if (n == 0)
            tl->inner_eof = true;
        else if (n != TP_WANT_READ && n != TP_WANT_WRITE)
            tl->inner_err = n;
        break;
    }
    uint64_t d = link_deadline(l);
    if (d && d <= now)
        link_poll(l, now);
    while (tl->sbuf_len) { /* the send buffer into the window */
        int k = link_write(l, tl->sbuf, tl->sbuf_len, now);
        if (k <= 0)
            break;
        memmove(tl->sbuf, tl->sbuf + k, tl->sbuf_len - (size_t)k);
        tl->sbuf_len -= (size_t)k;
    }
    tl->tx_blocked = false;
    for (int i = 0; i < 256 && !tl->inner_err; i++) {
        const uint8_t *p;
        size_t len = link_tx_peek(l, &p, now);
        if (!len)
            break;
        int n = tp_send(in, p, len);
        if (n > 0) {
            link_tx_consume(l, (size_t)n, now);
            continue;
        }
        if (n == TP_WANT_WRITE || n == TP_WANT_READ || n == 0)
            tl->tx_blocked = true;
        else
            tl->inner_err = n;
        break;
    }
    d = link_deadline(l);
    if (tl->tx_blocked && (!d || d > now + 2))
        d = now + 2; /* come back to push the rest out */
    /* An event loop reads only while its application wants input; the
     * link must still take acks and frames in and answer them (else the
     * peer times out): look at the port at least every 20 ms. */
    if (link_is_open(l) && (!d || d > now + TP_LINK_HOUSEKEEPING_MS))
        d = now + TP_LINK_HOUSEKEEPING_MS;
    tl->conn.deadline_ms = d;
}

/* The stream has ended or broken: the code to return, 0 if it has not. */
static int ended(tp_link_t *tl)
{
    if (tl->link.state == LINK_RESET)
        return -ECONNRESET;
    if (tl->inner_err)
        return tl->inner_err;
    if (tl->inner_eof)
        return -ECONNRESET;
    return 0;
}

static int tl_handshake(tp_conn_t *c)
{
    tp_link_t *tl = tlink(c);
    pump(tl);
    if (link_is_open(&tl->link)) {
        pump(tl); /* our SYNACK, if the peer still needs it */
        return 0;
    }
    int e = ended(tl);
    return e ? e : TP_WANT_READ;
}

static int tl_recv(tp_conn_t *c, uint8_t *buf, size_t len)
{
    tp_link_t *tl = tlink(c);
    pump(tl);
    if (len > 0x7fffffff)
        len = 0x7fffffff;
    int n = link_read(&tl->link, buf, len, tp_now_ms());
    if (n > 0) {
        pump(tl); /* acks and window updates out */
        return n;
    }
    if (n < 0)
        return -ECONNRESET;
    if (link_eof(&tl->link))
        return 0;
    int e = ended(tl);
    return e ? e : TP_WANT_READ;
}

static int tl_send(tp_conn_t *c, const uint8_t *buf, size_t len)
{
    tp_link_t *tl = tlink(c);
    pump(tl);
    if (len > 0x7fffffff)
        len = 0x7fffffff;
    int n = tl->sbuf_len ? 0 : link_write(&tl->link, buf, len, tp_now_ms());
    if (n == LINK_ERR_RESET || tl->link.state == LINK_RESET)
        return -ECONNRESET;
    if (n < 0 || tl->link.state != LINK_OPEN)
        return -EPIPE;
    if (tl->inner_err)
        return tl->inner_err;
    if ((size_t)n < len && tl->sbuf_len < tl->sbuf_cap) { /* the rest waits */
        size_t k = len - (size_t)n, room = tl->sbuf_cap - tl->sbuf_len;
        if (k > room)
            k = room;
        memcpy(tl->sbuf + tl->sbuf_len, buf + n, k);
        tl->sbuf_len += k;
        n += (int)k;
    }
    pump(tl);
    /* A full window frees up with acks, which come in by reading. */
    return n > 0 ? n : TP_WANT_READ;
}

static size_t tl_pending(tp_conn_t *c)
{
    return link_readable(&tlink(c)->link);
}

static unsigned tl_ready(tp_conn_t *c)
{
    tp_link_t *tl = tlink(c);
    unsigned ev = tp_ready(c->inner) & TP_EV_READ;
    if (link_readable(&tl->link) || ended(tl))
        ev |= TP_EV_READ;
    return ev;
}

static int tl_on_timer(tp_conn_t *c, uint64_t now_ms)
{
    (void)now_ms;
    tp_link_t *tl = tlink(c);
    pump(tl);
    return tl->inner_err && tl->inner_err != TP_WANT_READ ? tl->inner_err : 0;
}

static void tl_close(tp_conn_t *c)
{
    tp_link_t *tl = tlink(c);
    /* Best effort: what is queued, then a FIN. */
    link_close(&tl->link);
    pump(tl);
    tp_close(c->inner);
    c->inner = NULL;
    if (tl->release)
        tl->release(tl);
}

static const tp_conn_type_t tp_link_type = {
    .name = "uart",
    .send = tl_send,
    .recv = tl_recv,
    .pending = tl_pending,
    .close = tl_close,
    .handshake = tl_handshake,
    .ready = tl_ready,
    .on_timer = tl_on_timer,
};

int tp_link_init(tp_link_t *tl, tp_conn_t *inner, const link_config_t *cfg,
                 void *mem, size_t memlen, const char *peer,
                 void (*release)(tp_link_t *tl))
{
    memset(tl, 0, sizeof(*tl));
    int rc = link_init(&tl->link, cfg, mem, memlen, tp_now_ms());
    if (rc)
        return rc;
    tl->conn.type = &tp_link_type;
    tl->conn.fd = inner->fd;
    tl->conn.inner = inner;
    tl->conn.priv = tl;
    tl->release = release;
    if (peer) {
        size_t n = strlen(peer);
        if (n >= sizeof(tl->conn.peer))
            n = sizeof(tl->conn.peer) - 1;
        memcpy(tl->conn.peer, peer, n);
    }
    memcpy(tl->conn.identity, TP_ANONYMOUS, sizeof(TP_ANONYMOUS));
    tl->conn.deadline_ms = tp_now_ms(); /* the first SYN at once */
    return 0;
}
