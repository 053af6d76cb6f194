/*
 * tp.h - the transport interface: byte streams in the mbedTLS BIO shape.
 *
 * Every transport (TCP here; TLS, UART and lwIP in later issues) is a
 * connection type - a small vtable, as Redis' ConnectionType - and every
 * caller goes through the inline dispatchers tp_send / tp_recv / tp_close,
 * so a TLS connection wrapping a TCP or UART one is used exactly like the
 * plain one.
 *
 * I/O convention (the mbedTLS BIO one, so a tp_conn_t plugs straight into
 * mbedtls_ssl_set_bio(&ssl, conn, tp_bio_send, tp_bio_recv, NULL)):
 *   send(conn, buf, len) / recv(conn, buf, len) return
 *     > 0             bytes sent / received (may be fewer than len)
 *     0               recv only: the peer closed its side (end of stream)
 *     TP_WANT_READ    nothing to read now: wait until readable
 *     TP_WANT_WRITE   no room to send now: wait until writable
 *     other < 0       a negative errno (-ECONNRESET, -EPIPE, ...): the
 *                     connection is broken, close it
 * TP_WANT_READ / TP_WANT_WRITE have the values of
 * MBEDTLS_ERR_SSL_WANT_READ / _WANT_WRITE, far from any errno.
 *
 * Connections and listeners are non-blocking and expose a file descriptor
 * to poll (fd, or -1 when there is none, e.g. a transport fed by an
 * interrupt). Host-side code (POSIX).
 */
#ifndef CELLAR_TP_H
#define CELLAR_TP_H

#include <stddef.h>
#include <stdint.h>

#define TP_WANT_READ (-0x6900)
#define TP_WANT_WRITE (-0x6880)

#define TP_TCP_DEFAULT_PORT 7070
#define TP_TLS_DEFAULT_PORT 7443

typedef struct tp_conn tp_conn_t;
typedef struct tp_listener tp_listener_t;

/* A connection type: the vtable every transport implements. */
typedef struct tp_conn_type {
    const char *name; /* "tcp", "tls", "uart" */
    int (*send)(tp_conn_t *c, const uint8_t *buf, size_t len);
    int (*recv)(tp_conn_t *c, uint8_t *buf, size_t len);
    /* Bytes already received and buffered inside the transport (a TLS
     * record decrypted but not yet read) that polling the fd will not
     * announce. NULL means always 0. */
    size_t (*pending)(tp_conn_t *c);
    /* Close and free the connection (NULL-safe at the dispatcher). */
    void (*close)(tp_conn_t *c);
} tp_conn_type_t;

struct tp_conn {
    const tp_conn_type_t *type;
    int fd;          /* descriptor to poll, or -1 */
    void *priv;      /* the transport's own state */
    char peer[72];   /* "tcp 127.0.0.1:51234", "tcp [::1]:51234" */
};

static inline int tp_send(tp_conn_t *c, const void *buf, size_t len)
{
    return c->type->send(c, (const uint8_t *)buf, len);
}

static inline int tp_recv(tp_conn_t *c, void *buf, size_t len)
{
    return c->type->recv(c, (uint8_t *)buf, len);
}

static inline size_t tp_pending(tp_conn_t *c)
{
    return c->type->pending ? c->type->pending(c) : 0;
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
 *   tcp://HOST[:PORT]         port 7070 by default
 *   tls://HOST[:PORT]         port 7443 by default
 *   uart:/dev/ttyX[?baud=N]   baud 115200 by default
 * HOST is a name, an IPv4 address or a bracketed IPv6 address ([::1]).
 * PORT is 0..65535 (0 = any free port, for listeners). */
typedef struct tp_url {
    char scheme[8];  /* "tcp", "tls", "uart" */
    char host[256];  /* without brackets */
    uint16_t port;
    char path[256];  /* uart: the device */
    uint32_t baud;   /* uart */
} tp_url_t;

/* Parse url. Returns 0, or -EINVAL with a reason in err (if not NULL). */
int tp_url_parse(const char *url, tp_url_t *out, char *err, size_t errlen);

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
 * non-blocking afterwards. Returns 0 with *out or a negative errno. */
int tp_tcp_connect(const tp_url_t *url, int timeout_ms, tp_conn_t **out,
                   char *err, size_t errlen);

#endif /* CELLAR_TP_H */
