/*
 * tp_tls.h - TLS 1.2 (mbedTLS 2.28) as a stacked transport (issue 13).
 *
 * A TLS connection wraps any tp_conn_t (TCP now, the UART link or lwIP
 * later) and is used exactly like it: tp_handshake until 0, then
 * tp_send / tp_recv. Both roles:
 *
 *   server (the device):  own certificate + key; with a client CA, mutual
 *                         authentication is required (a client without a
 *                         certificate signed by that CA is refused); with
 *                         PSKs, ECDHE-PSK clients are accepted by identity.
 *   client (libcellar):   the device certificate is checked against the CA
 *                         (hostname: see tp_tls_wrap), an optional own
 *                         certificate + key, or one PSK.
 *
 * Key exchange: ECDHE on P-256 first (then P-384, X25519); suites
 * ECDHE-ECDSA/ECDHE-RSA with AES-GCM or ChaCha20-Poly1305, ECDHE-PSK with
 * ChaCha20-Poly1305 or AES-CBC-SHA256. Session tickets: the server encrypts
 * the session under rotating ticket keys (mbedtls_ssl_ticket, AES-256-GCM,
 * tickets live TP_TLS_TICKET_LIFETIME_S); a client keeps the session of its
 * last full handshake in its config and offers it on the next connection:
 * an abbreviated handshake in one round trip. PSK sessions are not resumed
 * (a ticket does not carry the PSK identity).
 *
 * After the handshake, tp_conn.identity is the client certificate's subject
 * CN (server side, certificate handshakes), the PSK identity (ECDHE-PSK), or
 * empty (anonymous: a server without a client CA and no PSK in use).
 *
 * Portable: no OS calls here. Randomness is the config's rng callback and
 * the handshake clock is tp_now_ms(); certificate validity uses mbedTLS's
 * own time (MBEDTLS_HAVE_TIME_DATE). Certificates and keys are parsed from
 * memory (PEM or DER); reading files is host code (tls_files.c). Memory:
 * the connection state and mbedTLS's buffers come from mbedtls_calloc (the
 * platform allocator; a static pool on a module).
 */
#ifndef CELLAR_TP_TLS_H
#define CELLAR_TP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include "tp.h"

#define TP_TLS_MAX_PSKS 32          /* identities a server config holds */
#define TP_TLS_PSK_MAX 64           /* bytes of one key */
#define TP_TLS_HANDSHAKE_MS 10000   /* default handshake timeout */
#define TP_TLS_TICKET_LIFETIME_S 86400

typedef struct tp_tls_psk {
    char identity[64];
    uint8_t key[TP_TLS_PSK_MAX];
    size_t key_len;
} tp_tls_psk_t;

/* Counters of one connection's handshake (tp_tls_stats). */
typedef struct tp_tls_stats {
    uint32_t hs_bytes_out;   /* bytes written to the inner transport */
    uint32_t hs_bytes_in;    /* bytes read from it */
    uint32_t round_trips;    /* times this side waited for the peer after
                                sending (a client: 2 full, 1 resumed) */
    bool resumed;            /* abbreviated handshake (session ticket) */
    bool psk;                /* an ECDHE-PSK suite */
    const char *suite;       /* cipher suite name */
} tp_tls_stats_t;

/* One configuration, shared by every connection of one role. Fill it with
 * tp_tls_config_init, the _cert/_ca/_psk calls and an rng, then
 * tp_tls_config_ready. Connections keep a pointer to it: it must outlive
 * them. Not thread-safe (one loop uses it). */
typedef struct tp_tls_config {
    bool server;
    bool ready;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt own_cert;
    mbedtls_pk_context own_key;
    mbedtls_x509_crt ca;
    bool have_cert, have_ca;
    tp_tls_psk_t psks[TP_TLS_MAX_PSKS]; /* server: the table; client: [0] */
    uint32_t npsks;
    int (*rng)(void *ctx, unsigned char *out, size_t len);
    void *rng_ctx;
    uint32_t handshake_ms;   /* 0 = TP_TLS_HANDSHAKE_MS */
    mbedtls_ssl_ticket_context ticket; /* server */
    /* client: the session of the last full handshake (resumption) */
    mbedtls_ssl_session session;
    bool have_session;
    bool no_resume;          /* client: never offer a saved session */
    int suites[12];
    /* optional: one line per finished or failed handshake ("tls
     * 127.0.0.1:5000: handshake failed: certificate verify failed:
     * expired"), and the counts */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
    uint32_t handshakes_ok, handshakes_resumed, handshakes_failed,
             handshakes_timed_out;
    /* host code may keep its randomness here (tls_files.c does) */
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    bool drbg_on;
} tp_tls_config_t;

/* Initialise cfg for a role (cannot fail). */
void tp_tls_config_init(tp_tls_config_t *cfg, bool server);

/* Own certificate chain and private key, PEM (NUL included in len, as
 * mbedTLS wants) or DER. Returns 0 or -EINVAL with a reason in err. */
int tp_tls_config_cert(tp_tls_config_t *cfg, const uint8_t *crt, size_t crt_len,
                       const uint8_t *key, size_t key_len, char *err,
                       size_t errlen);

/* The CA that signs the peer's certificate (server: client CA, turns on
 * mutual authentication; client: the device CA). Returns 0 or -EINVAL. */
int tp_tls_config_ca(tp_tls_config_t *cfg, const uint8_t *ca, size_t len,
                     char *err, size_t errlen);

/* Add a PSK (server: one more identity; client: its one identity).
 * Returns 0, -EINVAL (empty or long identity or key) or -ENOSPC. */
int tp_tls_config_psk(tp_tls_config_t *cfg, const char *identity,
                      const uint8_t *key, size_t key_len);

/* Parse "HEX" into key (at most TP_TLS_PSK_MAX bytes). Returns the length
 * or -EINVAL. */
int tp_tls_parse_hex(const char *hex, size_t hexlen, uint8_t *key);

/* Set up mbedTLS with what was given (rng required). Returns 0 or -EINVAL
 * with a reason (no certificate and no PSK on a server, no CA and no PSK on
 * a client, ...). */
int tp_tls_config_ready(tp_tls_config_t *cfg, char *err, size_t errlen);

/* Free everything (also the saved session). */
void tp_tls_config_free(tp_tls_config_t *cfg);

/* Wrap inner (owned from now on, also on failure) in a TLS connection of
 * cfg's role. hostname (client, may be NULL): when it is a DNS name the
 * device certificate's CN / subjectAltName must match it; an IP literal or
 * NULL checks only the chain (mbedTLS 2.28 cannot match IP addresses).
 * The handshake runs through tp_handshake and is dropped after
 * cfg->handshake_ms (deadline_ms / on_timer). Returns 0 with *out, or
 * -ENOMEM. */
int tp_tls_wrap(tp_tls_config_t *cfg, tp_conn_t *inner, const char *hostname,
                tp_conn_t **out);

/* A listener that wraps every connection inner accepts (inner owned from
 * now on, also on failure). url becomes "tls://...". Returns 0 or -ENOMEM. */
int tp_tls_listener(tp_tls_config_t *cfg, tp_listener_t *inner,
                    tp_listener_t **out);

/* True when c is a TLS connection. */
bool tp_is_tls(const tp_conn_t *c);

/* Handshake counters of a TLS connection (zeros for another type). */
tp_tls_stats_t tp_tls_stats(const tp_conn_t *c);

/* Why the handshake (or the last call) failed, in words: "certificate
 * verify failed: expired", "peer sent alert: unknown CA", ...; "" when
 * nothing failed. */
const char *tp_tls_error(const tp_conn_t *c);

/* Client: save the session to buf / load it into cfg, so a new process can
 * resume (mbedtls_ssl_session_save). Return bytes written / 0, or a
 * negative errno. */
int tp_tls_session_save(const tp_tls_config_t *cfg, uint8_t *buf, size_t cap);
int tp_tls_session_load(tp_tls_config_t *cfg, const uint8_t *buf, size_t len);

/* ---- host helpers (transport/host/tls_files.c, POSIX) ---------------------
 * Files are PEM or DER. A PSK file has one "IDENTITY HEXKEY" a line ('#'
 * starts a comment, blank lines are skipped); a client PSK is
 * "IDENTITY:HEXKEY". Each returns 0 or a negative errno with a reason in
 * err naming the file or option. */
typedef struct tp_tls_files {
    const char *cert, *key, *ca; /* paths or NULL */
    const char *psk_file;        /* server: the PSK table file */
    const char *psk;             /* client: "IDENTITY:HEXKEY" */
} tp_tls_files_t;

/* Seed a CTR-DRBG from the OS entropy (kept in cfg) and use it as cfg's
 * rng. */
int tp_tls_host_rng(tp_tls_config_t *cfg, char *err, size_t errlen);

/* tp_tls_config_init + files + rng + tp_tls_config_ready. On failure cfg is
 * freed. */
int tp_tls_host_config(tp_tls_config_t *cfg, bool server,
                       const tp_tls_files_t *f, char *err, size_t errlen);

/* Listen on a tls:// URL (a TCP listener wrapped by tp_tls_listener). */
int tp_tls_listen(const tp_url_t *url, tp_tls_config_t *cfg,
                  tp_listener_t **out, char *err, size_t errlen);

/* Connect TCP to a tls:// URL and wrap it (the handshake is still to be
 * run with tp_handshake); the URL's host is the name checked. */
int tp_tls_connect(const tp_url_t *url, int timeout_ms, tp_tls_config_t *cfg,
                   tp_conn_t **out, char *err, size_t errlen);

#endif /* CELLAR_TP_TLS_H */
