/* tp_lwip.c - the transport over lwIP's raw TCP API (tp_lwip.h; issue 14).
 * Portable: no OS call, no malloc, no stdio. */
#include "tp_lwip.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "lwip/ip_addr.h"
#include "lwip/pbuf.h"
#include "lwip/tcp.h"

typedef struct tp_lwip_conn {
    tp_conn_t tp;
    struct tcp_pcb *pcb;   /* NULL once lwIP freed it (error) */
    /* Received pbuf chains, oldest first, as lwIP handed them over; each
     * chain's tot_len stays <= 0xFFFF (lwIP's u16), so a new chain is
     * appended to the last one only while the sum fits. */
    struct pbuf *rx[TP_LWIP_RX_RING];
    uint8_t rx_head, rx_n;
    bool used;
    bool eof;              /* the peer's FIN arrived */
    int err;               /* negative errno after lwIP's error callback */
    uint32_t rx_bytes;     /* bytes queued in rx */
} tp_lwip_conn_t;

typedef struct tp_lwip_listener {
    tp_listener_t l;
    struct tcp_pcb *pcb;
    tp_lwip_conn_t *q[TP_LWIP_MAX_CONNS]; /* accepted, not yet taken */
    uint8_t qh, qn;
    bool used;
} tp_lwip_listener_t;

_Static_assert(TP_LWIP_MAX_CONNS >= 1 && TP_LWIP_MAX_CONNS <= 255,
               "TP_LWIP_MAX_CONNS: 1..255 (uint8_t queue indexes)");
_Static_assert(TP_LWIP_RX_RING >= 2 && TP_LWIP_RX_RING <= 255,
               "TP_LWIP_RX_RING: 2..255");

static tp_lwip_conn_t g_conns[TP_LWIP_MAX_CONNS];
static tp_lwip_listener_t g_lis[TP_LWIP_MAX_LISTENERS];
static tp_lwip_stats_t g_st;

static const tp_conn_type_t lwip_conn_type;
static const tp_listener_type_t lwip_listener_type;

/* ---- small helpers ----------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (!err || !errlen)
        return;
    size_t n = strlen(msg);
    if (n >= errlen)
        n = errlen - 1;
    memcpy(err, msg, n);
    err[n] = 0;
}

static int errno_of(err_t e)
{
    switch (e) {
    case ERR_OK: return 0;
    case ERR_MEM: case ERR_BUF: return -ENOMEM;
    case ERR_RST: return -ECONNRESET;
    case ERR_ABRT: return -ECONNABORTED;
    case ERR_CLSD: case ERR_CONN: return -EPIPE;
    case ERR_USE: return -EADDRINUSE;
    case ERR_RTE: return -EHOSTUNREACH;
    case ERR_TIMEOUT: return -ETIMEDOUT;
    case ERR_VAL: case ERR_ARG: return -EINVAL;
    default: return -EIO;
    }
}

/* "ADDR:PORT" or "[ADDR]:PORT" into out (cap >= 2). */
static void format_hostport(const ip_addr_t *a, uint16_t port, char *out,
                            size_t cap)
{
    char ip[IPADDR_STRLEN_MAX], num[6];
    size_t o = 0, i = 0;
    bool v6 = IP_IS_V6(a) && !ip_addr_isany(a);
    if (ip_addr_isany(a))
        memcpy(ip, IP_IS_V4(a) ? "0.0.0.0" : "::", IP_IS_V4(a) ? 8 : 3);
    else if (!ipaddr_ntoa_r(a, ip, sizeof(ip)))
        memcpy(ip, "?", 2);
    int n = 0;
    do {
        num[n++] = (char)('0' + port % 10);
        port /= 10;
    } while (port && n < 5);
#define PUT(ch) do { if (o + 1 < cap) out[o++] = (ch); } while (0)
    if (v6 || !IP_IS_V4(a))
        PUT('[');
    for (; ip[i]; i++) /* lwIP prints IPv6 hex digits in capitals */
        PUT(ip[i] >= 'A' && ip[i] <= 'F' ? (char)(ip[i] - 'A' + 'a') : ip[i]);
    if (v6 || !IP_IS_V4(a))
        PUT(']');
    PUT(':');
    while (n)
        PUT(num[--n]);
#undef PUT
    out[o] = 0;
}

static void put_str(char *dst, size_t cap, const char *a, const char *b)
{
    size_t o = 0;
    for (const char *s = a; *s && o + 1 < cap; s++)
        dst[o++] = *s;
    for (const char *s = b; *s && o + 1 < cap; s++)
        dst[o++] = *s;
    dst[o] = 0;
}

/* ---- lwIP callbacks (the context that drives lwIP) -------------------------- */

static void note_rx_peak(tp_lwip_conn_t *c)
{
    if (c->rx_bytes > g_st.rx_queued_peak)
        g_st.rx_queued_peak = c->rx_bytes;
    uint32_t pbufs = 0;
    for (unsigned i = 0; i < c->rx_n; i++)
        pbufs += pbuf_clen(c->rx[(c->rx_head + i) % TP_LWIP_RX_RING]);
    if (pbufs > g_st.rx_pbufs_peak)
        g_st.rx_pbufs_peak = pbufs;
}

static err_t on_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
    tp_lwip_conn_t *c = arg;
    (void)pcb;
    if (!c) { /* not ours any more (closed): lwIP's default */
        if (p) {
            tcp_recved(pcb, p->tot_len);
            pbuf_free(p);
        }
        return ERR_OK;
    }
    if (!p) {
        c->eof = true;
        return ERR_OK;
    }
    (void)err; /* always ERR_OK for data in lwIP 2.x */
    if (c->rx_n) {
        struct pbuf *last = c->rx[(c->rx_head + c->rx_n - 1) % TP_LWIP_RX_RING];
        if ((uint32_t)last->tot_len + p->tot_len <= 0xFFFFu) {
            pbuf_cat(last, p);
            goto queued;
        }
    }
    if (c->rx_n == TP_LWIP_RX_RING)
        return ERR_MEM; /* lwIP keeps it (refused_data) and offers it again */
    c->rx[(c->rx_head + c->rx_n++) % TP_LWIP_RX_RING] = p;
queued:
    c->rx_bytes += p->tot_len;
    note_rx_peak(c);
    if (c->pcb && c->pcb->rcv_wnd == 0)
        g_st.wnd_closed++;
    return ERR_OK;
}

static void on_err(void *arg, err_t err)
{
    tp_lwip_conn_t *c = arg;
    if (!c)
        return;
    c->pcb = NULL; /* lwIP has freed it */
    c->err = errno_of(err);
    if (c->err == 0)
        c->err = -EIO;
}

static void conn_free_rx(tp_lwip_conn_t *c)
{
    while (c->rx_n) {
        pbuf_free(c->rx[c->rx_head]);
        c->rx[c->rx_head] = NULL;
        c->rx_head = (uint8_t)((c->rx_head + 1) % TP_LWIP_RX_RING);
        c->rx_n--;
    }
    c->rx_bytes = 0;
}

static err_t on_accept(void *arg, struct tcp_pcb *newpcb, err_t err)
{
    tp_lwip_listener_t *L = arg;
    if (err != ERR_OK || !newpcb || !L)
        return ERR_VAL;
    tp_lwip_conn_t *c = NULL;
    for (unsigned i = 0; i < TP_LWIP_MAX_CONNS; i++)
        if (!g_conns[i].used) {
            c = &g_conns[i];
            break;
        }
    if (!c || L->qn >= TP_LWIP_MAX_CONNS) {
        g_st.refused++;
        return ERR_MEM; /* lwIP aborts it (RST) */
    }
    memset(c, 0, sizeof(*c));
    c->used = true;
    c->pcb = newpcb;
    c->tp.type = &lwip_conn_type;
    c->tp.fd = -1;
    c->tp.priv = c;
    char hp[IPADDR_STRLEN_MAX + 10];
    format_hostport(&newpcb->remote_ip, newpcb->remote_port, hp, sizeof(hp));
    put_str(c->tp.peer, sizeof(c->tp.peer), "lwip ", hp);
    tcp_arg(newpcb, c);
    tcp_recv(newpcb, on_recv);
    tcp_err(newpcb, on_err);
    tcp_nagle_disable(newpcb); /* replies go out as they are written */
    L->q[(L->qh + L->qn++) % TP_LWIP_MAX_CONNS] = c;
    g_st.accepts++;
    if (++g_st.conns > g_st.conns_peak)
        g_st.conns_peak = g_st.conns;
    return ERR_OK;
}

/* ---- connections ------------------------------------------------------------- */

static int lw_recv(tp_conn_t *t, uint8_t *buf, size_t len)
{
    tp_lwip_conn_t *c = t->priv;
    size_t done = 0;
    if (len > 0x7FFFFFFFu)
        len = 0x7FFFFFFFu;
    while (done < len && c->rx_n) {
        struct pbuf *p = c->rx[c->rx_head];
        size_t want = len - done;
        if (want > p->tot_len)
            want = p->tot_len;
        u16_t n = pbuf_copy_partial(p, buf + done, (u16_t)want, 0);
        done += n;
        c->rx_bytes -= n;
        p = pbuf_free_header(p, n);
        if (p) {
            c->rx[c->rx_head] = p;
        } else {
            c->rx[c->rx_head] = NULL;
            c->rx_head = (uint8_t)((c->rx_head + 1) % TP_LWIP_RX_RING);
            c->rx_n--;
        }
        if (n == 0)
            break;
    }
    if (done) {
        /* Only what the service took opens the window again. */
        for (size_t left = done; c->pcb && left;) {
            u16_t k = left > 0xFFFFu ? 0xFFFFu : (u16_t)left;
            tcp_recved(c->pcb, k);
            left -= k;
        }
        g_st.rx_bytes += done;
        return (int)done;
    }
    if (c->err)
        return c->err;
    if (c->eof || !c->pcb)
        return 0;
    return TP_WANT_READ;
}

static int lw_send(tp_conn_t *t, const uint8_t *buf, size_t len)
{
    tp_lwip_conn_t *c = t->priv;
    if (c->err)
        return c->err;
    if (!c->pcb)
        return -EPIPE;
    if (len == 0)
        return 0;
    size_t room = tcp_sndbuf(c->pcb);
    if (room > 0xFFFFu)
        room = 0xFFFFu;
    if (len > room)
        len = room;
    if (len == 0 || tcp_sndqueuelen(c->pcb) >= TCP_SND_QUEUELEN)
        return TP_WANT_WRITE;
    err_t e = tcp_write(c->pcb, buf, (u16_t)len, TCP_WRITE_FLAG_COPY);
    if (e == ERR_MEM) {
        /* the queue is full of small pieces: let ACKs drain it */
        (void)tcp_output(c->pcb);
        return TP_WANT_WRITE;
    }
    if (e != ERR_OK)
        return errno_of(e);
    e = tcp_output(c->pcb); /* push it out now */
    if (e != ERR_OK && e != ERR_MEM && e != ERR_RTE)
        return errno_of(e);
    uint32_t unacked = (uint32_t)(TCP_SND_BUF - tcp_sndbuf(c->pcb));
    if (unacked > g_st.tx_unacked_peak)
        g_st.tx_unacked_peak = unacked;
    if (tcp_sndqueuelen(c->pcb) > g_st.tx_queuelen_peak)
        g_st.tx_queuelen_peak = tcp_sndqueuelen(c->pcb);
    g_st.tx_bytes += len;
    return (int)len;
}

static unsigned lw_ready(tp_conn_t *t)
{
    tp_lwip_conn_t *c = t->priv;
    unsigned ev = 0;
    if (c->rx_n || c->eof || c->err || !c->pcb)
        ev |= TP_EV_READ;
    if (c->err || !c->pcb ||
        (tcp_sndbuf(c->pcb) > 0 && tcp_sndqueuelen(c->pcb) < TCP_SND_QUEUELEN))
        ev |= TP_EV_WRITE;
    return ev;
}

static void lw_close(tp_conn_t *t)
{
    tp_lwip_conn_t *c = t->priv;
    struct tcp_pcb *pcb = c->pcb;
    if (pcb) {
        tcp_arg(pcb, NULL);
        tcp_recv(pcb, NULL);
        tcp_err(pcb, NULL);
        /* Give back the window of what was never read, so lwIP closes
         * with a FIN (unread data would make it send a RST). */
        for (uint32_t left = c->rx_bytes; left;) {
            u16_t k = left > 0xFFFFu ? 0xFFFFu : (u16_t)left;
            tcp_recved(pcb, k);
            left -= k;
        }
    }
    conn_free_rx(c);
    if (pcb && tcp_close(pcb) != ERR_OK)
        tcp_abort(pcb);
    c->pcb = NULL;
    c->used = false;
    if (g_st.conns)
        g_st.conns--;
}

static const tp_conn_type_t lwip_conn_type = {
    .name = "lwip",
    .send = lw_send,
    .recv = lw_recv,
    .close = lw_close,
    .ready = lw_ready,
};

/* ---- listeners --------------------------------------------------------------- */

static int lw_accept(tp_listener_t *l, tp_conn_t **out)
{
    tp_lwip_listener_t *L = l->priv;
    if (!L->qn)
        return TP_WANT_READ;
    tp_lwip_conn_t *c = L->q[L->qh];
    L->q[L->qh] = NULL;
    L->qh = (uint8_t)((L->qh + 1) % TP_LWIP_MAX_CONNS);
    L->qn--;
    *out = &c->tp;
    return 0;
}

static void lw_listener_close(tp_listener_t *l)
{
    tp_lwip_listener_t *L = l->priv;
    tp_conn_t *c;
    while (lw_accept(l, &c) == 0)
        lw_close(c);
    if (L->pcb) {
        tcp_arg(L->pcb, NULL);
        tcp_accept(L->pcb, NULL);
        if (tcp_close(L->pcb) != ERR_OK)
            tcp_abort(L->pcb);
        L->pcb = NULL;
    }
    L->used = false;
}

static const tp_listener_type_t lwip_listener_type = {
    .name = "lwip",
    .accept = lw_accept,
    .close = lw_listener_close,
};

int tp_lwip_listen(const void *addr, uint16_t port, tp_listener_t **out,
                   char *err, size_t errlen)
{
    const ip_addr_t *a = addr ? (const ip_addr_t *)addr : IP_ANY_TYPE;
    tp_lwip_listener_t *L = NULL;
    err_t e;
    *out = NULL;
    if (port == 0) {
        set_err(err, errlen, "lwip: listen needs a port (1..65535)");
        return -EINVAL;
    }
    for (unsigned i = 0; i < TP_LWIP_MAX_LISTENERS; i++)
        if (!g_lis[i].used) {
            L = &g_lis[i];
            break;
        }
    if (!L) {
        set_err(err, errlen, "lwip: all TP_LWIP_MAX_LISTENERS in use");
        return -ENOSPC;
    }
    struct tcp_pcb *pcb = tcp_new_ip_type(IP_GET_TYPE(a));
    if (!pcb) {
        set_err(err, errlen, "lwip: tcp_new: out of memory");
        return -ENOMEM;
    }
    e = tcp_bind(pcb, a, port);
    if (e != ERR_OK) {
        tcp_abort(pcb);
        set_err(err, errlen, e == ERR_USE ? "lwip: address in use"
                                          : "lwip: cannot bind");
        return errno_of(e);
    }
    struct tcp_pcb *lpcb = tcp_listen_with_backlog_and_err(
        pcb, (u8_t)TP_LWIP_MAX_CONNS, &e);
    if (!lpcb) {
        tcp_abort(pcb);
        set_err(err, errlen, "lwip: tcp_listen failed");
        return e != ERR_OK ? errno_of(e) : -ENOMEM;
    }
    memset(L, 0, sizeof(*L));
    L->used = true;
    L->pcb = lpcb;
    L->l.type = &lwip_listener_type;
    L->l.fd = -1;
    L->l.priv = L;
    tcp_arg(lpcb, L);
    tcp_accept(lpcb, on_accept);
    char hp[IPADDR_STRLEN_MAX + 10];
    format_hostport(a, port, hp, sizeof(hp));
    put_str(L->l.url, sizeof(L->l.url), "tcp://", hp);
    *out = &L->l;
    return 0;
}

unsigned tp_lwip_accept_pending(const tp_listener_t *l)
{
    if (!l || l->type != &lwip_listener_type)
        return 0;
    return ((const tp_lwip_listener_t *)l->priv)->qn;
}

void tp_lwip_stats(tp_lwip_stats_t *out)
{
    *out = g_st;
    out->slot_bytes = (uint32_t)sizeof(tp_lwip_conn_t);
}

void tp_lwip_stats_reset(void)
{
    uint32_t conns = g_st.conns;
    memset(&g_st, 0, sizeof(g_st));
    g_st.conns = g_st.conns_peak = conns;
}
