/*
 * bench_net.c - network benchmark helper of `make bench-net` (driven by
 * tests/bench_net.sh, which starts an optimised cellard on a 64 MiB temp
 * flash and times `sha256sum` of the test file).
 *
 *   bench_net --url URL --pid CELLARD_PID --file FILE --sha256sum-s SECONDS
 *             --tmp DIR --json OUT
 *
 * Measures, on loopback:
 *   - a plain TCP copy of FILE (sender thread -> receiver thread writing a
 *     file), the ceiling of any protocol;
 *   - cellar_put_file / cellar_get_file of FILE (pipelined, SHA-256 verified
 *     on both ends, atomic rename), MB/s, median of 3 runs;
 *   - SHA-256 of FILE in this process (cellar_sha256: libcrypto, what libcellar uses);
 *   - Stat round trips: median and p99 with 1 client and with 32 clients at
 *     once (one thread and one connection each);
 *   - peak RSS of cellard during the 32-client run (VmHWM after resetting it
 *     through /proc/PID/clear_refs).
 * Prints a table and writes the figures as JSON.
 */
#include "cellar.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define RUNS 3
#define CLIENTS 32
#define STATS_1 3000
#define STATS_32 300

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median3(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return v[n / 2];
}

static void die(const char *what)
{
    fprintf(stderr, "bench_net: %s\n", what);
    exit(1);
}

/* ---- plain TCP copy ------------------------------------------------------------ */
typedef struct rx {
    int lfd;
    const char *out;
    uint64_t got;
} rx_t;

static void *rx_main(void *arg)
{
    rx_t *r = arg;
    int s = accept(r->lfd, NULL, NULL);
    int fd = open(r->out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    static __thread char buf[256 * 1024];
    for (;;) {
        ssize_t n = recv(s, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        if (write(fd, buf, (size_t)n) != n)
            break;
        r->got += (uint64_t)n;
    }
    close(fd);
    close(s);
    return NULL;
}

static double tcp_copy(const char *file, const char *out, uint64_t size)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 1) ||
        getsockname(lfd, (struct sockaddr *)&a, &al))
        die("tcp listen");
    rx_t r = {.lfd = lfd, .out = out};
    pthread_t th;
    double t0 = now_s();
    pthread_create(&th, NULL, rx_main, &r);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof(a)))
        die("tcp connect");
    int fd = open(file, O_RDONLY);
    static char buf[256 * 1024];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = send(s, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
            if (w <= 0)
                die("tcp send");
            off += w;
        }
    }
    close(fd);
    close(s);
    pthread_join(th, NULL);
    double t = now_s() - t0;
    close(lfd);
    if (r.got != size)
        die("tcp copy incomplete");
    return t;
}

/* ---- plain TCP round trip (the floor of any request latency) ---------------------- */
static void *echo_main(void *arg)
{
    int lfd = *(int *)arg;
    int s = accept(lfd, NULL, NULL);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char b[8];
    while (recv(s, b, sizeof(b), MSG_WAITALL) == (ssize_t)sizeof(b))
        if (send(s, b, sizeof(b), MSG_NOSIGNAL) != (ssize_t)sizeof(b))
            break;
    close(s);
    return NULL;
}

static void tcp_rtt(int n, double *samples)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 1) ||
        getsockname(lfd, (struct sockaddr *)&a, &al))
        die("echo listen");
    pid_t child = fork(); /* a separate process, like cellard */
    if (child < 0)
        die("fork");
    if (child == 0) {
        echo_main(&lfd);
        _exit(0);
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof(a)))
        die("echo connect");
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char b[8] = {0};
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        if (send(s, b, sizeof(b), MSG_NOSIGNAL) != (ssize_t)sizeof(b) ||
            recv(s, b, sizeof(b), MSG_WAITALL) != (ssize_t)sizeof(b))
            die("echo");
        samples[i] = now_s() - t0;
    }
    close(s);
    waitpid(child, NULL, 0);
    close(lfd);
    qsort(samples, (size_t)n, sizeof(double), cmp_double);
}

/* ---- Stat latency -------------------------------------------------------------- */
typedef struct lat {
    const char *url;
    int n;
    double *samples;
    pthread_barrier_t *bar;
    int err;
} lat_t;

static void *lat_main(void *arg)
{
    lat_t *l = arg;
    cellar_t c;
    cellar_init(&c, NULL);
    l->err = cellar_connect(&c, l->url);
    if (l->bar)
        pthread_barrier_wait(l->bar);
    if (l->err < 0)
        return NULL;
    cellar_stat_t st;
    for (int i = 0; i < l->n; i++) {
        double t0 = now_s();
        int err = cellar_stat(&c, "/usr/bench16.bin", &st);
        l->samples[i] = now_s() - t0;
        if (err < 0) {
            l->err = err;
            break;
        }
    }
    cellar_close(&c);
    return NULL;
}

static long proc_kb(int pid, const char *key)
{
    char p[64], line[256];
    snprintf(p, sizeof(p), "/proc/%d/status", pid);
    FILE *f = fopen(p, "r");
    long v = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, key, kl) && line[kl] == ':')
            v = atol(line + kl + 1);
    if (f)
        fclose(f);
    return v;
}

static bool reset_hwm(int pid)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/clear_refs", pid);
    FILE *f = fopen(p, "w");
    if (!f)
        return false;
    bool ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

int main(int argc, char **argv)
{
    const char *url = NULL, *file = NULL, *json = NULL, *tmp = "/tmp";
    int pid = 0;
    double sha_s = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--url"))
            url = argv[i + 1];
        else if (!strcmp(argv[i], "--pid"))
            pid = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--file"))
            file = argv[i + 1];
        else if (!strcmp(argv[i], "--sha256sum-s"))
            sha_s = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--json"))
            json = argv[i + 1];
        else if (!strcmp(argv[i], "--tmp"))
            tmp = argv[i + 1];
    }
    if (!url || !file || !json || !pid || sha_s <= 0) {
        fprintf(stderr, "usage: bench_net --url URL --pid PID --file FILE "
                        "--sha256sum-s SECONDS --tmp DIR --json OUT\n");
        return 2;
    }
    struct stat st;
    if (stat(file, &st) < 0)
        die("cannot stat the test file");
    uint64_t size = (uint64_t)st.st_size;
    double mb = (double)size / 1e6;
    char out[4096];

    /* local SHA-256 (cellar_sha256, as libcellar hashes) */
    double v[RUNS];
    uint8_t sha[32];
    for (int i = 0; i < RUNS; i++) {
        double t0 = now_s();
        if (cellar_sha256_file(file, sha) < 0)
            die("sha256 of the test file");
        v[i] = now_s() - t0;
    }
    double mbed_s = median3(v, RUNS);

    /* plain TCP copy */
    snprintf(out, sizeof(out), "%s/tcp-copy.bin", tmp);
    for (int i = 0; i < RUNS; i++)
        v[i] = tcp_copy(file, out, size);
    double tcp_s = median3(v, RUNS);
    unlink(out);

    /* cellar upload / download */
    cellar_t c;
    cellar_init(&c, NULL);
    if (cellar_connect(&c, url) < 0) {
        fprintf(stderr, "bench_net: %s\n", cellar_errmsg(&c));
        return 1;
    }
    cellar_xfer_t x = {.skip_unchanged = false};
    double up[RUNS], down[RUNS];
    snprintf(out, sizeof(out), "%s/download.bin", tmp);
    for (int i = 0; i < RUNS; i++) {
        double t0 = now_s();
        int err = cellar_put_file(&c, file, "/usr/bench16.bin", &x);
        up[i] = now_s() - t0;
        if (err < 0) {
            fprintf(stderr, "bench_net: upload: %s\n", cellar_errmsg(&c));
            return 1;
        }
        t0 = now_s();
        err = cellar_get_file(&c, "/usr/bench16.bin", out, &x);
        down[i] = now_s() - t0;
        if (err < 0) {
            fprintf(stderr, "bench_net: download: %s\n", cellar_errmsg(&c));
            return 1;
        }
    }
    uint8_t sha2[32];
    if (cellar_sha256_file(out, sha2) < 0 || memcmp(sha, sha2, 32))
        die("downloaded file differs");
    unlink(out);
    double up_s = median3(up, RUNS), down_s = median3(down, RUNS);
    const cellar_info_t *in = cellar_info(&c);
    uint32_t chunk = in->max_chunk < CELLAR_CHUNK ? in->max_chunk : CELLAR_CHUNK;
    uint32_t window = in->max_inflight;

    /* plain TCP round trip */
    double *e1 = calloc(STATS_1, sizeof(double));
    tcp_rtt(STATS_1, e1);
    double p50_tcp = e1[STATS_1 / 2], p99_tcp = e1[(STATS_1 * 99) / 100];
    free(e1);

    /* Stat latency, 1 client */
    double *s1 = calloc(STATS_1, sizeof(double));
    lat_t l1 = {.url = url, .n = STATS_1, .samples = s1};
    lat_main(&l1);
    if (l1.err < 0)
        die("stat (1 client) failed");
    qsort(s1, STATS_1, sizeof(double), cmp_double);
    double p50_1 = s1[STATS_1 / 2], p99_1 = s1[(STATS_1 * 99) / 100];

    /* Stat latency, 32 clients at once; cellard's peak RSS meanwhile */
    long rss_before = proc_kb(pid, "VmRSS");
    bool hwm_reset = reset_hwm(pid);
    double *s32 = calloc((size_t)CLIENTS * STATS_32, sizeof(double));
    pthread_t th[CLIENTS];
    lat_t lt[CLIENTS];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, CLIENTS);
    for (int i = 0; i < CLIENTS; i++) {
        lt[i] = (lat_t){.url = url, .n = STATS_32, .samples = s32 + i * STATS_32,
                        .bar = &bar};
        pthread_create(&th[i], NULL, lat_main, &lt[i]);
    }
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        if (lt[i].err < 0)
            die("stat (32 clients) failed");
    }
    pthread_barrier_destroy(&bar);
    long hwm = proc_kb(pid, "VmHWM");
    size_t n32 = (size_t)CLIENTS * STATS_32;
    qsort(s32, n32, sizeof(double), cmp_double);
    double p50_32 = s32[n32 / 2], p99_32 = s32[(n32 * 99) / 100];
    (void)cellar_remove(&c, "/usr/bench16.bin");
    cellar_close(&c);

    double sha_rate = mb / sha_s, up_rate = mb / up_s, down_rate = mb / down_s;
    double tcp_rate = mb / tcp_s, mbed_rate = mb / mbed_s;
    printf("\nbench-net: %.1f MiB file on loopback, chunk %u B, %u requests in "
           "flight\n\n", (double)size / 1048576.0, chunk, window);
    printf("%-44s %10s %14s\n", "measure", "MB/s", "vs sha256sum");
    printf("%-44s %10.1f %13.0f%%\n", "sha256sum (coreutils) of the file", sha_rate, 100.0);
    printf("%-44s %10.1f %13.0f%%\n", "SHA-256 in libcellar (libcrypto)", mbed_rate,
           100 * mbed_rate / sha_rate);
    printf("%-44s %10.1f %13.0f%%\n", "plain TCP copy (socket -> file)", tcp_rate,
           100 * tcp_rate / sha_rate);
    printf("%-44s %10.1f %13.0f%%\n", "cellar upload (put_file, SHA-256 verified)",
           up_rate, 100 * up_rate / sha_rate);
    printf("%-44s %10.1f %13.0f%%\n", "cellar download (get_file, SHA-256 verified)",
           down_rate, 100 * down_rate / sha_rate);
    printf("\nupload/download vs plain TCP copy: %.0f%% / %.0f%%\n",
           100 * up_rate / tcp_rate, 100 * down_rate / tcp_rate);
    printf("goal (>= 50%% of sha256sum): upload %s, download %s\n\n",
           up_rate >= sha_rate / 2 ? "met" : "NOT met",
           down_rate >= sha_rate / 2 ? "met" : "NOT met");
    printf("%-44s %10s %10s\n", "Stat round trip", "median us", "p99 us");
    printf("%-44s %10.1f %10.1f\n", "plain TCP 8-byte echo (floor)", p50_tcp * 1e6,
           p99_tcp * 1e6);
    printf("%-44s %10.1f %10.1f\n", "1 client", p50_1 * 1e6, p99_1 * 1e6);
    printf("%-44s %10.1f %10.1f\n", "32 clients at once", p50_32 * 1e6, p99_32 * 1e6);
    printf("\ncellard peak RSS during the 32-client run: %ld KiB (VmHWM%s; RSS "
           "before %ld KiB)\n", hwm, hwm_reset ? ", reset before the run"
                                               : ", since start: reset refused",
           rss_before);

    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "benchmark", "bench-net");
    cJSON_AddNumberToObject(j, "file_bytes", (double)size);
    cJSON_AddNumberToObject(j, "chunk_bytes", chunk);
    cJSON_AddNumberToObject(j, "inflight", window);
    cJSON_AddNumberToObject(j, "sha256sum_mbps", sha_rate);
    cJSON_AddNumberToObject(j, "libcellar_sha256_mbps", mbed_rate);
    cJSON_AddNumberToObject(j, "tcp_copy_mbps", tcp_rate);
    cJSON_AddNumberToObject(j, "upload_mbps", up_rate);
    cJSON_AddNumberToObject(j, "download_mbps", down_rate);
    cJSON_AddNumberToObject(j, "upload_vs_sha256sum", up_rate / sha_rate);
    cJSON_AddNumberToObject(j, "download_vs_sha256sum", down_rate / sha_rate);
    cJSON_AddNumberToObject(j, "upload_vs_tcp", up_rate / tcp_rate);
    cJSON_AddNumberToObject(j, "download_vs_tcp", down_rate / tcp_rate);
    cJSON_AddBoolToObject(j, "goal_met", up_rate >= sha_rate / 2 &&
                                             down_rate >= sha_rate / 2);
    cJSON_AddNumberToObject(j, "tcp_echo_median_us", p50_tcp * 1e6);
    cJSON_AddNumberToObject(j, "tcp_echo_p99_us", p99_tcp * 1e6);
    cJSON_AddNumberToObject(j, "stat_1_client_median_us", p50_1 * 1e6);
    cJSON_AddNumberToObject(j, "stat_1_client_p99_us", p99_1 * 1e6);
    cJSON_AddNumberToObject(j, "stat_32_clients_median_us", p50_32 * 1e6);
    cJSON_AddNumberToObject(j, "stat_32_clients_p99_us", p99_32 * 1e6);
    cJSON_AddNumberToObject(j, "cellard_peak_rss_kib_32_clients", (double)hwm);
    cJSON_AddBoolToObject(j, "peak_rss_reset_before_run", hwm_reset);
    char *s = cJSON_Print(j);
    FILE *f = fopen(json, "w");
    if (!f || fputs(s, f) < 0 || fputc('\n', f) < 0 || fclose(f) != 0)
        die("cannot write the JSON file");
    printf("wrote %s\n", json);
    free(s);
    cJSON_Delete(j);
    free(s1);
    free(s32);
    return 0;
}
