/* loop.c - the host event loop (see loop.h). */
#include "loop.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct loop_conn {
    tp_conn_t *tp;
    bool open;            /* handshake done: attached to the service (sc) */
    bool dead;            /* transport error: close without flushing */
    const char *why;      /* reason for the log line */
    svc_conn_t sc;        /* big: keep last */
} loop_conn_t;

struct loop {
    svc_t *svc;
    uint32_t max_conns;
    tp_listener_t *lis[LOOP_MAX_LISTENERS];
    uint32_t nlis;
    loop_conn_t **conns;  /* handshaking and open ones */
    uint32_t nconns;
    struct pollfd *pfd;   /* listeners, then connections */
    uint64_t accept_pause_until; /* after EMFILE & co: do not spin */
};

uint64_t loop_now_ms(void)
{
    return tp_now_ms();
}

static short poll_events(unsigned ev)
{
    return (short)((ev & TP_EV_READ ? POLLIN : 0) |
                   (ev & TP_EV_WRITE ? POLLOUT : 0));
}

/* poll's revents as TP_EV_* (a hang-up or an error wakes both directions:
 * the next recv or send reports it). */
static unsigned tp_events_of(short re)
{
    unsigned ev = 0;
    if (re & (POLLIN | POLLHUP | POLLERR))
        ev |= TP_EV_READ;
    if (re & (POLLOUT | POLLHUP | POLLERR))
        ev |= TP_EV_WRITE;
    return ev;
}

/* One handshake step; on success the connection reaches the service. */
static void handshake(loop_t *lp, loop_conn_t *lc)
{
    int rc = tp_handshake(lc->tp);
    if (rc == 0) {
        lc->open = true;
        svc_conn_open(lp->svc, &lc->sc, lc->tp->peer);
        svc_conn_set_identity(lp->svc, &lc->sc, lc->tp->identity); /* #13 */
    } else if (rc != TP_WANT_READ && rc != TP_WANT_WRITE) {
        lc->dead = true;
        lc->why = "handshake failed";
    }
}

/* The TP_EV_* events a connection waits for now. */
static unsigned interest(loop_conn_t *lc)
{
    const uint8_t *p;
    size_t len;
    if (lc->dead)
        return 0;
    if (!lc->open)
        return tp_handshake_events(lc->tp);
    return tp_events(lc->tp, svc_conn_want_read(&lc->sc),
                     svc_conn_output(&lc->sc, &p, &len) != 0);
}

int loop_new(loop_t **out, svc_t *svc, const loop_config_t *cfg)
{
    loop_t *lp = calloc(1, sizeof(*lp));
    *out = NULL;
    if (!lp)
        return -ENOMEM;
    lp->svc = svc;
    lp->max_conns = cfg && cfg->max_conns ? cfg->max_conns
                                          : LOOP_DEFAULT_MAX_CONNS;
    if (lp->max_conns > 1024)
        lp->max_conns = 1024;
    lp->conns = calloc(lp->max_conns, sizeof(*lp->conns));
    lp->pfd = calloc(lp->max_conns + LOOP_MAX_LISTENERS, sizeof(*lp->pfd));
    if (!lp->conns || !lp->pfd) {
        free(lp->conns);
        free(lp->pfd);
        free(lp);
        return -ENOMEM;
    }
    svc_tick(svc, loop_now_ms());
    *out = lp;
    return 0;
}

int loop_add_listener(loop_t *lp, tp_listener_t *l)
{
    if (lp->nlis >= LOOP_MAX_LISTENERS)
        return -ENOSPC;
    lp->lis[lp->nlis++] = l;
    return 0;
}

int loop_add_conn(loop_t *lp, tp_conn_t *c)
{
    if (lp->nconns >= lp->max_conns)
        return -ENOSPC;
    loop_conn_t *lc = malloc(sizeof(*lc));
    if (!lc)
        return -ENOMEM;
    lc->tp = c;
    lc->open = false;
    lc->dead = false;
    lc->why = NULL;
    lp->conns[lp->nconns++] = lc;
    handshake(lp, lc); /* plain TCP: open at once */
    return 0;
}

uint32_t loop_conns(const loop_t *lp)
{
    return lp->nconns;
}

/* Over the connection limit: the service's refusal, best effort, and
 * close. */
static void refuse(loop_t *lp, tp_conn_t *c)
{
    uint8_t buf[256];
    int n = svc_reject_conn(lp->svc, buf, sizeof(buf));
    if (n > 0)
        (void)tp_send(c, buf, (size_t)n);
    tp_close(c);
}

static void do_accept(loop_t *lp, tp_listener_t *l)
{
    for (int i = 0; i < 16; i++) {
        tp_conn_t *c;
        int rc = tp_accept(l, &c);
        if (rc == TP_WANT_READ)
            return;
        if (rc != 0) {
            /* EMFILE, ENOMEM...: the connection stays in the backlog and
             * the listener stays readable; look again a bit later. */
            lp->accept_pause_until = loop_now_ms() + 100;
            return;
        }
        if (lp->nconns >= lp->max_conns || loop_add_conn(lp, c) != 0)
            refuse(lp, c);
    }
}

static void do_read(loop_conn_t *lc)
{
    for (int i = 0; i < 4; i++) {
        uint8_t *dst;
        uint32_t room = svc_conn_input_space(&lc->sc, &dst);
        if (room == 0 || !svc_conn_want_read(&lc->sc))
            return;
        int n = tp_recv(lc->tp, dst, room);
        if (n > 0) {
            svc_conn_input_commit(&lc->sc, (uint32_t)n);
            if ((uint32_t)n < room && !tp_pending(lc->tp))
                return; /* drained the socket */
            continue;
        }
        if (n == 0) {
            svc_conn_input_eof(&lc->sc);
            lc->why = "peer closed";
            return;
        }
        if (n == TP_WANT_READ || n == TP_WANT_WRITE)
            return;
        lc->dead = true;
        lc->why = n == -ECONNRESET ? "connection reset" : "receive error";
        return;
    }
}

static void do_write(loop_conn_t *lc)
{
    while (!lc->dead) {
        const uint8_t *p;
        size_t len;
        if (!svc_conn_output(&lc->sc, &p, &len))
            return;
        int n = tp_send(lc->tp, p, len);
        if (n > 0) {
            svc_conn_consumed(&lc->sc, (size_t)n);
            continue;
        }
        if (n == TP_WANT_WRITE || n == TP_WANT_READ || n == 0)
            return;
        lc->dead = true;
        lc->why = n == -EPIPE || n == -ECONNRESET ? "peer went away"
                                                  : "send error";
    }
}

static void conn_close(loop_t *lp, uint32_t i, const char *why)
{
    loop_conn_t *lc = lp->conns[i];
    if (lc->open)
        svc_conn_close(lp->svc, &lc->sc, why);
    tp_close(lc->tp);
    free(lc);
    lp->conns[i] = lp->conns[--lp->nconns];
    lp->conns[lp->nconns] = NULL;
}

int loop_turn(loop_t *lp, int max_wait_ms)
{
    svc_t *svc = lp->svc;
    uint32_t np = 0, i;
    bool busy;
    int wait = max_wait_ms;
    uint64_t now = tp_now_ms();

    svc_tick(svc, now);

    bool accepting = now >= lp->accept_pause_until;
    for (i = 0; i < lp->nlis; i++) {
        lp->pfd[np].fd = lp->lis[i]->fd;
        /* Always accept: over the limit a peer gets a clear ENOMEM error
         * rather than a connection that hangs in the backlog. */
        lp->pfd[np].events = accepting ? POLLIN : 0;
        lp->pfd[np].revents = 0;
        np++;
    }
    busy = svc_pending(svc);
    for (i = 0; i < lp->nconns; i++) {
        loop_conn_t *lc = lp->conns[i];
        tp_conn_t *t = lc->tp;
        unsigned want = interest(lc);
        if (tp_pending(t) || lc->dead || (lc->open && svc_conn_done(&lc->sc)))
            busy = true;
        if (t->fd < 0 && (tp_ready(t) & want))
            busy = true; /* no descriptor: the transport said it can go */
        if (t->deadline_ms) {
            if (t->deadline_ms <= now)
                busy = true;
            else if (wait < 0 || t->deadline_ms - now < (uint64_t)wait)
                wait = (int)(t->deadline_ms - now);
        }
        lp->pfd[np].fd = t->fd; /* poll skips -1 */
        lp->pfd[np].events = poll_events(want);
        lp->pfd[np].revents = 0;
        np++;
    }

    int rc = poll(lp->pfd, np, busy ? 0 : wait);
    if (rc < 0 && errno != EINTR)
        return -errno;
    if (rc < 0)
        rc = 0;
    now = tp_now_ms();
    svc_tick(svc, now);

    /* Connections first (the array may grow with accepts below). */
    uint32_t nc = lp->nconns;
    for (i = 0; i < nc; i++) {
        loop_conn_t *lc = lp->conns[i];
        tp_conn_t *t = lc->tp;
        unsigned re = t->fd >= 0 ? tp_events_of(lp->pfd[lp->nlis + i].revents)
                                 : tp_ready(t);
        if (!lc->dead && t->deadline_ms && now >= t->deadline_ms &&
            tp_on_timer(t, now) < 0) {
            lc->dead = true;
            lc->why = "transport timer failed";
        }
        if (lc->dead)
            continue;
        if (!lc->open) {
            if (re & tp_handshake_events(t))
                handshake(lp, lc);
            continue;
        }
        if ((re & tp_events(t, 1, 0)) || tp_pending(t))
            do_read(lc);
    }
    for (i = 0; i < lp->nlis; i++)
        if (lp->pfd[i].revents & POLLIN)
            do_accept(lp, lp->lis[i]);

    (void)svc_process(svc);

    for (i = 0; i < lp->nconns; i++)
        if (lp->conns[i]->open)
            do_write(lp->conns[i]);

    for (i = lp->nconns; i-- > 0;) {
        loop_conn_t *lc = lp->conns[i];
        if (lc->dead || (lc->open && svc_conn_done(&lc->sc)))
            conn_close(lp, i, lc->dead ? lc->why
                              : lc->sc.close_reason ? NULL : lc->why);
    }
    return 0;
}

int loop_run(loop_t *lp, volatile sig_atomic_t *stop)
{
    while (!*stop) {
        int rc = loop_turn(lp, 250);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void loop_close_listeners(loop_t *lp)
{
    for (uint32_t i = 0; i < lp->nlis; i++)
        tp_listener_close(lp->lis[i]);
    lp->nlis = 0;
}

void loop_free(loop_t *lp)
{
    if (!lp)
        return;
    loop_close_listeners(lp);
    while (lp->nconns) {
        /* Best effort: send what is already queued (non-blocking). */
        if (lp->conns[lp->nconns - 1]->open)
            do_write(lp->conns[lp->nconns - 1]);
        conn_close(lp, lp->nconns - 1, "service stopping");
    }
    free(lp->conns);
    free(lp->pfd);
    free(lp);
}
