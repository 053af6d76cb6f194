/* svc_dispatch.c - the dispatch table (request type -> name, handler, permission, long flag), serving request frames, svc_process and svc_pending (svc_int.h, docs/ARCHITECTURE.md "Service core").
 * Device-side code: no OS calls, no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

/* ---- dispatch -------------------------------------------------------------------------- */

static const char *op_name(uint32_t tag)
{
    switch (tag) {
    case cellar_Request_hello_tag: return "hello";
    case cellar_Request_ping_tag: return "ping";
    case cellar_Request_stat_tag: return "stat";
    case cellar_Request_list_tag: return "list";
    case cellar_Request_open_tag: return "open";
    case cellar_Request_read_tag: return "read";
    case cellar_Request_write_tag: return "write";
    case cellar_Request_seek_tag: return "seek";
    case cellar_Request_truncate_tag: return "truncate";
    case cellar_Request_close_tag: return "close";
    case cellar_Request_remove_tag: return "remove";
    case cellar_Request_mkdir_tag: return "mkdir";
    case cellar_Request_rmdir_tag: return "rmdir";
    case cellar_Request_rename_tag: return "rename";
    case cellar_Request_statfs_tag: return "statfs";
    case cellar_Request_hash_tag: return "hash";
    case cellar_Request_format_tag: return "format";
    case cellar_Request_sync_tag: return "sync";
    case cellar_Request_manifest_tag: return "manifest";
    case cellar_Request_manifest_import_tag: return "manifest import";
    case cellar_Request_verify_tag: return "verify";
    case cellar_Request_update_begin_tag: return "update begin";
    case cellar_Request_update_declare_tag: return "update declare";
    case cellar_Request_update_write_tag: return "update write";
    case cellar_Request_update_commit_tag: return "update commit";
    case cellar_Request_update_abort_tag: return "update abort";
    case cellar_Request_backup_tag: return "backup";
    case cellar_Request_restore_tag: return "restore";
    default: return "request";
    }
}

/* The name, error and wording of a request field the scan found too
 * long or too many: every field names itself and its limit. */
typedef struct field_rule {
    const char *name;   /* "path", "bundle id" */
    int err;            /* the error for an overflow */
    const char *limit;  /* NULL = "the limit is <cap>" */
    bool text;          /* show the start of the value */
} field_rule_t;

static field_rule_t field_rule(const codec_scan_t *sc)
{
    const pb_msgdesc_t *m = sc->problem_msg;
    uint32_t t = sc->problem_tag;
    const int msgsize = -(int)cellar_Code_EMSGSIZE;
    if (sc->problem == CODEC_SCAN_COUNT) {
        bool paths = m == &cellar_BackupRequest_msg ||
                     m == &cellar_RestoreRequest_msg;
        return (field_rule_t){ paths ? "paths" : "entries", FS_ERR_INVAL,
                               NULL, false };
    }
    if (m == &cellar_HelloRequest_msg)
        return (field_rule_t){ "client name", msgsize, NULL, true };
    if (m == &cellar_PingRequest_msg)
        return (field_rule_t){ "payload", msgsize, NULL, false };
    if (m == &cellar_WriteRequest_msg || m == &cellar_UpdateWriteRequest_msg)
        return (field_rule_t){ "data", msgsize, "the limit is max_chunk (16384)",
                               false };
    if ((m == &cellar_UpdateBeginRequest_msg ||
         m == &cellar_UpdateDeclareRequest_msg ||
         m == &cellar_UpdateCommitRequest_msg ||
         m == &cellar_UpdateAbortRequest_msg) && t == 1)
        return (field_rule_t){ "bundle id", FS_ERR_INVAL,
                               "it must be 32 bytes", false };
    if ((m == &cellar_BundleEntry_msg || m == &cellar_ManifestEntry_msg) &&
        t == 3)
        return (field_rule_t){ "sha256", FS_ERR_INVAL, "it must be 32 bytes",
                               false };
    if (m == &cellar_FormatRequest_msg || m == &cellar_ManifestRequest_msg ||
        m == &cellar_VerifyRequest_msg)
        return (field_rule_t){ "partition name", FS_ERR_NAMETOOLONG, NULL,
                               true };
    return (field_rule_t){ "path", FS_ERR_NAMETOOLONG, NULL, true };
}

/* A field the scan found bad: answer before decoding. */
static int scan_problem(svc_t *s)
{
    const codec_scan_t *sc = &s->scan;
    uint32_t body = sc->body_tag;
    sb_t b;
    if (sc->problem == CODEC_SCAN_NUL) {
        b = svc_err_begin(s, FS_ERR_INVAL);
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, sc->prefix);
        svc_sb_str(&b, body == cellar_Request_hello_tag
                       ? ": client name contains a NUL byte"
                       : ": path contains a NUL byte");
        return FS_ERR_INVAL;
    }
    field_rule_t r = field_rule(sc);
    b = svc_err_begin(s, r.err);
    if (r.text) {
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, sc->prefix);
    }
    svc_sb_str(&b, ": ");
    if (sc->problem_item >= 0 && sc->problem != CODEC_SCAN_COUNT) {
        svc_sb_str(&b, sc->problem_msg == &cellar_BundleEntry_msg ||
                       sc->problem_msg == &cellar_ManifestEntry_msg
                           ? "entries[" : "paths[");
        svc_sb_u64(&b, (uint64_t)sc->problem_item);
        svc_sb_str(&b, "].");
    }
    svc_sb_str(&b, r.name);
    svc_sb_str(&b, sc->problem == CODEC_SCAN_COUNT ? ": " : " is ");
    svc_sb_u64(&b, sc->problem_len);
    svc_sb_str(&b, sc->problem == CODEC_SCAN_COUNT ? " in one request, "
                                                   : " bytes, ");
    if (r.limit) {
        svc_sb_str(&b, r.limit);
    } else {
        svc_sb_str(&b, "the limit is ");
        svc_sb_u64(&b, sc->problem_cap);
    }
    return r.err;
}

static int dispatch(svc_t *s, svc_conn_t *c)
{
    cellar_Request *q = &s->req;
    switch (q->which_body) {
    case cellar_Request_hello_tag: return svc_do_hello(s, c, &q->body.hello);
    case cellar_Request_ping_tag: return svc_do_ping(s, &q->body.ping);
    case cellar_Request_stat_tag: return svc_do_stat(s, &q->body.stat);
    case cellar_Request_list_tag: return svc_do_list(s, &q->body.list);
    case cellar_Request_open_tag: return svc_do_open(s, c, &q->body.open);
    case cellar_Request_read_tag: return svc_do_read(s, c, &q->body.read);
    case cellar_Request_write_tag: return svc_do_write(s, c, &q->body.write);
    case cellar_Request_seek_tag: return svc_do_seek(s, c, &q->body.seek);
    case cellar_Request_truncate_tag:
        return svc_do_truncate(s, c, &q->body.truncate);
    case cellar_Request_close_tag: return svc_do_close(s, c, &q->body.close);
    case cellar_Request_remove_tag:
        return svc_do_remove(s, q->body.remove.path, false);
    case cellar_Request_mkdir_tag: return svc_do_mkdir(s, &q->body.mkdir);
    case cellar_Request_rmdir_tag:
        return svc_do_remove(s, q->body.rmdir.path, true);
    case cellar_Request_rename_tag: return svc_do_rename(s, &q->body.rename);
    case cellar_Request_statfs_tag: return svc_do_statfs(s, &q->body.statfs);
    case cellar_Request_hash_tag: return svc_do_hash(s, c, &q->body.hash);
    case cellar_Request_format_tag: return svc_do_format(s, &q->body.format);
    case cellar_Request_sync_tag: return svc_do_sync(s, c, &q->body.sync);
    case cellar_Request_manifest_tag:
        return svc_do_manifest(s, &q->body.manifest);
    case cellar_Request_manifest_import_tag:
        return svc_do_manifest_import(s, &q->body.manifest_import);
    case cellar_Request_verify_tag:
        return svc_do_verify(s, c, &q->body.verify);
    case cellar_Request_update_begin_tag:
        return svc_do_update_begin(s, c, &q->body.update_begin);
    case cellar_Request_update_declare_tag:
        return svc_do_update_declare(s, c, &q->body.update_declare);
    case cellar_Request_update_write_tag:
        return svc_do_update_write(s, c, &q->body.update_write);
    case cellar_Request_update_commit_tag:
        return svc_do_update_commit(s, c, &q->body.update_commit);
    case cellar_Request_update_abort_tag:
        return svc_do_update_abort(s, c, &q->body.update_abort);
    case cellar_Request_backup_tag: return svc_do_backup(s, c, &q->body.backup);
    case cellar_Request_restore_tag:
        return svc_do_restore(s, c, &q->body.restore);
    default: {
        sb_t b;
        s->op = "request";
        b = svc_err_begin(s, -(int)cellar_Code_EPROTO);
        if (s->scan.unknown_tag) {
            svc_sb_str(&b, ": unknown request type (field ");
            svc_sb_u64(&b, s->scan.unknown_tag);
            svc_sb_str(&b, "); this device speaks protocol version 1");
        } else {
            svc_sb_str(&b, ": no request body (set one of the Request.body "
                       "fields)");
        }
        return -(int)cellar_Code_EPROTO;
    }
    }
}

/* Serve one request frame; the reply goes to the output queue. */
static void serve_frame(svc_t *s, svc_conn_t *c, const uint8_t *f,
                        uint32_t n)
{
    const char *why = NULL;
    codec_scan(cellar_Request_fields, f, n, &s->scan);
    svc_resp_reset(s, s->scan.has_id ? s->scan.id : 0);
    s->op = op_name(s->scan.body_tag);
    if (s->scan.problem) {
        (void)scan_problem(s);
    } else if (codec_decode_request(&s->req, f, n, &why) < 0) {
        sb_t b = svc_err_begin(s, -(int)cellar_Code_EPROTO);
        svc_sb_str(&b, ": malformed request (");
        svc_sb_str(&b, why ? why : "does not decode");
        svc_sb_str(&b, ")");
    } else {
        s->resp.id = s->req.id;
        s->op = op_name(s->req.which_body);
        (void)dispatch(s, c);
        if (s->deferred) { /* a long request: the job replies */
            s->deferred = 0;
            return;
        }
    }
    if (s->resp.has_error) {
        s->resp.which_body = 0;
        c->errors++;
        svc_log_failure(s, c);
    }
    svc_resp_send(s, c);
}

/* A bad length prefix: one error reply with id 0, then close. */
static void frame_error(svc_t *s, svc_conn_t *c, int err)
{
    uint32_t len = codec_get_len(c->in.buf);
    svc_resp_reset(s, 0);
    s->op = "frame";
    sb_t b = svc_err_begin(s, err);
    svc_sb_str(&b, ": length ");
    svc_sb_u64(&b, len);
    if (err == CODEC_ERR_MSGSIZE)
        svc_sb_str(&b, " is above the limit of 16896 bytes; closing");
    else
        svc_sb_str(&b, " is not allowed (1..16896); closing");
    c->errors++;
    svc_log_failure(s, c);
    c->closing = 1;
    c->close_reason = "bad frame";
    if (svc_out_room(c, 512))
        svc_resp_send(s, c);
    else
        c->abort = 1;
}

/* Would this request run as a job (it may: Hash, Verify, Backup, Restore,
 * UpdateDeclare, UpdateCommit)? */
static bool long_request(svc_t *s, const uint8_t *f, uint32_t n)
{
    codec_scan(cellar_Request_fields, f, n, &s->scan);
    return s->scan.body_tag == cellar_Request_hash_tag ||
           s->scan.body_tag == cellar_Request_verify_tag ||
           s->scan.body_tag == cellar_Request_backup_tag ||
           s->scan.body_tag == cellar_Request_restore_tag ||
           s->scan.body_tag == cellar_Request_update_commit_tag ||
           s->scan.body_tag == cellar_Request_update_declare_tag;
}

/* Serve the next buffered request of c, if any and if there is room for
 * its reply. Returns 1 if something was done. */
static int serve_one(svc_t *s, svc_conn_t *c)
{
    const uint8_t *f;
    uint32_t n;
    if (c->closing || c->abort)
        return 0;
    if (s->job.kind && s->job.conn == c)
        return 0; /* behind its long request: replies stay in order */
    int r = codec_parser_next(&c->in, &f, &n);
    if (r < 0) {
        frame_error(s, c, r);
        return 1;
    }
    if (r == 0 || !svc_out_room(c, CODEC_BUF_MIN))
        return 0;
    if ((s->job.kind || s->job_turn) && long_request(s, f, n)) {
        c->last_ms = s->now_ms; /* waiting, not idle */
        return 0; /* one long request at a time, one step of one per turn */
    }
    serve_frame(s, c, f, n);
    codec_parser_pop(&c->in);
    c->last_ms = s->now_ms;
    c->requests++;
    return 1;
}

int svc_process(svc_t *s)
{
    int served = 0;
    s->job_turn = 0;
    if (s->job.kind) { /* one bounded step of the long request */
        svc_job_step(s);
        s->job_turn = 1;
        served++;
    }
    svc_conn_t *c = s->conns;
    while (c) {
        svc_conn_t *next = c->next; /* c stays attached: only the
                                       transport closes connections */
        served += serve_one(s, c);
        c = next;
    }
    if (s->job_turn && !s->job.kind && svc_pending(s))
        served++; /* a long request waits for the next turn */
    s->job_turn = 0;
    return served;
}

bool svc_pending(svc_t *s)
{
    if (s->job.kind)
        return true;
    for (svc_conn_t *c = s->conns; c; c = c->next) {
        const uint8_t *f;
        uint32_t n;
        if (c->closing || c->abort)
            continue;
        int r = codec_parser_next(&c->in, &f, &n);
        if (r < 0 || (r == 1 && svc_out_free(c) >= CODEC_BUF_MIN))
            return true;
    }
    return false;
}
