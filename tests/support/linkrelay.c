/*
 * linkrelay.c - a slow, far link on loopback (issue 11): a TCP relay that
 * gives each direction a one-way delay and a rate, can close or stall a
 * connection after N bytes, and counts request/answer rounds.
 *
 *   linkrelay --listen PORT --to HOST:PORT [--delay MS] [--rate BPS]
 *             [--rate-up BPS] [--rate-down BPS] [--close-after N]
 *             [--stall-after N] [--stats FILE]
 *
 * --listen 0 picks a free port and prints it on stdout ("port N").
 * Loopback only: HOST must be 127.x.x.x or ::1 (tests never leave the box).
 *
 * The link model, per direction: a chunk read at time t of n bytes starts
 * to be sent when the direction is free (max(t, free)), takes n*8/rate
 * seconds to send (the direction is busy meanwhile), and is delivered
 * `delay` ms after its last byte left. The relay buffers up to
 * PIPE_BYTES per direction (a deep modem buffer); beyond that it stops
 * reading, and TCP pushes back. Up = client -> device, down = device ->
 * client. --rate 0 (the default) means no pacing.
 *
 * Rounds (docs/PIPELINING.md, "Counting rounds"): a new round starts when
 * bytes from the client arrive while both directions are empty (nothing
 * queued or in flight in the relay) and some device bytes were delivered to
 * the client since the current round began. The first client bytes of a
 * connection start round 1. So a client that waits for an answer before
 * each request counts one round per request; one that sends every request
 * before reading counts one round; a stream that keeps either direction
 * busy (pipelined writes or reads) counts no new rounds. It depends only
 * on what crosses the link, not on the client.
 *
 * --stats FILE: after every connection ends, FILE is rewritten with one
 * line of totals and one of the last connection:
 *   conns N rounds R up U down D
 *   last rounds R up U down D ms T
 * (T: from accept to close, ms). Host program: not device code.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PIPE_BYTES (4u << 20) /* buffered per direction */
#define SEG_MAX 1460u         /* bytes read at a time (one segment) */
#define NSEG (PIPE_BYTES / 256u)

typedef struct seg {
    uint64_t due_us; /* when it may be written to the far end */
    uint32_t len, off;
} seg_t;

typedef struct pipe_ {
    uint8_t *buf;            /* ring of PIPE_BYTES */
    uint32_t head, used;     /* bytes */
    seg_t *seg;              /* ring of NSEG */
    uint32_t shead, scount;
    uint64_t free_us;        /* when the direction is free to send again */
    uint64_t rate;           /* bits per second, 0 = unpaced */
    uint64_t bytes;          /* forwarded so far */
    bool eof;                /* source closed: shut the far end when empty */
} pipe_t;

static struct {
    uint64_t delay_us, rate_up, rate_down, close_after, stall_after;
    const char *stats;
    uint64_t conns, rounds, up, down;
} g;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void die(const char *what)
{
    fprintf(stderr, "linkrelay: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int pipe_init(pipe_t *p, uint64_t rate)
{
    memset(p, 0, sizeof(*p));
    p->buf = malloc(PIPE_BYTES);
    p->seg = malloc(NSEG * sizeof(seg_t));
    p->rate = rate;
    return p->buf && p->seg ? 0 : -1;
}

static void pipe_free(pipe_t *p)
{
    free(p->buf);
    free(p->seg);
}

static bool pipe_empty(const pipe_t *p)
{
    return p->scount == 0;
}

static bool pipe_room(const pipe_t *p)
{
    return p->used + SEG_MAX <= PIPE_BYTES && p->scount < NSEG;
}

/* Read one segment from fd into the pipe; returns bytes, 0 on EOF, -1 on
 * error, -2 when nothing was ready. */
static int pipe_read(pipe_t *p, int fd, uint64_t delay_us)
{
    uint8_t tmp[SEG_MAX];
    ssize_t n = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -2 : -1;
    if (n == 0)
        return 0;
    uint32_t tail = (p->head + p->used) % PIPE_BYTES;
    for (ssize_t i = 0; i < n; i++)
        p->buf[(tail + (uint32_t)i) % PIPE_BYTES] = tmp[i];
    uint64_t t = now_us();
    uint64_t start = p->free_us > t ? p->free_us : t;
    uint64_t send_us = p->rate ? (uint64_t)n * 8u * 1000000u / p->rate : 0;
    p->free_us = start + send_us;
    seg_t *s = &p->seg[(p->shead + p->scount) % NSEG];
    s->due_us = p->free_us + delay_us;
    s->len = (uint32_t)n;
    s->off = 0;
    p->scount++;
    p->used += (uint32_t)n;
    return (int)n;
}

/* Write what is due to fd; returns bytes written, or -1 on error. */
static int pipe_write(pipe_t *p, int fd, uint64_t limit)
{
    int total = 0;
    uint64_t t = now_us();
    while (p->scount) {
        seg_t *s = &p->seg[p->shead];
        if (s->due_us > t)
            break;
        uint32_t left = s->len - s->off;
        if (p->bytes + left > limit)
            left = p->bytes >= limit ? 0 : (uint32_t)(limit - p->bytes);
        if (left == 0)
            break;
        uint8_t tmp[SEG_MAX];
        for (uint32_t i = 0; i < left; i++)
            tmp[i] = p->buf[(p->head + i) % PIPE_BYTES];
        ssize_t n = send(fd, tmp, left, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? total : -1;
        p->head = (p->head + (uint32_t)n) % PIPE_BYTES;
        p->used -= (uint32_t)n;
        p->bytes += (uint64_t)n;
        total += (int)n;
        s->off += (uint32_t)n;
        if (s->off == s->len) {
            p->shead = (p->shead + 1) % NSEG;
            p->scount--;
        } else {
            break;
        }
    }
    return total;
}

static uint64_t next_due(const pipe_t *p)
{
    return p->scount ? p->seg[p->shead].due_us : UINT64_MAX;
}

static void write_stats(uint64_t rounds, uint64_t up, uint64_t down, uint64_t ms)
{
    if (!g.stats)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", g.stats);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "conns %llu rounds %llu up %llu down %llu\n",
            (unsigned long long)g.conns, (unsigned long long)g.rounds,
            (unsigned long long)g.up, (unsigned long long)g.down);
    fprintf(f, "last rounds %llu up %llu down %llu ms %llu\n",
            (unsigned long long)rounds, (unsigned long long)up,
            (unsigned long long)down, (unsigned long long)ms);
    fclose(f);
    rename(tmp, g.stats);
}

/* Relay one connection until both sides are done. */
static void serve(int cfd, const struct sockaddr *to, socklen_t tolen)
{
    uint64_t t0 = now_us();
    int dfd = socket(to->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (dfd < 0 || connect(dfd, to, tolen) < 0) {
        fprintf(stderr, "linkrelay: connect to the device: %s\n", strerror(errno));
        if (dfd >= 0)
            close(dfd);
        close(cfd);
        return;
    }
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(dfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pipe_t up, down;
    if (pipe_init(&up, g.rate_up) < 0 || pipe_init(&down, g.rate_down) < 0) {
        fprintf(stderr, "linkrelay: out of memory\n");
        exit(1);
    }
    uint64_t rounds = 0;
    bool answered = false, stalled = false, done_up = false, done_down = false;
    while (!(done_up && done_down)) {
        struct pollfd pf[2] = {{.fd = cfd}, {.fd = dfd}};
        if (stalled) {
            /* forward nothing more: swallow what comes until a side closes */
            pf[0].events = pf[1].events = POLLIN;
            if (poll(pf, 2, 1000) < 0 && errno != EINTR)
                die("poll");
            uint8_t junk[SEG_MAX];
            bool gone = false;
            for (int k = 0; k < 2; k++)
                if (pf[k].revents & (POLLIN | POLLHUP | POLLERR)) {
                    ssize_t n = recv(pf[k].fd, junk, sizeof(junk), MSG_DONTWAIT);
                    gone = gone || n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
                }
            if (gone)
                break;
            continue;
        }
        if (!up.eof && pipe_room(&up))
            pf[0].events |= POLLIN;
        if (!down.eof && pipe_room(&down))
            pf[1].events |= POLLIN;
        uint64_t t = now_us();
        uint64_t due = next_due(&up) < next_due(&down) ? next_due(&up) : next_due(&down);
        if (!pipe_empty(&down) && next_due(&down) <= t)
            pf[0].events |= POLLOUT;
        if (!pipe_empty(&up) && next_due(&up) <= t)
            pf[1].events |= POLLOUT;
        int wait = due == UINT64_MAX ? 1000 : due <= t ? 0 : (int)((due - t + 999) / 1000);
        if ((pf[0].events & POLLOUT) || (pf[1].events & POLLOUT))
            wait = wait > 50 ? 50 : wait;
        if (poll(pf, 2, wait) < 0 && errno != EINTR)
            die("poll");
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            bool was_idle = pipe_empty(&up) && pipe_empty(&down);
            int n = pipe_read(&up, cfd, g.delay_us);
            if (n > 0) {
                if (rounds == 0 || (was_idle && answered)) {
                    rounds++;
                    answered = false;
                }
            } else if (n == 0 || n == -1) {
                up.eof = true;
            }
        }
        if (pf[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            int n = pipe_read(&down, dfd, g.delay_us);
            if (n == 0 || n == -1)
                down.eof = true;
        }
        uint64_t cap = g.stall_after ? g.stall_after : g.close_after;
        int w = pipe_write(&up, dfd, cap ? cap - down.bytes : UINT64_MAX);
        if (w < 0)
            done_up = done_down = true;
        w = pipe_write(&down, cfd, cap ? cap - up.bytes : UINT64_MAX);
        if (w < 0)
            done_up = done_down = true;
        if (w > 0)
            answered = true;
        if (g.close_after && up.bytes + down.bytes >= g.close_after)
            break;
        if (g.stall_after && up.bytes + down.bytes >= g.stall_after)
            stalled = true;
        if (up.eof && pipe_empty(&up) && !done_up) {
            shutdown(dfd, SHUT_WR);
            done_up = true;
        }
        if (down.eof && pipe_empty(&down) && !done_down) {
            shutdown(cfd, SHUT_WR);
            done_down = true;
        }
    }
    close(cfd);
    close(dfd);
    g.conns++;
    g.rounds += rounds;
    g.up += up.bytes;
    g.down += down.bytes;
    write_stats(rounds, up.bytes, down.bytes, (now_us() - t0) / 1000u);
    pipe_free(&up);
    pipe_free(&down);
}

static uint64_t num(const char *opt, const char *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end) {
        fprintf(stderr, "linkrelay: %s: not a number: %s\n", opt, v);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    const char *listen_port = NULL, *to = NULL;
    uint64_t rate = 0, rate_up = UINT64_MAX, rate_down = UINT64_MAX;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "linkrelay: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--listen"))
            listen_port = v;
        else if (!strcmp(a, "--to"))
            to = v;
        else if (!strcmp(a, "--delay"))
            g.delay_us = num(a, v) * 1000u;
        else if (!strcmp(a, "--rate"))
            rate = num(a, v);
        else if (!strcmp(a, "--rate-up"))
            rate_up = num(a, v);
        else if (!strcmp(a, "--rate-down"))
            rate_down = num(a, v);
        else if (!strcmp(a, "--close-after"))
            g.close_after = num(a, v);
        else if (!strcmp(a, "--stall-after"))
            g.stall_after = num(a, v);
        else if (!strcmp(a, "--stats"))
            g.stats = v;
        else {
            fprintf(stderr, "linkrelay: unknown option %s\n", a);
            return 2;
        }
    }
    if (!listen_port || !to) {
        fprintf(stderr, "usage: linkrelay --listen PORT --to HOST:PORT [--delay MS] "
                        "[--rate BPS] [--rate-up BPS] [--rate-down BPS] "
                        "[--close-after N] [--stall-after N] [--stats FILE]\n");
        return 2;
    }
    g.rate_up = rate_up == UINT64_MAX ? rate : rate_up;
    g.rate_down = rate_down == UINT64_MAX ? rate : rate_down;

    /* the device: HOST:PORT on loopback only */
    char host[256];
    const char *colon = strrchr(to, ':');
    if (!colon || (size_t)(colon - to) >= sizeof(host)) {
        fprintf(stderr, "linkrelay: --to HOST:PORT\n");
        return 2;
    }
    memcpy(host, to, (size_t)(colon - to));
    host[colon - to] = 0;
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strcspn(host, "]")] = 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai) {
        fprintf(stderr, "linkrelay: %s: not a numeric address\n", to);
        return 2;
    }
    bool loop = ai->ai_family == AF_INET
                    ? (ntohl(((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr) >> 24) == 127
                    : IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr);
    if (!loop) {
        fprintf(stderr, "linkrelay: %s: loopback addresses only\n", to);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in la = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)num("--listen", listen_port)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&la, sizeof(la)) < 0)
        die("bind");
    if (listen(lfd, 8) < 0)
        die("listen");
    socklen_t sl = sizeof(la);
    getsockname(lfd, (struct sockaddr *)&la, &sl);
    printf("port %u\n", (unsigned)ntohs(la.sin_port));
    fflush(stdout);
    write_stats(0, 0, 0, 0);
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR)
                continue;
            die("accept");
        }
        serve(cfd, ai->ai_addr, ai->ai_addrlen);
    }
}
