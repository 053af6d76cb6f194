/*
 * tp_link.h - a tp_conn_t over the serial link layer (issue 12): wraps an
 * inner byte stream (a UART, an in-memory pair) kept in conn.inner, as TLS
 * wraps TCP. Its handshake is the link set-up (SYN / SYNACK), its on_timer
 * runs the link's timers (retransmission, delayed acks, SYN repetition),
 * recv and send carry the same byte stream as TCP.
 *
 * Portable: no OS calls and no allocation; the caller owns the tp_link_t
 * and the link's frame buffer (LINK_MEM_SIZE) and says how to free them
 * (release, called last by close; NULL for static storage). The clock is
 * tp_now_ms() (the device gives its own).
 *
 * recv returns -ECONNRESET once the peer has restarted the link (a new
 * SYN): the stream is gone and the connection must be closed; a device
 * then opens a fresh link (a new service connection) and the client, which
 * reconnected, resumes its push. recv returns 0 after the peer's FIN.
 */
#ifndef CELLAR_TP_LINK_H
#define CELLAR_TP_LINK_H

#include "link.h"
#include "tp.h"

typedef struct tp_link tp_link_t;

struct tp_link {
    tp_conn_t conn;               /* first: &tl->conn is the connection */
    link_t link;
    int inner_err;                /* the inner stream's end (0 = none yet) */
    bool inner_eof;
    bool tx_blocked;              /* the inner stream took no more bytes */
    void (*release)(tp_link_t *tl); /* called last by close, or NULL */
    void *owner;                  /* for release */
    /* Optional send buffer beyond the window (tp_link_set_sendbuf): a
     * client that writes many small requests before it reads (as over
     * TCP's big socket buffers) must not block on a full window while the
     * peer waits for it to read. NULL on a device. */
    uint8_t *sbuf;
    size_t sbuf_cap, sbuf_len;
};

/* Give tl a send buffer of cap bytes (kept by the caller until close). */
static inline void tp_link_set_sendbuf(tp_link_t *tl, void *buf, size_t cap)
{
    tl->sbuf = (uint8_t *)buf;
    tl->sbuf_cap = cap;
    tl->sbuf_len = 0;
}

/* Set tl up over inner (taken over: closed by tl's close) with a link of
 * cfg on mem (memlen >= LINK_MEM_SIZE(cfg->max_payload, cfg->window)).
 * The connection starts in its handshake (the link set-up; SYN goes out
 * at once). peer is copied into conn.peer. Returns 0 or -EINVAL. */
int tp_link_init(tp_link_t *tl, tp_conn_t *inner, const link_config_t *cfg,
                 void *mem, size_t memlen, const char *peer,
                 void (*release)(tp_link_t *tl));

/* The link's counters (tests, benchmarks). */
static inline const link_stats_t *tp_link_stats(const tp_conn_t *c)
{
    return &((const tp_link_t *)c)->link.st;
}

#endif /* CELLAR_TP_LINK_H */
