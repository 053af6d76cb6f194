/* tp_tcp.c - POSIX TCP listeners and connections, IPv4 and IPv6 (tp.h). */
#include "tp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- connections --------------------------------------------------------- */

static int tcp_send(tp_conn_t *c, const uint8_t *buf, size_t len)
{
    if (len > INT_MAX)
        len = INT_MAX;
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return TP_WANT_WRITE;
        return -errno;
    }
}

static int tcp_recv(tp_conn_t *c, uint8_t *buf, size_t len)
{
    if (len > INT_MAX)
        len = INT_MAX;
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return TP_WANT_READ;
        return -errno;
    }
}

static void tcp_close(tp_conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

static const tp_conn_type_t tcp_conn_type = {
    .name = "tcp",
    .send = tcp_send,
    .recv = tcp_recv,
    .pending = NULL,
    .close = tcp_close,
};

static void addr_string(const struct sockaddr *sa, char *host, size_t hcap,
                        uint16_t *port)
{
    host[0] = 0;
    *port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)hcap);
        *port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)hcap);
        *port = ntohs(in6->sin6_port);
    }
}

static tp_conn_t *conn_new(int fd, const struct sockaddr *peer)
{
    tp_conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    char host[INET6_ADDRSTRLEN], hp[80];
    uint16_t port;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->type = &tcp_conn_type;
    c->fd = fd;
    strcpy(c->identity, TP_ANONYMOUS); /* no handshake: open at once */
    addr_string(peer, host, sizeof(host), &port);
    snprintf(c->peer, sizeof(c->peer), "tcp %s",
             tp_format_hostport(host, port, hp, sizeof(hp)));
    return c;
}

/* ---- listeners --------------------------------------------------------------- */

static int tcp_accept(tp_listener_t *l, tp_conn_t **out)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    *out = NULL;
    for (;;) {
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK ||
                errno == ECONNABORTED)
                return TP_WANT_READ;
            return -errno;
        }
        tp_conn_t *c = conn_new(fd, (struct sockaddr *)&ss);
        if (!c) {
            close(fd);
            return -ENOMEM;
        }
        *out = c;
        return 0;
    }
}

static void tcp_listener_close(tp_listener_t *l)
{
    if (l->fd >= 0)
        close(l->fd);
    free(l);
}

static const tp_listener_type_t tcp_listener_type = {
    .name = "tcp",
    .accept = tcp_accept,
    .close = tcp_listener_close,
};

static int resolve(const tp_url_t *url, bool passive, struct addrinfo **res,
                   char *err, size_t errlen)
{
    struct addrinfo hints;
    char port[8];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    snprintf(port, sizeof(port), "%u", (unsigned)url->port);
    const char *host = url->host;
    if (passive && (strcmp(host, "*") == 0 || host[0] == 0))
        host = NULL;
    int rc = getaddrinfo(host, port, &hints, res);
    if (rc) {
        if (err)
            snprintf(err, errlen, "cannot resolve \"%s\": %s", url->host,
                     gai_strerror(rc));
        return -EHOSTUNREACH;
    }
    return 0;
}

int tp_tcp_listen(const tp_url_t *url, tp_listener_t **out, char *err,
                  size_t errlen)
{
    struct addrinfo *res = NULL;
    int rc = -EINVAL, fd = -1;
    *out = NULL;
    if (strcmp(url->scheme, "tcp") != 0) {
        if (err)
            snprintf(err, errlen, "not a tcp:// URL");
        return -EINVAL;
    }
    if ((rc = resolve(url, true, &res, err, errlen)))
        return rc;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int one = 1;
        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6)
            (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
                             sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, 64) == 0) {
            rc = 0;
            break;
        }
        rc = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        if (err)
            snprintf(err, errlen, "cannot listen on %s port %u: %s",
                     url->host, (unsigned)url->port, strerror(-rc));
        return rc;
    }

    tp_listener_t *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return -ENOMEM;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN], hp[280];
    uint16_t port = url->port;
    const char *h = url->host;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        addr_string((struct sockaddr *)&ss, host, sizeof(host), &port);
        h = host;
    }
    l->type = &tcp_listener_type;
    l->fd = fd;
    snprintf(l->url, sizeof(l->url), "tcp://%s",
             tp_format_hostport(h, port, hp, sizeof(hp)));
    *out = l;
    return 0;
}

int tp_tcp_connect(const tp_url_t *url, int timeout_ms, tp_conn_t **out,
                   char *err, size_t errlen)
{
    struct addrinfo *res = NULL;
    int rc, fd = -1;
    *out = NULL;
    if (strcmp(url->scheme, "tcp") != 0) {
        if (err)
            snprintf(err, errlen, "not a tcp:// URL");
        return -EINVAL;
    }
    if ((rc = tp_url_connectable(url, err, errlen)))
        return rc;
    if (timeout_ms <= 0)
        timeout_ms = 10000;
    if ((rc = resolve(url, false, &res, err, errlen)))
        return rc;
    uint64_t deadline = tp_now_ms() + (uint64_t)timeout_ms;
    rc = -ECONNREFUSED;
    struct addrinfo *ai;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            struct pollfd pfd = { .fd = fd, .events = POLLOUT };
            int pr;
            do {
                int left = (int)((int64_t)(deadline - tp_now_ms()));
                pr = left > 0 ? poll(&pfd, 1, left) : 0;
            } while (pr < 0 && errno == EINTR);
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (pr == 1 &&
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
                soerr == 0)
                break;
            rc = pr == 0 ? -ETIMEDOUT : -(soerr ? soerr : errno);
        } else {
            rc = -errno;
        }
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        freeaddrinfo(res);
        if (err)
            snprintf(err, errlen, "cannot connect to %s port %u: %s",
                     url->host, (unsigned)url->port, strerror(-rc));
        return rc;
    }
    tp_conn_t *c = conn_new(fd, ai->ai_addr);
    freeaddrinfo(res);
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    *out = c;
    return 0;
}
