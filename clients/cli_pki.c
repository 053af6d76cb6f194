/*
 * cli_pki.c - `cellar pki init|device|client|psk` (issue 13; cli_pki.h).
 * Keys: mbedtls_ecp_gen_key (P-256) + mbedtls_pk_write_key_pem;
 * certificates: mbedtls_x509write_crt (v3, SHA-256, basicConstraints, key
 * usage, subject/authority key ids). mbedTLS 2.28 has no writer for
 * subjectAltName or extendedKeyUsage, so certificates carry the name only
 * as the subject CN (which is what cellar checks: docs/TLS.md).
 */
#include "cli.h"
#include "cli_pki.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

typedef struct pki_rng {
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
} pki_rng_t;

static int rng_open(pki_rng_t *r)
{
    static const char pers[] = "cellar pki";
    mbedtls_entropy_init(&r->ent);
    mbedtls_ctr_drbg_init(&r->drbg);
    return mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->ent,
                                 (const unsigned char *)pers, sizeof(pers))
           ? -EIO : 0;
}

static void rng_close(pki_rng_t *r)
{
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->ent);
}

static bool good_name(const char *n)
{
    size_t l = strlen(n);
    if (l == 0 || l > 63 || n[0] == '.' || n[0] == '-')
        return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

/* Write a new file (never replaces one). */
static int write_new(const char *path, const unsigned char *data, size_t len,
                     mode_t mode, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    ssize_t n = write(fd, data, len);
    int bad = n != (ssize_t)len || fsync(fd) != 0;
    if (close(fd) != 0 || bad) {
        snprintf(err, errlen, "%s: write failed", path);
        unlink(path);
        return -EIO;
    }
    return 0;
}

static void utc_string(time_t t, char out[15])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 15, "%Y%m%d%H%M%S", &tm);
}

static int mbed_fail(char *err, size_t errlen, const char *what, int rc)
{
    char m[120];
    mbedtls_strerror(rc, m, sizeof(m));
    snprintf(err, errlen, "%s: %s", what, m);
    return -EIO;
}

int pki_issue(const char *dir, const char *name, int kind,
              const char *not_before, const char *not_after, unsigned days,
              char *err, size_t errlen)
{
    char keyp[4096], crtp[4096], cakp[4096], cacp[4096];
    const char *file = kind == PKI_CA ? "ca" : name;
    if (!good_name(name)) {
        snprintf(err, errlen, "name '%s': 1 to 63 of A-Z a-z 0-9 . _ - "
                 "(not starting with . or -)", name);
        return -EINVAL;
    }
    snprintf(keyp, sizeof(keyp), "%s/%s.key", dir, file);
    snprintf(crtp, sizeof(crtp), "%s/%s.crt", dir, file);
    snprintf(cakp, sizeof(cakp), "%s/ca.key", dir);
    snprintf(cacp, sizeof(cacp), "%s/ca.crt", dir);
    if (kind == PKI_CA && mkdir(dir, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", dir, strerror(e));
        return -e;
    }
    if (access(keyp, F_OK) == 0 || access(crtp, F_OK) == 0) {
        snprintf(err, errlen, "%s or %s already exists (not replaced)",
                 keyp, crtp);
        return -EEXIST;
    }

    pki_rng_t r;
    mbedtls_pk_context key, cakey;
    mbedtls_x509_crt cacrt;
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    unsigned char *buf = malloc(8192);
    int rc = -EIO;
    mbedtls_pk_init(&key);
    mbedtls_pk_init(&cakey);
    mbedtls_x509_crt_init(&cacrt);
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    if (!buf || rng_open(&r) != 0) {
        snprintf(err, errlen, "no memory or no entropy");
        free(buf);
        goto out_norng;
    }

    char issuer[300], subject[160];
    if (kind != PKI_CA) {
        int m;
        if ((m = mbedtls_x509_crt_parse_file(&cacrt, cacp)) != 0) {
            rc = mbed_fail(err, errlen, cacp, m);
            if (access(cacp, F_OK) != 0)
                snprintf(err, errlen, "%s: no CA here (run `cellar pki init "
                         "%s` first)", cacp, dir);
            goto out;
        }
        if ((m = mbedtls_pk_parse_keyfile(&cakey, cakp, NULL)) != 0) {
            rc = mbed_fail(err, errlen, cakp, m);
            goto out;
        }
        if (mbedtls_x509_dn_gets(issuer, sizeof(issuer), &cacrt.subject) < 0) {
            snprintf(err, errlen, "%s: bad subject", cacp);
            goto out;
        }
    }
    snprintf(subject, sizeof(subject), "CN=%s,O=cellar", name);
    if (kind == PKI_CA)
        snprintf(issuer, sizeof(issuer), "%s", subject);

    int m = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (m == 0)
        m = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                                mbedtls_ctr_drbg_random, &r.drbg);
    if (m != 0) {
        rc = mbed_fail(err, errlen, "key generation", m);
        goto out;
    }

    char nb[15], na[15];
    time_t now = time(NULL);
    utc_string(now - 3600, nb);
    utc_string(now + (time_t)days * 86400, na);
    unsigned char sb[16];
    mbedtls_ctr_drbg_random(&r.drbg, sb, sizeof(sb));
    sb[0] &= 0x7f; /* a positive serial */
    sb[0] |= 0x01;
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &key);
    mbedtls_x509write_crt_set_issuer_key(&w, kind == PKI_CA ? &key : &cakey);
    if ((m = mbedtls_mpi_read_binary(&serial, sb, sizeof(sb))) ||
        (m = mbedtls_x509write_crt_set_serial(&w, &serial)) ||
        (m = mbedtls_x509write_crt_set_validity(&w, not_before ? not_before : nb,
                                                not_after ? not_after : na)) ||
        (m = mbedtls_x509write_crt_set_subject_name(&w, subject)) ||
        (m = mbedtls_x509write_crt_set_issuer_name(&w, issuer)) ||
        (m = mbedtls_x509write_crt_set_basic_constraints(&w, kind == PKI_CA, -1)) ||
        (m = mbedtls_x509write_crt_set_subject_key_identifier(&w)) ||
        (m = mbedtls_x509write_crt_set_authority_key_identifier(&w)) ||
        (m = mbedtls_x509write_crt_set_key_usage(&w, kind == PKI_CA
                 ? MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN
                 : MBEDTLS_X509_KU_DIGITAL_SIGNATURE))) {
        rc = mbed_fail(err, errlen, "certificate", m);
        goto out;
    }
    if ((m = mbedtls_pk_write_key_pem(&key, buf, 8192)) != 0) {
        rc = mbed_fail(err, errlen, "key", m);
        goto out;
    }
    if ((rc = write_new(keyp, buf, strlen((char *)buf), 0600, err, errlen)))
        goto out;
    if ((m = mbedtls_x509write_crt_pem(&w, buf, 8192, mbedtls_ctr_drbg_random,
                                       &r.drbg)) != 0) {
        unlink(keyp);
        rc = mbed_fail(err, errlen, "certificate", m);
        goto out;
    }
    if ((rc = write_new(crtp, buf, strlen((char *)buf), 0644, err, errlen))) {
        unlink(keyp);
        goto out;
    }
    rc = 0;
out:
    rng_close(&r);
    memset(buf, 0, 8192);
    free(buf);
out_norng:
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&w);
    mbedtls_x509_crt_free(&cacrt);
    mbedtls_pk_free(&cakey);
    mbedtls_pk_free(&key);
    return rc;
}

int pki_psk_line(const char *name, char *out, size_t cap)
{
    if (!good_name(name))
        return -EINVAL;
    pki_rng_t r;
    unsigned char k[32];
    if (rng_open(&r) != 0 ||
        mbedtls_ctr_drbg_random(&r.drbg, k, sizeof(k)) != 0) {
        rng_close(&r);
        return -EIO;
    }
    rng_close(&r);
    size_t n = (size_t)snprintf(out, cap, "%s ", name);
    for (size_t i = 0; i < sizeof(k) && n + 3 <= cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%02x", k[i]);
    memset(k, 0, sizeof(k));
    return 0;
}

/* `cellar pki init DIR | device DIR NAME | client DIR NAME | psk NAME` */
int cli_pki(cli_t *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: cellar pki init DIR          a CA: DIR/ca.key, DIR/ca.crt\n"
        "       cellar pki device DIR NAME   DIR/NAME.key + .crt for cellard\n"
        "                                    (--tls-cert/--tls-key)\n"
        "       cellar pki client DIR NAME   DIR/NAME.key + .crt for a client\n"
        "                                    (--cert/--key); NAME is its identity\n"
        "       cellar pki psk NAME          a line \"NAME HEXKEY\" for --psk-file\n"
        "                                    (the client: --psk NAME:HEXKEY)\n";
    cli->cmd = "pki";
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(usage, stdout);
        return CLI_OK;
    }
    const char *sub = argc >= 2 ? argv[1] : "";
    char err[600], line[200];
    int rc;
    if (!strcmp(sub, "init") && argc == 3) {
        rc = pki_issue(argv[2], "cellar-ca", PKI_CA, NULL, NULL, 3650, err,
                       sizeof(err));
        if (rc == 0 && !cli->json)
            printf("CA: %s/ca.crt (key %s/ca.key, keep it secret)\n", argv[2],
                   argv[2]);
    } else if ((!strcmp(sub, "device") || !strcmp(sub, "client")) && argc == 4) {
        rc = pki_issue(argv[2], argv[3], sub[0] == 'd' ? PKI_DEVICE : PKI_CLIENT,
                       NULL, NULL, 825, err, sizeof(err));
        if (rc == 0 && !cli->json)
            printf("%s %s: %s/%s.crt, key %s/%s.key\n", sub, argv[3], argv[2],
                   argv[3], argv[2], argv[3]);
    } else if (!strcmp(sub, "psk") && argc == 3) {
        rc = pki_psk_line(argv[2], line, sizeof(line));
        snprintf(err, sizeof(err), "name '%s': 1 to 63 of A-Z a-z 0-9 . _ -",
                 argv[2]);
        if (rc == 0) {
            if (cli->json)
                cJSON_AddStringToObject(cli->out, "psk", line);
            else
                printf("%s\n", line);
        }
    } else {
        fputs(usage, stderr);
        return CLI_USAGE;
    }
    if (rc < 0) {
        cli_error(cli, NULL, rc, "%s", err);
        return CLI_FAILED;
    }
    return CLI_OK;
}
