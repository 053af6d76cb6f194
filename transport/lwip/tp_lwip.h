/*
 * tp_lwip.h - the transport over lwIP's raw TCP API (issue 14).
 *
 * Portable: a module's firmware links tp_lwip.c next to its own lwIP
 * (NO_SYS = 1, a netif for its modem or Ethernet) and cellard links it on
 * Debian's liblwip (service/host/lwip_host.c: a TAP netif). The file uses
 * no OS call, no malloc and no stdio; its state is a static pool of
 * TP_LWIP_MAX_CONNS connections and TP_LWIP_MAX_LISTENERS listeners
 * (cellar_config.h).
 *
 * Threading: every function here, and every lwIP callback it registers,
 * runs in the one context that drives lwIP (NO_SYS: the main loop that
 * feeds the netif and calls sys_check_timeouts). Nothing locks.
 *
 * Connections have fd = -1: tp_ready() says what would progress.
 *   READ   received bytes are queued (lwIP's pbufs, held as they came), the
 *          peer closed its side, or the connection failed;
 *   WRITE  lwIP's send buffer has room (tcp_sndbuf, TCP_SND_QUEUELEN).
 * Backpressure is lwIP's TCP window: the pbufs stay queued until tp_recv
 * copies them out, and only the bytes copied out are acknowledged to the
 * window (tcp_recved), so a service that stops reading closes the window.
 * tp_send copies into lwIP's send buffer (tcp_write, TCP_WRITE_FLAG_COPY;
 * TP_WANT_WRITE when it is full) and pushes the data out at once
 * (tcp_output; Nagle is off).
 *
 * Listeners have fd = -1 too: lwIP accepts in its own callback, and the
 * accepted connections wait in the listener until tp_accept takes them.
 * The code driving lwIP learns that one is waiting from
 * tp_lwip_accept_pending() (cellard sets the listener's fd to its wake-up
 * descriptor and re-arms it while one is pending).
 */
#ifndef CELLAR_TP_LWIP_H
#define CELLAR_TP_LWIP_H

#include <stddef.h>
#include <stdint.h>

#include "cellar_config.h"
#include "tp.h"

/* Listen on port (1..65535) of addr: an ip_addr_t * from lwIP
 * (lwip/ip_addr.h), or NULL for every address of every netif, IPv4 and
 * IPv6 (one dual-stack pcb, IPADDR_TYPE_ANY). Returns 0 with *out (free it
 * with tp_listener_close), -EINVAL for a bad port, -ENOSPC when
 * TP_LWIP_MAX_LISTENERS are in use, -EADDRINUSE, or -ENOMEM from lwIP; err
 * (if not NULL) gets the reason. out->url is "tcp://ADDR:PORT" ([::] for
 * any). */
int tp_lwip_listen(const void *addr, uint16_t port, tp_listener_t **out,
                   char *err, size_t errlen);

/* Accepted connections waiting in l (0 for another type's listener). */
unsigned tp_lwip_accept_pending(const tp_listener_t *l);

/* What the transport holds and held, for `make bench-lwip` and the logs.
 * Peaks are since start (or the last tp_lwip_stats_reset). */
typedef struct tp_lwip_stats {
    uint32_t conns;            /* connections in use now (queued included) */
    uint32_t conns_peak;
    uint32_t accepts;          /* connections lwIP handed over */
    uint32_t refused;          /* accepted by lwIP but no slot: aborted */
    uint64_t rx_bytes, tx_bytes;
    uint32_t rx_queued_peak;   /* bytes received, not yet taken: one conn */
    uint32_t rx_pbufs_peak;    /* pbufs holding them */
    uint32_t tx_unacked_peak;  /* bytes in lwIP's send buffer: one conn */
    uint32_t tx_queuelen_peak; /* pbufs in its send queue (tcp_sndqueuelen) */
    uint32_t wnd_closed;       /* times a connection's window reached 0 */
    uint32_t slot_bytes;       /* RAM of one of this file's slots */
} tp_lwip_stats_t;

void tp_lwip_stats(tp_lwip_stats_t *out);
void tp_lwip_stats_reset(void);

#endif /* CELLAR_TP_LWIP_H */
