/* tp_mem.c - an in-memory connection pair (tp.h): two tp_conn_t joined by
 * two bounded byte rings, no descriptor (fd -1), readiness via tp_ready. */
#include "tp.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MEM_DEFAULT_CAP (64u * 1024)

typedef struct mem_ring {
    uint8_t *buf;
    size_t cap, head, len; /* bytes at buf[head .. head + len) mod cap */
} mem_ring_t;

typedef struct mem_shared {
    mem_ring_t ring[2]; /* ring[i]: bytes sent by side i, read by side 1 - i */
    bool closed[2];
} mem_shared_t;

typedef struct mem_side {
    mem_shared_t *sh;
    int me;
} mem_side_t;

static mem_side_t *side(tp_conn_t *c)
{
    return (mem_side_t *)c->priv;
}

static int mem_send(tp_conn_t *c, const uint8_t *buf, size_t len)
{
    mem_side_t *s = side(c);
    mem_ring_t *r = &s->sh->ring[s->me];
    if (s->sh->closed[1 - s->me])
        return -EPIPE;
    if (len == 0)
        return 0;
    size_t room = r->cap - r->len;
    if (room == 0)
        return TP_WANT_WRITE;
    size_t n = len < room ? len : room;
    if (n > (size_t)INT32_MAX)
        n = (size_t)INT32_MAX;
    for (size_t k = 0; k < n;) {
        size_t at = (r->head + r->len) % r->cap;
        size_t run = r->cap - at;
        if (run > n - k)
            run = n - k;
        memcpy(r->buf + at, buf + k, run);
        r->len += run;
        k += run;
    }
    return (int)n;
}

static int mem_recv(tp_conn_t *c, uint8_t *buf, size_t len)
{
    mem_side_t *s = side(c);
    mem_ring_t *r = &s->sh->ring[1 - s->me];
    if (r->len == 0)
        return s->sh->closed[1 - s->me] ? 0 : TP_WANT_READ;
    if (len == 0)
        return TP_WANT_READ;
    size_t n = len < r->len ? len : r->len;
    if (n > (size_t)INT32_MAX)
        n = (size_t)INT32_MAX;
    for (size_t k = 0; k < n;) {
        size_t run = r->cap - r->head;
        if (run > n - k)
            run = n - k;
        memcpy(buf + k, r->buf + r->head, run);
        r->head = (r->head + run) % r->cap;
        r->len -= run;
        k += run;
    }
    if (r->len == 0)
        r->head = 0;
    return (int)n;
}

static unsigned mem_ready(tp_conn_t *c)
{
    mem_side_t *s = side(c);
    const mem_shared_t *sh = s->sh;
    unsigned ev = 0;
    /* Readable: data, or the end of the stream to report. Writable: room,
     * or an error to report. */
    if (sh->ring[1 - s->me].len || sh->closed[1 - s->me])
        ev |= TP_EV_READ;
    if (sh->ring[s->me].len < sh->ring[s->me].cap || sh->closed[1 - s->me])
        ev |= TP_EV_WRITE;
    return ev;
}

static void mem_close(tp_conn_t *c)
{
    mem_shared_t *sh = side(c)->sh;
    int me = side(c)->me;
    sh->closed[me] = true;
    free(c); /* the mem_conn_t: conn is its first member */
    if (sh->closed[1 - me]) {
        free(sh->ring[0].buf);
        free(sh->ring[1].buf);
        free(sh);
    }
}

static const tp_conn_type_t mem_conn_type = {
    .name = "mem",
    .send = mem_send,
    .recv = mem_recv,
    .close = mem_close,
    .ready = mem_ready,
};

/* One connection and its side record in one allocation. */
typedef struct mem_conn {
    tp_conn_t conn;
    mem_side_t side;
} mem_conn_t;

int tp_mem_pair(size_t cap, tp_conn_t **a, tp_conn_t **b)
{
    *a = *b = NULL;
    if (cap == 0)
        cap = MEM_DEFAULT_CAP;
    mem_shared_t *sh = calloc(1, sizeof(*sh));
    mem_conn_t *m[2] = { calloc(1, sizeof(mem_conn_t)),
                         calloc(1, sizeof(mem_conn_t)) };
    if (sh) {
        sh->ring[0].buf = malloc(cap);
        sh->ring[1].buf = malloc(cap);
    }
    if (!sh || !m[0] || !m[1] || !sh->ring[0].buf || !sh->ring[1].buf) {
        if (sh) {
            free(sh->ring[0].buf);
            free(sh->ring[1].buf);
        }
        free(sh);
        free(m[0]);
        free(m[1]);
        return -ENOMEM;
    }
    for (int i = 0; i < 2; i++) {
        sh->ring[i].cap = cap;
        m[i]->side.sh = sh;
        m[i]->side.me = i;
        m[i]->conn.type = &mem_conn_type;
        m[i]->conn.fd = -1;
        m[i]->conn.priv = &m[i]->side;
        strcpy(m[i]->conn.peer, i ? "mem b" : "mem a");
        strcpy(m[i]->conn.identity, TP_ANONYMOUS);
    }
    *a = &m[0]->conn;
    *b = &m[1]->conn;
    return 0;
}
