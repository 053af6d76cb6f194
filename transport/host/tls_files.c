/* tls_files.c - host side of the TLS transport (issue 13): certificate,
 * key and PSK files, OS entropy, tls:// listeners and connectors
 * (tls/tp_tls.h). */
#include "tls/tp_tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE (1u << 20) /* certificates and keys are small */

/* Read a whole file, NUL-terminated (mbedTLS wants the NUL counted in a PEM
 * length). */
static int read_file(const char *path, uint8_t **buf, size_t *len,
                     const char *what, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
        return -e;
    }
    uint8_t *b = malloc(MAX_FILE + 1);
    if (!b) {
        fclose(f);
        return -ENOMEM;
    }
    size_t n = fread(b, 1, MAX_FILE + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > MAX_FILE || n == 0) {
        free(b);
        snprintf(err, errlen, "%s %s: %s", what, path,
                 bad ? "read error" : n ? "too large" : "empty file");
        return -EINVAL;
    }
    b[n] = 0;
    *buf = b;
    *len = strstr((char *)b, "-----BEGIN") ? n + 1 : n;
    return 0;
}

int tp_tls_host_rng(tp_tls_config_t *cfg, char *err, size_t errlen)
{
    static const char pers[] = "cellar tls";
    int rc = mbedtls_ctr_drbg_seed(&cfg->drbg, mbedtls_entropy_func,
                                   &cfg->entropy,
                                   (const unsigned char *)pers, sizeof(pers));
    if (rc != 0) {
        snprintf(err, errlen, "cannot seed the random generator (-0x%04x)",
                 (unsigned)-rc);
        return -EIO;
    }
    cfg->drbg_on = true;
    cfg->rng = mbedtls_ctr_drbg_random;
    cfg->rng_ctx = &cfg->drbg;
    return 0;
}

static int load_psk_file(tp_tls_config_t *cfg, const char *path, char *err,
                         size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "--psk-file %s: %s", path, strerror(e));
        return -e;
    }
    char line[512];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *p = line, *id, *hex, *extra;
        char *save = NULL;
        char *hash = strchr(p, '#');
        if (hash)
            *hash = 0;
        id = strtok_r(p, " \t\r\n", &save);
        if (!id)
            continue;
        hex = strtok_r(NULL, " \t\r\n", &save);
        extra = strtok_r(NULL, " \t\r\n", &save);
        uint8_t key[TP_TLS_PSK_MAX];
        int kl = hex && !extra ? tp_tls_parse_hex(hex, strlen(hex), key) : -EINVAL;
        if (kl < 0) {
            snprintf(err, errlen, "--psk-file %s line %d: expected "
                     "IDENTITY HEXKEY (1 to %d bytes of key)", path, lineno,
                     TP_TLS_PSK_MAX);
            rc = -EINVAL;
            break;
        }
        rc = tp_tls_config_psk(cfg, id, key, (size_t)kl);
        memset(key, 0, sizeof(key));
        if (rc < 0) {
            snprintf(err, errlen, "--psk-file %s line %d: %s", path, lineno,
                     rc == -ENOSPC ? "too many identities"
                                   : "identity of 1 to 63 bytes expected");
            break;
        }
    }
    fclose(f);
    if (rc == 0 && cfg->npsks == 0) {
        snprintf(err, errlen, "--psk-file %s: no identities", path);
        rc = -EINVAL;
    }
    return rc;
}

static int client_psk(tp_tls_config_t *cfg, const char *psk, char *err,
                      size_t errlen)
{
    const char *colon = strrchr(psk, ':');
    char id[64];
    uint8_t key[TP_TLS_PSK_MAX];
    size_t il = colon ? (size_t)(colon - psk) : 0;
    int kl = colon ? tp_tls_parse_hex(colon + 1, strlen(colon + 1), key)
                   : -EINVAL;
    if (il == 0 || il >= sizeof(id) || kl < 0) {
        snprintf(err, errlen, "--psk: expected IDENTITY:HEXKEY (identity of "
                 "1 to 63 bytes, 1 to %d bytes of key in hex)", TP_TLS_PSK_MAX);
        return -EINVAL;
    }
    memcpy(id, psk, il);
    id[il] = 0;
    int rc = tp_tls_config_psk(cfg, id, key, (size_t)kl);
    memset(key, 0, sizeof(key));
    return rc;
}

int tp_tls_host_config(tp_tls_config_t *cfg, bool server,
                       const tp_tls_files_t *f, char *err, size_t errlen)
{
    uint8_t *a = NULL, *b = NULL;
    size_t al = 0, bl = 0;
    int rc = 0;
    const char *copt = server ? "--tls-cert" : "--cert";
    const char *kopt = server ? "--tls-key" : "--key";
    const char *aopt = server ? "--tls-ca" : "--ca";
    tp_tls_config_init(cfg, server);
    if ((f->cert != NULL) != (f->key != NULL)) {
        snprintf(err, errlen, "%s and %s go together", copt, kopt);
        rc = -EINVAL;
        goto out;
    }
    if (f->cert) {
        char why[160];
        if ((rc = read_file(f->cert, &a, &al, copt, err, errlen)) ||
            (rc = read_file(f->key, &b, &bl, kopt, err, errlen)))
            goto out;
        rc = tp_tls_config_cert(cfg, a, al, b, bl, why, sizeof(why));
        if (rc) {
            snprintf(err, errlen, "%s %s / %s %s: %s", copt, f->cert, kopt,
                     f->key, why);
            goto out;
        }
        free(a);
        free(b);
        a = b = NULL;
    }
    if (f->ca) {
        char why[160];
        if ((rc = read_file(f->ca, &a, &al, aopt, err, errlen)))
            goto out;
        rc = tp_tls_config_ca(cfg, a, al, why, sizeof(why));
        if (rc) {
            snprintf(err, errlen, "%s %s: %s", aopt, f->ca, why);
            goto out;
        }
    }
    if (server && f->psk_file && (rc = load_psk_file(cfg, f->psk_file, err, errlen)))
        goto out;
    if (!server && f->psk && (rc = client_psk(cfg, f->psk, err, errlen)))
        goto out;
    if ((rc = tp_tls_host_rng(cfg, err, errlen)))
        goto out;
    rc = tp_tls_config_ready(cfg, err, errlen);
out:
    if (a)
        memset(a, 0, al);
    if (b)
        memset(b, 0, bl); /* the key */
    free(a);
    free(b);
    if (rc)
        tp_tls_config_free(cfg);
    return rc;
}

int tp_tls_listen(const tp_url_t *url, tp_tls_config_t *cfg,
                  tp_listener_t **out, char *err, size_t errlen)
{
    tp_url_t tcp = *url;
    tp_listener_t *in;
    strcpy(tcp.scheme, "tcp");
    int rc = tp_tcp_listen(&tcp, &in, err, errlen);
    if (rc)
        return rc;
    rc = tp_tls_listener(cfg, in, out);
    if (rc)
        snprintf(err, errlen, "out of memory");
    return rc;
}

int tp_tls_connect(const tp_url_t *url, int timeout_ms, tp_tls_config_t *cfg,
                   tp_conn_t **out, char *err, size_t errlen)
{
    tp_url_t tcp = *url;
    tp_conn_t *in;
    strcpy(tcp.scheme, "tcp");
    int rc = tp_tcp_connect(&tcp, timeout_ms, &in, err, errlen);
    if (rc)
        return rc;
    rc = tp_tls_wrap(cfg, in, url->host, out);
    if (rc)
        snprintf(err, errlen, "out of memory");
    return rc;
}
