/*
 * lwip_host.h - cellard on lwIP (issue 14): Debian's liblwip with its
 * contrib TAP netif (tapif), driven from cellard's loop.
 *
 *   lwip_host_config_t cfg = { .tap = "tap0", .ips = {"10.0.0.2/24"}, .nips = 1 };
 *   lwip_host_start(&cfg, err, sizeof(err));    // lwip_init, netif, addresses
 *   lwip_host_listen(NULL, 7070, &l, ...);      // a tp_lwip listener
 *   loop_add_listener(lp, l);
 *   lwip_host_run(lp, &stop);                   // the loop, feeding lwIP
 *   lwip_host_report(stderr-like log);          // RAM figures
 *
 * Debian builds liblwip with NO_SYS = 0 (for the Hurd), and its tapif then
 * reads the TAP device in a thread of its own (tapif_thread) and hands each
 * frame to netif->input. Here netif->input only queues the frame and wakes
 * the loop (an eventfd); the loop's thread feeds the frames to
 * ethernet_input and runs lwIP's timers (sys_check_timeouts), so the whole
 * stack and every tp_lwip callback run in one thread, as on a NO_SYS
 * firmware (tcpip_init is never called, so there is no tcpip thread).
 */
#ifndef CELLAR_LWIP_HOST_H
#define CELLAR_LWIP_HOST_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "tp.h"

#define LWIP_HOST_MAX_IPS 4

typedef struct lwip_host_config {
    const char *tap;                        /* TAP device name (created if
                                               missing: needs CAP_NET_ADMIN) */
    const char *ips[LWIP_HOST_MAX_IPS];     /* "ADDR/PREFIX", IPv4 or IPv6 */
    int nips;
} lwip_host_config_t;

/* Check an --ip value ("10.0.0.2/24", "fd00::2/64"). Returns 0 or -EINVAL
 * with a reason in err. */
int lwip_host_check_ip(const char *s, char *err, size_t errlen);

/* Start lwIP on the TAP device with the addresses. Returns 0, or a negative
 * errno with a reason in err. Once per process. */
int lwip_host_start(const lwip_host_config_t *cfg, char *err, size_t errlen);

/* A tp_lwip listener on host ("0.0.0.0" / "::" / empty = every address,
 * both families; else one of the --ip addresses) and port; its fd is the
 * loop's wake-up descriptor. Returns 0 or a negative errno (err). */
int lwip_host_listen(const char *host, uint16_t port, tp_listener_t **out,
                     char *err, size_t errlen);

/* Feed queued frames to lwIP and run its due timers. */
void lwip_host_poll(void);

/* Milliseconds until lwIP's next timer, at most cap. */
int lwip_host_wait_ms(int cap);

/* loop_run for lwIP: lwip_host_poll and loop_turn until *stop. */
int lwip_host_run(loop_t *lp, volatile sig_atomic_t *stop);

/* Log lines: lwIP's compiled sizes and what the transport held (RAM per
 * connection), each through log(ctx, line). */
void lwip_host_report(void (*log)(void *ctx, const char *line), void *ctx);

#endif /* CELLAR_LWIP_HOST_H */
