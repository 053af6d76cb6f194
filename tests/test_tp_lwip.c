/*
 * test_tp_lwip.c - the lwIP transport (transport/lwip/tp_lwip.c; issue 14)
 * without root or a TAP device: two lwIP stacks (Debian's liblwip), one in
 * this process serving through tp_lwip, one in a forked child acting as
 * the client on lwIP's raw API, joined by a SOCK_SEQPACKET socketpair that
 * carries one IPv4 packet per message (an Ethernet-less netif each side).
 *
 * Contracts checked:
 *  - backpressure is the TCP window: while the server does not read, lwIP
 *    holds at most TCP_WND received bytes, the window closes, and the
 *    client cannot push more; every byte arrives intact once it reads, in
 *    small reads;
 *  - tp_ready: READ only with data queued; WRITE while the send buffer has
 *    room; tp_send returns TP_WANT_WRITE when it is full and the data gets
 *    out as ACKs come back;
 *  - the peer's FIN is recv() == 0 after the data; listener limits.
 * Every wait is a bounded number of polls (no wall-time assertion).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lwip/init.h"
#include "lwip/ip4.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/tcp.h"
#include "lwip/timeouts.h"

#include "check.h"
#include "tp.h"
#include "tp_lwip.h"

#define PORT 7070
#define NBYTES (256u * 1024u)

static int g_fd = -1;
static struct netif g_nif;

static uint8_t pattern(uint32_t i, uint32_t salt)
{
    return (uint8_t)((i * 2654435761u) >> 24 ^ salt);
}

/* ---- an Ethernet-less netif over the socketpair -------------------------------- */

static err_t sp_output(struct netif *n, struct pbuf *p, const ip4_addr_t *a)
{
    uint8_t buf[2048];
    (void)n;
    (void)a;
    u16_t len = pbuf_copy_partial(p, buf, sizeof(buf), 0);
    (void)send(g_fd, buf, len, MSG_NOSIGNAL);
    return ERR_OK;
}

static err_t sp_init(struct netif *n)
{
    n->output = sp_output;
    n->mtu = 1500;
    n->name[0] = 's';
    n->name[1] = 'p';
    n->flags = NETIF_FLAG_LINK_UP;
    return ERR_OK;
}

static void net_up(const char *ip)
{
    ip4_addr_t a, m, gw;
    lwip_init();
    ip4addr_aton(ip, &a);
    ip4addr_aton("255.255.255.0", &m);
    ip4_addr_set_zero(&gw);
    netif_add(&g_nif, &a, &m, &gw, NULL, sp_init, ip_input);
    netif_set_default(&g_nif);
    netif_set_up(&g_nif);
    netif_set_link_up(&g_nif);
}

/* Feed what arrived (waiting at most wait_ms) and run lwIP's timers.
 * Returns the packets fed. */
static int net_poll(int wait_ms)
{
    uint8_t buf[2048];
    struct pollfd pfd = { .fd = g_fd, .events = POLLIN };
    int n = 0;
    if (poll(&pfd, 1, wait_ms) > 0) {
        for (;;) {
            ssize_t k = recv(g_fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (k <= 0)
                break;
            /* PBUF_RAM: Debian's PBUF_POOL elements are undersized
             * (service/host/lwip_host.c) */
            struct pbuf *p = pbuf_alloc(PBUF_RAW, (u16_t)k, PBUF_RAM);
            if (!p)
                break;
            pbuf_take(p, buf, (u16_t)k);
            if (g_nif.input(p, &g_nif) != ERR_OK)
                pbuf_free(p);
            n++;
        }
    }
    sys_check_timeouts();
    return n;
}

/* ---- the client (child process, raw API) ------------------------------------------- */

static struct {
    bool connected, failed;
    uint32_t sent, got;
    bool bad;
} cl;

static err_t cl_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
    (void)arg;
    (void)err;
    if (!p)
        return ERR_OK;
    for (struct pbuf *q = p; q; q = q->next)
        for (u16_t i = 0; i < q->len; i++)
            if (((uint8_t *)q->payload)[i] != pattern(cl.got++, 0x5A))
                cl.bad = true;
    tcp_recved(pcb, p->tot_len);
    pbuf_free(p);
    return ERR_OK;
}

static err_t cl_connected(void *arg, struct tcp_pcb *pcb, err_t err)
{
    (void)arg;
    (void)pcb;
    cl.connected = err == ERR_OK;
    return ERR_OK;
}

static void cl_err(void *arg, err_t err)
{
    (void)arg;
    (void)err;
    cl.failed = true;
}

static int client(void)
{
    ip_addr_t srv;
    net_up("10.0.0.2");
    struct tcp_pcb *pcb = tcp_new();
    ipaddr_aton("10.0.0.1", &srv);
    tcp_recv(pcb, cl_recv);
    tcp_err(pcb, cl_err);
    if (tcp_connect(pcb, &srv, PORT, cl_connected) != ERR_OK)
        return 2;
    /* send NBYTES as fast as the window lets us, take the echo back */
    for (int i = 0; i < 20000 && !cl.failed && cl.got < NBYTES; i++) {
        while (cl.connected && cl.sent < NBYTES && tcp_sndbuf(pcb) > 0) {
            uint8_t chunk[1024];
            uint32_t n = NBYTES - cl.sent;
            if (n > sizeof(chunk))
                n = sizeof(chunk);
            if (n > tcp_sndbuf(pcb))
                n = tcp_sndbuf(pcb);
            for (uint32_t k = 0; k < n; k++)
                chunk[k] = pattern(cl.sent + k, 0xA5);
            if (tcp_write(pcb, chunk, (u16_t)n, TCP_WRITE_FLAG_COPY) != ERR_OK)
                break;
            cl.sent += n;
        }
        if (cl.connected)
            tcp_output(pcb);
        net_poll(2);
    }
    if (cl.failed || cl.bad || cl.got != NBYTES)
        return 3;
    tcp_close(pcb); /* FIN */
    for (int i = 0; i < 50; i++)
        net_poll(2);
    return 0;
}

/* ---- the server (this process, tp_lwip) -------------------------------------------- */

int main(void)
{
    int sv[2];
    signal(SIGPIPE, SIG_IGN);
    CHECK_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        g_fd = sv[1];
        _exit(client());
    }
    close(sv[1]);
    g_fd = sv[0];
    net_up("10.0.0.1");

    tp_listener_t *l = NULL, *l2 = NULL, *extra[TP_LWIP_MAX_LISTENERS];
    char err[120];
    CHECK_EQ(tp_lwip_listen(NULL, 0, &l, err, sizeof(err)), -EINVAL);
    CHECK_EQ(tp_lwip_listen(NULL, PORT, &l, err, sizeof(err)), 0);
    CHECK(l && strcmp(l->url, "tcp://[::]:7070") == 0);
    CHECK_EQ(tp_lwip_listen(NULL, PORT, &l2, err, sizeof(err)), -EADDRINUSE);
    unsigned nx = 0;
    for (; nx < TP_LWIP_MAX_LISTENERS; nx++)
        if (tp_lwip_listen(NULL, (uint16_t)(PORT + 1 + nx), &extra[nx], err,
                           sizeof(err)))
            break;
    CHECK_EQ(nx, TP_LWIP_MAX_LISTENERS - 1); /* l holds one */
    CHECK_EQ(tp_lwip_listen(NULL, 9999, &l2, err, sizeof(err)), -ENOSPC);
    while (nx)
        tp_listener_close(extra[--nx]);

    /* accept */
    tp_conn_t *c = NULL;
    for (int i = 0; i < 2000 && !c; i++) {
        net_poll(5);
        if (tp_lwip_accept_pending(l))
            CHECK_EQ(tp_accept(l, &c), 0);
    }
    CHECK(c != NULL);
    if (!c) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return check_summary("test_tp_lwip");
    }
    CHECK(strncmp(c->peer, "lwip 10.0.0.2:", 14) == 0);
    CHECK_EQ(c->fd, -1);
    CHECK_EQ(tp_accept(l, &c) == TP_WANT_READ, 1);

    /* 1. do not read: the window fills and closes, lwIP holds <= TCP_WND */
    tp_lwip_stats_t st;
    int quiet = 0;
    for (int i = 0; i < 3000 && quiet < 40; i++)
        quiet = net_poll(5) ? 0 : quiet + 1;
    tp_lwip_stats(&st);
    /* the window is (all but a segment) used up and nothing more comes */
    CHECK(st.rx_queued_peak + TCP_MSS > TCP_WND);
    CHECK(st.rx_queued_peak <= TCP_WND);
    CHECK(st.rx_queued_peak < NBYTES);
    uint32_t held = st.rx_queued_peak;
    for (int i = 0; i < 20; i++)
        net_poll(5);
    tp_lwip_stats(&st);
    CHECK_EQ(st.rx_queued_peak, held);
    CHECK(tp_ready(c) & TP_EV_READ);

    /* 2. read in small pieces: all of it, intact */
    uint32_t got = 0;
    bool intact = true, wants_ok = true;
    for (int i = 0; i < 20000 && got < NBYTES; i++) {
        uint8_t buf[1000];
        int n = tp_recv(c, buf, sizeof(buf));
        if (n > 0) {
            for (int k = 0; k < n; k++)
                if (buf[k] != pattern(got + (uint32_t)k, 0xA5))
                    intact = false;
            got += (uint32_t)n;
        } else {
            if (n != TP_WANT_READ || (tp_ready(c) & TP_EV_READ))
                wants_ok = false; /* nothing queued: WANT_READ, not ready */
            if (n != TP_WANT_READ)
                break;
            net_poll(5);
        }
    }
    CHECK_EQ(got, NBYTES);
    CHECK(intact);
    CHECK(wants_ok);
    tp_lwip_stats(&st);
    CHECK(st.rx_queued_peak <= TCP_WND);

    /* 3. send NBYTES back: WANT_WRITE once the send buffer is full */
    uint32_t sent = 0;
    int want_write = 0;
    for (int i = 0; i < 20000 && sent < NBYTES; i++) {
        uint8_t buf[4096];
        uint32_t n = NBYTES - sent < sizeof(buf) ? NBYTES - sent : sizeof(buf);
        for (uint32_t k = 0; k < n; k++)
            buf[k] = pattern(sent + k, 0x5A);
        int r = tp_send(c, buf, n);
        if (r > 0) {
            sent += (uint32_t)r;
            continue;
        }
        if (r != TP_WANT_WRITE)
            break;
        if (!want_write++ && (tp_ready(c) & TP_EV_WRITE))
            wants_ok = false; /* full: not ready to write */
        net_poll(5);
    }
    CHECK_EQ(sent, NBYTES);
    CHECK(want_write > 0);
    CHECK(wants_ok);
    tp_lwip_stats(&st);
    CHECK(st.tx_unacked_peak <= TCP_SND_BUF);

    /* 4. the client checks the echo and closes: recv() == 0 */
    int rc = TP_WANT_READ;
    for (int i = 0; i < 3000 && rc == TP_WANT_READ; i++) {
        uint8_t b;
        rc = tp_recv(c, &b, 1);
        if (rc == TP_WANT_READ)
            net_poll(5);
    }
    CHECK_EQ(rc, 0);
    tp_close(c);
    for (int i = 0; i < 20; i++)
        net_poll(2);
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    tp_lwip_stats(&st);
    CHECK_EQ(st.conns, 0);
    CHECK_EQ(st.accepts, 1);
    tp_listener_close(l);
    return check_summary("test_tp_lwip");
}
