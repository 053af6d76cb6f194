/* test_acl.c - access control (issue 13, docs/SECURITY.md): the ACL
 * parser and its errors; a reader trying every write request of the
 * dispatch table (every Request.body member of the proto, so a new request
 * type cannot be forgotten); a writer with prefixes sending every writing
 * request of the proto outside them; a writer outside its prefixes
 * (Rename across prefixes, bundles, a bundle resumed from another rule,
 * Backup and Restore paths, repair); a writer trying Format; connections
 * with different roles at once; the loop handing a transport's identity
 * over; anonymous, "*" and no ACL. Every denial is counted and changes
 * nothing on the flash (its bytes compared). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pb_common.h"
#include "loop.h"
#include "svc_acl.h"
#include "svc_rig.h"
#include "tp.h"

#define BLOCKS 256u
#define EACCES_ 13

static rig_t rig;
static svc_acl_t acl;
static long denials; /* EACCES replies seen by this test */

/* ---- the parser ----------------------------------------------------------------- */

static int parse(const char *text, char *err, size_t cap)
{
    err[0] = 0;
    return svc_acl_parse(&acl, text, strlen(text), err, cap);
}

/* A bad ACL is refused with the line and the words given. */
static void bad(const char *text, const char *want1, const char *want2)
{
    char err[200];
    int rc = parse(text, err, sizeof(err));
    CHECK_EQ(rc, -22);
    CHECK_EQ(acl.nrules, 0);
    CHECK(strstr(err, want1) != NULL);
    if (want2)
        CHECK(strstr(err, want2) != NULL);
    if (!strstr(err, want1) || (want2 && !strstr(err, want2)))
        fprintf(stderr, "  acl error was: %s\n", err);
}

static void test_parse(void)
{
    char err[200];
    const char *good =
        "# cellar ACL\r\n"
        "\n"
        "admin1   admin\n"
        "alice\treader   # the auditor\r\n"
        "w1 writer /usr/app /usr/www\n"
        "   wall writer /\n"
        "* reader\n"
        "caf\xc3\xa9 writer /usr\n";
    CHECK_EQ(parse(good, err, sizeof(err)), 0);
    CHECK_EQ(acl.nrules, 6);
    const svc_acl_rule_t *r = svc_acl_find(&acl, "w1", 1);
    CHECK(r != NULL);
    if (r) {
        CHECK_EQ(r->line, 5);
        CHECK_EQ(r->role, SVC_ROLE_WRITER);
        CHECK_EQ(r->nprefix, 2);
        CHECK(strcmp(svc_acl_prefix(&acl, r, 0), "/usr/app") == 0);
        CHECK(strcmp(svc_acl_prefix(&acl, r, 1), "/usr/www") == 0);
        CHECK(strcmp(svc_acl_ident(&acl, r), "w1") == 0);
    }
    r = svc_acl_find(&acl, "alice", 1);
    CHECK(r && r->line == 4 && r->role == SVC_ROLE_READER && !r->nprefix);
    r = svc_acl_find(&acl, "admin1", 1);
    CHECK(r && r->line == 3 && r->role == SVC_ROLE_ADMIN);
    r = svc_acl_find(&acl, "caf\xc3\xa9", 1);
    CHECK(r && r->line == 8 && r->nprefix == 1);
    /* "*": any authenticated identity, never anonymous */
    r = svc_acl_find(&acl, "bob", 1);
    CHECK(r && r->line == 7 && r->role == SVC_ROLE_READER);
    CHECK(svc_acl_find(&acl, "bob", 0) == NULL);
    CHECK(svc_acl_find(&acl, "anonymous", 0) == NULL);
    /* an anonymous rule */
    CHECK_EQ(parse("anonymous reader\n* writer /usr/x\n", err, sizeof(err)),
             0);
    r = svc_acl_find(&acl, "", 0);
    CHECK(r && r->line == 1 && r->role == SVC_ROLE_READER);
    r = svc_acl_find(&acl, "carol", 1);
    CHECK(r && r->line == 2 && r->role == SVC_ROLE_WRITER);
    /* empty and comment-only files: no rules (nobody gets anything) */
    CHECK_EQ(parse("", err, sizeof(err)), 0);
    CHECK_EQ(acl.nrules, 0);
    CHECK_EQ(parse("# nothing\n   \n\t# still nothing", err, sizeof(err)), 0);
    CHECK_EQ(acl.nrules, 0);
    /* no newline at the end */
    CHECK_EQ(parse("x admin", err, sizeof(err)), 0);
    CHECK_EQ(acl.nrules, 1);
    /* 32 rules fit */
    char big[4096];
    size_t n = 0;
    for (int i = 0; i < 32; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "id%d reader\n", i);
    CHECK_EQ(parse(big, err, sizeof(err)), 0);
    CHECK_EQ(acl.nrules, 32);

    /* bad files: the line number and what is wrong */
    bad("alice admin\nbob raeder\n", "line 2: unknown role \"raeder\"",
        "reader, writer or admin");
    bad("# x\n\nalice\n", "line 3: no role after \"alice\"", NULL);
    bad("alice reader /usr/app\n", "line 1: prefixes limit", "reader rule");
    bad("a admin\nalice admin /usr\n", "line 2:", "admin rule takes none");
    bad("w writer usr/app\n", "line 1: prefix \"usr/app\"", "absolute");
    bad("w writer /usr/app/\n", "prefix \"/usr/app/\"", "trailing");
    bad("w writer /usr//app\n", "prefix \"/usr//app\"", "empty");
    bad("w writer /usr/../etc\n", "prefix \"/usr/../etc\"", "\"..\"");
    bad("w writer /usr/./x\n", "prefix \"/usr/./x\"", "\".\"");
    bad("w writer /etc\n", "prefix \"/etc\"", "inside /usr or /bak");
    bad("w writer /usr/a /usr/b /usr/c /usr/d /usr/e\n",
        "line 1: more than 4 prefixes", NULL);
    bad("alice admin\nbob reader\nalice reader\n",
        "line 3: a second rule for \"alice\"", "first is at line 1");
    bad("* reader\n*   admin\n", "line 2: a second rule for \"*\"", NULL);
    bad("a\x01 reader\n", "line 1: control byte 0x01", NULL);
    {
        static const char nul[] = "a reader\nb\0 reader\n";
        CHECK_EQ(svc_acl_parse(&acl, nul, sizeof(nul) - 1, err, sizeof(err)),
                 -22);
        CHECK(strstr(err, "line 2: control byte 0x00 (NUL)") != NULL);
    }
    char longid[100];
    memset(longid, 'x', 64);
    strcpy(longid + 64, " reader\n");
    bad(longid, "line 1: identity", "longer than 63 bytes");
    char longpf[120] = "w writer /usr/";
    memset(longpf + 14, 'p', 60);
    strcpy(longpf + 74, "\n");
    bad(longpf, "line 1: prefix", "at most 63 bytes");
    bad("w writer /usr/\xff\n", "line 1: prefix", "UTF-8");
    n = 0;
    for (int i = 0; i < 33; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "id%d reader\n", i);
    bad(big, "line 33: more than 32 rules", NULL);
    /* the pool: 20 rules of 4 long prefixes */
    n = 0;
    for (int i = 0; i < 20; i++) {
        n += (size_t)snprintf(big + n, sizeof(big) - n, "w%d writer", i);
        for (int k = 0; k < 4; k++)
            n += (size_t)snprintf(big + n, sizeof(big) - n,
                                  " /usr/%040d", i * 4 + k);
        big[n++] = '\n';
        big[n] = 0;
    }
    bad(big, "more than 2048 bytes", NULL);
    /* a NULL or tiny err buffer is fine */
    CHECK_EQ(svc_acl_parse(&acl, "x y", 3, NULL, 0), -22);
    CHECK_EQ(svc_acl_parse(&acl, "x y", 3, err, 3), -22);
}

/* ---- the service with an ACL ------------------------------------------------------ */

static const char *const ACL_TEXT =
    "# test ACL\n"
    "admin1 admin\n"                          /* line 2 */
    "alice reader\n"                          /* line 3 */
    "w1 writer /usr/app /usr/www\n"           /* line 4 */
    "wall writer\n"                           /* line 5 */
    "* reader\n";                             /* line 6 */

static uint8_t *snap;

static void snapshot(void)
{
    size_t size = (size_t)BLOCKS * 4096u;
    free(snap);
    snap = malloc(size);
    memcpy(snap, flash_sim_data(rig.sim), size);
}

/* Nothing on the flash changed since snapshot(). */
static bool unchanged(void)
{
    return memcmp(snap, flash_sim_data(rig.sim), (size_t)BLOCKS * 4096u) == 0;
}

static void as(svc_conn_t *c, const char *identity)
{
    svc_conn_set_identity(&rig.svc, c, identity);
}

/* Expect EACCES with these words in the message. */
static void denied(int rc, const char *w1, const char *w2)
{
    CHECK_EQ(rc, EACCES_);
    if (rc == EACCES_)
        denials++;
    const char *m = rig.rs.error.message;
    CHECK(strstr(m, w1) != NULL);
    if (w2)
        CHECK(strstr(m, w2) != NULL);
    if (!strstr(m, w1) || (w2 && !strstr(m, w2)))
        fprintf(stderr, "  message was: %s\n", m);
}

static void ok(int rc)
{
    CHECK_EQ(rc, 0);
    if (rc)
        fprintf(stderr, "  error was: %s\n", rig.rs.error.message);
}

static int open_w(svc_conn_t *c, const char *path, uint32_t *h)
{
    rig_req(&rig, cellar_Request_open_tag);
    strcpy(rig.rq.body.open.path, path);
    rig.rq.body.open.flags = cellar_OpenFlags_O_WRITE |
                             cellar_OpenFlags_O_CREATE;
    int rc = rig_call(&rig, c);
    if (!rc && h)
        *h = rig.rs.body.open.handle;
    return rc;
}

static int rename_(svc_conn_t *c, const char *from, const char *to)
{
    rig_req(&rig, cellar_Request_rename_tag);
    strcpy(rig.rq.body.rename.from, from);
    strcpy(rig.rq.body.rename.to, to);
    return rig_call(&rig, c);
}

static int hello(svc_conn_t *c)
{
    rig_req(&rig, cellar_Request_hello_tag);
    rig.rq.body.hello.version = 1;
    return rig_call(&rig, c);
}

static bool exists(const char *path)
{
    as(&rig.b, "admin1");
    return rig_path_op(&rig, &rig.b, cellar_Request_stat_tag, path) == 0;
}

static void setup_files(void)
{
    as(&rig.b, "admin1");
    ok(rig_path_op(&rig, &rig.b, cellar_Request_mkdir_tag, "/usr/app/d"));
    ok(rig_path_op(&rig, &rig.b, cellar_Request_mkdir_tag, "/usr/etc"));
    ok(rig_put(&rig, &rig.b, "/usr/app/a", "app a", 5));
    ok(rig_put(&rig, &rig.b, "/usr/etc/conf", "conf", 4));
    rig_req(&rig, cellar_Request_backup_tag);
    ok(rig_call(&rig, &rig.b));
}

/* Fill the paths a request of type tag carries (so a refusal can name
 * one); other fields stay zero. The check comes before the handler, so
 * a refused request never needs more. */
static void fill(cellar_Request *q, uint32_t tag, const char *path)
{
    memset(q, 0, sizeof(*q));
    q->which_body = (pb_size_t)tag;
    switch (tag) {
    case cellar_Request_open_tag:
        strcpy(q->body.open.path, path);
        q->body.open.flags = cellar_OpenFlags_O_WRITE;
        break;
    case cellar_Request_truncate_tag: strcpy(q->body.truncate.path, path); break;
    case cellar_Request_remove_tag: strcpy(q->body.remove.path, path); break;
    case cellar_Request_mkdir_tag: strcpy(q->body.mkdir.path, path); break;
    case cellar_Request_rmdir_tag: strcpy(q->body.rmdir.path, path); break;
    case cellar_Request_rename_tag:
        strcpy(q->body.rename.from, path);
        strcpy(q->body.rename.to, "/usr/etc/moved");
        break;
    case cellar_Request_format_tag:
        strcpy(q->body.format.partition, "*");
        q->body.format.confirm = true;
        break;
    case cellar_Request_verify_tag: q->body.verify.repair = true; break;
    case cellar_Request_manifest_import_tag:
        strcpy(q->body.manifest_import.entries[0].path, path);
        q->body.manifest_import.entries_count = 1;
        break;
    case cellar_Request_update_declare_tag:
        strcpy(q->body.update_declare.entries[0].path, path);
        q->body.update_declare.entries[0].remove = true;
        q->body.update_declare.entries_count = 1;
        break;
    case cellar_Request_backup_tag: break; /* all */
    case cellar_Request_restore_tag: break; /* all */
    default: break;
    }
}

/* A reader tries every request of the proto that needs more than reading;
 * every read request is let through. Returns the number refused. */
static void test_reader_every_write(void)
{
    as(&rig.a, "alice");
    snapshot();
    uint32_t before = svc_acl_denials(&rig.svc);
    long mine = 0, types = 0, reads = 0;
    cellar_Request q;
    pb_field_iter_t it;
    memset(&q, 0, sizeof(q));
    CHECK(pb_field_iter_begin(&it, cellar_Request_fields, &q));
    do {
        if (PB_HTYPE(it.type) != PB_HTYPE_ONEOF)
            continue;
        uint32_t tag = it.tag;
        types++;
        fill(&rig.rq, tag, "/usr/etc/conf");
        svc_perm_t perm = svc_request_perm(tag, &rig.rq);
        CHECK(perm != SVC_PERM_NONE);
        rig.rq.id = 0;
        int rc = rig_call(&rig, &rig.a);
        if (perm >= SVC_PERM_WRITE) {
            denied(rc, "alice (reader, ACL line 3) may not ",
                   perm != SVC_PERM_ADMIN ? "write"
                   : tag == cellar_Request_format_tag
                       ? "format (admin only)"
                       : "change the device's settings (admin only)");
            mine++;
            if (tag == cellar_Request_remove_tag)
                CHECK(strstr(rig.rs.error.message,
                             "remove \"/usr/etc/conf\": alice") != NULL);
        } else {
            reads++;
            CHECK(rc != EACCES_); /* may fail otherwise (no such handle) */
        }
        /* the read forms of Open and Verify are let through */
        if (tag == cellar_Request_open_tag) {
            rig_req(&rig, cellar_Request_open_tag);
            strcpy(rig.rq.body.open.path, "/usr/etc/conf");
            rig.rq.body.open.flags = cellar_OpenFlags_O_READ;
            CHECK_EQ(svc_request_perm(tag, &rig.rq), SVC_PERM_READ);
            ok(rig_call(&rig, &rig.a));
            uint32_t h = rig.rs.body.open.handle;
            /* writes through a read handle: refused by role first */
            rig_req(&rig, cellar_Request_write_tag);
            rig.rq.body.write.handle = h;
            rig.rq.body.write.data.size = 1;
            denied(rig_call(&rig, &rig.a), "alice (reader", "may not write");
            mine++;
            rig_req(&rig, cellar_Request_close_tag);
            rig.rq.body.close.handle = h;
            ok(rig_call(&rig, &rig.a));
            static const uint32_t wflags[] = {
                cellar_OpenFlags_O_CREATE, cellar_OpenFlags_O_TRUNC,
                cellar_OpenFlags_O_APPEND,
            };
            for (int k = 0; k < 3; k++) {
                rig_req(&rig, cellar_Request_open_tag);
                strcpy(rig.rq.body.open.path, "/usr/etc/conf");
                rig.rq.body.open.flags = cellar_OpenFlags_O_READ | wflags[k];
                denied(rig_call(&rig, &rig.a), "alice (reader", "may not write");
                mine++;
            }
        }
        if (tag == cellar_Request_verify_tag) {
            rig_req(&rig, cellar_Request_verify_tag);
            ok(rig_call(&rig, &rig.a));
            CHECK(rig.rs.body.verify.checked > 0);
        }
    } while (pb_field_iter_next(&it));
    CHECK(types >= 28);
    CHECK(reads >= 10);
    CHECK(mine >= 18);
    CHECK_EQ(svc_acl_denials(&rig.svc) - before, (uint32_t)mine);
    CHECK(unchanged()); /* nothing written by any of them */
    CHECK(rig_log_has(&rig, "alice (reader, ACL line 3) may not write"));
    /* what it read is intact */
    uint8_t *data;
    uint32_t n;
    ok(rig_get(&rig, &rig.a, "/usr/etc/conf", &data, &n));
    CHECK(n == 4 && memcmp(data, "conf", 4) == 0);
    free(data);
}

/* A writer limited to /usr/app and /usr/www sends every writing request
 * of the proto aimed at /usr/etc/conf: each is refused and changes
 * nothing, except the ones that name no live path (they write nothing
 * outside: staging, a handle it does not have). A new request type falls
 * to the check's default (a writer allowed everywhere) and is refused
 * here too. */
static void test_writer_every_write(void)
{
    static const uint32_t pathless[] = {
        cellar_Request_write_tag,        /* handle 0: none */
        cellar_Request_sync_tag,
        cellar_Request_update_begin_tag,
        cellar_Request_update_write_tag,
        cellar_Request_update_commit_tag, /* nothing staged by it */
        cellar_Request_update_abort_tag,
    };
    cellar_Request q;
    pb_field_iter_t it;
    long refused = 0, let = 0;
    memset(&q, 0, sizeof(q));
    CHECK(pb_field_iter_begin(&it, cellar_Request_fields, &q));
    do {
        if (PB_HTYPE(it.type) != PB_HTYPE_ONEOF)
            continue;
        uint32_t tag = it.tag;
        as(&rig.a, "w1");
        fill(&rig.rq, tag, "/usr/etc/conf");
        svc_perm_t perm = svc_request_perm(tag, &rig.rq);
        if (perm < SVC_PERM_WRITE)
            continue;
        bool free_ = false;
        for (size_t k = 0; k < sizeof(pathless) / sizeof(pathless[0]); k++)
            free_ |= pathless[k] == tag;
        snapshot();
        uint32_t before = svc_acl_denials(&rig.svc);
        int rc = rig_call(&rig, &rig.a);
        if (free_) {
            let++;
            CHECK(rc != EACCES_);
            CHECK_EQ(svc_acl_denials(&rig.svc), before);
            continue;
        }
        refused++;
        denied(rc, "w1 (writer, ACL line 4) may not ", NULL);
        CHECK_EQ(svc_acl_denials(&rig.svc) - before, 1);
        CHECK(unchanged());
        if (perm == SVC_PERM_WRITE)
            CHECK(strstr(rig.rs.error.message,
                         "(writes only under /usr/app, /usr/www)") != NULL);
    } while (pb_field_iter_next(&it));
    CHECK_EQ(let, 6);
    CHECK(refused >= 12);
    as(&rig.b, "admin1");
    rig_req(&rig, cellar_Request_update_abort_tag);
    ok(rig_call(&rig, &rig.b));
    CHECK(exists("/usr/etc/conf"));
}

static void test_writer_prefixes(void)
{
    svc_conn_t *w = &rig.a;
    as(w, "w1");
    uint32_t h = 0;
    /* inside: allowed */
    ok(open_w(w, "/usr/app/new", &h));
    rig_req(&rig, cellar_Request_write_tag);
    rig.rq.body.write.handle = h;
    rig.rq.body.write.data.size = 2;
    memcpy(rig.rq.body.write.data.bytes, "hi", 2);
    ok(rig_call(&rig, w));
    rig_req(&rig, cellar_Request_close_tag);
    rig.rq.body.close.handle = h;
    ok(rig_call(&rig, w));
    ok(rig_path_op(&rig, w, cellar_Request_mkdir_tag, "/usr/www/s"));
    ok(rename_(w, "/usr/app/new", "/usr/www/new")); /* between prefixes */
    ok(rename_(w, "/usr/www/new", "app/new2"));     /* relative = /usr/... */
    CHECK(exists("/usr/app/new2"));

    as(w, "w1");
    snapshot();
    uint32_t before = svc_acl_denials(&rig.svc);
    long d0 = denials;
    /* outside */
    denied(open_w(w, "/usr/etc/x", NULL),
           "open \"/usr/etc/x\": w1 (writer, ACL line 4) may not write there",
           "(writes only under /usr/app, /usr/www)");
    denied(open_w(w, "/usr/apple", NULL), "\"/usr/apple\"", NULL);
    denied(open_w(w, "/usr/ap", NULL), "\"/usr/ap\"", NULL);
    denied(open_w(w, "etc/rel", NULL), "\"/usr/etc/rel\"", NULL);
    denied(open_w(w, "//usr///etc//x", NULL), "\"/usr/etc/x\"", NULL);
    denied(rig_path_op(&rig, w, cellar_Request_remove_tag, "/usr/etc/conf"),
           "remove \"/usr/etc/conf\"", NULL);
    denied(rig_path_op(&rig, w, cellar_Request_rmdir_tag, "/usr/etc"),
           "rmdir \"/usr/etc\"", NULL);
    denied(rig_path_op(&rig, w, cellar_Request_mkdir_tag, "/usr/etc/sub"),
           "mkdir", NULL);
    denied(rig_path_op(&rig, w, cellar_Request_remove_tag, "/usr"),
           "\"/usr\"", NULL);
    /* Rename: both ends are checked */
    denied(rename_(w, "/usr/app/a", "/usr/etc/a"), "\"/usr/etc/a\"", NULL);
    denied(rename_(w, "/usr/etc/conf", "/usr/app/conf"), "\"/usr/etc/conf\"",
           NULL);
    denied(rename_(w, "/usr/app", "/usr/app2"), "\"/usr/app2\"", NULL);
    /* Truncate by path; ManifestImport entries */
    rig_req(&rig, cellar_Request_truncate_tag);
    strcpy(rig.rq.body.truncate.path, "/usr/etc/conf");
    denied(rig_call(&rig, w), "truncate \"/usr/etc/conf\"", NULL);
    rig_req(&rig, cellar_Request_manifest_import_tag);
    rig.rq.body.manifest_import.entries_count = 2;
    strcpy(rig.rq.body.manifest_import.entries[0].path, "/usr/app/a");
    strcpy(rig.rq.body.manifest_import.entries[1].path, "/usr/etc/conf");
    denied(rig_call(&rig, w), "\"/usr/etc/conf\"", NULL);
    /* Backup / Restore: each path, none = all of /usr; repair: all */
    rig_req(&rig, cellar_Request_backup_tag);
    denied(rig_call(&rig, w), "may not write all of /usr", NULL);
    rig_req(&rig, cellar_Request_restore_tag);
    denied(rig_call(&rig, w), "may not write all of /usr", NULL);
    rig_req(&rig, cellar_Request_restore_tag);
    rig.rq.body.restore.paths_count = 2;
    strcpy(rig.rq.body.restore.paths[0], "/bak/app/a");
    strcpy(rig.rq.body.restore.paths[1], "/bak/etc/conf");
    denied(rig_call(&rig, w), "\"/usr/etc/conf\"", NULL);
    rig_req(&rig, cellar_Request_backup_tag);
    rig.rq.body.backup.paths_count = 1;
    strcpy(rig.rq.body.backup.paths[0], "/usr/etc");
    denied(rig_call(&rig, w), "\"/usr/etc\"", NULL);
    rig_req(&rig, cellar_Request_verify_tag);
    rig.rq.body.verify.repair = true;
    denied(rig_call(&rig, w), "may not write all of /usr", NULL);
    /* Format: admin only */
    rig_req(&rig, cellar_Request_format_tag);
    strcpy(rig.rq.body.format.partition, "/usr");
    rig.rq.body.format.confirm = true;
    denied(rig_call(&rig, w),
           "format \"/usr\": w1 (writer, ACL line 4) may not format "
           "(admin only)", NULL);
    CHECK_EQ(svc_acl_denials(&rig.svc) - before, (uint32_t)(denials - d0));
    CHECK(unchanged());
    CHECK(exists("/usr/etc/conf") && exists("/usr/app/a"));
    CHECK(!exists("/usr/etc/x") && !exists("/usr/apple"));

    /* inside, the same requests work */
    as(w, "w1");
    rig_req(&rig, cellar_Request_backup_tag);
    rig.rq.body.backup.paths_count = 1;
    strcpy(rig.rq.body.backup.paths[0], "/usr/app");
    ok(rig_call(&rig, w));
    rig_req(&rig, cellar_Request_restore_tag);
    rig.rq.body.restore.paths_count = 1;
    strcpy(rig.rq.body.restore.paths[0], "/bak/app/a");
    ok(rig_call(&rig, w));
    /* a writer without prefixes writes anywhere, but does not format */
    as(w, "wall");
    ok(open_w(w, "/usr/etc/y", &h));
    rig_req(&rig, cellar_Request_close_tag);
    rig.rq.body.close.handle = h;
    ok(rig_call(&rig, w));
    rig_req(&rig, cellar_Request_verify_tag);
    rig.rq.body.verify.repair = true;
    ok(rig_call(&rig, w));
    rig_req(&rig, cellar_Request_format_tag);
    rig.rq.body.format.confirm = true;
    denied(rig_call(&rig, w), "wall (writer, ACL line 5) may not format",
           NULL);
}

static int begin(svc_conn_t *c, uint8_t id, uint32_t entries)
{
    rig_req(&rig, cellar_Request_update_begin_tag);
    rig.rq.body.update_begin.bundle.size = 32;
    memset(rig.rq.body.update_begin.bundle.bytes, id, 32);
    rig.rq.body.update_begin.entries = entries;
    return rig_call(&rig, c);
}

static void declare_rm(uint8_t id, uint32_t first, const char *a,
                       const char *b)
{
    rig_req(&rig, cellar_Request_update_declare_tag);
    rig.rq.body.update_declare.bundle.size = 32;
    memset(rig.rq.body.update_declare.bundle.bytes, id, 32);
    rig.rq.body.update_declare.first = first;
    pb_size_t n = 0;
    strcpy(rig.rq.body.update_declare.entries[n].path, a);
    rig.rq.body.update_declare.entries[n++].remove = true;
    if (b) {
        strcpy(rig.rq.body.update_declare.entries[n].path, b);
        rig.rq.body.update_declare.entries[n++].remove = true;
    }
    rig.rq.body.update_declare.entries_count = n;
}

static int commit(svc_conn_t *c, uint8_t id)
{
    rig_req(&rig, cellar_Request_update_commit_tag);
    rig.rq.body.update_commit.bundle.size = 32;
    memset(rig.rq.body.update_commit.bundle.bytes, id, 32);
    return rig_call(&rig, c);
}

static void test_bundles(void)
{
    svc_conn_t *w = &rig.a;
    as(&rig.b, "admin1");
    ok(rig_put(&rig, &rig.b, "/usr/app/gone", "x", 1));
    as(w, "w1");
    /* a bundle with one entry outside: the declaration is refused */
    ok(begin(w, 0x11, 2));
    snapshot();
    declare_rm(0x11, 0, "/usr/app/gone", "/usr/etc/conf");
    denied(rig_call(&rig, w), "update declare \"/usr/etc/conf\": w1 (writer",
           NULL);
    CHECK(unchanged());
    /* inside only: staged and committed */
    ok(begin(w, 0x12, 1));
    declare_rm(0x12, 0, "/usr/app/gone", NULL);
    ok(rig_call(&rig, w));
    ok(commit(w, 0x12));
    CHECK(!exists("/usr/app/gone"));

    /* A bundle staged by a writer without prefixes, left behind (its
     * connection went away), resumed by w1: its commit is refused since an
     * entry lies outside w1's prefixes. */
    as(&rig.b, "wall");
    ok(begin(&rig.b, 0x13, 1));
    declare_rm(0x13, 0, "/usr/etc/conf", NULL);
    ok(rig_call(&rig, &rig.b));
    svc_conn_close(&rig.svc, &rig.b, "gone");
    svc_conn_open(&rig.svc, &rig.b, "rig b");
    as(w, "w1");
    ok(begin(w, 0x13, 1));
    CHECK(rig.rs.body.update_begin.resumed);
    snapshot();
    denied(commit(w, 0x13), "update commit \"/usr/etc/conf\": w1 (writer",
           NULL);
    CHECK(unchanged());
    CHECK(exists("/usr/etc/conf"));
    /* the writer it belongs to may commit it (once w1 has gone) */
    svc_conn_close(&rig.svc, &rig.a, "gone");
    svc_conn_open(&rig.svc, &rig.a, "rig a");
    as(&rig.b, "wall");
    ok(begin(&rig.b, 0x13, 1));
    ok(commit(&rig.b, 0x13));
    CHECK(!exists("/usr/etc/conf"));
    as(&rig.b, "admin1");
    ok(rig_put(&rig, &rig.b, "/usr/etc/conf", "conf", 4));
}

/* Two connections with different roles, their requests served in the same
 * turns. */
static void test_two_roles(void)
{
    as(&rig.a, "alice");
    as(&rig.b, "w1");
    /* both requests buffered before the service runs */
    cellar_Request qa, qb;
    fill(&qa, cellar_Request_mkdir_tag, "/usr/app/both");
    fill(&qb, cellar_Request_mkdir_tag, "/usr/app/both");
    qa.id = 901;
    qb.id = 902;
    static uint8_t fa[1024], fb[1024];
    int na = codec_encode_request(&qa, fa, sizeof(fa));
    int nb = codec_encode_request(&qb, fb, sizeof(fb));
    CHECK(na > 0 && nb > 0);
    CHECK_EQ(svc_conn_input(&rig.a, fa, (size_t)na), (size_t)na);
    CHECK_EQ(svc_conn_input(&rig.b, fb, (size_t)nb), (size_t)nb);
    uint32_t before = svc_acl_denials(&rig.svc);
    while (svc_process(&rig.svc))
        ;
    CHECK_EQ(svc_acl_denials(&rig.svc) - before, 1);
    denials++;
    const uint8_t *p;
    size_t len;
    cellar_Response ra, rb;
    CHECK(svc_conn_output(&rig.a, &p, &len) > 4);
    CHECK_EQ(codec_decode_response(&ra, p + 4, (uint32_t)(len - 4), NULL), 0);
    svc_conn_consumed(&rig.a, len);
    CHECK(svc_conn_output(&rig.b, &p, &len) > 4);
    CHECK_EQ(codec_decode_response(&rb, p + 4, (uint32_t)(len - 4), NULL), 0);
    svc_conn_consumed(&rig.b, len);
    CHECK(ra.id == 901 && ra.has_error && ra.error.code == EACCES_);
    CHECK(strstr(ra.error.message, "alice (reader, ACL line 3)") != NULL);
    CHECK(rb.id == 902 && !rb.has_error);
    CHECK(exists("/usr/app/both"));
    /* and each one's Hello says who it is */
    as(&rig.a, "alice");
    ok(hello(&rig.a));
    CHECK(strcmp(rig.rs.body.hello.identity, "alice") == 0);
    CHECK(strcmp(rig.rs.body.hello.role, "reader") == 0);
    CHECK_EQ(rig.rs.body.hello.prefixes_count, 0);
    as(&rig.b, "w1");
    ok(hello(&rig.b));
    CHECK(strcmp(rig.rs.body.hello.identity, "w1") == 0);
    CHECK(strcmp(rig.rs.body.hello.role, "writer") == 0);
    CHECK_EQ(rig.rs.body.hello.prefixes_count, 2);
    CHECK(strcmp(rig.rs.body.hello.prefixes[1], "/usr/www") == 0);
    /* the log names each identity with its role */
    CHECK(rig_log_has(&rig, "identity w1 (writer, ACL line 4)"));
}

/* Anonymous (no rule): nothing at all, not even Hello; "*" for anyone
 * authenticated; an identity of "anonymous" is anonymous. */
static void test_anonymous(void)
{
    svc_conn_close(&rig.svc, &rig.a, "test");
    svc_conn_open(&rig.svc, &rig.a, "rig a"); /* anonymous from the start */
    snapshot();
    denied(hello(&rig.a), "hello: anonymous (no ACL rule) may not read",
           NULL);
    denied(rig_path_op(&rig, &rig.a, cellar_Request_stat_tag, "/usr"),
           "stat \"/usr\": anonymous (no ACL rule) may not read", NULL);
    as(&rig.a, "anonymous");
    denied(hello(&rig.a), "anonymous (no ACL rule)", NULL);
    as(&rig.a, "");
    denied(open_w(&rig.a, "/usr/app/x", NULL), "anonymous (no ACL rule) "
           "may not write", NULL);
    CHECK(unchanged());
    /* an identity over 63 bytes never takes the rule of its first 63 */
    char longid[80];
    memset(longid, 'w', 70);
    longid[70] = 0;
    static svc_acl_t acl2;
    char err[100];
    char rules[100];
    snprintf(rules, sizeof(rules), "%.63s admin\n", longid);
    CHECK_EQ(svc_acl_parse(&acl2, rules, strlen(rules), err, sizeof(err)), 0);
    const svc_acl_t *keep = rig.svc.cfg.acl;
    rig.svc.cfg.acl = &acl2;
    as(&rig.a, longid);
    CHECK_EQ(rig.a.role, SVC_ROLE_NONE);
    longid[63] = 0;
    as(&rig.a, longid);
    CHECK_EQ(rig.a.role, SVC_ROLE_ADMIN);
    rig.svc.cfg.acl = keep;
    as(&rig.a, "mallory \"x\"");
    ok(hello(&rig.a));
    CHECK(strcmp(rig.rs.body.hello.role, "reader") == 0);
    denied(open_w(&rig.a, "/usr/app/x", NULL),
           "\"mallory \\\"x\\\"\" (reader, ACL line 6)", NULL);
}

/* No ACL: everyone is admin (the daemon allows it on loopback only). */
static void test_no_acl(void)
{
    static rig_t r2;
    CHECK_EQ(rig_init(&r2, BLOCKS, NULL), 0);
    rig_req(&r2, cellar_Request_hello_tag);
    CHECK_EQ(rig_call(&r2, &r2.a), 0);
    CHECK(strcmp(r2.rs.body.hello.identity, "anonymous") == 0);
    CHECK(strcmp(r2.rs.body.hello.role, "admin") == 0);
    rig_req(&r2, cellar_Request_format_tag);
    strcpy(r2.rq.body.format.partition, "/usr");
    r2.rq.body.format.confirm = true;
    CHECK_EQ(rig_call(&r2, &r2.a), 0);
    CHECK_EQ(svc_acl_denials(&r2.svc), 0);
    rig_free(&r2);
}

/* The loop hands the transport's identity to the service: an in-memory
 * pair whose device end says "w1". */
static void test_loop_identity(void)
{
    loop_t *lp = NULL;
    tp_conn_t *cli = NULL, *dev = NULL;
    CHECK_EQ(tp_mem_pair(0, &cli, &dev), 0);
    CHECK_EQ(loop_new(&lp, &rig.svc, NULL), 0);
    if (!lp || !cli || !dev)
        return;
    strcpy(dev->identity, "w1");
    CHECK_EQ(loop_add_conn(lp, dev), 0);
    cellar_Request q;
    memset(&q, 0, sizeof(q));
    q.id = 7;
    q.which_body = cellar_Request_hello_tag;
    static uint8_t buf[CODEC_BUF_MIN];
    int n = codec_encode_request(&q, buf, sizeof(buf));
    CHECK(n > 0);
    CHECK_EQ(tp_send(cli, buf, (size_t)n), n);
    size_t have = 0;
    for (int i = 0; i < 200 && have < 4; i++) {
        CHECK_EQ(loop_turn(lp, 0), 0);
        int k = tp_recv(cli, buf + have, sizeof(buf) - have);
        if (k > 0)
            have += (size_t)k;
    }
    for (int i = 0; i < 200 && have >= 4 &&
                    have < 4 + codec_get_len(buf); i++) {
        CHECK_EQ(loop_turn(lp, 0), 0);
        int k = tp_recv(cli, buf + have, sizeof(buf) - have);
        if (k > 0)
            have += (size_t)k;
    }
    cellar_Response r;
    CHECK(have >= 4 && have == 4 + codec_get_len(buf));
    if (have >= 4 && have == 4 + codec_get_len(buf)) {
        CHECK_EQ(codec_decode_response(&r, buf + 4, (uint32_t)(have - 4),
                                       NULL), 0);
        CHECK(strcmp(r.body.hello.identity, "w1") == 0);
        CHECK(strcmp(r.body.hello.role, "writer") == 0);
    }
    tp_close(cli);
    loop_free(lp); /* closes dev */
}

int main(void)
{
    test_parse();
    char err[200];
    CHECK_EQ(parse(ACL_TEXT, err, sizeof(err)), 0);
    svc_config_t base;
    memset(&base, 0, sizeof(base));
    base.acl = &acl;
    CHECK_EQ(rig_init(&rig, BLOCKS, &base), 0);
    setup_files();
    uint32_t d0 = svc_acl_denials(&rig.svc);
    test_reader_every_write();
    test_writer_every_write();
    test_writer_prefixes();
    test_bundles();
    test_two_roles();
    test_anonymous();
    /* every denial seen here was counted, and only those */
    CHECK_EQ(svc_acl_denials(&rig.svc) - d0, (uint32_t)denials);
    test_loop_identity();
    rig_free(&rig);
    test_no_acl();
    free(snap);
    printf("test_acl: %ld denials checked\n", denials);
    return check_summary("test_acl");
}
