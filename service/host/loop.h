/*
 * loop.h - the host event loop: one poll() loop drives every listener and
 * connection of one svc_t, and its idle timeouts (svc_tick).
 *
 *   loop_t *lp;
 *   loop_new(&lp, &svc, NULL);
 *   loop_add_listener(lp, listener);    // the loop owns it from now on
 *   loop_run(lp, &stop_flag);           // until stop_flag != 0
 *   loop_free(lp);                      // close listeners, then connections
 *
 * Each turn: tick the service, poll (without sleeping when requests are
 * buffered, a descriptor-less transport says it is ready, or a transport
 * deadline is due; otherwise at most until the nearest deadline), run due
 * transport timers, step handshakes, accept, read into each open
 * connection's input buffer while the service wants input (backpressure),
 * serve at most one request per connection (svc_process), write out what
 * each connection has queued, close connections that are done.
 *
 * The loop drives connections and never builds protocol messages: the
 * events it polls for come from the transport (tp_events: a TLS read that
 * must write polls for writability), a connection reaches the service
 * (svc_conn_open) only when its handshake is done, and a connection over
 * the limit gets the bytes of svc_reject_conn. Memory: one svc_conn_t per
 * connection (about 50 KiB), at most max_conns of them (handshaking ones
 * included); connections over the limit get one ENOMEM error Response
 * (id 0) and are closed.
 */
#ifndef CELLAR_LOOP_H
#define CELLAR_LOOP_H

#include <signal.h>
#include <stdint.h>

#include "cellar_config.h"
#include "svc_core.h"
#include "tp.h"

/* LOOP_MAX_LISTENERS, LOOP_DEFAULT_MAX_CONNS: cellar_config.h */

typedef struct loop_config {
    uint32_t max_conns;   /* 0 = LOOP_DEFAULT_MAX_CONNS (at most 1024) */
} loop_config_t;

typedef struct loop loop_t;

/* Create a loop for svc (cfg may be NULL). Returns 0 or -ENOMEM. */
int loop_new(loop_t **out, svc_t *svc, const loop_config_t *cfg);

/* Hand a listener to the loop (it closes it in loop_free). Returns 0, or
 * -ENOSPC when LOOP_MAX_LISTENERS are already there (then the caller keeps
 * ownership). */
int loop_add_listener(loop_t *lp, tp_listener_t *l);

/* Hand an already connected transport connection to the loop (e.g. a UART,
 * an in-memory pair's end or a test socket). Its first handshake step runs
 * now (plain TCP and tp_mem are open at once). Returns 0, or -ENOSPC /
 * -ENOMEM (the caller keeps ownership). */
int loop_add_conn(loop_t *lp, tp_conn_t *c);

/* Run until *stop becomes non-zero (set it from a signal handler; the poll
 * wakes up on the signal). Returns 0, or a negative errno if poll fails. */
int loop_run(loop_t *lp, volatile sig_atomic_t *stop);

/* One turn, waiting at most max_wait_ms in poll. Returns 0 or a negative
 * errno. */
int loop_turn(loop_t *lp, int max_wait_ms);

/* Number of open connections. */
uint32_t loop_conns(const loop_t *lp);

/* Stop accepting: close every listener now. */
void loop_close_listeners(loop_t *lp);

/* Close every listener and connection (their handles are closed through
 * svc_conn_close), then free the loop. The svc_t is left to the caller.
 * NULL-safe. */
void loop_free(loop_t *lp);

/* Monotonic clock in milliseconds (the time svc_tick gets; tp_now_ms). */
uint64_t loop_now_ms(void);

#endif /* CELLAR_LOOP_H */
