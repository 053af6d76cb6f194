/* bench_tls.c - the TLS figures of `make bench-tls` (issue 13) that need no
 * network: handshake bytes and round trips (full, resumed, PSK) over an
 * in-memory pair, and the RAM a TLS connection holds on the device side,
 * counted with glibc's mallinfo2 around every server-side call (Debian's
 * mbedTLS is built without MBEDTLS_PLATFORM_MEMORY, so its allocator cannot
 * be swapped). Prints one JSON object on stdout (bench_tls.sh merges it).
 *   bench_tls PKI_DIR */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls/tp_tls.h"
#include "tp.h"

static long long in_use(void)
{
    return (long long)mallinfo2().uordblks;
}

typedef struct meas {
    long long held, peak; /* server side: after the handshake, highest */
    tp_tls_stats_t cst;
    int crc, src;
} meas_t;

static long long acc;
static long long peak;

#define SRV(expr) do { long long b_ = in_use(); expr; acc += in_use() - b_; \
                       if (acc > peak) peak = acc; } while (0)

static meas_t run(tp_tls_config_t *sc, tp_tls_config_t *cc)
{
    meas_t m = { 0 };
    tp_conn_t *a, *b, *c, *s = NULL;
    if (tp_mem_pair(0, &a, &b) || tp_tls_wrap(cc, a, NULL, &c))
        exit(1);
    acc = peak = 0;
    SRV(tp_tls_wrap(sc, b, NULL, &s));
    m.crc = m.src = TP_WANT_READ;
    for (int i = 0; i < 50 && (m.crc != 0 || m.src != 0); i++) {
        if (m.crc == TP_WANT_READ || m.crc == TP_WANT_WRITE)
            m.crc = tp_handshake(c);
        if (m.src == TP_WANT_READ || m.src == TP_WANT_WRITE)
            SRV(m.src = tp_handshake(s));
        if ((m.crc < 0 && m.crc != TP_WANT_READ && m.crc != TP_WANT_WRITE) ||
            (m.src < 0 && m.src != TP_WANT_READ && m.src != TP_WANT_WRITE))
            break;
    }
    /* one request and reply through, so both record buffers are in use */
    char buf[256];
    int n;
    (void)tp_send(c, "hello", 5);
    SRV(n = tp_recv(s, buf, sizeof(buf)));
    SRV(n = tp_send(s, buf, n > 0 ? (size_t)n : 1));
    (void)tp_recv(c, buf, sizeof(buf));
    m.held = acc;
    m.peak = peak;
    m.cst = tp_tls_stats(c);
    tp_close(c);
    tp_close(s);
    return m;
}

static int cfg(tp_tls_config_t *c, bool server, const char *d, const char *who,
               const char *psk, bool ca)
{
    char crt[512], key[512], caf[512], err[400];
    snprintf(crt, sizeof(crt), "%s/%s.crt", d, who ? who : "");
    snprintf(key, sizeof(key), "%s/%s.key", d, who ? who : "");
    snprintf(caf, sizeof(caf), "%s/ca.crt", d);
    tp_tls_files_t f = { .cert = who ? crt : NULL, .key = who ? key : NULL,
                         .ca = ca ? caf : NULL, .psk = server ? NULL : psk };
    char pf[512];
    if (server && psk) {
        snprintf(pf, sizeof(pf), "%s/psk.txt", d);
        FILE *fp = fopen(pf, "w");
        fprintf(fp, "bench %s\n", strchr(psk, ':') + 1);
        fclose(fp);
        f.psk_file = pf;
    }
    int rc = tp_tls_host_config(c, server, &f, err, sizeof(err));
    if (rc)
        fprintf(stderr, "bench_tls: %s\n", err);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: bench_tls PKI_DIR\n");
        return 2;
    }
    const char *d = argv[1];
    const char *psk = "bench:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    static tp_tls_config_t sc, cc, pc;
    if (cfg(&sc, true, d, "dev1", psk, true) ||
        cfg(&cc, false, d, "alice", NULL, true) ||
        cfg(&pc, false, d, NULL, psk, false))
        return 1;
    meas_t full = run(&sc, &cc);
    meas_t res = run(&sc, &cc);
    meas_t pm = run(&sc, &pc);
    if (full.crc || full.src || res.crc || res.src || pm.crc || pm.src ||
        !res.cst.resumed) {
        fprintf(stderr, "bench_tls: a handshake failed\n");
        return 1;
    }
    printf("{\"full\": {\"bytes_out\": %u, \"bytes_in\": %u, \"round_trips\": %u, "
           "\"suite\": \"%s\", \"device_ram_held\": %lld, \"device_ram_peak\": %lld},\n"
           " \"resumed\": {\"bytes_out\": %u, \"bytes_in\": %u, \"round_trips\": %u, "
           "\"device_ram_held\": %lld, \"device_ram_peak\": %lld},\n"
           " \"psk\": {\"bytes_out\": %u, \"bytes_in\": %u, \"round_trips\": %u, "
           "\"suite\": \"%s\", \"device_ram_held\": %lld, \"device_ram_peak\": %lld},\n"
           " \"mbedtls_in_content_len\": %d, \"mbedtls_out_content_len\": %d, "
           "\"sizeof_ssl_context\": %zu, \"sizeof_tp_tls_config\": %zu}\n",
           full.cst.hs_bytes_out, full.cst.hs_bytes_in, full.cst.round_trips,
           full.cst.suite, full.held, full.peak,
           res.cst.hs_bytes_out, res.cst.hs_bytes_in, res.cst.round_trips,
           res.held, res.peak,
           pm.cst.hs_bytes_out, pm.cst.hs_bytes_in, pm.cst.round_trips,
           pm.cst.suite, pm.held, pm.peak,
           MBEDTLS_SSL_IN_CONTENT_LEN, MBEDTLS_SSL_OUT_CONTENT_LEN,
           sizeof(mbedtls_ssl_context), sizeof(tp_tls_config_t));
    tp_tls_config_free(&sc);
    tp_tls_config_free(&cc);
    tp_tls_config_free(&pc);
    return 0;
}
