/* loop.c - the host event loop (see loop.h). */
#include "loop.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct loop_conn {
    tp_conn_t *tp;
    bool dead;            /* transport error: close without flushing */
    const char *why;      /* reason for the log line */
    svc_conn_t sc;        /* big: keep last */
} loop_conn_t;

struct loop {
    svc_t *svc;
    uint32_t max_conns;
    tp_listener_t *lis[LOOP_MAX_LISTENERS];
    uint32_t nlis;
    loop_conn_t **conns;
    uint32_t nconns;
    struct pollfd *pfd;   /* listeners, then connections */
    uint64_t accept_pause_until; /* after EMFILE & co: do not spin */
};

uint64_t loop_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
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
    lc->dead = false;
    lc->why = NULL;
    svc_conn_open(lp->svc, &lc->sc, c->peer);
    lp->conns[lp->nconns++] = lc;
    return 0;
}

uint32_t loop_conns(const loop_t *lp)
{
    return lp->nconns;
}

/* Over the connection limit: one error Response, best effort, and close. */
static void refuse(tp_conn_t *c)
{
    static cellar_Response r; /* zero-initialised; only filled here */
    uint8_t buf[256];
    memset(&r, 0, sizeof(r));
    r.has_error = true;
    r.error.code = cellar_Code_ENOMEM;
    strcpy(r.error.message,
           "connect: too many connections to this device; try again later");
    int n = codec_encode_response(&r, buf, sizeof(buf));
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
            refuse(c);
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

    svc_tick(svc, loop_now_ms());

    bool accepting = loop_now_ms() >= lp->accept_pause_until;
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
        const uint8_t *p;
        size_t len;
        short ev = 0;
        if (svc_conn_want_read(&lc->sc))
            ev |= POLLIN;
        if (svc_conn_output(&lc->sc, &p, &len))
            ev |= POLLOUT;
        if (tp_pending(lc->tp) || svc_conn_done(&lc->sc) || lc->dead)
            busy = true;
        lp->pfd[np].fd = lc->tp->fd;
        lp->pfd[np].events = ev;
        lp->pfd[np].revents = 0;
        np++;
    }

    int rc = poll(lp->pfd, np, busy ? 0 : max_wait_ms);
    if (rc < 0 && errno != EINTR)
        return -errno;
    if (rc < 0)
        rc = 0;
    svc_tick(svc, loop_now_ms());

    /* Connections first (the array may grow with accepts below). */
    uint32_t nc = lp->nconns;
    for (i = 0; i < nc; i++) {
        loop_conn_t *lc = lp->conns[i];
        short re = lp->pfd[lp->nlis + i].revents;
        if ((re & (POLLIN | POLLHUP | POLLERR)) || tp_pending(lc->tp))
            do_read(lc);
    }
    for (i = 0; i < lp->nlis; i++)
        if (lp->pfd[i].revents & POLLIN)
            do_accept(lp, lp->lis[i]);

    (void)svc_process(svc);

    for (i = 0; i < lp->nconns; i++)
        do_write(lp->conns[i]);

    for (i = lp->nconns; i-- > 0;) {
        loop_conn_t *lc = lp->conns[i];
        if (lc->dead || svc_conn_done(&lc->sc))
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
        do_write(lp->conns[lp->nconns - 1]);
        conn_close(lp, lp->nconns - 1, "service stopping");
    }
    free(lp->conns);
    free(lp->pfd);
    free(lp);
}
