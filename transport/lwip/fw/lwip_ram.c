/*
 * lwip_ram.c - what one connection of the lwIP transport costs in lwIP's
 * pools with the example firmware lwipopts.h beside it, for a Cortex-M4
 * (`make size-lwip` reads each figure as a symbol's size: nm -S). Not
 * linked into anything.
 */
#include "lwip/opt.h"
#include "lwip/pbuf.h"
#include "lwip/tcp.h"
#include "lwip/priv/tcp_priv.h"

#define POOL_ELEM (LWIP_MEM_ALIGN_SIZE(sizeof(struct pbuf)) + \
                   LWIP_MEM_ALIGN_SIZE(PBUF_POOL_BUFSIZE))
#define RAM_HDR (LWIP_MEM_ALIGN_SIZE(sizeof(struct pbuf)) + PBUF_LINK_HLEN + \
                 PBUF_IP_HLEN + PBUF_TRANSPORT_HLEN)

const char lwip_tcp_pcb[LWIP_MEM_ALIGN_SIZE(sizeof(struct tcp_pcb))];
const char lwip_tcp_seg[LWIP_MEM_ALIGN_SIZE(sizeof(struct tcp_seg))];
const char lwip_pbuf_pool_elem[POOL_ELEM];
/* received and not yet taken: at most TCP_WND, in full-size segments */
const char lwip_rx_window[((TCP_WND + TCP_MSS - 1) / TCP_MSS) * POOL_ELEM];
/* the send buffer: TCP_SND_BUF bytes in PBUF_RAM pbufs, one tcp_seg each */
const char lwip_tx_buffer[TCP_SND_BUF + TCP_SND_QUEUELEN *
                          (LWIP_MEM_ALIGN_SIZE(sizeof(struct tcp_seg)) + RAM_HDR)];
const char lwip_per_conn[LWIP_MEM_ALIGN_SIZE(sizeof(struct tcp_pcb)) +
                         ((TCP_WND + TCP_MSS - 1) / TCP_MSS) * POOL_ELEM +
                         TCP_SND_BUF + TCP_SND_QUEUELEN *
                         (LWIP_MEM_ALIGN_SIZE(sizeof(struct tcp_seg)) + RAM_HDR)];
