/*
 * svc_int.h - private to the service core: the helpers svc_core.c (file
 * RPCs) and svc_update.c (manifest, update, backup RPCs) share.
 */
#ifndef CELLAR_SVC_INT_H
#define CELLAR_SVC_INT_H

#include "svc_core.h"

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
int svc_fail_open(svc_t *s, int err, const char *show);
void svc_reply_done(svc_t *s);

/* Paths. */
int svc_resolve(svc_t *s, const char *in, svc_path_t *out);
bool svc_is_part_root(const svc_path_t *p);
fs_t *svc_path_fs(svc_t *s, const svc_path_t *p);
int svc_check_writable(svc_t *s, const svc_path_t *p);
void svc_copy_str(char *dst, size_t cap, const char *src);
void svc_handle_release(svc_t *s, svc_handle_t *h);

/* ---- long requests (svc_core.c; see svc_job_t) ------------------------------ */
/* Start hashing len bytes of fp (a file of partition part) from off. */
int svc_job_hash_begin(svc_t *s, uint32_t part, fs_file_t *fp, uint32_t off,
                       uint32_t len);
/* Hash up to *budget bytes (taken off it): 1 done (s->job.digest),
 * 0 more to do, or an error. */
int svc_job_hash_step(svc_t *s, uint32_t *budget);
/* Stop hashing: close the job's own file, free the hash. */
void svc_job_hash_end(svc_t *s);
/* The request being served continues as s->job (whose kind is set): its
 * reply is sent when the job is done. */
void svc_job_defer(svc_t *s, svc_conn_t *c);
/* A problem found at start-up (or a later attach) on partition part:
 * logged once and listed in HelloReply.problems until the partition is
 * formatted. "/usr: what (why): done". */
void svc_problem(svc_t *s, uint32_t part, const char *what, const char *why,
                 const char *done);
/* Forget the problems of a partition (formatted, or recovered). */
void svc_problems_forget(svc_t *s, uint32_t part);
/* Room for growing the files of a partition by `grow` bytes, keeping the
 * filesystem's reserve and the service's own (SVC_KEEP_BYTES): 0, or
 * ENOSPC with the error set (naming show). */
int svc_room(svc_t *s, uint32_t part, uint64_t grow, const char *show);
/* The bytes svc_room allows now (0 when not mounted). */
uint64_t svc_room_bytes(svc_t *s, uint32_t part);

/* ---- svc_update.c ---------------------------------------------------------- */
/* One step of a VERIFY or CHECK job: 1 = done (a verify's reply is in
 * s->resp), 0 = more to do. */
int svc_update_job_step(svc_t *s);
/* The job is dropped (cancel): end a copy in progress, dropping what it
 * staged. */
void svc_update_job_cancel(svc_t *s);

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

/* The RPCs. */
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

#endif /* CELLAR_SVC_INT_H */
