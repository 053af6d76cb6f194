/*
 * lwipopts.h - an example firmware configuration of lwIP for the lwIP
 * transport (issue 14): NO_SYS (one loop drives lwIP and the service), IPv4
 * and IPv6, static pools sized for TP_LWIP_MAX_CONNS connections with a
 * small window. `make size-lwip` compiles tp_lwip.c against it for a
 * Cortex-M4, which shows the file builds outside Linux; docs/LWIP.md gives
 * the RAM these pools cost. Copy it into your firmware and adjust.
 */
#ifndef CELLAR_FW_LWIPOPTS_H
#define CELLAR_FW_LWIPOPTS_H

#define NO_SYS                  1
#define LWIP_SOCKET             0
#define LWIP_NETCONN            0
#define SYS_LIGHTWEIGHT_PROT    0
#define LWIP_IPV4               1
#define LWIP_IPV6               1
#define LWIP_TCP                1
#define LWIP_UDP                1
#define MEM_ALIGNMENT           4

/* TCP: a 4-segment window is the backpressure of each connection
 * (each may be given with -D: make size-lwip LWIP_FW_CFLAGS=...) */
#ifndef TCP_MSS
#define TCP_MSS                 1460
#endif
#ifndef TCP_WND
#define TCP_WND                 (4 * TCP_MSS)
#endif
#ifndef TCP_SND_BUF
#define TCP_SND_BUF             (4 * TCP_MSS)
#endif
#define TCP_SND_QUEUELEN        (2 * TCP_SND_BUF / TCP_MSS + 2)

/* pools: 2 service connections + 1 refused + a listener, 1 in TIME_WAIT */
#define MEMP_NUM_TCP_PCB        4
#define MEMP_NUM_TCP_PCB_LISTEN 1
#define MEMP_NUM_TCP_SEG        (2 * TCP_SND_QUEUELEN)
#define PBUF_POOL_SIZE          12
#define MEM_SIZE                (2 * TCP_SND_BUF + 2048)

#define LWIP_STATS              0
#endif
