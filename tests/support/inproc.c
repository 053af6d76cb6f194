/* inproc.c - see inproc.h. */
#include "inproc.h"

#include "cellar.h"

int inproc_send(void *ctx, const void *buf, size_t len, uint32_t tmo)
{
    inproc_t *ip = ctx;
    for (int i = 0; i < 100000; i++) {
        int n = tp_send(ip->c, buf, len);
        if (n != TP_WANT_WRITE && n != TP_WANT_READ)
            return n;
        if (loop_turn(ip->lp, 0) < 0)
            return CELLAR_ERR_IO;
    }
    return CELLAR_ERR_TIMEDOUT;
}

int inproc_recv(void *ctx, void *buf, size_t len, uint32_t tmo)
{
    inproc_t *ip = ctx;
    for (int i = 0; i < 100000; i++) {
        int n = tp_recv(ip->c, buf, len);
        if (n != TP_WANT_WRITE && n != TP_WANT_READ)
            return n;
        if (tmo == 0 && i > 0)
            return CELLAR_ERR_TIMEDOUT;
        if (loop_turn(ip->lp, 0) < 0)
            return CELLAR_ERR_IO;
    }
    return CELLAR_ERR_TIMEDOUT;
}

void inproc_close(void *ctx)
{
    inproc_t *ip = ctx;
    tp_close(ip->c);
    ip->c = NULL;
}
