/*
 * common/csha.h - SHA-256 for the service and libcellar, header only.
 * service/common/ holds what both ends of the protocol share below the
 * codec (the device build and libcellar include it as "common/csha.h").
 *
 * On the host: OpenSSL's libcrypto (EVP), which uses the CPU's SHA
 * instructions where there are any: about 6x mbedTLS's C code here, and
 * hashing is most of the work of a verified transfer. On the device
 * (CELLAR_PROFILE_DEVICE, cellar_config.h): mbedTLS, no allocation.
 *
 *   csha_init(&s);  csha_start(&s);  csha_update(&s, p, n)...;
 *   csha_finish(&s, out);  [csha_start again to reuse];  csha_free(&s);
 * Every call returns 0 or -1.
 */
#ifndef CELLAR_CSHA_H
#define CELLAR_CSHA_H

#include <stddef.h>
#include <stdint.h>

#include "cellar_config.h"

#ifdef CELLAR_PROFILE_DEVICE
#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

typedef struct csha {
    mbedtls_sha256_context m;
} csha_t;

static inline void csha_init(csha_t *s) { mbedtls_sha256_init(&s->m); }
#if MBEDTLS_VERSION_MAJOR >= 3
static inline int csha_start(csha_t *s) { return mbedtls_sha256_starts(&s->m, 0) ? -1 : 0; }
static inline int csha_update(csha_t *s, const void *p, size_t n)
{
    return mbedtls_sha256_update(&s->m, p, n) ? -1 : 0;
}
static inline int csha_finish(csha_t *s, uint8_t out[32])
{
    return mbedtls_sha256_finish(&s->m, out) ? -1 : 0;
}
#else
static inline int csha_start(csha_t *s) { return mbedtls_sha256_starts_ret(&s->m, 0) ? -1 : 0; }
static inline int csha_update(csha_t *s, const void *p, size_t n)
{
    return mbedtls_sha256_update_ret(&s->m, p, n) ? -1 : 0;
}
static inline int csha_finish(csha_t *s, uint8_t out[32])
{
    return mbedtls_sha256_finish_ret(&s->m, out) ? -1 : 0;
}
#endif
static inline void csha_free(csha_t *s) { mbedtls_sha256_free(&s->m); }

#else /* host */
#include <openssl/evp.h>

typedef struct csha {
    EVP_MD_CTX *ctx;
} csha_t;

static inline void csha_init(csha_t *s) { s->ctx = NULL; }
static inline int csha_start(csha_t *s)
{
    if (!s->ctx && !(s->ctx = EVP_MD_CTX_new()))
        return -1;
    return EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) == 1 ? 0 : -1;
}
static inline int csha_update(csha_t *s, const void *p, size_t n)
{
    return s->ctx && EVP_DigestUpdate(s->ctx, p, n) == 1 ? 0 : -1;
}
static inline int csha_finish(csha_t *s, uint8_t out[32])
{
    unsigned int len = 0;
    return s->ctx && EVP_DigestFinal_ex(s->ctx, out, &len) == 1 && len == 32 ? 0 : -1;
}
static inline void csha_free(csha_t *s)
{
    EVP_MD_CTX_free(s->ctx);
    s->ctx = NULL;
}
#endif

#endif /* CELLAR_CSHA_H */
