/*
 * tp.h - the transport interface: byte streams in the mbedTLS BIO shape.
 *
 * Every transport (TCP and the in-memory pair here; TLS, UART and lwIP in
 * later issues) is a connection type - a small vtable, as Redis'
 * ConnectionType - and every caller goes through the inline dispatchers
 * tp_send / tp_recv / tp_handshake / tp_close, so a TLS connection wrapping
 * a TCP or UART one is used exactly like the plain one. The daemon's event
 * loop (loop.h) and the client library (libcellar) both use this interface:
 * a transport is written once and serves both ends.
 *
 * I/O convention (the mbedTLS BIO one, so a tp_conn_t plugs straight into
 * mbedtls_ssl_set_bio(&ssl, conn, tp_bio_send, tp_bio_recv, NULL)):
 *   send(conn, buf, len) / recv(conn, buf, len) return
 *     > 0             bytes sent / received (may be fewer than len)
 *     0               recv only: the peer closed its side (end of stream)
 *     TP_WANT_READ    cannot progress until the connection is readable
 *     TP_WANT_WRITE   cannot progress until the connection is writable
 *     other < 0       a negative errno (-ECONNRESET, -EPIPE, ...): the
 *                     connection is broken, close it
 * TP_WANT_READ / TP_WANT_WRITE have the values of
 * MBEDTLS_ERR_SSL_WANT_READ / _WANT_WRITE, far from any errno. Either may
 * come from either direction: a TLS recv may need to write (a
 * renegotiation, a key update) and a TLS send may need to read.
 *
 * Readiness, per direction. The dispatchers record what the last call in
 * each direction waited for (rx_want, tx_want: TP_EV_READ / TP_EV_WRITE),
 * and tp_events() turns "I want to receive / to send" into the events to
 * wait for. A caller (the loop, libcellar's blocking adapter) therefore
 * never guesses from its own state: when a send answered TP_WANT_READ, the
 * send direction waits for readability even while the receive direction is
 * switched off by backpressure.
 *
 * Waiting. A connection exposes a file descriptor to poll (fd), or -1 when
 * there is none (the in-memory pair, a transport fed by an interrupt); then
 * its type's ready() tells which TP_EV_* events would make progress now.
 *
 * States. A connection returned by accept or a connector is in its
 * handshake state until tp_handshake() returns 0 (a TLS handshake, a UART
 * link sync; plain TCP is done at once). Only then does the loop hand it to
 * the service (svc_conn_open) and only then is identity meaningful:
 *
 *     accepted/connected --handshake()--> open --recv 0 / error--> closed
 *                 |  WANT_READ/WRITE: poll, call again
 *                 +-- < 0: closed without reaching the service
 *
 * Timers. A connection may set deadline_ms (a time on the loop's monotonic
 * clock, tp_now_ms(); 0 = none): the loop sleeps at most until the nearest
 * deadline and then calls the type's on_timer (retransmission of a UART
 * link frame, a handshake timeout). on_timer sets the next deadline (or 0)
 * and returns 0, or a negative errno to close the connection.
 *
 * Stacking. A transport that wraps another (TLS over TCP, TLS over a UART
 * link) keeps the wrapped connection in `inner` (as lwIP's altcp keeps
 * inner_conn), reads and writes it through tp_send / tp_recv (or the BIO
 * adapters), reports the inner fd as its own fd, forwards ready() when the
 * inner fd is -1, and closes the inner connection in its own close.
 *
 * Host-side code (POSIX).
 */
#ifndef CELLAR_TP_H
#define CELLAR_TP_H

#include <stddef.h>
#include <stdint.h>

#define TP_WANT_READ (-0x6900)
#define TP_WANT_WRITE (-0x6880)

/* Events a connection waits for (bit set). */
#define TP_EV_READ 1u
#define TP_EV_WRITE 2u

#define TP_TCP_DEFAULT_PORT 7070
#define TP_TLS_DEFAULT_PORT 7443

#define TP_ANONYMOUS "anonymous"

typedef struct tp_conn tp_conn_t;
typedef struct tp_listener tp_listener_t;

/* A connection type: the vtable every transport implements. Only send, recv
 * and close are required; a NULL member has the default given. */
typedef struct tp_conn_type {
    const char *name; /* "tcp", "mem", "tls", "uart" */
    int (*send)(tp_conn_t *c, const uint8_t *buf, size_t len);
    int (*recv)(tp_conn_t *c, uint8_t *buf, size_t len);
    /* Bytes already received and buffered inside the transport (a TLS
     * record decrypted but not yet read) that polling the fd will not
     * announce. NULL means always 0. */
    size_t (*pending)(tp_conn_t *c);
    /* Close and free the connection (NULL-safe at the dispatcher); a
     * stacked transport closes its inner connection here. */
    void (*close)(tp_conn_t *c);
    /* One step of the handshake: 0 when done (the connection is open),
     * TP_WANT_READ / TP_WANT_WRITE while in progress, a negative errno on
     * failure. Called again after the awaited event until it returns 0;
     * after 0 it is not called again. NULL: done at once (plain TCP). */
    int (*handshake)(tp_conn_t *c);
    /* For fd == -1: the TP_EV_* events that would make progress now
     * (TP_EV_READ: recv would not return TP_WANT_READ). NULL: none. */
    unsigned (*ready)(tp_conn_t *c);
    /* deadline_ms has passed (now_ms >= deadline_ms): do the timed work and
     * set the next deadline (or 0). Returns 0, or a negative errno to close
     * the connection. NULL: the deadline is cleared. */
    int (*on_timer)(tp_conn_t *c, uint64_t now_ms);
} tp_conn_type_t;

struct tp_conn {
    const tp_conn_type_t *type;
    int fd;          /* descriptor to poll, or -1 (then type->ready) */
    void *priv;      /* the transport's own state */
    tp_conn_t *inner; /* the wrapped connection of a stacked transport
                         (TLS over TCP), or NULL */
    char peer[72];   /* "tcp 127.0.0.1:51234", "tcp [::1]:51234", "mem 1" */
    /* Who the peer is, once the handshake is done: "anonymous" for plain
     * TCP and the in-memory pair; a TLS transport puts the certificate's
     * subject here. A later issue maps it to a role. Empty = anonymous. */
    char identity[64];
    uint64_t deadline_ms; /* next timer on tp_now_ms()'s clock, 0 = none */
    /* Set by the dispatchers: the event the last recv / send / handshake
     * waited for (TP_EV_READ or TP_EV_WRITE; 0 = the direction's own). */
    uint8_t rx_want, tx_want, hs_want;
};

/* TP_WANT_* -> the TP_EV_* it waits for; 0 for anything else. */
static inline uint8_t tp_want_event(int rc)
{
    return rc == TP_WANT_READ ? TP_EV_READ
         : rc == TP_WANT_WRITE ? TP_EV_WRITE : 0;
}

static inline int tp_send(tp_conn_t *c, const void *buf, size_t len)
{
    int rc = c->type->send(c, (const uint8_t *)buf, len);
    c->tx_want = tp_want_event(rc);
    return rc;
}

static inline int tp_recv(tp_conn_t *c, void *buf, size_t len)
{
    int rc = c->type->recv(c, (uint8_t *)buf, len);
    c->rx_want = tp_want_event(rc);
    return rc;
}

static inline int tp_handshake(tp_conn_t *c)
{
    int rc = c->type->handshake ? c->type->handshake(c) : 0;
    c->hs_want = tp_want_event(rc);
    return rc;
}

static inline size_t tp_pending(tp_conn_t *c)
{
    return c->type->pending ? c->type->pending(c) : 0;
}

static inline unsigned tp_ready(tp_conn_t *c)
{
    return c->type->ready ? c->type->ready(c) : 0;
}

static inline int tp_on_timer(tp_conn_t *c, uint64_t now_ms)
{
    if (c->type->on_timer)
        return c->type->on_timer(c, now_ms);
    c->deadline_ms = 0;
    return 0;
}

static inline const char *tp_identity(const tp_conn_t *c)
{
    return c->identity[0] ? c->identity : TP_ANONYMOUS;
}

/* The events to wait for before the next recv (rx) and / or send (tx) can
 * progress: each direction's own event unless its last call asked for the
 * other one. */
static inline unsigned tp_events(const tp_conn_t *c, int rx, int tx)
{
    unsigned ev = 0;
    if (rx)
        ev |= c->rx_want ? c->rx_want : TP_EV_READ;
    if (tx)
        ev |= c->tx_want ? c->tx_want : TP_EV_WRITE;
    return ev;
}

/* The events to wait for before the next handshake step. */
static inline unsigned tp_handshake_events(const tp_conn_t *c)
{
    return c->hs_want ? c->hs_want : TP_EV_READ;
}

static inline void tp_close(tp_conn_t *c)
{
    if (c)
        c->type->close(c);
}

/* mbedTLS BIO adapters: ctx is the tp_conn_t. */
static inline int tp_bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    return tp_send((tp_conn_t *)ctx, buf, len);
}

static inline int tp_bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    return tp_recv((tp_conn_t *)ctx, buf, len);
}

/* A listener type. accept returns 0 with *out set, TP_WANT_READ when no
 * connection is waiting, or a negative errno. */
typedef struct tp_listener_type {
    const char *name;
    int (*accept)(tp_listener_t *l, tp_conn_t **out);
    void (*close)(tp_listener_t *l); /* close and free */
} tp_listener_type_t;

struct tp_listener {
    const tp_listener_type_t *type;
    int fd;          /* descriptor to poll for incoming connections */
    void *priv;
    char url[300];   /* the bound URL, real port included:
                        "tcp://127.0.0.1:40123", "tcp://[::1]:7070" */
};

static inline int tp_accept(tp_listener_t *l, tp_conn_t **out)
{
    return l->type->accept(l, out);
}

static inline void tp_listener_close(tp_listener_t *l)
{
    if (l)
        l->type->close(l);
}

/* ---- URLs ------------------------------------------------------------------
 * The one URL syntax of the daemon (--listen) and the clients (-d, libcellar
 * cellar_url_parse, which wraps this parser):
 *   tcp://HOST[:PORT]         port 7070 by default
 *   HOST[:PORT]               the same (no scheme = tcp)
 *   tls://HOST[:PORT]         port 7443 by default
 *   uart:/dev/ttyX[?baud=N]   baud 115200 by default (also uart:///dev/ttyX);
 *                             the device is an absolute path; more options
 *                             after '&': rtscts=1, frame=N, window=N
 *                             (issue 12, docs/UART.md)
 * HOST is a name, an IPv4 address or a bracketed IPv6 address ([::1]); an
 * unbracketed IPv6 address is refused (is "::1:80" port 80 or an address?).
 * A trailing "/" is ignored. PORT is 0..65535; 0 means "any free port" and
 * is for listeners only: connectors refuse it (tp_url_connectable). */
typedef struct tp_url {
    char scheme[8];  /* "tcp", "tls", "uart" */
    char host[256];  /* without brackets */
    uint16_t port;
    char path[256];  /* uart: the device */
    uint32_t baud;   /* uart */
    /* issue 12 (uart): &rtscts=1, &frame=N (link payload 64..4096, 0 =
     * default), &window=N (1..8, 0 = default) */
    uint8_t rtscts;
    uint16_t frame;
    uint8_t window;
} tp_url_t;

/* Parse url. Returns 0, or -EINVAL with a reason in err (if not NULL). */
int tp_url_parse(const char *url, tp_url_t *out, char *err, size_t errlen);

/* Can a client connect to a parsed url? (Not port 0.) Returns 0, or -EINVAL
 * with a reason in err (if not NULL). */
int tp_url_connectable(const tp_url_t *url, char *err, size_t errlen);

/* The loop's monotonic clock in milliseconds (the clock of deadline_ms). */
uint64_t tp_now_ms(void);

/* Format host and port as a URL authority: "127.0.0.1:7070" or
 * "[::1]:7070" (IPv6 literals are bracketed). Returns out. */
char *tp_format_hostport(const char *host, uint16_t port, char *out,
                         size_t cap);

/* ---- TCP (tp_tcp.c) ----------------------------------------------------------
 * Listen on url (tcp scheme) - IPv4 or IPv6, non-blocking, SO_REUSEADDR,
 * IPv6 sockets IPV6_V6ONLY. Returns 0 with *out (free with
 * tp_listener_close) or a negative errno with a reason in err. */
int tp_tcp_listen(const tp_url_t *url, tp_listener_t **out, char *err,
                  size_t errlen);
/* Connect to url, waiting at most timeout_ms (0 = 10 s). The connection is
 * non-blocking afterwards (its handshake is done at once; identity
 * "anonymous"). Returns 0 with *out, or a negative errno with a reason in
 * err: -EINVAL (not tcp, port 0), -EHOSTUNREACH (name does not resolve),
 * -ECONNREFUSED, -ETIMEDOUT, ... Used by the daemon's tests and libcellar. */
int tp_tcp_connect(const tp_url_t *url, int timeout_ms, tp_conn_t **out,
                   char *err, size_t errlen);

/* ---- in-memory pair (tp_mem.c) ------------------------------------------------
 * Two connected connections, *a and *b: what one sends the other receives.
 * Each direction buffers at most cap bytes (0 = 64 KiB; a tiny cap such as
 * 1 forces partial sends and TP_WANT_WRITE). fd is -1: readiness comes from
 * tp_ready(). recv with nothing buffered is TP_WANT_READ, or 0 (end of
 * stream) once the other side is closed; send after the other side closed
 * is -EPIPE. No handshake; identity "anonymous"; peer "mem a" / "mem b".
 * Close each with tp_close (the shared buffers go with the second close).
 * Returns 0 or -ENOMEM. For tests and for in-process links. */
int tp_mem_pair(size_t cap, tp_conn_t **a, tp_conn_t **b);

/* ---- UART (issue 12: transport/host/tp_uart.c, docs/UART.md) -----------------
 * A serial port (raw termios, 8N1, url->baud, RTS/CTS if url->rtscts)
 * carrying the link layer (transport/link/). tp_uart_connect opens the
 * port and returns a connection in its handshake (the link set-up; run it
 * with tp_handshake). tp_uart_listen opens the port for the daemon: its
 * listener "accepts" one link at a time; when that link ends (the peer
 * restarted it, closed it, or the port failed) the next accept gives a
 * fresh link, i.e. a fresh service connection. Both return 0 or a negative
 * errno with a reason in err. */
int tp_uart_connect(const tp_url_t *url, tp_conn_t **out, char *err,
                    size_t errlen);
int tp_uart_listen(const tp_url_t *url, tp_listener_t **out, char *err,
                   size_t errlen);

#endif /* CELLAR_TP_H */
