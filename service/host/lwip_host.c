/* lwip_host.c - cellard on Debian's lwIP and its TAP netif (lwip_host.h;
 * issue 14). */
#include "lwip_host.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "lwip/etharp.h"
#include "lwip/init.h"
#include "lwip/mem.h"
#include "lwip/ip_addr.h"
#include "lwip/memp.h"
#include "lwip/mld6.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/priv/memp_priv.h"
#include "lwip/tcp.h"
#include "lwip/timeouts.h"
#include "netif/ethernet.h"
#include "netif/tapif.h"

#include "tp_lwip.h"

/* Frames the tapif thread queued for the loop; beyond this a frame is
 * dropped (TCP retransmits it), so a stalled loop cannot eat the RAM. */
#define RXQ_MAX 1024u

static struct netif g_netif;
static bool g_started;
static int g_wake = -1;                  /* eventfd: frames or accepts wait */
static pthread_mutex_t g_qlock = PTHREAD_MUTEX_INITIALIZER;
static struct pbuf *g_q[RXQ_MAX];        /* ring, under g_qlock */
static unsigned g_qh, g_qn;
static unsigned long g_dropped;
static tp_listener_t *g_lis[TP_LWIP_MAX_LISTENERS];

/* ---- a defect of Debian's liblwip 2.1.3 -------------------------------------
 * Its memp_pools[MEMP_PBUF_POOL] elements are 616 bytes (the pool was sized
 * for TCP_MSS 536 over IPv4), but its pbuf_alloc fills PBUF_POOL pbufs up
 * to PBUF_POOL_BUFSIZE (1,536 with its lwipopts.h: TCP_MSS 1460, IPv6), so
 * every frame over 592 bytes that tapif reads overruns the heap (ASan:
 * heap-buffer-overflow in pbuf_take from tapif's reader). The library is
 * built with MEMP_MEM_MALLOC, where memp_malloc is mem_malloc of the
 * pool's element size, and it calls memp_malloc through the PLT, so
 * cellard's own memp_malloc below is the one every caller gets: the same
 * thing with the PBUF_POOL element at its real size. memp_free (mem_free)
 * is unchanged. */
#define PBUF_POOL_ELEM (LWIP_MEM_ALIGN_SIZE(sizeof(struct pbuf)) + \
                        LWIP_MEM_ALIGN_SIZE(PBUF_POOL_BUFSIZE))

void *memp_malloc(memp_t type)
{
    if ((unsigned)type >= MEMP_MAX)
        return NULL;
    size_t size = memp_pools[type]->size;
    if (type == MEMP_PBUF_POOL && size < PBUF_POOL_ELEM)
        size = PBUF_POOL_ELEM;
    return mem_malloc((mem_size_t)LWIP_MEM_ALIGN_SIZE(size));
}

static void wake(void)
{
    if (g_wake >= 0)
        (void)eventfd_write(g_wake, 1);
}

/* netif->input, called by tapif's reader thread: queue and wake. */
static err_t queue_input(struct pbuf *p, struct netif *inp)
{
    (void)inp;
    bool was_empty;
    pthread_mutex_lock(&g_qlock);
    if (g_qn == RXQ_MAX) {
        g_dropped++;
        pthread_mutex_unlock(&g_qlock);
        return ERR_MEM; /* tapif frees it */
    }
    was_empty = g_qn == 0;
    g_q[(g_qh + g_qn++) % RXQ_MAX] = p;
    pthread_mutex_unlock(&g_qlock);
    if (was_empty)
        wake();
    return ERR_OK;
}

/* "ADDR/PREFIX" -> address and prefix length. */
static int parse_ip(const char *s, ip_addr_t *ip, unsigned *prefix,
                    char *err, size_t errlen)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (!slash || n == 0 || n >= sizeof(buf)) {
        snprintf(err, errlen, "--ip %s: expected ADDR/PREFIX "
                 "(10.0.0.2/24 or fd00::2/64)", s);
        return -EINVAL;
    }
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    unsigned long p = strtoul(slash + 1, &end, 10);
    if (!ipaddr_aton(buf, ip) || ip_addr_isany(ip) ||
        slash[1] < '0' || slash[1] > '9' || *end || errno ||
        p > (IP_IS_V6(ip) ? 128u : 32u) || (IP_IS_V4(ip) && p == 0)) {
        snprintf(err, errlen, "--ip %s: expected ADDR/PREFIX "
                 "(10.0.0.2/24 or fd00::2/64)", s);
        return -EINVAL;
    }
    if (IP_IS_V6(ip) && p != 64) {
        snprintf(err, errlen, "--ip %s: lwIP 2.1 takes an IPv6 address's "
                 "prefix as /64: give /64", s);
        return -EINVAL;
    }
    *prefix = (unsigned)p;
    return 0;
}

/* Address idx of the netif usable now, without a duplicate-detection round
 * (the addresses are the caller's own): preferred, and its solicited-node
 * group joined (lwIP joins it only while detecting duplicates, and without
 * it the neighbour solicitations for the address go unanswered). */
static void ip6_now(struct netif *nif, s8_t idx)
{
    ip6_addr_t sn;
    netif_ip6_addr_set_state(nif, idx, IP6_ADDR_PREFERRED);
    ip6_addr_set_solicitednode(&sn, netif_ip6_addr(nif, idx)->addr[3]);
    (void)mld6_joingroup_netif(nif, &sn);
}

int lwip_host_check_ip(const char *s, char *err, size_t errlen)
{
    ip_addr_t ip;
    unsigned prefix;
    return parse_ip(s, &ip, &prefix, err, errlen);
}

int lwip_host_start(const lwip_host_config_t *cfg, char *err, size_t errlen)
{
    ip_addr_t ips[LWIP_HOST_MAX_IPS];
    unsigned prefix[LWIP_HOST_MAX_IPS];
    int v4 = -1, nv6 = 0;
    if (g_started) {
        snprintf(err, errlen, "lwip: already started");
        return -EALREADY;
    }
    if (!cfg->tap || !*cfg->tap || strlen(cfg->tap) >= 16) {
        snprintf(err, errlen, "--tap: a device name of 1 to 15 bytes");
        return -EINVAL;
    }
    if (cfg->nips < 1) {
        snprintf(err, errlen, "--stack lwip needs --ip ADDR/PREFIX");
        return -EINVAL;
    }
    for (int i = 0; i < cfg->nips; i++) {
        int rc = parse_ip(cfg->ips[i], &ips[i], &prefix[i], err, errlen);
        if (rc)
            return rc;
        if (IP_IS_V4(&ips[i])) {
            if (v4 >= 0) {
                snprintf(err, errlen, "--ip: one IPv4 address per netif");
                return -EINVAL;
            }
            v4 = i;
        } else if (++nv6 > LWIP_IPV6_NUM_ADDRESSES - 1) {
            snprintf(err, errlen, "--ip: at most %d IPv6 addresses",
                     LWIP_IPV6_NUM_ADDRESSES - 1);
            return -EINVAL;
        }
    }
    if (access("/dev/net/tun", R_OK | W_OK) != 0) {
        snprintf(err, errlen, "--tap %s: /dev/net/tun: %s", cfg->tap,
                 strerror(errno));
        return -errno;
    }
    g_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g_wake < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        return -errno;
    }

    /* tapif attaches to this device instead of running ifconfig on tap0 */
    setenv("PRECONFIGURED_TAPIF", cfg->tap, 1);

    lwip_init();

    ip4_addr_t a4, m4, gw4;
    ip4_addr_set_zero(&a4);
    ip4_addr_set_zero(&m4);
    ip4_addr_set_zero(&gw4);
    if (v4 >= 0) {
        ip4_addr_copy(a4, *ip_2_ip4(&ips[v4]));
        uint32_t mask = prefix[v4] ? 0xFFFFFFFFu << (32 - prefix[v4]) : 0;
        ip4_addr_set_u32(&m4, lwip_htonl(mask));
    }
    /* tapif starts its reader thread here: it must not take our signals
     * (SIGINT/SIGTERM wake the loop's poll). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    struct netif *nif = netif_add(&g_netif, &a4, &m4, &gw4, NULL, tapif_init,
                                  queue_input);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!nif) {
        snprintf(err, errlen, "--tap %s: netif_add failed", cfg->tap);
        return -EIO;
    }
    netif_create_ip6_linklocal_address(&g_netif, 1);
    ip6_now(&g_netif, 0);
    for (int i = 0; i < cfg->nips; i++) {
        if (!IP_IS_V6(&ips[i]))
            continue;
        s8_t idx;
        if (netif_add_ip6_address(&g_netif, ip_2_ip6(&ips[i]), &idx) !=
            ERR_OK) {
            snprintf(err, errlen, "--ip %s: lwIP refused it", cfg->ips[i]);
            return -EINVAL;
        }
        ip6_now(&g_netif, idx);
    }
    netif_set_default(&g_netif);
    netif_set_up(&g_netif);
    g_started = true;
    return 0;
}

int lwip_host_listen(const char *host, uint16_t port, tp_listener_t **out,
                     char *err, size_t errlen)
{
    ip_addr_t a;
    const ip_addr_t *ap = NULL;
    unsigned slot;
    for (slot = 0; slot < TP_LWIP_MAX_LISTENERS && g_lis[slot]; slot++)
        ;
    if (slot == TP_LWIP_MAX_LISTENERS) {
        snprintf(err, errlen, "lwip: at most %u listeners",
                 (unsigned)TP_LWIP_MAX_LISTENERS);
        return -ENOSPC;
    }
    if (host && *host && strcmp(host, "0.0.0.0") && strcmp(host, "::")) {
        if (!ipaddr_aton(host, &a)) {
            snprintf(err, errlen, "lwip: %s: not an IP address", host);
            return -EINVAL;
        }
        /* lwIP binds any address: it must be one of the netif's */
        bool ours = IP_IS_V4(&a)
            ? ip4_addr_cmp(ip_2_ip4(&a), netif_ip4_addr(&g_netif))
            : netif_get_ip6_addr_match(&g_netif, ip_2_ip6(&a)) >= 0;
        if (!ours) {
            snprintf(err, errlen, "lwip: %s is not one of the --ip addresses",
                     host);
            return -EADDRNOTAVAIL;
        }
        ap = &a;
    }
    int rc = tp_lwip_listen(ap, port, out, err, errlen);
    if (rc)
        return rc;
    (*out)->fd = g_wake; /* poll wakes on frames and pending accepts */
    g_lis[slot] = *out;
    return 0;
}

void lwip_host_poll(void)
{
    struct pbuf *batch[64];
    eventfd_t v;
    (void)eventfd_read(g_wake, &v); /* drain; re-armed below if needed */
    for (;;) {
        unsigned n = 0;
        pthread_mutex_lock(&g_qlock);
        while (g_qn && n < 64) {
            batch[n++] = g_q[g_qh];
            g_qh = (g_qh + 1) % RXQ_MAX;
            g_qn--;
        }
        pthread_mutex_unlock(&g_qlock);
        if (!n)
            break;
        for (unsigned i = 0; i < n; i++)
            if (ethernet_input(batch[i], &g_netif) != ERR_OK)
                pbuf_free(batch[i]);
    }
    sys_check_timeouts();
    /* A listener with a connection waiting keeps the loop's poll awake. */
    for (unsigned i = 0; i < TP_LWIP_MAX_LISTENERS; i++) {
        if (g_lis[i] && g_lis[i]->type && tp_lwip_accept_pending(g_lis[i])) {
            wake();
            break;
        }
    }
}

int lwip_host_wait_ms(int cap)
{
    u32_t t = sys_timeouts_sleeptime();
    if (t == SYS_TIMEOUTS_SLEEPTIME_INFINITE || t > (u32_t)cap)
        return cap;
    return (int)t;
}

int lwip_host_run(loop_t *lp, volatile sig_atomic_t *stop)
{
    while (!*stop) {
        lwip_host_poll();
        int rc = loop_turn(lp, lwip_host_wait_ms(250));
        if (rc < 0)
            return rc;
    }
    return 0;
}

void lwip_host_report(void (*log)(void *ctx, const char *line), void *ctx)
{
    char line[300];
    tp_lwip_stats_t st;
    tp_lwip_stats(&st);
    unsigned pcb = memp_pools[MEMP_TCP_PCB]->size;
    unsigned seg = memp_pools[MEMP_TCP_SEG]->size;
    unsigned pool = memp_pools[MEMP_PBUF_POOL]->size;
    /* Our view of struct memp_desc must match the library's build. */
    if (pcb != LWIP_MEM_ALIGN_SIZE(sizeof(struct tcp_pcb)))
        pcb = LWIP_MEM_ALIGN_SIZE(sizeof(struct tcp_pcb));
    if (pool < PBUF_POOL_ELEM)
        pool = PBUF_POOL_ELEM; /* see memp_malloc above */
    unsigned pbuf_hdr = LWIP_MEM_ALIGN_SIZE(sizeof(struct pbuf));
    unsigned long rx_ram = (unsigned long)st.rx_pbufs_peak * pool;
    unsigned long tx_ram = (unsigned long)st.tx_unacked_peak +
        (unsigned long)st.tx_queuelen_peak * (seg + pbuf_hdr +
                                              PBUF_LINK_HLEN + PBUF_IP_HLEN +
                                              PBUF_TRANSPORT_HLEN);
    snprintf(line, sizeof(line),
             "lwip: build TCP_MSS %u TCP_WND %u TCP_SND_BUF %u "
             "TCP_SND_QUEUELEN %u MEMP_MEM_MALLOC %d NO_SYS %d; memp sizes: "
             "tcp_pcb %u tcp_seg %u pbuf_pool %u; slot %u",
             (unsigned)TCP_MSS, (unsigned)TCP_WND, (unsigned)TCP_SND_BUF,
             (unsigned)TCP_SND_QUEUELEN, MEMP_MEM_MALLOC, NO_SYS, pcb, seg,
             pool, (unsigned)st.slot_bytes);
    log(ctx, line);
    snprintf(line, sizeof(line),
             "lwip: conns peak %u accepts %u refused %u rx %llu tx %llu "
             "dropped frames %lu window closed %u",
             (unsigned)st.conns_peak, (unsigned)st.accepts,
             (unsigned)st.refused, (unsigned long long)st.rx_bytes,
             (unsigned long long)st.tx_bytes, g_dropped,
             (unsigned)st.wnd_closed);
    log(ctx, line);
    snprintf(line, sizeof(line),
             "lwip: per connection peak: rx %u bytes in %u pbufs (%lu B), "
             "tx %u bytes unacked in %u pbufs (%lu B); pcb %u B; "
             "ram_per_conn %lu B",
             (unsigned)st.rx_queued_peak, (unsigned)st.rx_pbufs_peak, rx_ram,
             (unsigned)st.tx_unacked_peak, (unsigned)st.tx_queuelen_peak,
             tx_ram, pcb,
             (unsigned long)pcb + rx_ram + tx_ram + st.slot_bytes);
    log(ctx, line);
}
