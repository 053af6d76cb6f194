/*
 * cellard.c - the cellar service on a host: a simulated NOR flash in an image
 * file, the service core, TCP listeners and one event loop.
 *
 *   cellard                      ./cellar-flash.img (4 MiB), tcp://127.0.0.1:7070
 *   cellard --flash f.img --flash-size 16M --listen tcp://[::1]:0
 *
 * Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 1 on a runtime
 * failure, 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "flash_sim.h"
#include "layout.h"
#include "loop.h"
#include "svc_core.h"
#include "tp.h"

#define DEFAULT_FLASH "cellar-flash.img"
#define DEFAULT_LISTEN "tcp://127.0.0.1:7070"
#define BLOCK_SIZE 4096u
#define MAX_LISTEN LOOP_MAX_LISTENERS
#define MAX_FLASH_BYTES (1ull << 30) /* 1 GiB: the image is mapped in RAM */

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "cellard: %s\n", line);
}

static uint32_t wall_clock(void *ctx)
{
    (void)ctx;
    time_t t = time(NULL);
    return t < 0 ? 0 : (uint32_t)t;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: cellard [options]\n"
        "\n"
        "Serve a simulated NOR flash with the cellar protocol. With no options:\n"
        "create or reopen ./" DEFAULT_FLASH " (4 MiB), format it on first use and\n"
        "listen on " DEFAULT_LISTEN ".\n"
        "\n"
        "options:\n"
        "  --flash FILE          flash image file (default ./" DEFAULT_FLASH ")\n"
        "  --flash-size SIZE     size of a new image: 4M, 64MiB, 4194304, ...\n"
        "                        (default 4M; an existing image keeps its size)\n"
        "  --bak-size SIZE       size of the /bak partition of a new layout\n"
        "                        (default a quarter of the flash)\n"
        "  --listen URL          tcp://HOST:PORT to listen on, repeatable\n"
        "                        (default " DEFAULT_LISTEN "; port 0 picks a\n"
        "                        free port; IPv6 as tcp://[::1]:7070)\n"
        "                        or uart:/dev/ttyX?baud=N[&rtscts=1] (a\n"
        "                        serial port; docs/UART.md)\n"
        "  --device-id NAME      device identity reported by Hello\n"
        "                        (default cellar-sim)\n"
        "  --idle-timeout SECS   close connections and handles idle this long\n"
        "                        (default 300; 0 = never)\n"
        "  --no-check            do not check /usr against its manifest at\n"
        "                        startup (by default missing or corrupt files\n"
        "                        are restored from /bak, each one logged)\n"
        "  --update-timeout SECS drop a staged update whose client went away\n"
        "                        after this long (default 3600)\n"
        "  --help                this text\n"
        "  --version             print the version\n"
        "\n"
        "Prints \"cellard: listening on URL\" on stdout once per listener.\n"
        "SIGINT/SIGTERM stop it cleanly (handles closed, filesystems\n"
        "unmounted, image synced).\n");
}

/* "4M", "64MiB", "4194304", "512k", "1G" (binary units). Returns 0 or -1. */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    if (!*s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    uint64_t mul = 1;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': mul = 1ull << 10; break;
        case 'm': case 'M': mul = 1ull << 20; break;
        case 'g': case 'G': mul = 1ull << 30; break;
        default: return -1;
        }
        end++;
        if (strcmp(end, "") != 0 && strcmp(end, "i") != 0 &&
            strcmp(end, "iB") != 0 && strcmp(end, "B") != 0 &&
            strcmp(end, "ib") != 0)
            return -1;
    }
    if (v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    if (!*s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *flash_path = DEFAULT_FLASH;
    const char *device_id = "cellar-sim";
    const char *listen_urls[MAX_LISTEN];
    int nlisten = 0;
    uint64_t flash_size = 0, bak_size = 0;
    unsigned long idle_s = 300, update_s = 3600;
    bool check = true;
    bool have_size = false;
    int status = 1;
    flash_sim_t *sim = NULL;
    loop_t *lp = NULL;
    static svc_t svc; /* ~40 KiB: not on the stack */
    bool svc_up = false;

    enum { OPT_FLASH = 256, OPT_SIZE, OPT_BAK, OPT_LISTEN, OPT_ID, OPT_IDLE,
           OPT_UPDATE, OPT_HELP, OPT_VERSION, OPT_NOCHECK };
    static const struct option opts[] = {
        { "flash", required_argument, NULL, OPT_FLASH },
        { "flash-size", required_argument, NULL, OPT_SIZE },
        { "bak-size", required_argument, NULL, OPT_BAK },
        { "listen", required_argument, NULL, OPT_LISTEN },
        { "device-id", required_argument, NULL, OPT_ID },
        { "idle-timeout", required_argument, NULL, OPT_IDLE },
        { "update-timeout", required_argument, NULL, OPT_UPDATE },
        { "no-check", no_argument, NULL, OPT_NOCHECK },
        { "help", no_argument, NULL, OPT_HELP },
        { "version", no_argument, NULL, OPT_VERSION },
        { NULL, 0, NULL, 0 },
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_FLASH:
            flash_path = optarg;
            break;
        case OPT_SIZE:
            if (parse_size(optarg, &flash_size) || flash_size % BLOCK_SIZE ||
                flash_size < 34ull * BLOCK_SIZE ||
                flash_size > MAX_FLASH_BYTES) {
                fprintf(stderr, "cellard: --flash-size %s: expected a size "
                        "such as 4M or 64MiB, a multiple of 4 KiB, from "
                        "136K to 1G\n", optarg);
                return 2;
            }
            have_size = true;
            break;
        case OPT_BAK:
            if (parse_size(optarg, &bak_size) || bak_size % BLOCK_SIZE ||
                bak_size < 16ull * BLOCK_SIZE) {
                fprintf(stderr, "cellard: --bak-size %s: expected a size "
                        "such as 1M, a multiple of 4 KiB, at least 64K\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_LISTEN:
            if (nlisten == MAX_LISTEN) {
                fprintf(stderr, "cellard: at most %d --listen options\n",
                        MAX_LISTEN);
                return 2;
            }
            listen_urls[nlisten++] = optarg;
            break;
        case OPT_ID:
            if (!*optarg || strlen(optarg) > 63) {
                fprintf(stderr, "cellard: --device-id: 1 to 63 bytes\n");
                return 2;
            }
            device_id = optarg;
            break;
        case OPT_IDLE:
            if (parse_uint(optarg, 4000000ul, &idle_s)) {
                fprintf(stderr, "cellard: --idle-timeout %s: expected "
                        "seconds (0 = never)\n", optarg);
                return 2;
            }
            break;
        case OPT_UPDATE:
            if (parse_uint(optarg, 4000000ul, &update_s) || update_s == 0) {
                fprintf(stderr, "cellard: --update-timeout %s: expected "
                        "seconds (at least 1)\n", optarg);
                return 2;
            }
            break;
        case OPT_NOCHECK:
            check = false;
            break;
        case OPT_HELP:
        case 'h':
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("cellard %s\n", CELLAR_VERSION);
            return 0;
        default:
            if (optopt >= OPT_FLASH && optopt <= OPT_UPDATE)
                fprintf(stderr, "cellard: %s needs a value\n",
                        argv[optind - 1]);
            else
                fprintf(stderr, "cellard: unknown option %s\n",
                        argv[optind - 1]);
            fprintf(stderr, "try 'cellard --help'\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cellard: unexpected argument '%s'\n"
                        "try 'cellard --help'\n", argv[optind]);
        return 2;
    }
    if (nlisten == 0)
        listen_urls[nlisten++] = DEFAULT_LISTEN;

    /* Check every URL before touching the flash. */
    tp_url_t urls[MAX_LISTEN];
    for (int i = 0; i < nlisten; i++) {
        char err[200];
        if (tp_url_parse(listen_urls[i], &urls[i], err, sizeof(err))) {
            fprintf(stderr, "cellard: --listen: %s\n", err);
            return 2;
        }
        if (strcmp(urls[i].scheme, "tcp") != 0 &&
            strcmp(urls[i].scheme, "uart") != 0) { /* uart: issue 12 */
            fprintf(stderr, "cellard: --listen %s: only tcp:// is supported "
                    "by this build (tls:// comes later)\n",
                    listen_urls[i]);
            return 2;
        }
    }

    /* The image: an existing one keeps its size. */
    struct stat st;
    if (stat(flash_path, &st) == 0 && st.st_size > 0) {
        uint64_t have = (uint64_t)st.st_size;
        if (!S_ISREG(st.st_mode) || have % BLOCK_SIZE ||
            have < 34ull * BLOCK_SIZE || have > MAX_FLASH_BYTES) {
            fprintf(stderr, "cellard: %s: not a flash image (size %llu)\n",
                    flash_path, (unsigned long long)have);
            return 1;
        }
        if (have_size && have != flash_size) {
            fprintf(stderr, "cellard: %s is %llu bytes but --flash-size "
                    "says %llu; remove the image to make a new one\n",
                    flash_path, (unsigned long long)have,
                    (unsigned long long)flash_size);
            return 1;
        }
        flash_size = have;
    } else if (!have_size) {
        flash_size = 4ull << 20;
    }

    flash_sim_config_t fc = {
        .block_size = BLOCK_SIZE,
        .block_count = (uint32_t)(flash_size / BLOCK_SIZE),
        .page_size = 256,
        .path = flash_path,
    };
    sim = flash_sim_new(&fc);
    if (!sim) {
        fprintf(stderr, "cellard: %s: cannot open the flash image: %s\n",
                flash_path, strerror(errno));
        goto cleanup;
    }
    if (bak_size && bak_size / BLOCK_SIZE + 17 > fc.block_count) {
        fprintf(stderr, "cellard: --bak-size leaves no room for /usr\n");
        status = 2;
        goto cleanup;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char firmware[64];
    snprintf(firmware, sizeof(firmware), "cellard %s", CELLAR_VERSION);
    svc_config_t scfg = {
        .dev = flash_sim_dev(sim),
        .device_id = device_id,
        .firmware = firmware,
        .idle_timeout_ms = idle_s == 0 ? SVC_IDLE_NEVER
                                       : (uint32_t)(idle_s * 1000u),
        .clock = wall_clock,
        .log = log_line,
        .provision = true,
        .check_at_start = check,
        .tx_timeout_ms = (uint32_t)(update_s * 1000u),
        .bak_blocks = (uint32_t)(bak_size / BLOCK_SIZE),
    };
    svc_init(&svc);
    int err = svc_setup(&svc, &scfg);
    if (err == LAYOUT_ERR_FOREIGN) {
        /* the one state start-up refuses: a flash that is not cellar's */
        fprintf(stderr, "cellard: %s: block 0 holds no cellar partition "
                "table: not a cellar flash image (left as it is)\n",
                flash_path);
        goto cleanup;
    }
    if (err) {
        fprintf(stderr, "cellard: %s: cannot serve this flash image (error "
                "%d: %s)\n", flash_path, err, cfs_strerror(err));
        goto cleanup;
    }

    svc_up = true;
    if (bak_size) {
        const layout_part_t *bp = layout_find(svc_layout(&svc), "bak");
        if (bp && (uint64_t)bp->block_count * BLOCK_SIZE != bak_size)
            fprintf(stderr, "cellard: note: %s already has a layout; "
                    "/bak keeps its %u blocks (--bak-size applies to new "
                    "images)\n", flash_path, (unsigned)bp->block_count);
    }

    if (loop_new(&lp, &svc, NULL)) {
        fprintf(stderr, "cellard: out of memory\n");
        goto cleanup;
    }
    for (int i = 0; i < nlisten; i++) {
        tp_listener_t *l;
        char errbuf[300];
        int rc = strcmp(urls[i].scheme, "uart") == 0 /* issue 12 */
                     ? tp_uart_listen(&urls[i], &l, errbuf, sizeof(errbuf))
                     : tp_tcp_listen(&urls[i], &l, errbuf, sizeof(errbuf));
        if (rc) {
            fprintf(stderr, "cellard: --listen %s: %s\n", listen_urls[i],
                    errbuf);
            goto cleanup;
        }
        if (loop_add_listener(lp, l)) {
            tp_listener_close(l);
            goto cleanup;
        }
        printf("cellard: listening on %s\n", l->url);
    }
    fflush(stdout);

    err = loop_run(lp, &g_stop);
    if (err)
        fprintf(stderr, "cellard: event loop failed: %s\n", strerror(-err));
    else
        fprintf(stderr, "cellard: stopping\n");
    status = err ? 1 : 0;

cleanup:
    loop_free(lp); /* stop accepting, close connections and their handles */
    if (svc_up && svc_free(&svc) != 0) {
        fprintf(stderr, "cellard: unmount failed\n");
        status = 1;
    }
    flash_sim_free(sim); /* msync + close */
    return status;
}
