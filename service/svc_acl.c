/* svc_acl.c - access control (issue 13): the ACL parser, each connection's
 * identity and role, and the check dispatch makes before serving a request
 * (svc_acl.h, svc_int.h, docs/SECURITY.md). Device-side code: no OS calls,
 * no allocation, no stdio. Hand-written: the ACL format is ours and tiny;
 * no Debian library parses it. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

#define ACL_EINVAL (-22)
#define ACL_EACCES (-(int)cellar_Code_EACCES)

const char *svc_role_name(unsigned role)
{
    switch (role) {
    case SVC_ROLE_READER: return "reader";
    case SVC_ROLE_WRITER: return "writer";
    case SVC_ROLE_ADMIN: return "admin";
    default: return "none";
    }
}

/* ---- parsing ------------------------------------------------------------------ */
#if CELLAR_WITH_ACL /* issue 14: else a parser that refuses */

typedef struct acl_parser {
    svc_acl_t *acl;
    sb_t err;
    uint32_t line;
} acl_parser_t;

static int parse_fail(acl_parser_t *p, const char *what, const char *word,
                      size_t n, const char *tail)
{
    svc_sb_str(&p->err, "line ");
    svc_sb_u64(&p->err, p->line);
    svc_sb_str(&p->err, ": ");
    svc_sb_str(&p->err, what);
    if (word) {
        svc_sb_str(&p->err, " ");
        svc_sb_quoted(&p->err, word, n);
    }
    if (tail)
        svc_sb_str(&p->err, tail);
    return ACL_EINVAL;
}

/* The same with a limit of cellar_config.h after it: "<...> <n><unit>". */
static int parse_fail_n(acl_parser_t *p, const char *what, const char *word,
                        size_t n, const char *tail, uint64_t limit,
                        const char *unit)
{
    (void)parse_fail(p, what, word, n, tail);
    svc_sb_str(&p->err, " ");
    svc_sb_u64(&p->err, limit);
    svc_sb_str(&p->err, unit);
    return ACL_EINVAL;
}

/* Copy a word into the pool; returns its offset or -1 (full). */
static int pool_add(svc_acl_t *acl, const char *w, size_t n)
{
    if (acl->used + n + 1 > SVC_ACL_POOL_BYTES)
        return -1;
    uint32_t off = acl->used;
    memcpy(acl->pool + off, w, n);
    acl->pool[off + n] = 0;
    acl->used += (uint32_t)n + 1;
    return (int)off;
}

static bool word_eq(const char *w, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(w, lit, n) == 0;
}

/* Printable UTF-8 (no control bytes, no DEL). */
static bool printable(const char *w, size_t n)
{
    const uint8_t *u = (const uint8_t *)w;
    for (size_t i = 0; i < n;) {
        size_t k = svc_utf8_seq(u + i, n - i);
        if (!k || (k == 1 && (u[i] < 0x21 || u[i] == 0x7f)))
            return false;
        i += k;
    }
    return true;
}

/* A prefix: "/" or "/usr[/...]", "/bak[/...]", normalised. NULL = good,
 * else the reason. */
static const char *prefix_problem(const char *w, size_t n)
{
    if (n == 0 || w[0] != '/')
        return ": a prefix is an absolute path (\"/usr/app\")";
    if (!printable(w, n))
        return ": not printable UTF-8";
    if (n == 1)
        return NULL;
    if (w[n - 1] == '/')
        return ": no trailing \"/\" (write \"/usr/app\")";
    size_t i = 1, comp = 0;
    while (i <= n) {
        size_t st = i;
        while (i < n && w[i] != '/')
            i++;
        size_t cl = i - st;
        if (cl == 0)
            return ": empty path component (\"//\")";
        if ((cl == 1 && w[st] == '.') ||
            (cl == 2 && w[st] == '.' && w[st + 1] == '.'))
            return ": \".\" and \"..\" are not allowed";
        if (comp == 0) {
            bool part = false;
            for (uint32_t k = 0; k < SVC_MAX_PARTS; k++)
                part |= word_eq(w + st, cl, svc_part_names[k]);
            if (!part)
                return ": a prefix is inside /usr or /bak";
        }
        comp++;
        i++; /* past the '/' (or the end) */
    }
    return NULL;
}

/* The words of one line (up to 2 + SVC_ACL_MAX_PREFIXES; *extra when there
 * are more). */
typedef struct acl_words {
    const char *w[2 + SVC_ACL_MAX_PREFIXES];
    size_t n[2 + SVC_ACL_MAX_PREFIXES];
    uint32_t count;
    bool extra;
} acl_words_t;

static int split_line(acl_parser_t *p, const char *s, size_t len,
                      acl_words_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t i = 0;
    while (i < len) {
        char ch = s[i];
        if (ch == ' ' || ch == '\t') {
            i++;
            continue;
        }
        if (ch == '#')
            break; /* a comment to the end of the line */
        size_t st = i;
        while (i < len && s[i] != ' ' && s[i] != '\t')
            i++;
        for (size_t k = st; k < i; k++) {
            uint8_t u = (uint8_t)s[k];
            if (u < 0x20 || u == 0x7f) {
                char hex[8] = "0x00";
                static const char hx[] = "0123456789abcdef";
                hex[2] = hx[u >> 4];
                hex[3] = hx[u & 15];
                svc_sb_str(&p->err, "line ");
                svc_sb_u64(&p->err, p->line);
                svc_sb_str(&p->err, ": control byte ");
                svc_sb_str(&p->err, hex);
                svc_sb_str(&p->err, u ? " in the text" : " (NUL) in the text");
                return ACL_EINVAL;
            }
        }
        if (out->count == 2 + SVC_ACL_MAX_PREFIXES) {
            out->extra = true;
            break;
        }
        out->w[out->count] = s + st;
        out->n[out->count] = i - st;
        out->count++;
    }
    return 0;
}

static int parse_rule(acl_parser_t *p, const acl_words_t *ws)
{
    svc_acl_t *acl = p->acl;
    const char *id = ws->w[0];
    size_t idn = ws->n[0];
    if (idn > SVC_ACL_NAME_MAX) {
        return parse_fail_n(p, "identity", id, 40, " is longer than",
                            SVC_ACL_NAME_MAX, " bytes");
    }
    if (!printable(id, idn))
        return parse_fail(p, "identity", id, idn, " is not printable UTF-8");
    if (ws->count < 2)
        return parse_fail(p, "no role after", id, idn,
                          ": expected IDENTITY ROLE [PREFIX...] with ROLE "
                          "reader, writer or admin");
    const char *rw = ws->w[1];
    size_t rn = ws->n[1];
    uint8_t role = word_eq(rw, rn, "reader")   ? SVC_ROLE_READER
                 : word_eq(rw, rn, "writer") ? SVC_ROLE_WRITER
                 : word_eq(rw, rn, "admin")  ? SVC_ROLE_ADMIN
                                             : SVC_ROLE_NONE;
    if (role == SVC_ROLE_NONE)
        return parse_fail(p, "unknown role", rw, rn > 40 ? 40 : rn,
                          ": expected reader, writer or admin");
    uint32_t np = ws->count - 2;
    if (np && role != SVC_ROLE_WRITER)
        return parse_fail(p, "prefixes limit a writer's writes; a",
                          NULL, 0, role == SVC_ROLE_READER
                              ? " reader rule takes none (readers read "
                                "everything)"
                              : "n admin rule takes none (admins do "
                                "everything)");
    if (ws->extra)
        return parse_fail_n(p, "more than", NULL, 0, NULL,
                            SVC_ACL_MAX_PREFIXES, " prefixes in one rule");
    for (uint32_t i = 0; i < acl->nrules; i++) {
        const svc_acl_rule_t *o = &acl->rule[i];
        if (word_eq(id, idn, svc_acl_ident(acl, o))) {
            parse_fail(p, "a second rule for", id, idn, NULL);
            svc_sb_str(&p->err, " (the first is at line ");
            svc_sb_u64(&p->err, o->line);
            svc_sb_str(&p->err, "; one rule per identity)");
            return ACL_EINVAL;
        }
    }
    if (acl->nrules == SVC_ACL_MAX_RULES)
        return parse_fail_n(p, "more than", NULL, 0, NULL,
                            SVC_ACL_MAX_RULES, " rules");
    svc_acl_rule_t *r = &acl->rule[acl->nrules];
    memset(r, 0, sizeof(*r));
    r->line = (uint16_t)(p->line > UINT16_MAX ? UINT16_MAX : p->line);
    r->role = role;
    int off = pool_add(acl, id, idn);
    r->ident = (uint16_t)(off < 0 ? 0 : off);
    for (uint32_t i = 0; i < np && off >= 0; i++) {
        if (ws->n[2 + i] > SVC_ACL_NAME_MAX) {
            return parse_fail_n(p, "prefix", ws->w[2 + i], 40,
                                ": a prefix is at most", SVC_ACL_NAME_MAX,
                                " bytes");
        }
        const char *why = prefix_problem(ws->w[2 + i], ws->n[2 + i]);
        if (why)
            return parse_fail(p, "prefix", ws->w[2 + i],
                              ws->n[2 + i] > 40 ? 40 : ws->n[2 + i], why);
        off = pool_add(acl, ws->w[2 + i], ws->n[2 + i]);
        if (off >= 0)
            r->prefix[r->nprefix++] = (uint16_t)off;
    }
    if (off < 0)
        return parse_fail_n(p, "the identities and prefixes take more than",
                            NULL, 0, NULL, SVC_ACL_POOL_BYTES,
                            " bytes (SVC_ACL_POOL_BYTES)");
    acl->nrules++;
    return 0;
}

int svc_acl_parse(svc_acl_t *acl, const char *text, size_t len, char *err,
                  size_t errlen)
{
    char local[8];
    acl_parser_t p;
    memset(acl, 0, sizeof(*acl));
    p.acl = acl;
    p.line = 0;
    if (err && errlen >= 8)
        svc_sb_init(&p.err, err, errlen);
    else
        svc_sb_init(&p.err, local, sizeof(local));
    size_t i = 0;
    int rc = 0;
    while (i < len && !rc) {
        size_t st = i;
        while (i < len && text[i] != '\n')
            i++;
        size_t n = i - st;
        if (n && text[st + n - 1] == '\r')
            n--;
        p.line++;
        i++; /* past the '\n' */
        acl_words_t ws;
        rc = split_line(&p, text + st, n, &ws);
        if (!rc && ws.count)
            rc = parse_rule(&p, &ws);
    }
    if (rc) {
        memset(acl, 0, sizeof(*acl));
        return rc;
    }
    return 0;
}

#else
int svc_acl_parse(svc_acl_t *acl, const char *text, size_t len, char *err,
                  size_t errlen)
{
    (void)text;
    (void)len;
    memset(acl, 0, sizeof(*acl));
    if (err && errlen)
        svc_copy_str(err, errlen, "access control (ACL) is not built into this device");
    return SVC_ENOTSUP;
}
#endif

const svc_acl_rule_t *svc_acl_find(const svc_acl_t *acl, const char *identity,
                                   int authenticated)
{
    const svc_acl_rule_t *any = NULL;
    if (!acl)
        return NULL;
    if (!authenticated)
        identity = SVC_ANONYMOUS;
    for (uint32_t i = 0; i < acl->nrules; i++) {
        const svc_acl_rule_t *r = &acl->rule[i];
        const char *id = svc_acl_ident(acl, r);
        if (strcmp(id, SVC_ACL_ANY) == 0) {
            any = r;
            continue;
        }
        if (strcmp(id, identity) == 0)
            return r;
    }
    return authenticated ? any : NULL;
}

/* ---- connections ------------------------------------------------------------- */

static bool is_anonymous(const char *id)
{
    return !id || !id[0] || strcmp(id, SVC_ANONYMOUS) == 0;
}

/* The identity as shown in messages: as it is when it is a plain word,
 * else quoted. */
static void sb_ident(sb_t *b, const char *id)
{
    bool plain = id[0] != 0;
    for (const char *k = id; *k && plain; k++)
        plain = (*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
                (*k >= '0' && *k <= '9') || *k == '.' || *k == '-' ||
                *k == '_' || *k == '@' || *k == '*';
    if (plain)
        svc_sb_str(b, id);
    else
        svc_sb_qstr(b, id);
}

/* "alice (writer, ACL line 3)", "anonymous (no ACL rule)". */
static void sb_who(sb_t *b, const svc_t *s, const svc_conn_t *c)
{
    sb_ident(b, c->identity[0] ? c->identity : SVC_ANONYMOUS);
    svc_sb_str(b, " (");
    if (!s->cfg.acl) {
        svc_sb_str(b, svc_role_name(c->role));
        svc_sb_str(b, ", no ACL");
    } else if (!c->rule) {
        svc_sb_str(b, "no ACL rule");
    } else {
        svc_sb_str(b, svc_role_name(c->role));
        svc_sb_str(b, ", ACL line ");
        svc_sb_u64(b, c->rule->line);
    }
    svc_sb_str(b, ")");
}

void svc_acl_conn_init(svc_t *s, svc_conn_t *c, const char *identity)
{
    bool anon = is_anonymous(identity);
    /* an identity too long to keep is cut for messages, and never matches
     * a rule of its own (its cut form might name someone else): "*" */
    bool cut = !anon && strlen(identity) > SVC_ACL_NAME_MAX;
    svc_copy_str(c->identity, sizeof(c->identity), anon ? "" : identity);
    if (!CELLAR_WITH_ACL || !s->cfg.acl) { /* issue 14 */
        c->rule = NULL;
        c->role = SVC_ROLE_ADMIN;
    } else {
        c->rule = svc_acl_find(s->cfg.acl, cut ? "" : c->identity, !anon);
        c->role = c->rule ? c->rule->role : SVC_ROLE_NONE;
    }
}

void svc_conn_set_identity(svc_t *s, svc_conn_t *c, const char *identity)
{
    svc_acl_conn_init(s, c, identity);
    if (SVC_LOGS(s) && (s->cfg.acl || c->identity[0])) { /* else: as before */
        sb_t b = svc_log_begin(s, c);
        svc_sb_str(&b, "identity ");
        sb_who(&b, s, c);
        svc_log_end(s);
    }
}

uint32_t svc_acl_denials(const svc_t *s)
{
    return s->acl_denied;
}

void svc_acl_hello(const svc_t *s, const svc_conn_t *c, cellar_HelloReply *o)
{
    svc_copy_str(o->identity, sizeof(o->identity),
                 c->identity[0] ? c->identity : SVC_ANONYMOUS);
    svc_copy_str(o->role, sizeof(o->role), svc_role_name(c->role));
    o->prefixes_count = 0;
    if (!c->rule || !s->cfg.acl)
        return;
    for (uint32_t i = 0; i < c->rule->nprefix && i < 4; i++)
        svc_copy_str(o->prefixes[o->prefixes_count++], sizeof(o->prefixes[0]),
                     svc_acl_prefix(s->cfg.acl, c->rule, i));
}

/* ---- the check ----------------------------------------------------------------- */
#if CELLAR_WITH_ACL /* issue 14: else everyone is admin (svc_setup refuses an ACL) */

/* Is path (normalised, "/usr/a/b", "/usr", "/") inside one of the rule's
 * prefixes? */
static bool covered(const svc_acl_t *acl, const svc_acl_rule_t *r,
                    const char *path)
{
    if (!r->nprefix)
        return true;
    for (uint32_t i = 0; i < r->nprefix; i++) {
        const char *pf = svc_acl_prefix(acl, r, i);
        size_t n = strlen(pf);
        if (n == 1)
            return true; /* "/" */
        if (strncmp(path, pf, n) == 0 && (path[n] == 0 || path[n] == '/'))
            return true;
    }
    return false;
}

/* The path a request names first, as the client gave it (for a role's
 * refusal), or NULL. */
static const char *req_path(const cellar_Request *q)
{
    switch (q->which_body) {
    case cellar_Request_stat_tag: return q->body.stat.path;
    case cellar_Request_list_tag: return q->body.list.path;
    case cellar_Request_open_tag: return q->body.open.path;
    case cellar_Request_truncate_tag:
        return q->body.truncate.handle ? NULL : q->body.truncate.path;
    case cellar_Request_remove_tag: return q->body.remove.path;
    case cellar_Request_mkdir_tag: return q->body.mkdir.path;
    case cellar_Request_rmdir_tag: return q->body.rmdir.path;
    case cellar_Request_rename_tag: return q->body.rename.from;
    case cellar_Request_statfs_tag: return q->body.statfs.path;
    case cellar_Request_hash_tag: return q->body.hash.path;
    case cellar_Request_format_tag:
        return q->body.format.partition[0] ? q->body.format.partition
                                           : "/usr";
    default: return NULL;
    }
}

/* Refuse: EACCES naming the path (NULL: none), the identity, its role and
 * rule, and what it may not do (q: the request, for an admin-only one). */
static int deny_q(svc_t *s, svc_conn_t *c, svc_perm_t perm, const char *path,
                  bool all, const cellar_Request *q)
{
    sb_t b = svc_err_begin(s, ACL_EACCES);
    if (path && !all) {
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, path);
    }
    svc_sb_str(&b, ": ");
    sb_who(&b, s, c);
    svc_sb_str(&b, " may not ");
    svc_sb_str(&b, perm == SVC_PERM_READ    ? "read"
                   : perm == SVC_PERM_WRITE ? "write"
                   : !q || q->which_body == cellar_Request_format_tag
                       ? "format (admin only)"
                       : "change the device's settings (admin only)");
    if (all) {
        svc_sb_str(&b, " all of ");
        svc_sb_str(&b, path);
    }
    if (perm == SVC_PERM_WRITE && c->rule && c->rule->nprefix &&
        c->role >= SVC_ROLE_WRITER) {
        svc_sb_str(&b, all || !path ? "" : " there");
        svc_sb_str(&b, " (writes only under");
        for (uint32_t i = 0; i < c->rule->nprefix; i++) {
            svc_sb_str(&b, i ? ", " : " ");
            svc_sb_str(&b, svc_acl_prefix(s->cfg.acl, c->rule, i));
        }
        svc_sb_str(&b, ")");
    }
    s->acl_denied++;
    return ACL_EACCES;
}

static int deny(svc_t *s, svc_conn_t *c, svc_perm_t perm, const char *path,
                bool all)
{
    return deny_q(s, c, perm, path, all, NULL);
}

/* A path the request writes, as the client gave it. */
static int check_path(svc_t *s, svc_conn_t *c, const char *in)
{
    /* /sd (issue 15) is not svc_resolve's: it answered ENOENT "no such
     * partition" to a writer with prefixes. Prefixes lie in /usr or /bak,
     * so only "/" covers the card. */
    const char *w = in;
    while (*w == '/')
        w++;
    if (s->sd && in[0] == '/' && w[0] == 's' && w[1] == 'd' && (w[2] == 0 || w[2] == '/'))
        return covered(s->cfg.acl, c->rule, "/sd")
                   ? 0 : deny(s, c, SVC_PERM_WRITE, in, false);
    int err = svc_resolve(s, in, &s->acl_path);
    if (err)
        return err; /* the handler would refuse it the same way */
    if (!covered(s->cfg.acl, c->rule, s->acl_path.show))
        return deny(s, c, SVC_PERM_WRITE, s->acl_path.show, false);
    return 0;
}

/* A path inside /usr ("/a/b"; "/" = all of /usr). */
static int check_usr_rel(svc_t *s, svc_conn_t *c, const char *rel)
{
    char *show = s->acl_path.show;
    size_t n = strlen(rel);
    if (n + 5 > sizeof(s->acl_path.show))
        n = sizeof(s->acl_path.show) - 5;
    memcpy(show, "/usr", 4);
    if (rel[0] == '/' && rel[1] == 0) {
        show[4] = 0;
    } else {
        memcpy(show + 4, rel, n);
        show[4 + n] = 0;
    }
    if (!covered(s->cfg.acl, c->rule, show))
        return deny(s, c, SVC_PERM_WRITE, show, false);
    return 0;
}

/* A request that may write anywhere in where ("/usr", "/"). */
static int check_all(svc_t *s, svc_conn_t *c, const char *where)
{
    if (!covered(s->cfg.acl, c->rule, where))
        return deny(s, c, SVC_PERM_WRITE, where, true);
    return 0;
}

/* A file handle of c the request writes through. */
static int check_handle(svc_t *s, svc_conn_t *c, uint32_t id)
{
    for (uint32_t i = 0; i < SVC_MAX_HANDLES; i++)
        if (id && c->h[i].id == id)
            return covered(s->cfg.acl, c->rule, c->h[i].path)
                       ? 0 : deny(s, c, SVC_PERM_WRITE, c->h[i].path, false);
    return 0; /* no such handle: the handler says EBADF */
}

/* Backup and Restore paths: /usr or /bak paths naming the /usr path copied
 * (Backup) or written (Restore); none = all of /usr. */
static int check_copy(svc_t *s, svc_conn_t *c, const char (*paths)[256],
                      pb_size_t n)
{
    if (n == 0)
        return check_all(s, c, "/usr");
    for (pb_size_t i = 0; i < n; i++) {
        int err = svc_resolve(s, paths[i], &s->acl_path);
        if (err)
            return err;
        if (s->acl_path.part < 0)
            continue; /* "/": the handler refuses it */
        char rel[SVC_MAX_PATH + 2];
        strcpy(rel, s->acl_path.fs);
        err = check_usr_rel(s, c, rel);
        if (err)
            return err;
    }
    return 0;
}

/* UpdateCommit: every entry staged (some may have been declared by an
 * earlier connection of another rule, resuming the same bundle). */
static int check_staged(svc_t *s, svc_conn_t *c)
{
    txn_t *t = &s->tx;
    if (!t->active || s->tx_owner != c || !t->plan_open)
        return 0; /* the handler refuses it */
    man_entry_t *e = svc_me2_take(s); /* issue 14 */
    int err = 0;
    for (uint32_t i = 0; !err && i < t->declared; i++) {
        err = txn_entry(t, i, e);
        if (err)
            err = svc_fail_path(s, err, "/usr",
                                "cannot read the staged plan to check it "
                                "against the ACL");
        else
            err = check_usr_rel(s, c, e->path);
    }
    svc_me2_give(s);
    return err;
}

/* Every path a writer's request writes, against its prefixes. */
static int check_paths(svc_t *s, svc_conn_t *c, const cellar_Request *q)
{
    int err = 0;
    switch (q->which_body) {
    case cellar_Request_open_tag:
        return check_path(s, c, q->body.open.path);
    case cellar_Request_write_tag:
        return check_handle(s, c, q->body.write.handle);
    case cellar_Request_truncate_tag:
        return q->body.truncate.handle
                   ? check_handle(s, c, q->body.truncate.handle)
                   : check_path(s, c, q->body.truncate.path);
    case cellar_Request_remove_tag:
        return check_path(s, c, q->body.remove.path);
    case cellar_Request_mkdir_tag:
        return check_path(s, c, q->body.mkdir.path);
    case cellar_Request_rmdir_tag:
        return check_path(s, c, q->body.rmdir.path);
    case cellar_Request_rename_tag:
        err = check_path(s, c, q->body.rename.from);
        return err ? err : check_path(s, c, q->body.rename.to);
    case cellar_Request_manifest_import_tag:
        for (pb_size_t i = 0; i < q->body.manifest_import.entries_count &&
                              !err; i++)
            err = check_path(s, c, q->body.manifest_import.entries[i].path);
        return err;
    case cellar_Request_update_declare_tag:
        for (pb_size_t i = 0; i < q->body.update_declare.entries_count &&
                              !err; i++)
            err = check_path(s, c, q->body.update_declare.entries[i].path);
        return err;
    case cellar_Request_update_commit_tag:
        return check_staged(s, c);
    case cellar_Request_verify_tag: /* repair: any file of /usr */
        return check_all(s, c, "/usr");
    case cellar_Request_backup_tag:
        return check_copy(s, c, q->body.backup.paths,
                          q->body.backup.paths_count);
    case cellar_Request_restore_tag:
        return check_copy(s, c, q->body.restore.paths,
                          q->body.restore.paths_count);
    case cellar_Request_sync_tag:         /* durability only */
    case cellar_Request_update_begin_tag: /* staging: nothing written yet */
    case cellar_Request_update_write_tag: /* into a declared entry */
    case cellar_Request_update_abort_tag: /* drops the staging only */
        return 0;
    default: /* a request this check does not know: the whole device */
        return check_all(s, c, "/");
    }
}

int svc_acl_check(svc_t *s, svc_conn_t *c, const cellar_Request *q,
                  svc_perm_t perm)
{
    if (perm == SVC_PERM_NONE)
        return 0; /* not a request: the handler answers */
    if (c->role < (uint8_t)perm)
        return deny_q(s, c, perm, req_path(q), false, q);
    if (perm != SVC_PERM_WRITE || !c->rule || !c->rule->nprefix)
        return 0;
    CFS_ASSERT(!s->acl_in); /* issue 14: acl_path is pb (svc_core.h) */
    s->acl_in = 1;
    int err = check_paths(s, c, q);
    s->acl_in = 0;
    return err;
}
#else
int svc_acl_check(svc_t *s, svc_conn_t *c, const cellar_Request *q,
                  svc_perm_t perm)
{
    (void)s;
    (void)c;
    (void)q;
    (void)perm;
    return 0;
}
#endif
