/* tp_uart.c - serial ports on POSIX (issue 12, tp.h "UART"): a raw tty
 * (8N1, no flow control unless rtscts) as a tp_conn_t, wrapped in the link
 * layer (transport/link/tp_link.c); a connector for clients and a
 * one-link-at-a-time listener for the daemon. */
#include "tp.h"
#include "tp_link.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <termios.h>
#include <unistd.h>

/* The link's sizes on the host (both ends negotiate down to the smaller). */
#define UART_HOST_PAYLOAD 1024
#define UART_HOST_WINDOW 8
#define UART_HOST_SENDBUF (64u * 1024)

static speed_t baud_const(uint32_t b)
{
    static const struct { uint32_t b; speed_t s; } t[] = {
        { 9600, B9600 }, { 19200, B19200 }, { 38400, B38400 },
        { 57600, B57600 }, { 115200, B115200 }, { 230400, B230400 },
        { 460800, B460800 }, { 500000, B500000 }, { 576000, B576000 },
        { 921600, B921600 }, { 1000000, B1000000 }, { 1152000, B1152000 },
        { 1500000, B1500000 }, { 2000000, B2000000 }, { 3000000, B3000000 },
        { 4000000, B4000000 },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (t[i].b == b)
            return t[i].s;
    return 0;
}

/* Open and configure the port. Returns the fd or a negative errno. */
static int uart_open(const tp_url_t *url, char *err, size_t errlen)
{
    speed_t sp = baud_const(url->baud);
    if (!sp) {
        snprintf(err, errlen, "%s: unsupported baud rate %u", url->path,
                 (unsigned)url->baud);
        return -EINVAL;
    }
    int fd = open(url->path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open %s: %s", url->path, strerror(e));
        return -e;
    }
    struct termios t;
    if (tcgetattr(fd, &t) < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: not a serial port: %s", url->path,
                 strerror(e));
        close(fd);
        return -e;
    }
    cfmakeraw(&t);
    t.c_cflag &= (tcflag_t)~(CSTOPB | PARENB | CSIZE | CRTSCTS);
    t.c_cflag |= CS8 | CLOCAL | CREAD | (url->rtscts ? CRTSCTS : 0);
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 0;
    cfsetispeed(&t, sp);
    cfsetospeed(&t, sp);
    if (tcsetattr(fd, TCSANOW, &t) < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: cannot configure: %s", url->path,
                 strerror(e));
        close(fd);
        return -e;
    }
    (void)tcflush(fd, TCIOFLUSH); /* nothing stale from before us */
    return fd;
}

/* ---- the raw port as a byte stream --------------------------------------- */

typedef struct uart_port {
    tp_conn_t conn;
    struct uart_listener *owner; /* a listener's port: fd not ours */
} uart_port_t;

static int port_send(tp_conn_t *c, const uint8_t *buf, size_t len)
{
    for (;;) {
        ssize_t n = write(c->fd, buf, len > 65536 ? 65536 : len);
        if (n >= 0)
            return n ? (int)n : TP_WANT_WRITE;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            return TP_WANT_WRITE;
        return -errno;
    }
}

static int port_recv(tp_conn_t *c, uint8_t *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(c->fd, buf, len > 65536 ? 65536 : len);
        if (n > 0)
            return (int)n;
        if (n == 0) {
            /* VMIN 0: nothing there - or the port hung up (a USB adapter
             * unplugged, a pty's other side gone): then poll says so. */
            struct pollfd p = { .fd = c->fd, .events = POLLIN };
            if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)))
                return -ENXIO;
            return TP_WANT_READ;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            return TP_WANT_READ;
        return -errno;
    }
}

static void port_close(tp_conn_t *c);

static int port_recv_checked(tp_conn_t *c, uint8_t *buf, size_t len);
static int port_send_checked(tp_conn_t *c, const uint8_t *buf, size_t len);

static const tp_conn_type_t port_type = {
    .name = "tty", .send = port_send_checked, .recv = port_recv_checked,
    .close = port_close,
};

/* ---- the listener ------------------------------------------------------------ */

typedef struct uart_listener {
    tp_listener_t lis;
    int tty;           /* the port, -1 after it failed */
    int busy;          /* a link is out */
    int failed;        /* the last link ended with the port failing */
    int closed;        /* the listener is gone (the link frees us) */
    tp_url_t url;
    uint32_t starts;
} uart_listener_t;

/* A failure of a listener's port is remembered: the next accept reopens
 * the device (a USB adapter plugged back in). */
static int port_failed(tp_conn_t *c, int rc)
{
    uart_port_t *p = (uart_port_t *)c;
    if (rc < 0 && rc != TP_WANT_READ && rc != TP_WANT_WRITE && p->owner)
        p->owner->failed = 1;
    return rc;
}

static int port_recv_checked(tp_conn_t *c, uint8_t *buf, size_t len)
{
    return port_failed(c, port_recv(c, buf, len));
}

static int port_send_checked(tp_conn_t *c, const uint8_t *buf, size_t len)
{
    return port_failed(c, port_send(c, buf, len));
}

static void port_close(tp_conn_t *c)
{
    uart_port_t *p = (uart_port_t *)c;
    uart_listener_t *ul = p->owner;
    if (!ul) {
        close(c->fd);
    } else {
        ul->busy = 0;
        if (ul->closed) {
            if (ul->tty >= 0)
                close(ul->tty);
            free(ul);
        } else {
            uint64_t one = 1;
            (void)!write(ul->lis.fd, &one, sizeof(one)); /* accept again */
        }
    }
    free(p);
}

/* ---- links --------------------------------------------------------------------- */

/* CELLAR_UART_STATS=FILE: append each link's counters to FILE as a JSON
 * line when it closes (tests and bench_uart.sh). */
static void stats_out(const tp_link_t *tl)
{
    const char *path = getenv("CELLAR_UART_STATS");
    if (!path || !*path)
        return;
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    const link_stats_t *st = &tl->link.st;
    fprintf(f, "{\"pid\": %d, \"frames_tx\": %u, \"data_tx\": %u, "
               "\"retransmits\": %u, \"acks_tx\": %u, \"timeouts\": %u, "
               "\"bad_hdr\": %u, \"bad_crc\": %u, \"dup_rx\": %u, "
               "\"wire_tx\": %llu, \"wire_rx\": %llu, \"payload\": %u, "
               "\"window\": %u, \"stream_tx\": %llu, \"stream_rx\": %llu, "
               "\"state\": [%d, %u, %u, %u, %u, %u, %d, %u, %u, %u, %u], "
               "\"tx\": \"%u%u%u%u%u%u%u%u\", \"rx\": \"%u%u%u%u%u%u%u%u\", "
               "\"phase\": [%u, %d, %lld, %lld, %llu]}\n",
            (int)getpid(), st->frames_tx, st->data_tx, st->retransmits,
            st->acks_tx, st->timeouts, st->bad_hdr, st->bad_crc, st->dup_rx,
            (unsigned long long)st->wire_tx, (unsigned long long)st->wire_rx,
            (unsigned)tl->link.payload, (unsigned)tl->link.win,
            (unsigned long long)st->stream_tx, (unsigned long long)st->stream_rx,
            (int)tl->link.state, tl->link.snd_una, tl->link.snd_nxt,
            tl->link.snd_fill, tl->link.peer_ack, tl->link.peer_credit,
            (int)tl->link.probe, tl->link.rto_ms, tl->link.cur_payload,
            tl->link.rcv_nxt, tl->link.rcv_read,
            tl->link.tx[0].state, tl->link.tx[1].state, tl->link.tx[2].state,
            tl->link.tx[3].state, tl->link.tx[4].state, tl->link.tx[5].state,
            tl->link.tx[6].state, tl->link.tx[7].state,
            tl->link.rx[0].state, tl->link.rx[1].state, tl->link.rx[2].state,
            tl->link.rx[3].state, tl->link.rx[4].state, tl->link.rx[5].state,
            tl->link.rx[6].state, tl->link.rx[7].state,
            tl->link.tx_phase, (int)tl->tx_blocked,
            (long long)tl->link.wire_free_us / 1000 - (long long)tp_now_ms(),
            (long long)tl->link.hold_until - (long long)tp_now_ms(),
            (unsigned long long)link_deadline(&tl->link));
    fclose(f);
}

static void link_release(tp_link_t *tl)
{
    stats_out(tl);
    free(tl->sbuf);
    free(tl->owner); /* the frame buffer */
    free(tl);
}

static uint32_t new_nonce(void)
{
    uint32_t n = 0;
    if (getrandom(&n, sizeof(n), GRND_NONBLOCK) != (ssize_t)sizeof(n))
        n = (uint32_t)getpid() * 2654435761u ^ (uint32_t)tp_now_ms();
    return n ? n : 1;
}

static int make_link(const tp_url_t *url, int fd, uart_listener_t *owner,
                     tp_conn_t **out, char *err, size_t errlen)
{
    link_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_payload = url->frame ? url->frame : UART_HOST_PAYLOAD;
    cfg.window = url->window ? url->window : UART_HOST_WINDOW;
    cfg.byte_time_us = (uint32_t)((10000000ull + url->baud / 2) / url->baud);
    if (!cfg.byte_time_us)
        cfg.byte_time_us = 1;
    cfg.nonce = new_nonce();
    size_t memlen = LINK_MEM_SIZE(cfg.max_payload, cfg.window);
    uart_port_t *port = calloc(1, sizeof(*port));
    tp_link_t *tl = calloc(1, sizeof(*tl));
    void *mem = malloc(memlen);
    if (!port || !tl || !mem) {
        free(port);
        free(tl);
        free(mem);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    port->conn.type = &port_type;
    port->conn.fd = fd;
    port->owner = owner;
    snprintf(port->conn.peer, sizeof(port->conn.peer), "tty %.60s", url->path);
    char peer[sizeof(port->conn.peer)];
    snprintf(peer, sizeof(peer), "uart %.60s", url->path);
    int rc = tp_link_init(tl, &port->conn, &cfg, mem, memlen, peer,
                          link_release);
    if (rc) {
        free(port);
        free(tl);
        free(mem);
        snprintf(err, errlen, "bad link configuration");
        return rc;
    }
    tl->owner = mem;
    /* Host ends buffer what the window cannot take yet (as a socket
     * would): a client writing 16 small requests before it reads must not
     * wait on a peer that waits for it to read. */
    void *sb = malloc(UART_HOST_SENDBUF);
    if (sb)
        tp_link_set_sendbuf(tl, sb, UART_HOST_SENDBUF);
    *out = &tl->conn;
    return 0;
}

int tp_uart_connect(const tp_url_t *url, tp_conn_t **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    if (strcmp(url->scheme, "uart") != 0) {
        snprintf(err, errlen, "not a uart: URL");
        return -EINVAL;
    }
    int fd = uart_open(url, err, errlen);
    if (fd < 0)
        return fd;
    int rc = make_link(url, fd, NULL, out, err, errlen);
    if (rc)
        close(fd);
    return rc;
}

static int uart_accept(tp_listener_t *l, tp_conn_t **out)
{
    uart_listener_t *ul = (uart_listener_t *)l;
    uint64_t v;
    *out = NULL;
    if (ul->busy) {
        (void)!read(l->fd, &v, sizeof(v));
        return TP_WANT_READ;
    }
    char err[200];
    if (ul->failed) { /* reopen the port; until it is back, try again */
        if (ul->tty >= 0)
            close(ul->tty);
        ul->tty = uart_open(&ul->url, err, sizeof(err));
        if (ul->tty < 0)
            return -EAGAIN; /* the loop looks again a bit later */
        ul->failed = 0;
    }
    (void)!read(l->fd, &v, sizeof(v));
    int rc = make_link(&ul->url, ul->tty, ul, out, err, sizeof(err));
    if (rc)
        return rc;
    ul->busy = 1;
    ul->starts++;
    return 0;
}

static void uart_listener_close(tp_listener_t *l)
{
    uart_listener_t *ul = (uart_listener_t *)l;
    close(l->fd);
    if (ul->busy) {
        ul->closed = 1; /* the link's port frees us */
        return;
    }
    if (ul->tty >= 0)
        close(ul->tty);
    free(ul);
}

static const tp_listener_type_t uart_listener_type = {
    .name = "uart", .accept = uart_accept, .close = uart_listener_close,
};

int tp_uart_listen(const tp_url_t *url, tp_listener_t **out, char *err,
                   size_t errlen)
{
    *out = NULL;
    if (strcmp(url->scheme, "uart") != 0) {
        snprintf(err, errlen, "not a uart: URL");
        return -EINVAL;
    }
    int fd = uart_open(url, err, errlen);
    if (fd < 0)
        return fd;
    uart_listener_t *ul = calloc(1, sizeof(*ul));
    int efd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC); /* readable: accept */
    if (!ul || efd < 0) {
        free(ul);
        if (efd >= 0)
            close(efd);
        close(fd);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ul->lis.type = &uart_listener_type;
    ul->lis.fd = efd;
    ul->tty = fd;
    ul->url = *url;
    snprintf(ul->lis.url, sizeof(ul->lis.url), "uart:%.250s?baud=%u",
             url->path, (unsigned)url->baud);
    *out = &ul->lis;
    return 0;
}
