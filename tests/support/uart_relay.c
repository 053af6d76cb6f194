/* uart_relay.c - a serial line emulator for tests and benchmarks (issue
 * 12). Opens two pseudo-terminal pairs, links their slave names to the
 * paths given (--a, --b) and relays bytes between the masters like a UART
 * cable: paced at the baud rate (10 bits a byte, each direction on its
 * own), after a delay, with bit errors, dropped and duplicated bytes,
 * dropped bursts and stalls, all from options and a seed. Reads only as
 * fast as the line carries, so a writer feels the pty buffer fill up like
 * a real UART's. Counts the bytes it paced ("wire" bytes) and writes them
 * as JSON to --stats on SIGUSR1 and at exit. Stops by itself after
 * --seconds (default 600), or on SIGTERM / SIGINT.
 *
 *   uart_relay --a /tmp/x/dev --b /tmp/x/host --baud 115200 [--delay-ms 1]
 *              [--ber 1e-5] [--drop P] [--dup P] [--burst P]
 *              [--burst-len 64] [--stall-every MS --stall-ms MS]
 *              [--seed N] [--seconds N] [--stats FILE]
 *
 * Prints "uart_relay: ready" on stdout once both paths exist. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define QCAP (1u << 17)
/* The line takes up to this much wire time from a writer ahead of time
 * (a UART's FIFO and driver buffer; slack for a late wake-up here). */
#define READ_AHEAD_NS 8000000u

typedef struct dir {
    int from, to;        /* master fds */
    uint8_t b[QCAP];
    uint64_t at[QCAP];   /* delivery time, ns */
    uint32_t head, len;
    uint64_t wire_free;  /* the line is busy until then, ns */
    uint64_t paced;      /* bytes carried (wire bytes) */
    uint64_t flipped, dropped, duped, lost;
    uint64_t pos;        /* stream position (for bursts) */
    int64_t burst_until; /* drop through this position */
} dir_t;

static dir_t D[2];
static volatile sig_atomic_t g_stop, g_dump;
static const char *g_stats;
static uint64_t g_rng;

static void on_sig(int s)
{
    if (s == SIGUSR1)
        g_dump = 1;
    else
        g_stop = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static double rndf(void)
{
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

static void dump(void)
{
    if (!g_stats)
        return;
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", g_stats);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "{\"a_to_b\": %llu, \"b_to_a\": %llu, \"flipped\": %llu, "
               "\"dropped\": %llu, \"duplicated\": %llu, \"overrun\": %llu}\n",
            (unsigned long long)D[0].paced, (unsigned long long)D[1].paced,
            (unsigned long long)(D[0].flipped + D[1].flipped),
            (unsigned long long)(D[0].dropped + D[1].dropped),
            (unsigned long long)(D[0].duped + D[1].duped),
            (unsigned long long)(D[0].lost + D[1].lost));
    fclose(f);
    rename(tmp, g_stats);
}

static int raw(int fd)
{
    struct termios t;
    if (tcgetattr(fd, &t) < 0)
        return -1;
    cfmakeraw(&t);
    return tcsetattr(fd, TCSANOW, &t);
}

/* A pty pair: the master (ours) and the slave linked at path; the slave
 * stays open here too so the master never sees a hang-up. */
static int open_pair(const char *path, int *slave)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
        return -1;
    const char *name = ptsname(m);
    if (!name)
        return -1;
    *slave = open(name, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (*slave < 0 || raw(*slave) < 0 || raw(m) < 0)
        return -1;
    unlink(path);
    if (symlink(name, path) < 0)
        return -1;
    return m;
}

static void q_push(dir_t *d, uint8_t b, uint64_t at)
{
    if (d->len == QCAP) {
        d->lost++;
        return;
    }
    uint32_t i = (d->head + d->len++) % QCAP;
    d->b[i] = b;
    d->at[i] = at;
}

int main(int argc, char **argv)
{
    const char *pa = NULL, *pb = NULL;
    double ber = 0, drop = 0, dup = 0, burst = 0;
    unsigned baud = 115200, burst_len = 64, seconds = 600;
    double delay_ms = 1;
    unsigned stall_every = 0, stall_ms = 0;
    unsigned long long seed = 1;
    static const struct option opts[] = {
        { "a", 1, 0, 'a' }, { "b", 1, 0, 'b' }, { "baud", 1, 0, 'r' },
        { "delay-ms", 1, 0, 'd' }, { "ber", 1, 0, 'e' }, { "drop", 1, 0, 'x' },
        { "dup", 1, 0, 'u' }, { "burst", 1, 0, 'B' }, { "burst-len", 1, 0, 'L' },
        { "stall-every", 1, 0, 'S' }, { "stall-ms", 1, 0, 'T' },
        { "seed", 1, 0, 's' }, { "seconds", 1, 0, 't' }, { "stats", 1, 0, 'j' },
        { 0, 0, 0, 0 },
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'a': pa = optarg; break;
        case 'b': pb = optarg; break;
        case 'r': baud = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'd': delay_ms = strtod(optarg, NULL); break;
        case 'e': ber = strtod(optarg, NULL); break;
        case 'x': drop = strtod(optarg, NULL); break;
        case 'u': dup = strtod(optarg, NULL); break;
        case 'B': burst = strtod(optarg, NULL); break;
        case 'L': burst_len = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'S': stall_every = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'T': stall_ms = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': seed = strtoull(optarg, NULL, 10); break;
        case 't': seconds = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'j': g_stats = optarg; break;
        default:
            fprintf(stderr, "usage: uart_relay --a PATH --b PATH [--baud N] ...\n");
            return 2;
        }
    }
    if (!pa || !pb || baud < 300 || !burst_len) {
        fprintf(stderr, "uart_relay: need --a PATH --b PATH and a baud rate\n");
        return 2;
    }
    g_rng = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    int sa, sb;
    int ma = open_pair(pa, &sa), mb = open_pair(pb, &sb);
    if (ma < 0 || mb < 0) {
        fprintf(stderr, "uart_relay: cannot create the pty pairs: %s\n",
                strerror(errno));
        return 1;
    }
    struct sigaction sa_;
    memset(&sa_, 0, sizeof(sa_));
    sa_.sa_handler = on_sig;
    sigaction(SIGTERM, &sa_, NULL);
    sigaction(SIGINT, &sa_, NULL);
    sigaction(SIGUSR1, &sa_, NULL);
    signal(SIGPIPE, SIG_IGN);
    D[0].from = ma;
    D[0].to = mb;
    D[1].from = mb;
    D[1].to = ma;
    D[0].burst_until = D[1].burst_until = -1;
    const uint64_t byte_ns = 10000000000ull / baud;
    const uint64_t delay_ns = (uint64_t)(delay_ms * 1e6);
    const uint64_t t_end = now_ns() + (uint64_t)seconds * 1000000000u;
    printf("uart_relay: ready\n");
    fflush(stdout);

    while (!g_stop) {
        uint64_t now = now_ns();
        if (now >= t_end)
            break;
        if (g_dump) {
            g_dump = 0;
            dump();
        }
        uint64_t ms = now / 1000000u;
        int stalled = stall_every && ms % stall_every < stall_ms &&
                      ms >= stall_every;
        struct pollfd p[2];
        uint64_t wait = 20000000; /* ns */
        for (int i = 0; i < 2; i++) {
            dir_t *d = &D[i];
            /* Deliver what is due. */
            uint8_t out[4096];
            size_t n = 0;
            while (!stalled && d->len && d->at[d->head] <= now && n < sizeof(out)) {
                out[n++] = d->b[d->head];
                d->head = (d->head + 1) % QCAP;
                d->len--;
            }
            if (n) {
                ssize_t w = write(d->to, out, n);
                if (w < 0 && errno != EAGAIN)
                    w = 0;
                if (w < (ssize_t)n) /* the reader is not there or slow */
                    d->lost += n - (size_t)(w > 0 ? w : 0);
            }
            if (d->len && !stalled) {
                uint64_t due = d->at[d->head] > now ? d->at[d->head] - now : 0;
                if (due < wait)
                    wait = due;
            }
            /* Take from the writer only what the line can carry soon. */
            p[i].fd = d->from;
            p[i].events = 0;
            p[i].revents = 0;
            if (d->wire_free <= now + READ_AHEAD_NS / 2) {
                p[i].events = POLLIN;
            } else if (d->wire_free - now - READ_AHEAD_NS / 2 < wait) {
                wait = d->wire_free - now - READ_AHEAD_NS / 2;
            }
        }
        struct timespec ts = { (time_t)(wait / 1000000000u),
                               (long)(wait % 1000000000u) };
        if (stalled && wait > 1000000)
            ts.tv_sec = 0, ts.tv_nsec = 1000000;
        int pr = ppoll(p, 2, &ts, NULL);
        if (pr < 0 && errno != EINTR)
            break;
        now = now_ns();
        for (int i = 0; i < 2; i++) {
            dir_t *d = &D[i];
            if (!(p[i].revents & POLLIN))
                continue;
            if (d->wire_free < now)
                d->wire_free = now;
            size_t room = (size_t)((now + READ_AHEAD_NS - d->wire_free) / byte_ns) + 1;
            uint8_t in[4096];
            if (room > sizeof(in))
                room = sizeof(in);
            ssize_t n = read(d->from, in, room);
            for (ssize_t k = 0; k < n; k++) {
                uint8_t b = in[k];
                d->wire_free += byte_ns;
                d->paced++;
                int64_t pos = (int64_t)d->pos++;
                if (burst > 0 && pos % burst_len == 0 && rndf() < burst)
                    d->burst_until = pos + (int64_t)burst_len - 1;
                if (pos <= d->burst_until || (drop > 0 && rndf() < drop)) {
                    d->dropped++;
                    continue;
                }
                if (ber > 0)
                    for (int bit = 0; bit < 8; bit++)
                        if (rndf() < ber) {
                            b ^= (uint8_t)(1u << bit);
                            d->flipped++;
                        }
                q_push(d, b, d->wire_free + delay_ns);
                if (dup > 0 && rndf() < dup) {
                    q_push(d, b, d->wire_free + delay_ns);
                    d->duped++;
                }
            }
        }
    }
    dump();
    unlink(pa);
    unlink(pb);
    close(sa);
    close(sb);
    return 0;
}
