/*
 * inproc.h - a cellar_transport_t (libcellar's transport) over one end of
 * an in-memory transport pair whose waits turn the daemon's loop: one
 * thread is both the client and the device (test_tp, test_tls).
 *
 *   inproc_t ip = { .c = client_end, .lp = loop };
 *   cellar_transport_t t = { .name = "mem", .send = inproc_send,
 *                            .recv = inproc_recv, .close = inproc_close };
 */
#ifndef CELLAR_TEST_INPROC_H
#define CELLAR_TEST_INPROC_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "tp.h"

typedef struct inproc {
    tp_conn_t *c;
    loop_t *lp;
} inproc_t;

int inproc_send(void *ctx, const void *buf, size_t len, uint32_t tmo);
int inproc_recv(void *ctx, void *buf, size_t len, uint32_t tmo);
void inproc_close(void *ctx);

#endif /* CELLAR_TEST_INPROC_H */
