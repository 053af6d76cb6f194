/* tp_tls.c - TLS 1.2 over any tp_conn_t with mbedTLS (see tp_tls.h).
 * Portable: no OS calls, no stdio; memory from mbedtls_calloc. */
#include "tp_tls.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform.h>
#include <mbedtls/ssl_internal.h> /* handshake->resume */

typedef struct tls_conn {
    mbedtls_ssl_context ssl;  /* first: the PSK callback finds us from it */
    tp_conn_t conn;
    tp_tls_config_t *cfg;
    bool done;                /* handshake finished */
    bool resumed;             /* the handshake resumed a session */
    bool sent_since_read;     /* round-trip counting */
    size_t wr_len;            /* length of a write that must be retried */
    int rd_err;               /* end or error met after data was returned */
    uint64_t hs_deadline;
    tp_tls_stats_t st;
    char psk_identity[64];
    char err[96];
} tls_conn_t;

static const tp_conn_type_t tls_type;

static tls_conn_t *tls_of(tp_conn_t *c)
{
    return (tls_conn_t *)c->priv;
}

/* ---- configuration ---------------------------------------------------------- */
static const mbedtls_ecp_group_id curves[] = {
    MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_NONE,
};

static void set_err(char *err, size_t errlen, const char *a, const char *b)
{
    if (!err || !errlen)
        return;
    size_t n = 0;
    for (const char *s = a; s && *s && n + 1 < errlen; s++)
        err[n++] = *s;
    for (const char *s = b; s && *s && n + 1 < errlen; s++)
        err[n++] = *s;
    err[n] = 0;
}

static void set_mbed_err(char *err, size_t errlen, const char *what, int rc)
{
    char m[100];
    mbedtls_strerror(rc, m, sizeof(m));
    set_err(err, errlen, what, m);
}

void tp_tls_config_init(tp_tls_config_t *cfg, bool server)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->server = server;
    mbedtls_ssl_config_init(&cfg->conf);
    mbedtls_x509_crt_init(&cfg->own_cert);
    mbedtls_pk_init(&cfg->own_key);
    mbedtls_x509_crt_init(&cfg->ca);
    mbedtls_ssl_ticket_init(&cfg->ticket);
    mbedtls_ssl_session_init(&cfg->session);
    mbedtls_entropy_init(&cfg->entropy);
    mbedtls_ctr_drbg_init(&cfg->drbg);
}

int tp_tls_config_cert(tp_tls_config_t *cfg, const uint8_t *crt, size_t crt_len,
                       const uint8_t *key, size_t key_len, char *err,
                       size_t errlen)
{
    int rc = mbedtls_x509_crt_parse(&cfg->own_cert, crt, crt_len);
    if (rc != 0) {
        set_mbed_err(err, errlen, "certificate: ", rc);
        return -EINVAL;
    }
    rc = mbedtls_pk_parse_key(&cfg->own_key, key, key_len, NULL, 0);
    if (rc != 0) {
        set_mbed_err(err, errlen, "private key: ", rc);
        return -EINVAL;
    }
    if (mbedtls_pk_check_pair(&cfg->own_cert.pk, &cfg->own_key) != 0) {
        set_err(err, errlen, "the private key does not match the "
                             "certificate", NULL);
        return -EINVAL;
    }
    cfg->have_cert = true;
    return 0;
}

int tp_tls_config_ca(tp_tls_config_t *cfg, const uint8_t *ca, size_t len,
                     char *err, size_t errlen)
{
    int rc = mbedtls_x509_crt_parse(&cfg->ca, ca, len);
    if (rc != 0) {
        set_mbed_err(err, errlen, "CA certificate: ", rc);
        return -EINVAL;
    }
    cfg->have_ca = true;
    return 0;
}

int tp_tls_config_psk(tp_tls_config_t *cfg, const char *identity,
                      const uint8_t *key, size_t key_len)
{
    size_t il = identity ? strlen(identity) : 0;
    if (il == 0 || il >= sizeof(cfg->psks[0].identity) || key_len == 0 ||
        key_len > TP_TLS_PSK_MAX)
        return -EINVAL;
    if (cfg->npsks == TP_TLS_MAX_PSKS || (!cfg->server && cfg->npsks == 1))
        return -ENOSPC;
    tp_tls_psk_t *p = &cfg->psks[cfg->npsks++];
    memcpy(p->identity, identity, il + 1);
    memcpy(p->key, key, key_len);
    p->key_len = key_len;
    return 0;
}

int tp_tls_parse_hex(const char *hex, size_t hexlen, uint8_t *key)
{
    if (hexlen == 0 || hexlen % 2 || hexlen / 2 > TP_TLS_PSK_MAX)
        return -EINVAL;
    for (size_t i = 0; i < hexlen; i++) {
        char ch = hex[i];
        int v = ch >= '0' && ch <= '9' ? ch - '0'
              : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (v < 0)
            return -EINVAL;
        if (i % 2 == 0)
            key[i / 2] = (uint8_t)(v << 4);
        else
            key[i / 2] |= (uint8_t)v;
    }
    return (int)(hexlen / 2);
}

/* Server: find the key of a PSK identity. */
static int psk_lookup(void *ctx, mbedtls_ssl_context *ssl,
                      const unsigned char *id, size_t idlen)
{
    tp_tls_config_t *cfg = ctx;
    tls_conn_t *t = (tls_conn_t *)(void *)ssl; /* ssl is t's first member */
    for (uint32_t i = 0; i < cfg->npsks; i++) {
        const tp_tls_psk_t *p = &cfg->psks[i];
        if (strlen(p->identity) == idlen && memcmp(p->identity, id, idlen) == 0) {
            memcpy(t->psk_identity, p->identity, idlen + 1);
            return mbedtls_ssl_set_hs_psk(ssl, p->key, p->key_len);
        }
    }
    return -1; /* unknown identity: the handshake fails */
}

int tp_tls_config_ready(tp_tls_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg->rng) {
        set_err(err, errlen, "no random number generator", NULL);
        return -EINVAL;
    }
    if (cfg->server && !cfg->have_cert && cfg->npsks == 0) {
        set_err(err, errlen, "a TLS listener needs a certificate and key "
                             "(--tls-cert, --tls-key) or a PSK file", NULL);
        return -EINVAL;
    }
    if (!cfg->server && !cfg->have_ca && cfg->npsks == 0) {
        set_err(err, errlen, "tls:// needs the device CA (--ca, CELLAR_CA) "
                             "or a PSK (--psk, CELLAR_PSK)", NULL);
        return -EINVAL;
    }
    int rc = mbedtls_ssl_config_defaults(&cfg->conf,
            cfg->server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
            MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) {
        set_mbed_err(err, errlen, "TLS defaults: ", rc);
        return -EINVAL;
    }
    mbedtls_ssl_conf_min_version(&cfg->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&cfg->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_rng(&cfg->conf, cfg->rng, cfg->rng_ctx);
    mbedtls_ssl_conf_curves(&cfg->conf, curves);

    /* Suites: certificates on a server that has one or a client that is
     * not in PSK mode; ECDHE-PSK on a server with PSKs or a PSK client. */
    int n = 0;
    bool certs = cfg->server ? cfg->have_cert : cfg->npsks == 0;
    bool psk = cfg->npsks > 0;
    if (certs) {
        /* ChaCha20-Poly1305 first: faster than mbedTLS's AES-GCM here
         * (157 vs 112 MiB/s on the build box, AES-NI on) and on a
         * Cortex-M without an AES unit */
        cfg->suites[n++] = MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;
        cfg->suites[n++] = MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
        cfg->suites[n++] = MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384;
        cfg->suites[n++] = MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256;
        cfg->suites[n++] = MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256;
        cfg->suites[n++] = MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384;
    }
    if (psk) {
        cfg->suites[n++] = MBEDTLS_TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256;
        cfg->suites[n++] = MBEDTLS_TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256;
        cfg->suites[n++] = MBEDTLS_TLS_ECDHE_PSK_WITH_AES_256_CBC_SHA384;
    }
    cfg->suites[n] = 0;
    mbedtls_ssl_conf_ciphersuites(&cfg->conf, cfg->suites);

    if (cfg->have_ca)
        mbedtls_ssl_conf_ca_chain(&cfg->conf, &cfg->ca, NULL);
    if (cfg->have_cert) {
        rc = mbedtls_ssl_conf_own_cert(&cfg->conf, &cfg->own_cert,
                                       &cfg->own_key);
        if (rc != 0) {
            set_mbed_err(err, errlen, "certificate: ", rc);
            return -EINVAL;
        }
    }
    if (cfg->server) {
        /* Mutual authentication whenever a client CA is given. */
        mbedtls_ssl_conf_authmode(&cfg->conf, cfg->have_ca
                                  ? MBEDTLS_SSL_VERIFY_REQUIRED
                                  : MBEDTLS_SSL_VERIFY_NONE);
        if (psk)
            mbedtls_ssl_conf_psk_cb(&cfg->conf, psk_lookup, cfg);
        rc = mbedtls_ssl_ticket_setup(&cfg->ticket, cfg->rng, cfg->rng_ctx,
                                      MBEDTLS_CIPHER_AES_256_GCM,
                                      TP_TLS_TICKET_LIFETIME_S);
        if (rc != 0) {
            set_mbed_err(err, errlen, "session tickets: ", rc);
            return -EINVAL;
        }
        mbedtls_ssl_conf_session_tickets_cb(&cfg->conf, mbedtls_ssl_ticket_write,
                                            mbedtls_ssl_ticket_parse,
                                            &cfg->ticket);
    } else {
        mbedtls_ssl_conf_authmode(&cfg->conf, psk ? MBEDTLS_SSL_VERIFY_NONE
                                                  : MBEDTLS_SSL_VERIFY_REQUIRED);
        mbedtls_ssl_conf_session_tickets(&cfg->conf,
                                         MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
        if (psk) {
            const tp_tls_psk_t *p = &cfg->psks[0];
            rc = mbedtls_ssl_conf_psk(&cfg->conf, p->key, p->key_len,
                                      (const unsigned char *)p->identity,
                                      strlen(p->identity));
            if (rc != 0) {
                set_mbed_err(err, errlen, "PSK: ", rc);
                return -EINVAL;
            }
        }
    }
    cfg->ready = true;
    return 0;
}

void tp_tls_config_free(tp_tls_config_t *cfg)
{
    if (!cfg)
        return;
    mbedtls_ssl_config_free(&cfg->conf);
    mbedtls_x509_crt_free(&cfg->own_cert);
    mbedtls_pk_free(&cfg->own_key);
    mbedtls_x509_crt_free(&cfg->ca);
    mbedtls_ssl_ticket_free(&cfg->ticket);
    mbedtls_ssl_session_free(&cfg->session);
    mbedtls_ctr_drbg_free(&cfg->drbg);
    mbedtls_entropy_free(&cfg->entropy);
    mbedtls_platform_zeroize(cfg->psks, sizeof(cfg->psks));
    cfg->ready = false;
}

int tp_tls_session_save(const tp_tls_config_t *cfg, uint8_t *buf, size_t cap)
{
    if (!cfg->have_session)
        return 0;
    size_t olen = 0;
    int rc = mbedtls_ssl_session_save(&cfg->session, buf, cap, &olen);
    return rc == 0 ? (int)olen : -ENOSPC;
}

int tp_tls_session_load(tp_tls_config_t *cfg, const uint8_t *buf, size_t len)
{
    mbedtls_ssl_session_free(&cfg->session);
    mbedtls_ssl_session_init(&cfg->session);
    cfg->have_session = false;
    if (mbedtls_ssl_session_load(&cfg->session, buf, len) != 0) {
        mbedtls_ssl_session_free(&cfg->session);
        mbedtls_ssl_session_init(&cfg->session);
        return -EINVAL;
    }
    cfg->have_session = true;
    return 0;
}

/* ---- the inner stream (BIO) -------------------------------------------------- */
static void sync_deadline(tls_conn_t *t)
{
    uint64_t d = t->done ? 0 : t->hs_deadline;
    uint64_t in = t->conn.inner->deadline_ms;
    if (in && (!d || in < d))
        d = in;
    t->conn.deadline_ms = d;
}

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    tls_conn_t *t = ctx;
    int n = tp_send(t->conn.inner, buf, len);
    if (n > 0 && !t->done) {
        t->st.hs_bytes_out += (uint32_t)n;
        t->sent_since_read = true;
    }
    return n;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    tls_conn_t *t = ctx;
    if (!t->done && t->sent_since_read) {
        t->st.round_trips++; /* now waiting for the peer's next flight */
        t->sent_since_read = false;
    }
    int n = tp_recv(t->conn.inner, buf, len);
    if (n > 0 && !t->done)
        t->st.hs_bytes_in += (uint32_t)n;
    if (n == 0)
        return MBEDTLS_ERR_SSL_CONN_EOF;
    return n;
}

/* ---- errors ---------------------------------------------------------------------- */
static const char *verify_reason(uint32_t flags)
{
    if (flags & MBEDTLS_X509_BADCERT_EXPIRED)
        return "expired";
    if (flags & MBEDTLS_X509_BADCERT_FUTURE)
        return "not yet valid";
    if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
        return "not signed by the trusted CA";
    if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)
        return "name does not match the host";
    if (flags & MBEDTLS_X509_BADCERT_REVOKED)
        return "revoked";
    if (flags & (MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE))
        return "key usage does not allow this role";
    if (flags & MBEDTLS_X509_BADCERT_MISSING)
        return "no certificate";
    return "rejected";
}

/* An mbedTLS error as an errno, with a reason in t->err. Verification and
 * authentication failures are -EACCES; the peer going away -ECONNRESET;
 * anything else (a bad record, a protocol error) -EPROTO. */
static int map_err(tls_conn_t *t, int rc)
{
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return rc;
    if (rc >= -200 && rc < 0) { /* an errno from the inner transport */
        if (!t->done)
            set_err(t->err, sizeof(t->err), t->cfg->server
                    ? "the client went away in the handshake"
                    : "the device closed the connection in the handshake "
                      "(did it refuse our certificate or PSK?)", NULL);
        return rc;
    }
    uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
    char m[80];
    switch (rc) {
    case MBEDTLS_ERR_X509_CERT_VERIFY_FAILED:
        set_err(t->err, sizeof(t->err), "certificate verify failed: ",
                verify_reason(flags));
        return -EACCES;
    case MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE:
        set_err(t->err, sizeof(t->err), "the client sent no certificate", NULL);
        return -EACCES;
    case MBEDTLS_ERR_SSL_UNKNOWN_IDENTITY:
        set_err(t->err, sizeof(t->err), "unknown PSK identity", NULL);
        return -EACCES;
    case MBEDTLS_ERR_SSL_INVALID_MAC:
        if (t->done)
            goto other; /* a damaged or forged record */
        /* in the handshake the first encrypted record is the Finished */
        set_err(t->err, sizeof(t->err), "handshake check failed (wrong PSK?)",
                NULL);
        return -EACCES;
    case MBEDTLS_ERR_SSL_BAD_HS_FINISHED:
        set_err(t->err, sizeof(t->err), "handshake check failed (wrong PSK?)",
                NULL);
        return -EACCES;
    case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE:
        set_err(t->err, sizeof(t->err), "the peer refused the handshake "
                "(bad or missing certificate, unknown CA, wrong PSK)", NULL);
        return -EACCES;
    case MBEDTLS_ERR_SSL_CONN_EOF:
        set_err(t->err, sizeof(t->err), t->done ? "the peer closed the "
                "connection" : t->cfg->server ? "the client went away in the "
                "handshake" : "the device closed the connection in the "
                "handshake (did it refuse our certificate or PSK?)", NULL);
        return -ECONNRESET;
    default:
    other:
        mbedtls_strerror(rc, m, sizeof(m));
        set_err(t->err, sizeof(t->err), "TLS: ", m);
        return -EPROTO;
    }
}

/* ---- the connection type ------------------------------------------------------ */
/* cfg->log(peer + the strings), without stdio. */
static void say(tls_conn_t *t, const char *a, const char *b, const char *c)
{
    if (!t->cfg->log)
        return;
    char line[200];
    size_t n = 0;
    const char *parts[] = { t->conn.peer, ": ", a, b, c };
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        for (const char *s = parts[i]; s && *s && n + 1 < sizeof(line); s++)
            line[n++] = *s;
    line[n] = 0;
    t->cfg->log(t->cfg->log_ctx, line);
}

static void cn_of(const mbedtls_x509_crt *crt, char *out, size_t cap)
{
    out[0] = 0;
    for (const mbedtls_x509_name *n = &crt->subject; n; n = n->next) {
        if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0) {
            size_t l = n->val.len < cap - 1 ? n->val.len : cap - 1;
            for (size_t i = 0; i < l; i++) {
                unsigned char ch = n->val.p[i];
                out[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
            }
            out[l] = 0;
            return;
        }
    }
}

static int tls_handshake(tp_conn_t *c)
{
    tls_conn_t *t = tls_of(c);
    if (t->done)
        return 0;
    if (!t->hs_deadline) {
        uint32_t ms = t->cfg->handshake_ms ? t->cfg->handshake_ms
                                           : TP_TLS_HANDSHAKE_MS;
        t->hs_deadline = tp_now_ms() + ms;
    }
    /* Step by step, to see whether the session was resumed (the
     * handshake parameters are gone once it is over). */
    int rc = 0;
    t->st.resumed = false;
    while (t->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        rc = mbedtls_ssl_handshake_step(&t->ssl);
        if (t->ssl.handshake && t->ssl.handshake->resume)
            t->resumed = true;
        if (rc != 0)
            break;
    }
    if (rc == 0) {
        t->done = true;
        t->st.resumed = t->resumed;
        const char *suite = mbedtls_ssl_get_ciphersuite(&t->ssl);
        t->st.suite = suite;
        t->st.psk = suite && strstr(suite, "PSK") != NULL;
        if (t->cfg->server) {
            const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&t->ssl);
            if (t->st.psk)
                memcpy(c->identity, t->psk_identity, sizeof(c->identity));
            else if (peer && t->cfg->have_ca)
                cn_of(peer, c->identity, sizeof(c->identity));
            else
                c->identity[0] = 0;
            t->cfg->handshakes_ok++;
            if (t->resumed)
                t->cfg->handshakes_resumed++;
            say(t, "TLS as ", tp_identity(c), t->resumed ? " (resumed)" : "");
        } else if (!t->st.psk && !t->cfg->no_resume) {
            mbedtls_ssl_session_free(&t->cfg->session);
            mbedtls_ssl_session_init(&t->cfg->session);
            t->cfg->have_session =
                mbedtls_ssl_get_session(&t->ssl, &t->cfg->session) == 0;
        }
    } else {
        rc = map_err(t, rc);
        if (rc != TP_WANT_READ && rc != TP_WANT_WRITE) {
            t->cfg->handshakes_failed++;
            say(t, "TLS handshake failed: ", t->err, "");
        }
    }
    sync_deadline(t);
    return rc;
}

static int tls_send(tp_conn_t *c, const uint8_t *buf, size_t len)
{
    tls_conn_t *t = tls_of(c);
    if (!t->done)
        return -ENOTCONN;
    /* Records until len is sent or the inner transport is full. A record
     * that waited must be written again with the same length (mbedTLS
     * already holds it): wr_len. Bytes of records already out are
     * reported first; the waiting record then comes first on the next
     * call. */
    size_t done = 0;
    int rc = 0;
    while (done < len) {
        size_t n = len - done;
        if (t->wr_len && n >= t->wr_len)
            n = t->wr_len;
        rc = mbedtls_ssl_write(&t->ssl, buf + done, n);
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
            size_t max = (size_t)mbedtls_ssl_get_max_out_record_payload(&t->ssl);
            t->wr_len = n < max ? n : max;
            break;
        }
        t->wr_len = 0;
        if (rc <= 0)
            break;
        done += (size_t)rc;
    }
    sync_deadline(t);
    if (done > 0)
        return (int)(done > 0x7fffffff ? 0x7fffffff : done);
    return rc >= 0 ? rc : map_err(t, rc);
}

static int tls_recv(tp_conn_t *c, uint8_t *buf, size_t len)
{
    tls_conn_t *t = tls_of(c);
    if (!t->done)
        return -ENOTCONN;
    /* Records until buf is full or nothing more has arrived; what was read
     * is returned first, an end or error comes on the next call. */
    size_t got = 0;
    int rc = t->rd_err;
    while (!t->rd_err && got < len) {
        rc = mbedtls_ssl_read(&t->ssl, buf + got, len - got);
        if (rc <= 0)
            break;
        got += (size_t)rc;
    }
    sync_deadline(t);
    if (got > 0) {
        if (rc <= 0 && rc != MBEDTLS_ERR_SSL_WANT_READ &&
            rc != MBEDTLS_ERR_SSL_WANT_WRITE)
            t->rd_err = rc; /* the end or the error, next time */
        return (int)(got > 0x7fffffff ? 0x7fffffff : got);
    }
    if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || rc == MBEDTLS_ERR_SSL_CONN_EOF)
        return 0;
    return rc >= 0 ? rc : map_err(t, rc);
}

static size_t tls_pending(tp_conn_t *c)
{
    tls_conn_t *t = tls_of(c);
    size_t n = mbedtls_ssl_get_bytes_avail(&t->ssl);
    if (n == 0 && t->done && mbedtls_ssl_check_pending(&t->ssl))
        n = 1; /* a record is buffered, not yet decrypted */
    return n + tp_pending(c->inner);
}

static unsigned tls_ready(tp_conn_t *c)
{
    unsigned ev = tp_ready(c->inner);
    if (tls_pending(c))
        ev |= TP_EV_READ;
    return ev;
}

static int tls_on_timer(tp_conn_t *c, uint64_t now_ms)
{
    tls_conn_t *t = tls_of(c);
    if (c->inner->deadline_ms && now_ms >= c->inner->deadline_ms) {
        int rc = tp_on_timer(c->inner, now_ms);
        if (rc < 0)
            return rc;
    }
    if (!t->done && t->hs_deadline && now_ms >= t->hs_deadline) {
        set_err(t->err, sizeof(t->err), "handshake timed out", NULL);
        t->cfg->handshakes_timed_out++;
        say(t, "TLS handshake timed out", "", "");
        return -ETIMEDOUT;
    }
    sync_deadline(t);
    return 0;
}

static void tls_close(tp_conn_t *c)
{
    tls_conn_t *t = tls_of(c);
    if (t->done)
        (void)mbedtls_ssl_close_notify(&t->ssl); /* best effort */
    mbedtls_ssl_free(&t->ssl);
    tp_close(c->inner);
    mbedtls_platform_zeroize(t, sizeof(*t));
    mbedtls_free(t);
}

static const tp_conn_type_t tls_type = {
    .name = "tls",
    .send = tls_send,
    .recv = tls_recv,
    .pending = tls_pending,
    .close = tls_close,
    .handshake = tls_handshake,
    .ready = tls_ready,
    .on_timer = tls_on_timer,
};

static bool is_ip_literal(const char *h)
{
    if (strchr(h, ':'))
        return true;
    for (; *h; h++)
        if ((*h < '0' || *h > '9') && *h != '.')
            return false;
    return true;
}

int tp_tls_wrap(tp_tls_config_t *cfg, tp_conn_t *inner, const char *hostname,
                tp_conn_t **out)
{
    *out = NULL;
    tls_conn_t *t = mbedtls_calloc(1, sizeof(*t));
    if (!t) {
        tp_close(inner);
        return -ENOMEM;
    }
    mbedtls_ssl_init(&t->ssl);
    t->cfg = cfg;
    tp_conn_t *c = &t->conn;
    c->type = &tls_type;
    c->fd = inner->fd;
    c->priv = t;
    c->inner = inner;
    /* "tcp 127.0.0.1:5000" -> "tls 127.0.0.1:5000" */
    const char *sp = strchr(inner->peer, ' ');
    memcpy(c->peer, "tls", 4);
    if (sp) {
        size_t l = strlen(sp);
        if (l > sizeof(c->peer) - 4)
            l = sizeof(c->peer) - 4;
        memcpy(c->peer + 3, sp, l);
        c->peer[3 + l] = 0;
    }
    int rc = mbedtls_ssl_setup(&t->ssl, &cfg->conf);
    if (rc == 0 && !cfg->server && hostname && *hostname &&
        !is_ip_literal(hostname))
        rc = mbedtls_ssl_set_hostname(&t->ssl, hostname);
    if (rc == 0 && !cfg->server && cfg->have_session && !cfg->no_resume &&
        cfg->npsks == 0) {
        (void)mbedtls_ssl_set_session(&t->ssl, &cfg->session);
    }
    if (rc != 0) {
        tls_close(c);
        return -ENOMEM;
    }
    mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
    *out = c;
    return 0;
}

bool tp_is_tls(const tp_conn_t *c)
{
    return c && c->type == &tls_type;
}

tp_tls_stats_t tp_tls_stats(const tp_conn_t *c)
{
    tp_tls_stats_t z;
    memset(&z, 0, sizeof(z));
    return tp_is_tls(c) ? ((const tls_conn_t *)c->priv)->st : z;
}

const char *tp_tls_error(const tp_conn_t *c)
{
    return tp_is_tls(c) ? ((const tls_conn_t *)c->priv)->err : "";
}

/* ---- the listener ------------------------------------------------------------------ */
typedef struct tls_listener {
    tp_listener_t l;
    tp_listener_t *inner;
    tp_tls_config_t *cfg;
} tls_listener_t;

static int tlsl_accept(tp_listener_t *l, tp_conn_t **out)
{
    tls_listener_t *tl = l->priv;
    tp_conn_t *in;
    int rc = tp_accept(tl->inner, &in);
    if (rc != 0)
        return rc;
    return tp_tls_wrap(tl->cfg, in, NULL, out);
}

static void tlsl_close(tp_listener_t *l)
{
    tls_listener_t *tl = l->priv;
    tp_listener_close(tl->inner);
    mbedtls_free(tl);
}

static const tp_listener_type_t tlsl_type = {
    .name = "tls", .accept = tlsl_accept, .close = tlsl_close,
};

int tp_tls_listener(tp_tls_config_t *cfg, tp_listener_t *inner,
                    tp_listener_t **out)
{
    *out = NULL;
    tls_listener_t *tl = mbedtls_calloc(1, sizeof(*tl));
    if (!tl) {
        tp_listener_close(inner);
        return -ENOMEM;
    }
    tl->inner = inner;
    tl->cfg = cfg;
    tl->l.type = &tlsl_type;
    tl->l.fd = inner->fd;
    tl->l.priv = tl;
    const char *rest = strstr(inner->url, "://");
    memcpy(tl->l.url, "tls", 4);
    if (rest) {
        size_t l = strlen(rest);
        if (l > sizeof(tl->l.url) - 4)
            l = sizeof(tl->l.url) - 4;
        memcpy(tl->l.url + 3, rest, l);
        tl->l.url[3 + l] = 0;
    }
    *out = &tl->l;
    return 0;
}
