/*
 * svc_acl.h - access control (issue 13): identities, roles and the ACL.
 *
 * Every connection has an identity, set by its transport after the
 * handshake (svc_conn_set_identity): a client certificate's subject CN or a
 * PSK identity (authenticated), or "anonymous" (plain TCP, UART, the
 * in-memory pair). An ACL maps identities to a role and, for writers,
 * optional path prefixes; one rule a line:
 *
 *   # comment
 *   IDENTITY ROLE [PREFIX...]
 *   alice   admin
 *   ci      writer /usr/app /usr/www
 *   *       reader              # any authenticated identity
 *   anonymous reader            # plain tcp:// and uart: clients
 *
 * Roles (each includes the one before; svc_perm_t of svc_core.h):
 *   reader  Hello, Ping, Stat, List, Open for reading, Read, Seek, Close,
 *           Hash, StatFs, Manifest, Verify without repair
 *   writer  + every other request but Format (writes, namespace changes,
 *           ManifestImport, updates, Backup, Restore, Verify --repair),
 *           each path the request writes inside one of its prefixes (none
 *           given = everywhere)
 *   admin   everything, Format included
 * Lookup: the rule of the identity itself, else (authenticated only) the
 * "*" rule, else none: no request at all, not even Hello. "*" never matches
 * anonymous; an identity has at most one rule. Without an ACL (cfg.acl
 * NULL) every connection is admin: the daemon allows that only on loopback
 * or with --insecure (docs/SECURITY.md).
 *
 * Portable device-side code: no OS calls, no allocation, no stdio; an ACL
 * is a fixed-size, caller-owned struct (limits in cellar_config.h).
 */
#ifndef CELLAR_SVC_ACL_H
#define CELLAR_SVC_ACL_H

#include <stddef.h>
#include <stdint.h>

#include "cellar_config.h"

/* Roles: the same numbers as svc_perm_t, so a role grants every permission
 * up to its own. */
enum {
    SVC_ROLE_NONE = 0,   /* no rule: nothing */
    SVC_ROLE_READER = 1,
    SVC_ROLE_WRITER = 2,
    SVC_ROLE_ADMIN = 3,
};

#define SVC_ACL_ANY "*"
#define SVC_ANONYMOUS "anonymous" /* tp.h TP_ANONYMOUS */

typedef struct svc_acl_rule {
    uint16_t line;       /* line of the ACL text (1-based): "ACL line N" */
    uint8_t role;        /* SVC_ROLE_* */
    uint8_t nprefix;     /* 0 = writes anywhere */
    uint16_t ident;      /* offset of the identity in pool */
    uint16_t prefix[SVC_ACL_MAX_PREFIXES]; /* offsets in pool: "/usr/app" */
} svc_acl_rule_t;

typedef struct svc_acl {
    uint32_t nrules;
    uint32_t used;       /* bytes of pool in use */
    svc_acl_rule_t rule[SVC_ACL_MAX_RULES];
    char pool[SVC_ACL_POOL_BYTES];
} svc_acl_t;

/* Parse ACL text (len bytes; NUL bytes are refused) into acl. Returns 0, or
 * -EINVAL (-22) with a message in err ("line 3: unknown role \"raeder\":
 * expected reader, writer or admin"); err may be NULL. acl is then empty
 * (nrules 0). Lines: '\n' or "\r\n"; '#' starts a comment (at the start of
 * a word); words are separated by spaces or tabs. An identity is 1 to
 * SVC_ACL_NAME_MAX bytes of printable UTF-8; PREFIX is an absolute path
 * inside /usr or /bak ("/" = everywhere) without ".", ".." or empty
 * components, at most SVC_ACL_NAME_MAX bytes; only writer rules take
 * prefixes. Built without CELLAR_WITH_ACL (issue 14): -ENOTSUP (-95) and
 * "access control (ACL) is not built into this device", always. */
int svc_acl_parse(svc_acl_t *acl, const char *text, size_t len, char *err,
                  size_t errlen);

/* The rule for identity (authenticated: not anonymous), or NULL. */
const svc_acl_rule_t *svc_acl_find(const svc_acl_t *acl, const char *identity,
                                   int authenticated);

/* Strings of a rule. */
static inline const char *svc_acl_ident(const svc_acl_t *acl,
                                        const svc_acl_rule_t *r)
{
    return acl->pool + r->ident;
}
static inline const char *svc_acl_prefix(const svc_acl_t *acl,
                                         const svc_acl_rule_t *r, unsigned i)
{
    return acl->pool + r->prefix[i];
}

/* "reader", "writer", "admin", "none". */
const char *svc_role_name(unsigned role);

#endif /* CELLAR_SVC_ACL_H */
