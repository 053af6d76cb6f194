/*
 * svc_int.h - private to the service core: what its files (svc_*.c) share.
 * The files form layers, each calling only the ones below it (the graph is
 * in docs/ARCHITECTURE.md, "Service core"; `make deps-check` checks it):
 *   svc_msg  < svc_part < svc_path < svc_acl < svc_conn < svc_job < svc_raw
 *   < svc_store < svc_file < svc_copy < svc_update < svc_manifest_rpc < svc_sd
 *   < svc_core
 *   < svc_dispatch
 * The declarations below are grouped by the file that defines them.
 */
#ifndef CELLAR_SVC_INT_H
#define CELLAR_SVC_INT_H

#include "svc_core.h"
#include "svc_sd.h"

/* The partitions the service knows, by index. */
#define USR 0u
#define BAK 1u
/* Staging directories: copies between partitions, update transactions. */
#define CP_DIR "/.cellar/cp"
#define TX_DIR "/.cellar/tx"
/* issue 14: a feature built out (cellar_config.h CELLAR_WITH_*) answers
 * this: "<op>: <feature> is not built into this device" */
#define SVC_ENOTSUP (-(int)cellar_Code_ENOTSUP)
/* issue 14: is there a log to write to? Never without CELLAR_WITH_LOG
 * (then svc_log_msg, svc_log_part and svc_log_path are no-ops: the end of
 * this file), so the lines and their words are not built. */
#define SVC_LOGS(s) (CELLAR_WITH_LOG && (s)->cfg.log)

/* ---- svc_msg.c ----------------------------------------------------------------- */

/* Message builder: NUL-terminated UTF-8 in a fixed buffer, cut at a
 * character boundary with "..." when it does not fit. */
typedef struct sb {
    char *p;
    size_t cap;
    size_t n;
    bool full;
} sb_t;

void svc_sb_init(sb_t *b, char *buf, size_t cap);
void svc_sb_str(sb_t *b, const char *s);      /* trusted ASCII */
void svc_sb_u64(sb_t *b, uint64_t v);
void svc_sb_qstr(sb_t *b, const char *s);     /* quoted, escaped */
const char *svc_reason(int err);
void svc_sb_hex32(sb_t *b, uint32_t v);
size_t svc_utf8_seq(const uint8_t *s, size_t n);
/* Is in[0..len) valid UTF-8 (svc_utf8_seq all through)? */
bool svc_utf8_valid(const char *in, size_t len);
/* Paths (svc_path.c, svc_sd.c): the next component of in[0..len) from *i
 * on, slashes skipped: true with in[*st..*st + *cl) and *i after it, false
 * at the end. */
static inline bool svc_path_comp(const char *in, size_t len, size_t *i, size_t *st,
                                 size_t *cl)
{
    while (*i < len && in[*i] == '/')
        (*i)++;
    if (*i >= len)
        return false;
    *st = *i;
    while (*i < len && in[*i] != '/')
        (*i)++;
    *cl = *i - *st;
    return true;
}
/* A component "." (1) or ".." (2), else 0. */
static inline int svc_dot_comp(const char *c, size_t cl)
{
    return c[0] != '.' || cl > 2 || (cl == 2 && c[1] != '.') ? 0 : (int)cl;
}
void svc_sb_quoted(sb_t *b, const char *str, size_t n);
void svc_resp_reset(svc_t *s, uint32_t id);
void svc_log_failure(svc_t *s, svc_conn_t *c);

/* Logging (no-ops without cfg.log). */
sb_t svc_log_begin(svc_t *s, const svc_conn_t *c);
void svc_log_end(svc_t *s);
void svc_log_msg(svc_t *s, const svc_conn_t *c, const char *msg);

/* Error replies: each sets the Response error and returns err. */
sb_t svc_err_begin(svc_t *s, int err);
int svc_fail_path(svc_t *s, int err, const char *path, const char *why);
int svc_fail(svc_t *s, int err, const char *why);
int svc_fail_handle(svc_t *s, int err, const svc_handle_t *h,
                    const char *why);
int svc_fail_hid(svc_t *s, int err, uint32_t id, const char *path,
                 const char *why);
#define SVC_NO_HANDLE "no such open handle on this connection"
int svc_fail_open(svc_t *s, int err, const char *show);
void svc_reply_done(svc_t *s);

/* Issue 14: the service's two scratch entries are parts of the txn scratch
 * (txn_work_t me, me2), where they share their bytes with a commit's batch
 * of moves: each is taken for one use and given back before any
 * txn_commit, txn_finish or txn_load (TXN_W_ME/ME2 asserts it). */
static inline man_entry_t *svc_me_take(svc_t *s)
{
    txn_work_take(&s->txw, TXN_W_ME);
    return &s->txw.me;
}
static inline void svc_me_give(svc_t *s)
{
    txn_work_give(&s->txw, TXN_W_ME);
}
static inline man_entry_t *svc_me2_take(svc_t *s)
{
    txn_work_take(&s->txw, TXN_W_ME2);
    return &s->txw.me2;
}
static inline void svc_me2_give(svc_t *s)
{
    txn_work_give(&s->txw, TXN_W_ME2);
}

/* Issue 14: t2 is the shadow a truncate writes (svc_shadow_truncate) or
 * the file a truncate without a manifest opens (svc_do_truncate): one
 * holder at a time, open only within that call (CFS_ASSERT). */
static inline cfs_file_t *svc_t2_take(svc_t *s)
{
    CFS_ASSERT(!s->t2_in);
    s->t2_in = 1;
    return &s->t2;
}
static inline void svc_t2_give(svc_t *s)
{
    CFS_ASSERT(s->t2_in);
    s->t2_in = 0;
}

/* Keep a helper's frame out of its caller's (issue 14: serve_frame's scan
 * is not on a job step's stack). */
#if defined(__GNUC__)
#define SVC_NOINLINE __attribute__((noinline))
#else
#define SVC_NOINLINE
#endif

/* ---- svc_part.c ---------------------------------------------------------------- */
extern const char *const svc_part_names[SVC_MAX_PARTS];
void svc_log_part(svc_t *s, const char *what, const svc_part_t *p, int err);
/* Apply cfg.gc_threshold to a freshly mounted partition (svc_config_t). */
void svc_part_gc_tune(svc_t *s, uint32_t i);
int svc_part_index(const svc_t *s, const char *name, size_t n);

/* A problem found at start-up (or a later attach) on partition part:
 * logged once and listed in HelloReply.problems until the partition is
 * formatted. "/usr: what (why): done". Issue 14: what, why (may be NULL)
 * and done are kept by pointer: each must live as long as svc_t (string
 * literals, svc_reason, the layout's names). part 0xFF: what alone (/sd). */
void svc_problem(svc_t *s, uint32_t part, const char *what, const char *why,
                 const char *done);
/* Problem i's line (at most SVC_PROBLEM_LEN bytes, cut with "..."). */
void svc_problem_line(const svc_t *s, uint32_t i, char *out, size_t cap);
/* Forget the problems of a partition (formatted, or recovered). */
void svc_problems_forget(svc_t *s, uint32_t part);
/* Room for growing the files of a partition by `grow` bytes, keeping the
 * filesystem's reserve and the service's own (SVC_KEEP_BYTES): 0, or
 * ENOSPC with the error set (naming show). */
int svc_room(svc_t *s, uint32_t part, uint64_t grow, const char *show);
/* The bytes svc_room allows now (0 when not mounted). */
uint64_t svc_room_bytes(svc_t *s, uint32_t part);

/* ---- svc_path.c ------------------------------------------------------------------ */
int svc_resolve(svc_t *s, const char *in, svc_path_t *out);
bool svc_is_part_root(const svc_path_t *p);
/* Open's flags (known ones): O_READ and/or O_WRITE, and the rest only with
 * O_WRITE. 0, or EINVAL with the error set naming show (svc_file.c and
 * svc_sd.c: issue 14). */
int svc_open_flags(svc_t *s, const char *show, uint32_t fl);
cfs_t *svc_path_fs(svc_t *s, const svc_path_t *p);
void svc_copy_str(char *dst, size_t cap, const char *src);
/* Is the parent of path (inside a partition: "/a/b") a directory? 0 when it
 * is, CFS_ERR_NOTDIR when it is a file, or cfs_stat's error. buf (at least
 * strlen(path) + 1 bytes) receives the parent's path. */
int svc_parent_dir(cfs_t *fs, const char *path, char *buf);

/* ---- svc_acl.c (issue 13) ------------------------------------------------------ */
/* May connection c run request q, which needs perm (svc_request_perm)?
 * 0, or -EACCES with the error reply set ("remove \"/usr/x\": alice
 * (reader, ACL line 3) may not write"), counted in s->acl_denied; or the
 * error of a path that does not resolve (the request would fail the
 * same way). Checks every path the request writes against a writer's
 * prefixes. Changes nothing. */
int svc_acl_check(svc_t *s, svc_conn_t *c, const cellar_Request *q,
                  svc_perm_t perm);
/* Set c's identity and role without logging (svc_conn_open: anonymous). */
void svc_acl_conn_init(svc_t *s, svc_conn_t *c, const char *identity);
/* Fill HelloReply's identity, role and prefixes for c. */
void svc_acl_hello(const svc_t *s, const svc_conn_t *c, cellar_HelloReply *o);

/* ---- svc_conn.c ------------------------------------------------------------------ */
uint32_t svc_out_free(const svc_conn_t *c);
bool svc_out_room(svc_conn_t *c, uint32_t need);
void svc_resp_send(svc_t *s, svc_conn_t *c);
/* Count and log a failed reply (which then carries no body), queue it. */
void svc_resp_finish(svc_t *s, svc_conn_t *c);
/* Issue 14: where c's request is decoded: svc_t.req, or with
 * SVC_REQ_IN_QUEUE c's output queue (empty whenever a request is served).
 * c holds it (req_held) from the take until svc_req_give: while its
 * request, or the long request it started, still reads it; a second take,
 * or a reply queued on c while it is held, fails CFS_ASSERT. */
cellar_Request *svc_req_take(svc_t *s, svc_conn_t *c);
void svc_req_give(svc_conn_t *c);

/* ---- svc_job.c: long requests (see svc_job_t) --------------------------------- */
/* Start hashing len bytes of fp (a file of partition part) from off. */
int svc_job_hash_begin(svc_t *s, uint32_t part, cfs_file_t *fp, uint32_t off,
                       uint32_t len);
/* Hash up to *budget bytes (taken off it): 1 done (s->job.digest),
 * 0 more to do, or an error. */
int svc_job_hash_step(svc_t *s, uint32_t *budget);
/* Stop hashing: close the job's own file, free the hash. */
void svc_job_hash_end(svc_t *s);
/* The request being served continues as s->job (whose kind is set): its
 * reply is sent when the job is done. */
void svc_job_defer(svc_t *s, svc_conn_t *c);

/* The job kinds above the job layer (verify, the check, copies, declare,
 * commit) are run and cancelled through this table, which svc_setup points
 * s->job_kinds at (svc_manifest_rpc.c), so the job layer calls nothing
 * above it. */
typedef struct svc_job_kinds {
    int (*step)(svc_t *s);    /* svc_update_job_step */
    void (*cancel)(svc_t *s); /* svc_update_job_cancel */
} svc_job_kinds_t;
/* The end of a Hash: the reply in s->resp. */
int svc_hash_done(svc_t *s, int r);
/* Garbage collection on request (GcRequest) in steps of at most
 * SVC_GC_STEP_BLOCKS blocks: 1 done, 0 more to do, or an error; then
 * svc_gc_done puts the reply (or the error) in s->resp. */
int svc_job_gc_step(svc_t *s);
int svc_gc_done(svc_t *s, int r);
/* One step of the job; sends its reply when it is done. */
void svc_job_step(svc_t *s);
/* Drop the long request (its connection went, a handle or the partition
 * it reads went away). With why, its connection gets an error reply. */
void svc_job_cancel(svc_t *s, int err, const char *why);

/* ---- svc_raw.c: raw partitions (issue 15, docs/RAW.md) ------------------------ */
/* A committed raw image waits in /usr as RAW_DIR/NAME until it is written. */
#define RAW_DIR "/.cellar/raw"
#if CELLAR_WITH_RAW /* issue 14: else the stubs below */
int svc_do_raw_read(svc_t *s, const cellar_RawReadRequest *r);
int svc_do_raw_write(svc_t *s, const cellar_RawWriteRequest *r);
int svc_do_raw_erase(svc_t *s, const cellar_RawEraseRequest *r);
int svc_do_raw_hash(svc_t *s, svc_conn_t *c, const cellar_RawHashRequest *r);
/* The raw partition's name when rel (a /usr path) is RAW_DIR/NAME. */
const char *svc_raw_rel_name(const char *rel);
/* A bundle entry "raw:NAME": its /usr staging target (rel, at least
 * MAN_PATH_MAX + 1 bytes), or the error set (unknown name, too large, a
 * removal). */
int svc_raw_bundle_path(svc_t *s, const char *in, uint64_t size, bool remove,
                        char *rel);
/* The raw partition of a /usr path RAW_DIR/NAME, or NULL. */
const layout_part_t *svc_raw_of_rel(const svc_t *s, const char *rel);
/* Read len bytes at off of raw partition p (the range checked by the
 * caller). 0 or a flash error. */
int svc_raw_pread(svc_t *s, const layout_part_t *p, uint32_t off, uint8_t *buf,
                  uint32_t len);
/* Make RAW_DIR on partition i (/usr for staging, /bak for backups) when
 * the layout has raw partitions; after its manifest is attached (which
 * makes MAN_DIR). */
int svc_raw_prepare(svc_t *s, uint32_t i);
/* Write every committed raw image still staged (after a commit, and at
 * start-up after a power cut), check it, drop the staged copy. 0 or the
 * first error (each is also a problem; the copy stays for the next try). */
int svc_raw_finish(svc_t *s);
/* The committed raw images written in steps of *budget bytes (erased,
 * programmed or read back), after an UpdateCommit (s->job.rawing set by
 * the caller, ridx 0): 1 = all done, 0 = more to do. An image that fails
 * is a problem; its staged copy stays for the next start. */
int svc_raw_install_step(svc_t *s, uint32_t *budget);
/* Is any committed raw image staged (waiting to be written)? */
bool svc_raw_pending(svc_t *s);
/* The job is cancelled while writing them: finish at once (bounded by the
 * partitions' sizes), so no partition is left half written while served. */
void svc_raw_install_cancel(svc_t *s);
/* Verify of a raw entry (RAW_DIR/NAME): as svc_check_begin. */
int svc_raw_check_begin(svc_t *s, const man_entry_t *e,
                        cellar_ProblemKind *kind);
#else /* issue 14: built without raw partitions: no raw name is ever
       * staged, the requests and "raw:NAME" bundle entries get ENOTSUP */
#define SVC_NO_RAW "raw partitions are not built into this device"
static inline int svc_do_raw_read(svc_t *s, const void *r) { return svc_fail(s, SVC_ENOTSUP, SVC_NO_RAW); }
static inline int svc_do_raw_write(svc_t *s, const void *r) { return svc_fail(s, SVC_ENOTSUP, SVC_NO_RAW); }
static inline int svc_do_raw_erase(svc_t *s, const void *r) { return svc_fail(s, SVC_ENOTSUP, SVC_NO_RAW); }
static inline int svc_do_raw_hash(svc_t *s, svc_conn_t *c, const void *r) { return svc_fail(s, SVC_ENOTSUP, SVC_NO_RAW); }
static inline const char *svc_raw_rel_name(const char *rel) { return NULL; }
static inline int svc_raw_bundle_path(svc_t *s, const char *in, uint64_t size, bool remove, char *rel)
{
    return svc_fail_path(s, SVC_ENOTSUP, in, SVC_NO_RAW);
}
static inline const layout_part_t *svc_raw_of_rel(const svc_t *s, const char *rel) { return NULL; }
static inline int svc_raw_pread(svc_t *s, const layout_part_t *p, uint32_t off, uint8_t *buf,
                                uint32_t len) { return SVC_ENOTSUP; }
static inline int svc_raw_prepare(svc_t *s, uint32_t i) { return 0; }
static inline int svc_raw_finish(svc_t *s) { return 0; }
static inline int svc_raw_install_step(svc_t *s, uint32_t *budget) { return 1; }
static inline bool svc_raw_pending(svc_t *s) { return false; }
static inline void svc_raw_install_cancel(svc_t *s) { }
static inline int svc_raw_check_begin(svc_t *s, const man_entry_t *e,
                                      cellar_ProblemKind *kind) { return SVC_ENOTSUP; }
#endif

/* ---- svc_store.c ------------------------------------------------------------------ */
/* Mount-time work on every partition: open the manifest, drop shadow
 * files, finish or pick up transactions, and (cfg.check_at_start) check
 * /usr against its manifest, restoring from /bak. */
int svc_store_setup(svc_t *s);
void svc_store_free(svc_t *s);
/* Around a format of partition i. */
void svc_store_detach(svc_t *s, uint32_t i);
int svc_store_attach(svc_t *s, uint32_t i);
/* The connection went away / time passed. */
/* PART_FULL: try to make the manifest writable again (true = PART_OK). */
bool svc_store_retry(svc_t *s, uint32_t i);
/* Drop a staged update of /usr in any state (UpdateAbort on a full
 * partition). */
int svc_store_drop_staging(svc_t *s);
void svc_store_conn_gone(svc_t *s, svc_conn_t *c);
void svc_store_tick(svc_t *s);

/* File-RPC writes through shadows (usr). */
int svc_shadow_open(svc_t *s, svc_handle_t *h, const svc_path_t *p, int ff);
int svc_shadow_publish(svc_t *s, svc_handle_t *h);
void svc_shadow_discard(svc_t *s, svc_handle_t *h);
int svc_shadow_truncate(svc_t *s, const svc_path_t *p, uint32_t size);
int svc_man_remove(svc_t *s, const svc_path_t *p);
int svc_man_rename(svc_t *s, const svc_path_t *a, const svc_path_t *b);
/* Close a handle (a Hash reading it is cancelled; a shadow is dropped). */
void svc_handle_release(svc_t *s, svc_handle_t *h);
uint32_t svc_now_s(svc_t *s);
void svc_show_path(svc_t *s, uint32_t part, const char *in, char *out,
                   size_t cap);
int svc_fail_in(svc_t *s, int err, uint32_t part, const char *path,
                const char *why);
void svc_log_path(svc_t *s, const char *what, uint32_t part,
                  const char *path, const char *tail);
int svc_part_arg(svc_t *s, const char *name);
bool svc_sha_eq(const man_entry_t *a, const man_entry_t *b);
int svc_attach(svc_t *s, uint32_t i);
const char *svc_handle_rel(svc_t *s, const svc_handle_t *h);
int svc_usr_path(svc_t *s, const char *in, char *rel);
int svc_check_begin(svc_t *s, uint32_t part, const man_entry_t *e,
                    cellar_ProblemKind *kind);
int svc_check_done(svc_t *s, int r, const man_entry_t *e,
                   cellar_ProblemKind *kind);

/* ---- svc_file.c ------------------------------------------------------------------ */
int svc_check_writable(svc_t *s, const svc_path_t *p);
int svc_do_hello(svc_t *s, svc_conn_t *c, const cellar_HelloRequest *r);
int svc_do_ping(svc_t *s, const cellar_PingRequest *r);
int svc_do_stat(svc_t *s, const cellar_StatRequest *r);
int svc_do_list(svc_t *s, const cellar_ListRequest *r);
int svc_do_open(svc_t *s, svc_conn_t *c, const cellar_OpenRequest *r);
int svc_do_read(svc_t *s, svc_conn_t *c, const cellar_ReadRequest *r);
int svc_do_write(svc_t *s, svc_conn_t *c, const cellar_WriteRequest *r);
int svc_do_seek(svc_t *s, svc_conn_t *c, const cellar_SeekRequest *r);
int svc_do_truncate(svc_t *s, svc_conn_t *c,
                    const cellar_TruncateRequest *r);
int svc_do_sync(svc_t *s, svc_conn_t *c, const cellar_SyncRequest *r);
int svc_do_close(svc_t *s, svc_conn_t *c, const cellar_CloseRequest *r);
int svc_do_remove(svc_t *s, const char *path, bool dir_only);
int svc_do_mkdir(svc_t *s, const cellar_MkdirRequest *r);
int svc_do_rename(svc_t *s, const cellar_RenameRequest *r);
int svc_do_statfs(svc_t *s, const cellar_StatFsRequest *r);
int svc_do_hash(svc_t *s, svc_conn_t *c, const cellar_HashRequest *r);
int svc_do_format(svc_t *s, const cellar_FormatRequest *r);
int svc_do_gc(svc_t *s, svc_conn_t *c, const cellar_GcRequest *r);
int svc_do_gc_config(svc_t *s, const cellar_GcConfigRequest *r);

/* ---- svc_copy.c ------------------------------------------------------------------ */
int svc_copy_begin(svc_t *s, uint32_t from, uint32_t to, bool mirror,
                   bool backup);
void svc_copy_cancel(svc_t *s);
int svc_copy_chunk(svc_t *s, cfs_t *fa, cfs_t *fb, uint32_t *budget,
                   uint8_t sha[32]);
bool svc_path_busy(void *ctx, const char *path);
int svc_copy_step(svc_t *s, uint32_t *budget);
void svc_copy_reply(svc_t *s);
/* decided: finish the copies (and with_tx the update) whose decision is
 * durable but whose roll forward stopped: 1 one was, 0 none, or an error. */
int svc_finish_decided(svc_t *s, bool with_tx);

/* ---- svc_update.c ---------------------------------------------------------------- */
void svc_lcopy_end(svc_t *s, bool keep);
int svc_declare_run(svc_t *s);
int svc_commit_step(svc_t *s);

/* ---- svc_manifest_rpc.c ---------------------------------------------------------- */
/* One step of a VERIFY, CHECK, COPY, DECLARE or COMMIT job: 1 = done (a
 * reply is in s->resp), 0 = more to do. */
int svc_update_job_step(svc_t *s);
/* The job is dropped (cancel): end a copy in progress, dropping what it
 * staged. */
void svc_update_job_cancel(svc_t *s);
extern const svc_job_kinds_t svc_job_kinds;

/* The RPCs (svc_manifest_rpc.c, svc_copy.c, svc_update.c). */
int svc_do_manifest(svc_t *s, const cellar_ManifestRequest *r);
int svc_do_manifest_import(svc_t *s, const cellar_ManifestImportRequest *r);
int svc_do_verify(svc_t *s, svc_conn_t *c, const cellar_VerifyRequest *r);
int svc_do_update_begin(svc_t *s, svc_conn_t *c,
                        const cellar_UpdateBeginRequest *r);
int svc_do_update_declare(svc_t *s, svc_conn_t *c,
                          const cellar_UpdateDeclareRequest *r);
int svc_do_update_write(svc_t *s, svc_conn_t *c,
                        const cellar_UpdateWriteRequest *r);
int svc_do_update_commit(svc_t *s, svc_conn_t *c,
                         const cellar_UpdateCommitRequest *r);
int svc_do_update_abort(svc_t *s, svc_conn_t *c,
                        const cellar_UpdateAbortRequest *r);
int svc_do_backup(svc_t *s, svc_conn_t *c, const cellar_BackupRequest *r);
int svc_do_restore(svc_t *s, svc_conn_t *c, const cellar_RestoreRequest *r);

/* ---- svc_sd.c: the SD card at /sd (issue 15) ------------------------------------- */
/* Is q for /sd (an /sd path or handle; Hello and List of "/" too, to show
 * /sd)? Then svc_sd_dispatch serves it instead of the table's handler. */
bool svc_sd_claims(svc_t *s, const cellar_Request *q);
int svc_sd_dispatch(svc_t *s, svc_conn_t *c, const cellar_Request *q);
/* The connection went away: its /sd handles are closed (shadows dropped). */
void svc_sd_conn_gone(svc_t *s, svc_conn_t *c);
/* /sd handles unused for the idle timeout are closed, as on the flash (a
 * shadow dropped without publishing). */
void svc_sd_tick(svc_t *s);

/* Issue 14: job.e and job.show share the union with a COPY's state. */
#define SVC_JOB_NOT_COPY(s) CFS_ASSERT((s)->job.kind != SVC_JOB_COPY)

#if !CELLAR_WITH_LOG /* issue 14: the log lines are not built */
#define svc_log_msg(s, c, m) ((void)(s))
#define svc_log_part(s, w, p, e) ((void)(s))
#define svc_log_path(s, w, p, a, t) ((void)(s))
#endif

#endif /* CELLAR_SVC_INT_H */
