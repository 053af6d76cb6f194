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
#include <netdb.h>
#include <netinet/in.h>
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
#include "lwip_host.h" /* issue 14: --stack lwip */
#include "svc_core.h"
#include "svc_sd.h"   /* issue 15 (sd) */
#include "sd_file.h"
#include "tp.h"
#include "tls/tp_tls.h" /* issue 13: tls:// listeners */

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
        "  --listen URL          tcp://HOST:PORT or tls://HOST:PORT to listen\n"
        "                        on, repeatable\n"
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
        "  --raw NAME:SIZE       a raw partition (issue 15, docs/RAW.md) of a\n"
        "                        new layout: SIZE a multiple of 4K, NAME 1-7\n"
        "                        of [a-z0-9_-]; repeatable, in address order\n"
        "                        from block 1. On a flash with a layout they\n"
        "                        must match it, or cellard refuses to start\n"
        "  --update-timeout SECS drop a staged update whose client went away\n"
        "                        after this long (default 3600)\n"
        "  --gc-threshold N      collect garbage on /usr when fewer than N\n"
        "                        blocks are free above the reserve (at least\n"
        "                        6; default 1/16 of the partition)\n"
        "  --acl FILE            access control: lines IDENTITY ROLE [PREFIX...]\n"
        "                        (docs/SECURITY.md); plain tcp:// clients are\n"
        "                        \"anonymous\" and get only its rule\n"
        "  --insecure            without --acl, allow plain tcp:// on a\n"
        "                        non-loopback address (every client there is\n"
        "                        admin: it can read, write and format)\n"
        "  --tls-cert FILE       device certificate for tls:// listeners (PEM/DER)\n"
        "  --tls-key FILE        its private key\n"
        "  --tls-ca FILE         CA of the client certificates: with it, tls://\n"
        "                        clients must present a certificate it signed\n"
        "  --psk-file FILE       ECDHE-PSK identities, lines \"IDENTITY HEXKEY\"\n"
        "  --sd FILE             an SD card image (FAT16/FAT32) served at /sd\n"
        "  --stack host|lwip     host: the host's sockets (default); lwip:\n"
        "                        lwIP on a TAP device (--tap, --ip; --listen\n"
        "                        then gives the port, default 7070)\n"
        "  --tap NAME            the TAP device lwIP uses (created if missing)\n"
        "  --ip ADDR/PREFIX      lwIP's address, repeatable: one IPv4\n"
        "                        (10.0.0.2/24) and/or IPv6 (fd00::2/64)\n"
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

/* ---- access control (issue 13, docs/SECURITY.md) ---------------------------- */

#define ACL_FILE_MAX (64u * 1024u)

/* Read and parse the ACL file. Returns 0, or 2 (usage error) after saying
 * why. */
static int load_acl(const char *path, svc_acl_t *acl)
{
    static char text[ACL_FILE_MAX + 1];
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cellard: --acl %s: %s\n", path, strerror(errno));
        return 2;
    }
    size_t n = fread(text, 1, sizeof(text), f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        fprintf(stderr, "cellard: --acl %s: read error\n", path);
        return 2;
    }
    if (n > ACL_FILE_MAX) {
        fprintf(stderr, "cellard: --acl %s: larger than %u bytes\n", path,
                ACL_FILE_MAX);
        return 2;
    }
    char err[200];
    if (svc_acl_parse(acl, text, n, err, sizeof(err))) {
        fprintf(stderr, "cellard: --acl %s: %s; not starting\n", path, err);
        return 2;
    }
    return 0;
}

/* Does host name only loopback addresses (127.0.0.0/8, ::1)? A name must
 * resolve, and every address it resolves to must be loopback. */
static bool loopback_host(const char *host)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return false;
    bool all = true;
    for (struct addrinfo *a = res; a && all; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            const struct sockaddr_in *v4 = (const void *)a->ai_addr;
            all = (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
        } else if (a->ai_family == AF_INET6) {
            const struct sockaddr_in6 *v6 = (const void *)a->ai_addr;
            all = IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
        } else {
            all = false;
        }
    }
    freeaddrinfo(res);
    return all;
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
    long gc_threshold = -1; /* --gc-threshold (issue 15); -1 = the default */
    const char *acl_path = NULL; /* issue 13 */
    bool insecure = false;
    static svc_acl_t acl;
    int status = 1;
    flash_sim_t *sim = NULL;
    loop_t *lp = NULL;
    static svc_t svc; /* ~40 KiB: not on the stack */
    bool svc_up = false;
    /* issue 15 (sd): the SD card image served at /sd */
    const char *sd_path = NULL;
    static sd_file_t sd_file = { .fd = -1 };
    static svc_sd_t sd;

    enum { OPT_FLASH = 256, OPT_SIZE, OPT_BAK, OPT_LISTEN, OPT_ID, OPT_IDLE,
           OPT_UPDATE, OPT_ACL, OPT_HELP, OPT_VERSION, OPT_NOCHECK,
           OPT_INSECURE, OPT_GC,
           OPT_TLS_CERT, OPT_TLS_KEY, OPT_TLS_CA, OPT_PSK_FILE /* issue 13 */,
           OPT_SD /* issue 15 (sd) */, OPT_RAW /* issue 15 (raw) */,
           OPT_STACK, OPT_TAP, OPT_IP /* issue 14 */ };
    tp_tls_files_t tls_files = {0};
    static tp_tls_config_t tls_cfg; /* shared by every tls:// connection */
    bool tls_up = false;
    layout_raw_t raws[LAYOUT_MAX_RAW];
    char raw_names[LAYOUT_MAX_RAW][LAYOUT_NAME_MAX];
    uint32_t nraw = 0;
    bool use_lwip = false, lwip_up = false; /* issue 14: --stack lwip */
    lwip_host_config_t lcfg = { 0 };
    static const struct option opts[] = {
        { "flash", required_argument, NULL, OPT_FLASH },
        { "flash-size", required_argument, NULL, OPT_SIZE },
        { "bak-size", required_argument, NULL, OPT_BAK },
        { "listen", required_argument, NULL, OPT_LISTEN },
        { "device-id", required_argument, NULL, OPT_ID },
        { "idle-timeout", required_argument, NULL, OPT_IDLE },
        { "update-timeout", required_argument, NULL, OPT_UPDATE },
        { "no-check", no_argument, NULL, OPT_NOCHECK },
        { "gc-threshold", required_argument, NULL, OPT_GC },
        { "acl", required_argument, NULL, OPT_ACL },
        { "insecure", no_argument, NULL, OPT_INSECURE },
        { "tls-cert", required_argument, NULL, OPT_TLS_CERT },
        { "tls-key", required_argument, NULL, OPT_TLS_KEY },
        { "tls-ca", required_argument, NULL, OPT_TLS_CA },
        { "psk-file", required_argument, NULL, OPT_PSK_FILE },
        { "sd", required_argument, NULL, OPT_SD },
        { "raw", required_argument, NULL, OPT_RAW },
        { "stack", required_argument, NULL, OPT_STACK },
        { "tap", required_argument, NULL, OPT_TAP },
        { "ip", required_argument, NULL, OPT_IP },
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
        case OPT_SD:
            sd_path = optarg;
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
        case OPT_GC: {
            unsigned long v;
            if (parse_uint(optarg, 1000000ul, &v) || v < 6) {
                fprintf(stderr, "cellard: --gc-threshold %s: expected blocks, "
                        "at least 6\n", optarg);
                return 2;
            }
            gc_threshold = (long)v;
            break;
        }
        case OPT_ACL:
            acl_path = optarg;
            break;
        case OPT_INSECURE:
            insecure = true;
            break;
        case OPT_TLS_CERT: tls_files.cert = optarg; break; /* issue 13 */
        case OPT_TLS_KEY: tls_files.key = optarg; break;
        case OPT_TLS_CA: tls_files.ca = optarg; break;
        case OPT_PSK_FILE: tls_files.psk_file = optarg; break;
        case OPT_RAW: { /* issue 15: NAME:SIZE */
            const char *colon = strchr(optarg, ':');
            uint64_t rsize = 0;
            size_t nl = colon ? (size_t)(colon - optarg) : 0;
            if (nraw >= LAYOUT_MAX_RAW) {
                fprintf(stderr, "cellard: at most %d --raw options\n",
                        LAYOUT_MAX_RAW);
                return 2;
            }
            if (!colon || nl == 0 || nl >= LAYOUT_NAME_MAX) {
                fprintf(stderr, "cellard: --raw %s: expected NAME:SIZE "
                        "(NAME 1-7 characters)\n", optarg);
                return 2;
            }
            memcpy(raw_names[nraw], optarg, nl);
            raw_names[nraw][nl] = 0;
            if (!layout_raw_name_ok(raw_names[nraw])) {
                fprintf(stderr, "cellard: --raw %s: NAME must be [a-z0-9_-], "
                        "start with a letter, and not be usr, bak or sd\n",
                        optarg);
                return 2;
            }
            if (parse_size(colon + 1, &rsize) || rsize == 0 ||
                rsize % BLOCK_SIZE || rsize / BLOCK_SIZE > UINT32_MAX) {
                fprintf(stderr, "cellard: --raw %s: SIZE must be a non-zero "
                        "multiple of the block size (%u bytes)\n", optarg,
                        BLOCK_SIZE);
                return 2;
            }
            for (uint32_t k = 0; k < nraw; k++)
                if (strcmp(raws[k].name, raw_names[nraw]) == 0) {
                    fprintf(stderr, "cellard: --raw %s: the name is given "
                            "twice\n", optarg);
                    return 2;
                }
            raws[nraw].name = raw_names[nraw];
            raws[nraw].blocks = (uint32_t)(rsize / BLOCK_SIZE);
            nraw++;
            break;
        }
        case OPT_STACK: /* issue 14 */
            if (strcmp(optarg, "host") && strcmp(optarg, "lwip")) {
                fprintf(stderr, "cellard: --stack %s: host or lwip\n", optarg);
                return 2;
            }
            use_lwip = strcmp(optarg, "lwip") == 0;
            break;
        case OPT_TAP:
            lcfg.tap = optarg;
            break;
        case OPT_IP: {
            char e[200];
            if (lcfg.nips == LWIP_HOST_MAX_IPS ||
                lwip_host_check_ip(optarg, e, sizeof(e))) {
                if (lcfg.nips == LWIP_HOST_MAX_IPS)
                    snprintf(e, sizeof(e), "at most %d --ip options",
                             LWIP_HOST_MAX_IPS);
                fprintf(stderr, "cellard: %s\n", e);
                return 2;
            }
            lcfg.ips[lcfg.nips++] = optarg;
            break;
        }
        case OPT_HELP:
        case 'h':
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("cellard %s\n", CELLAR_VERSION);
            return 0;
        default:
            if ((optopt >= OPT_FLASH && optopt <= OPT_UPDATE) ||
                optopt == OPT_ACL || optopt == OPT_GC ||
                (optopt >= OPT_TLS_CERT && optopt <= OPT_PSK_FILE) ||
                optopt == OPT_SD || optopt == OPT_RAW ||
                (optopt >= OPT_STACK && optopt <= OPT_IP))
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
    /* issue 14: a feature this daemon is built without (cellar_config.h
     * CELLAR_WITH_*) is refused before the flash is touched */
    if ((sd_path && !CELLAR_WITH_SD) || (nraw && !CELLAR_WITH_RAW) ||
        (acl_path && !CELLAR_WITH_ACL)) {
        fprintf(stderr, "cellard: %s\n", sd_path && !CELLAR_WITH_SD
                ? "--sd: the SD card (/sd) is not built into this daemon (CELLAR_WITH_SD 0)"
                : nraw && !CELLAR_WITH_RAW
                ? "--raw: raw partitions are not built into this daemon (CELLAR_WITH_RAW 0)"
                : "--acl: access control (ACL) is not built into this daemon (CELLAR_WITH_ACL 0)");
        return 2;
    }
    if (use_lwip && (!lcfg.tap || lcfg.nips == 0 || nlisten > 1)) {
        fprintf(stderr, "cellard: --stack lwip needs --tap NAME and --ip "
                "ADDR/PREFIX (and at most one --listen, for the port)\n");
        return 2;
    }
    if (!use_lwip && (lcfg.tap || lcfg.nips)) {
        fprintf(stderr, "cellard: --tap and --ip go with --stack lwip\n");
        return 2;
    }
    if (nlisten == 0)
        listen_urls[nlisten++] = use_lwip ? "tcp://0.0.0.0:7070"
                                          : DEFAULT_LISTEN;

    /* Check every URL before touching the flash. */
    tp_url_t urls[MAX_LISTEN];
    for (int i = 0; i < nlisten; i++) {
        char err[200];
        if (tp_url_parse(listen_urls[i], &urls[i], err, sizeof(err))) {
            fprintf(stderr, "cellard: --listen: %s\n", err);
            return 2;
        }
        if (strcmp(urls[i].scheme, "tcp") != 0 &&
            strcmp(urls[i].scheme, "tls") != 0 &&
            strcmp(urls[i].scheme, "uart") != 0) { /* uart: issue 12 */
            fprintf(stderr, "cellard: --listen %s: tcp://, tls:// and uart: "
                    "are served by this build\n",
                    listen_urls[i]);
            return 2;
        }
        /* issue 13: a tls:// listener needs its certificate or PSKs; load
         * them (once) before touching the flash */
        if (strcmp(urls[i].scheme, "tls") == 0 && !tls_up) {
            char terr[400];
            if (tp_tls_host_config(&tls_cfg, true, &tls_files, terr,
                                   sizeof(terr))) {
                fprintf(stderr, "cellard: --listen %s: %s\n",
                        listen_urls[i], terr);
                return 2;
            }
            tls_cfg.log = log_line; /* each handshake and refusal logged */
            tls_up = true;
        }
    }
    if (!tls_up && (tls_files.cert || tls_files.key || tls_files.ca ||
                    tls_files.psk_file)) {
        fprintf(stderr, "cellard: --tls-cert, --tls-key, --tls-ca and "
                "--psk-file need a --listen tls://HOST:PORT\n");
        return 2;
    }

    /* Access control (issue 13): a bad ACL stops the start; without one,
     * plain TCP is served (with full access) only on loopback, unless
     * --insecure. */
    if (acl_path && load_acl(acl_path, &acl))
        return 2;
    for (int i = 0; i < nlisten; i++) {
        /* plain TCP, and TLS that authenticates no client (no --tls-ca,
         * no --psk-file): every client is anonymous */
        bool plain = strcmp(urls[i].scheme, "tcp") == 0;
        bool anon_tls = strcmp(urls[i].scheme, "tls") == 0 && !tls_files.ca &&
                        !tls_files.psk_file;
        if ((!plain && !anon_tls) || loopback_host(urls[i].host))
            continue;
        if (!acl_path && !insecure) {
            fprintf(stderr, "cellard: --listen %s: %s on a non-loopback "
                    "address would give every client there full access "
                    "(read, write, format); give an --acl FILE "
                    "(docs/SECURITY.md)%s, listen on 127.0.0.1, or add "
                    "--insecure\n", listen_urls[i],
                    plain ? "plain tcp://" : "tls:// without client "
                    "authentication",
                    plain ? "" : ", --tls-ca FILE or --psk-file FILE");
            return 2;
        }
        const svc_acl_rule_t *anon = acl_path
            ? svc_acl_find(&acl, SVC_ANONYMOUS, 0) : NULL;
        fprintf(stderr, "cellard: note: --listen %s %s: its "
                "clients are anonymous, role %s%s\n", listen_urls[i],
                plain ? "is plain TCP" : "authenticates no client",
                acl_path ? svc_role_name(anon ? anon->role : SVC_ROLE_NONE)
                         : "admin",
                acl_path ? " (the ACL's rule for anonymous)"
                         : " (--insecure)");
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
        .gc_threshold = gc_threshold < 0 ? 0 : (uint32_t)gc_threshold,
        .gc_threshold_set = gc_threshold >= 0,
        .acl = acl_path ? &acl : NULL, /* issue 13 */
        .raw = raws, /* issue 15 */
        .nraw = nraw,
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
    if (err == CFS_ERR_INVAL && nraw) { /* issue 15 */
        const layout_t *have = svc_layout(&svc);
        fprintf(stderr, "cellard: %s: --raw does not match this flash's "
                "layout, which is only written on a blank flash (nothing "
                "changed). Its raw partitions:", flash_path);
        int any = 0;
        for (uint32_t k = 0; k < have->nparts; k++)
            if (have->part[k].kind == LAYOUT_KIND_RAW) {
                fprintf(stderr, " %s:%lluK", have->part[k].name,
                        (unsigned long long)have->part[k].block_count *
                            (BLOCK_SIZE / 1024));
                any = 1;
            }
        fprintf(stderr, "%s\n", any ? "" : " none");
        goto cleanup;
    }
    if (err) {
        fprintf(stderr, "cellard: %s: cannot serve this flash image (error "
                "%d: %s)\n", flash_path, err, cfs_strerror(err));
        goto cleanup;
    }

    svc_up = true;
    if (sd_path) { /* issue 15 (sd): a card that will not mount leaves /sd unmounted */
        char why[128];
        int se = sd_file_open(&sd_file, sd_path, why, sizeof(why));
        if (se)
            fprintf(stderr, "cellard: --sd %s: %s: /sd is not mounted\n", sd_path, why);
        (void)svc_sd_attach(&svc, &sd, se ? NULL : &sd_file.bd);
    }
    if (bak_size) {
        const layout_part_t *bp = layout_find(svc_layout(&svc), "bak");
        if (bp && (uint64_t)bp->block_count * BLOCK_SIZE != bak_size)
            fprintf(stderr, "cellard: note: %s already has a layout; "
                    "/bak keeps its %u blocks (--bak-size applies to new "
                    "images)\n", flash_path, (unsigned)bp->block_count);
    }

    loop_config_t lpc = { .max_conns = use_lwip ? TP_LWIP_MAX_CONNS - 1 : 0 };
    if (use_lwip) { /* issue 14: lwIP on a TAP device */
        char errbuf[300];
        if (lwip_host_start(&lcfg, errbuf, sizeof(errbuf))) {
            fprintf(stderr, "cellard: %s\n", errbuf);
            goto cleanup;
        }
        lwip_up = true;
    }
    if (loop_new(&lp, &svc, &lpc)) {
        fprintf(stderr, "cellard: out of memory\n");
        goto cleanup;
    }
    for (int i = 0; i < nlisten; i++) {
        tp_listener_t *l;
        char errbuf[300];
        /* issue 14: on --stack lwip the listeners are lwIP's; tls://
         * wraps whichever TCP listener it gets (issue 13); uart: a serial
         * port through the link layer (issue 12) */
        bool tls = strcmp(urls[i].scheme, "tls") == 0;
        int rc;
        if (strcmp(urls[i].scheme, "uart") == 0) {
            rc = tp_uart_listen(&urls[i], &l, errbuf, sizeof(errbuf));
        } else if (use_lwip) {
            rc = lwip_host_listen(urls[i].host, urls[i].port, &l, errbuf,
                                  sizeof(errbuf));
            if (rc == 0 && tls) {
                tp_listener_t *inner = l;
                rc = tp_tls_listener(&tls_cfg, inner, &l);
                if (rc)
                    snprintf(errbuf, sizeof(errbuf), "out of memory");
            }
        } else {
            rc = tls ? tp_tls_listen(&urls[i], &tls_cfg, &l, errbuf, sizeof(errbuf))
                     : tp_tcp_listen(&urls[i], &l, errbuf, sizeof(errbuf));
        }
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
        bool any = !strcmp(urls[i].host, "0.0.0.0") || !strcmp(urls[i].host, "::");
        for (int k = 0; use_lwip && any && k < lcfg.nips; k++) { /* issue 14 */
            char hp[80], a[64];
            snprintf(a, sizeof(a), "%.*s", (int)strcspn(lcfg.ips[k], "/"),
                     lcfg.ips[k]);
            printf("cellard: listening on tcp://%s (lwip on %s)\n",
                   tp_format_hostport(a, urls[i].port, hp, sizeof(hp)),
                   lcfg.tap);
        }
    }
    fflush(stdout);

    err = use_lwip ? lwip_host_run(lp, &g_stop) : loop_run(lp, &g_stop);
    if (err)
        fprintf(stderr, "cellard: event loop failed: %s\n", strerror(-err));
    else
        fprintf(stderr, "cellard: stopping\n");
    status = err ? 1 : 0;

cleanup:
    loop_free(lp); /* stop accepting, close connections and their handles */
    if (lwip_up)
        lwip_host_report(log_line, NULL); /* issue 14: RAM figures */
    if (svc_up && svc_free(&svc) != 0) {
        fprintf(stderr, "cellard: unmount failed\n");
        status = 1;
    }
    if (sd_path && sd.mounted) { /* issue 15 (sd) */
        if (svc_sd_detach(&sd) != 0) {
            fprintf(stderr, "cellard: /sd: unmount failed\n");
            status = 1;
        } else {
            fprintf(stderr, "cellard: svc: unmounted /sd\n");
        }
    }
    sd_file_close(&sd_file);
    flash_sim_free(sim); /* msync + close */
    if (tls_up)
        tp_tls_config_free(&tls_cfg);
    return status;
}
