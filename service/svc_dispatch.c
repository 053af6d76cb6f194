/* svc_dispatch.c - the dispatch table (request type -> name, handler,
 * permission, long flag), serving request frames, svc_process and
 * svc_pending (svc_int.h, docs/ARCHITECTURE.md "Service core"). Device-side
 * code: no OS calls, no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

/* ---- the dispatch table ---------------------------------------------------------- */

/* Every request type: its name (the "<op>" of error messages and logs),
 * its handler, the permission it needs (svc_perm_t; Open and Verify take
 * theirs from their arguments: perm_of), and whether it may run as a long
 * request (a job: one at a time, in steps). tests/test_svc_core.c checks
 * that every Request.body of the proto has a row, with the permission
 * below. dispatch() checks them against the connection's role (svc_acl.c,
 * issue 13) before running the handler. */
typedef int (*handler_fn)(svc_t *s, svc_conn_t *c, const cellar_Request *q);
typedef struct svc_req_row {
    uint32_t tag;       /* cellar_Request_*_tag */
    const char *name;
    handler_fn run;
    uint8_t perm;       /* svc_perm_t */
    bool by_args;       /* the permission depends on the arguments */
    bool long_req;      /* may run as a job */
} svc_req_row_t;

#define H(fn) static int h_##fn(svc_t *s, svc_conn_t *c, const cellar_Request *q)
H(hello) { return svc_do_hello(s, c, &q->body.hello); }
H(ping) { return svc_do_ping(s, &q->body.ping); }
H(stat) { return svc_do_stat(s, &q->body.stat); }
H(list) { return svc_do_list(s, &q->body.list); }
H(open) { return svc_do_open(s, c, &q->body.open); }
H(read) { return svc_do_read(s, c, &q->body.read); }
H(write) { return svc_do_write(s, c, &q->body.write); }
H(seek) { return svc_do_seek(s, c, &q->body.seek); }
H(truncate) { return svc_do_truncate(s, c, &q->body.truncate); }
H(close) { return svc_do_close(s, c, &q->body.close); }
H(remove) { return svc_do_remove(s, q->body.remove.path, false); }
H(mkdir) { return svc_do_mkdir(s, &q->body.mkdir); }
H(rmdir) { return svc_do_remove(s, q->body.rmdir.path, true); }
H(rename) { return svc_do_rename(s, &q->body.rename); }
H(statfs) { return svc_do_statfs(s, &q->body.statfs); }
H(hash) { return svc_do_hash(s, c, &q->body.hash); }
H(format) { return svc_do_format(s, &q->body.format); }
H(sync) { return svc_do_sync(s, c, &q->body.sync); }
H(manifest) { return svc_do_manifest(s, &q->body.manifest); }
H(manifest_import)
{
    return svc_do_manifest_import(s, &q->body.manifest_import);
}
H(verify) { return svc_do_verify(s, c, &q->body.verify); }
H(update_begin) { return svc_do_update_begin(s, c, &q->body.update_begin); }
H(update_declare)
{
    return svc_do_update_declare(s, c, &q->body.update_declare);
}
H(update_write) { return svc_do_update_write(s, c, &q->body.update_write); }
H(update_commit) { return svc_do_update_commit(s, c, &q->body.update_commit); }
H(update_abort) { return svc_do_update_abort(s, c, &q->body.update_abort); }
H(backup) { return svc_do_backup(s, c, &q->body.backup); }
H(restore) { return svc_do_restore(s, c, &q->body.restore); }
H(gc) { return svc_do_gc(s, c, &q->body.gc); }
H(gc_config) { return svc_do_gc_config(s, &q->body.gc_config); }
/* issue 15: raw partitions (svc_raw.c) */
H(raw_read) { (void)c; return svc_do_raw_read(s, &q->body.raw_read); }
H(raw_write) { (void)c; return svc_do_raw_write(s, &q->body.raw_write); }
H(raw_erase) { (void)c; return svc_do_raw_erase(s, &q->body.raw_erase); }
H(raw_hash) { return svc_do_raw_hash(s, c, &q->body.raw_hash); }
#undef H

#define R_ SVC_PERM_READ
#define W_ SVC_PERM_WRITE
#define A_ SVC_PERM_ADMIN
#define ROW(name, str, perm, args, lng) \
    { cellar_Request_##name##_tag, str, h_##name, perm, args, lng }
static const svc_req_row_t requests[] = {
    /*  type             name               perm args   long */
    ROW(hello,           "hello",           R_, false, false),
    ROW(ping,            "ping",            R_, false, false),
    ROW(stat,            "stat",            R_, false, false),
    ROW(list,            "list",            R_, false, false),
    ROW(open,            "open",            W_, true,  false), /* read: R_ */
    ROW(read,            "read",            R_, false, false),
    ROW(write,           "write",           W_, false, false),
    ROW(seek,            "seek",            R_, false, false),
    ROW(truncate,        "truncate",        W_, false, false),
    ROW(close,           "close",           R_, false, false),
    ROW(remove,          "remove",          W_, false, false),
    ROW(mkdir,           "mkdir",           W_, false, false),
    ROW(rmdir,           "rmdir",           W_, false, false),
    ROW(rename,          "rename",          W_, false, false),
    ROW(statfs,          "statfs",          R_, false, false),
    ROW(hash,            "hash",            R_, false, true),
    ROW(format,          "format",          A_, false, false),
    ROW(sync,            "sync",            W_, false, false),
    ROW(manifest,        "manifest",        R_, false, false),
    ROW(manifest_import, "manifest import", W_, false, false),
    ROW(verify,          "verify",          W_, true,  true),  /* check: R_ */
    ROW(update_begin,    "update begin",    W_, false, false),
    ROW(update_declare,  "update declare",  W_, false, true),
    ROW(update_write,    "update write",    W_, false, false),
    ROW(update_commit,   "update commit",   W_, false, true),
    ROW(update_abort,    "update abort",    W_, false, false),
    ROW(backup,          "backup",          W_, false, true),
    ROW(restore,         "restore",         W_, false, true),
    ROW(gc,              "gc",              W_, false, true),
    ROW(gc_config,       "gc config",       A_, false, false),
    /* issue 15: raw partitions */
    ROW(raw_read,        "raw read",        R_, false, false),
    ROW(raw_write,       "raw write",       W_, false, false),
    ROW(raw_erase,       "raw erase",       W_, false, false),
    ROW(raw_hash,        "raw sha256",      R_, false, true),
};
#undef ROW
#undef R_
#undef W_
#undef A_

static const svc_req_row_t *row_of(uint32_t tag)
{
    for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++)
        if (requests[i].tag == tag)
            return &requests[i];
    return NULL;
}

static const char *op_name(uint32_t tag)
{
    const svc_req_row_t *r = row_of(tag);
    return r ? r->name : "request";
}

/* The permission a decoded request needs: its row's, lowered to reading
 * for an Open without write flags and a Verify without repair. */
static svc_perm_t perm_of(const svc_req_row_t *r, const cellar_Request *q)
{
    if (!r->by_args || !q)
        return (svc_perm_t)r->perm;
    if (r->tag == cellar_Request_open_tag)
        return q->body.open.flags & (cellar_OpenFlags_O_WRITE |
                                     cellar_OpenFlags_O_CREATE |
                                     cellar_OpenFlags_O_TRUNC |
                                     cellar_OpenFlags_O_APPEND)
                   ? SVC_PERM_WRITE : SVC_PERM_READ;
    if (r->tag == cellar_Request_verify_tag)
        return q->body.verify.repair ? SVC_PERM_WRITE : SVC_PERM_READ;
    return (svc_perm_t)r->perm;
}

const char *svc_request_name(uint32_t tag)
{
    const svc_req_row_t *r = row_of(tag);
    return r ? r->name : NULL;
}

svc_perm_t svc_request_perm(uint32_t tag, const cellar_Request *q)
{
    const svc_req_row_t *r = row_of(tag);
    return r ? perm_of(r, q) : SVC_PERM_NONE;
}

bool svc_request_long(uint32_t tag)
{
    const svc_req_row_t *r = row_of(tag);
    return r && r->long_req;
}

/* The name, error and wording of a request field the scan found too
 * long or too many: every field names itself and its limit. */
typedef struct field_rule {
    const char *name;   /* "path", "bundle id" */
    int err;            /* the error for an overflow */
    const char *limit;  /* NULL = "the limit is <cap>" */
    bool text;          /* show the start of the value */
} field_rule_t;

/* issue 14: the chunk limit is the profile's (16384, device 768) */
static const char limit_chunk[] = "max_chunk";

static field_rule_t field_rule(const codec_scan_t *sc)
{
    const pb_msgdesc_t *m = sc->problem_msg;
    uint32_t t = sc->problem_tag;
    const int msgsize = -(int)cellar_Code_EMSGSIZE;
    if (sc->problem == CODEC_SCAN_COUNT) {
        bool paths = m == &cellar_BackupRequest_msg ||
                     m == &cellar_RestoreRequest_msg;
        return (field_rule_t){ paths ? "paths" : "entries", CFS_ERR_INVAL,
                               NULL, false };
    }
    if (m == &cellar_HelloRequest_msg)
        return (field_rule_t){ "client name", msgsize, NULL, true };
    if (m == &cellar_PingRequest_msg)
        return (field_rule_t){ "payload", msgsize, NULL, false };
    if (m == &cellar_WriteRequest_msg || m == &cellar_UpdateWriteRequest_msg ||
        (m == &cellar_RawWriteRequest_msg && t == 3))
        return (field_rule_t){ "data", msgsize, limit_chunk, false };
    if ((m == &cellar_UpdateBeginRequest_msg ||
         m == &cellar_UpdateDeclareRequest_msg ||
         m == &cellar_UpdateCommitRequest_msg ||
         m == &cellar_UpdateAbortRequest_msg) && t == 1)
        return (field_rule_t){ "bundle id", CFS_ERR_INVAL,
                               "it must be 32 bytes", false };
    if ((m == &cellar_BundleEntry_msg || m == &cellar_ManifestEntry_msg) &&
        t == 3)
        return (field_rule_t){ "sha256", CFS_ERR_INVAL, "it must be 32 bytes",
                               false };
    if (m == &cellar_FormatRequest_msg || m == &cellar_ManifestRequest_msg ||
        m == &cellar_VerifyRequest_msg || m == &cellar_RawReadRequest_msg ||
        m == &cellar_RawWriteRequest_msg || m == &cellar_RawEraseRequest_msg ||
        m == &cellar_RawHashRequest_msg)
        return (field_rule_t){ "partition name", CFS_ERR_NAMETOOLONG, NULL,
                               true };
    return (field_rule_t){ "path", CFS_ERR_NAMETOOLONG, NULL, true };
}

/* A field the scan found bad: answer before decoding. */
static int scan_problem(svc_t *s, const codec_scan_t *sc)
{
    uint32_t body = sc->body_tag;
    sb_t b;
    if (sc->problem == CODEC_SCAN_NUL) {
        b = svc_err_begin(s, CFS_ERR_INVAL);
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, sc->prefix);
        svc_sb_str(&b, body == cellar_Request_hello_tag
                       ? ": client name contains a NUL byte"
                       : ": path contains a NUL byte");
        return CFS_ERR_INVAL;
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
    if (r.limit == limit_chunk) {
        svc_sb_str(&b, "the limit is max_chunk (");
        svc_sb_u64(&b, SVC_MAX_CHUNK);
        svc_sb_str(&b, ")");
    } else if (r.limit) {
        svc_sb_str(&b, r.limit);
    } else {
        svc_sb_str(&b, "the limit is ");
        svc_sb_u64(&b, sc->problem_cap);
    }
    return r.err;
}

/* decided: a commit whose roll forward stopped (an error after the
 * decision) is finished before the next write request, so that no write
 * lands under it and is then replaced by it. When it cannot be finished
 * yet (the flash still fails, no room) the request goes on as before and
 * the next write tries again; Format (an admin request) is never held. */
static void finish_decided(svc_t *s)
{
    const char *op = s->op;
    if (svc_finish_decided(s, true) >= 0)
        s->decided_check = 0;
    s->op = op;
}

static int dispatch(svc_t *s, svc_conn_t *c, cellar_Request *q,
                    uint32_t unknown_tag)
{
    const svc_req_row_t *row = row_of(q->which_body);
    if (row) { /* the ACL first: a denied request changes nothing (issue 13) */
        int err = svc_acl_check(s, c, q, perm_of(row, q));
        if (err)
            return err;
        if (svc_sd_claims(s, q)) /* issue 15 (sd): /sd paths and handles */
            return svc_sd_dispatch(s, c, q);
        if (s->decided_check && perm_of(row, q) == SVC_PERM_WRITE)
            finish_decided(s);
        return row->run(s, c, q);
    }
    sb_t b;
    s->op = "request";
    b = svc_err_begin(s, -(int)cellar_Code_EPROTO);
    if (unknown_tag) {
        svc_sb_str(&b, ": unknown request type (field ");
        svc_sb_u64(&b, unknown_tag);
        svc_sb_str(&b, "); this device speaks protocol version 1");
    } else {
        svc_sb_str(&b, ": no request body (set one of the Request.body "
                   "fields)");
    }
    return -(int)cellar_Code_EPROTO;
}

/* Serve one request frame; the reply goes to the output queue. Issue 14
 * (svcram2): the scan is this frame's (not svc_t's), off svc_process's
 * frame (a job step's path does not add it). */
static SVC_NOINLINE void serve_frame(svc_t *s, svc_conn_t *c,
                                     const uint8_t *f, uint32_t n)
{
    const char *why = NULL;
    codec_scan_t sc;
    codec_scan(cellar_Request_fields, f, n, &sc);
    svc_resp_reset(s, sc.has_id ? sc.id : 0);
    s->op = op_name(sc.body_tag);
    if (sc.problem) {
        (void)scan_problem(s, &sc);
    } else {
        /* issue 14: q may be c's empty output queue (SVC_REQ_IN_QUEUE),
         * given back before the reply is encoded there */
        cellar_Request *q = svc_req_take(s, c);
        if (codec_decode_request(q, f, n, &why) < 0) {
            sb_t b = svc_err_begin(s, -(int)cellar_Code_EPROTO);
            svc_sb_str(&b, ": malformed request (");
            svc_sb_str(&b, why ? why : "does not decode");
            svc_sb_str(&b, ")");
        } else {
            s->resp.id = q->id;
            s->op = op_name(q->which_body);
            (void)dispatch(s, c, q, sc.unknown_tag);
            if (s->deferred) { /* a long request: the job replies (and */
                s->deferred = 0; /* gives q back: svc_job.c) */
                return;
            }
        }
        svc_req_give(c);
    }
    svc_resp_finish(s, c);
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
    if (err == CODEC_ERR_MSGSIZE) {
        svc_sb_str(&b, " is above the limit of ");
        svc_sb_u64(&b, CODEC_MAX_FRAME);
        svc_sb_str(&b, " bytes; closing");
    } else {
        svc_sb_str(&b, " is not allowed (1..");
        svc_sb_u64(&b, CODEC_MAX_FRAME);
        svc_sb_str(&b, "); closing");
    }
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
static SVC_NOINLINE bool long_request(const uint8_t *f, uint32_t n)
{
    codec_scan_t sc;
    codec_scan(cellar_Request_fields, f, n, &sc);
    return svc_request_long(sc.body_tag);
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
    if ((s->job.kind || s->job_turn) && long_request(f, n)) {
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
