/*
 * cli_pki.h - `cellar pki` (issue 13): a CA, device and client certificates
 * and PSK lines, made with mbedTLS's key and X.509 writers (EC P-256,
 * ECDSA-SHA256). Files in DIR: ca.key/ca.crt, NAME.key/NAME.crt (PEM; keys
 * mode 0600). Existing files are never overwritten.
 */
#ifndef CELLAR_CLI_PKI_H
#define CELLAR_CLI_PKI_H

#include <stddef.h>

enum { PKI_CA, PKI_DEVICE, PKI_CLIENT };

/* Make DIR/NAME.key + DIR/NAME.crt (PKI_CA: DIR/ca.key + DIR/ca.crt, name
 * is the CA's CN; DIR is created). Device and client certificates are
 * signed by DIR/ca.*. not_before / not_after are "YYYYMMDDhhmmss" (UTC) or
 * NULL for now - 1 h and now + days. Returns 0 or a negative errno with a
 * reason in err. */
int pki_issue(const char *dir, const char *name, int kind,
              const char *not_before, const char *not_after, unsigned days,
              char *err, size_t errlen);

/* A random 32-byte key as "NAME HEX" (the --psk-file line) in out.
 * Returns 0 or a negative errno. */
int pki_psk_line(const char *name, char *out, size_t cap);

#endif /* CELLAR_CLI_PKI_H */
