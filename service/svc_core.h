/*
 * svc_core.h - the cellar service core: transport-agnostic, device-side.
 *
 * svc_t owns the mounted partitions of one flash device (a filesystem per
 * partition of the layout in block 0: "usr" served read-write at /usr, "bak"
 * served read-only at /bak) and the connections. A transport (TCP, TLS,
 * UART, lwIP) feeds each connection's received bytes in and drains its
 * replies; the core never calls the OS, never allocates and never blocks:
 *
 *   svc_init(&svc);
 *   svc_setup(&svc, &cfg);                     // mount (and provision)
 *   svc_conn_open(&svc, &conn, "tcp 1.2.3.4:5");
 *   loop:
 *     svc_tick(&svc, now_ms);                  // idle timeouts
 *     n = svc_conn_input_space(&conn, &dst);   // recv up to n bytes to dst
 *     svc_conn_input_commit(&conn, got);       //   (or svc_conn_input())
 *     svc_process(&svc);                       // <= 1 request per conn
 *     svc_conn_output(&conn, &ptr, &len);      // send what you can ...
 *     svc_conn_consumed(&conn, sent);          // ... and say how much
 *     if (svc_conn_done(&conn)) svc_conn_close(&svc, &conn, "reason");
 *   svc_free(&svc);                            // close all, unmount
 *
 * Memory is fixed: a connection holds one input buffer of one maximal frame
 * (CODEC_BUF_MIN) and an output queue of SVC_OUT_BYTES. A request is only
 * taken when the queue has room for a maximal reply; when it has not, the
 * connection is not read (svc_conn_want_read() is false) - backpressure goes
 * all the way to the peer, and nothing grows with what a peer claims.
 *
 * Every request gets exactly one Response with its id, in order per
 * connection. Errors carry a proto Code and a message naming the path and
 * the reason. Framing errors (length 0 or above CODEC_MAX_FRAME) get an
 * error Response with id 0, then the connection is closed.
 *
 * Portable device-side code: no OS calls, no allocation, no stdio. One svc_t
 * is not thread-safe: drive it from one event loop.
 */
#ifndef CELLAR_SVC_CORE_H
#define CELLAR_SVC_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cellar.pb.h"
#include "cellar_config.h"
#include "codec.h"
#include "flash.h"
#include "cfs.h"
#include "layout.h"
#include "manifest.h"
#include "svc_acl.h"
#include "txn.h"

/* ---- limits (advertised in HelloReply) ----------------------------------- */
/* SVC_MAX_HANDLES (open handles per connection), SVC_DEVICE_HANDLES
 * (client handles per partition, all connections together; the fs allows
 * CFS_MAX_OPEN: the rest is the service's), SVC_MAX_INFLIGHT and
 * SVC_OUT_BYTES are build-time options: cellar_config.h. */
/* The service's own open files on one partition at worst, beside the
 * client handles: the manifest (1); a staged update's plan and staged file
 * (2); the job's files (2: a Hash's or a check's file; a local copy's
 * source and target; a Backup's source, or a Restore's or repair's plan
 * and target; one job at a time); within one request (2: a shadow and
 * the file it copies from, or a path truncate's or publish's file). */
#define SVC_OWN_FILES 7u
_Static_assert(SVC_DEVICE_HANDLES + SVC_OWN_FILES <= CFS_MAX_OPEN,
               "the fs's open-file table holds the client handles and the "
               "service's own files");
#define SVC_MAX_PATH CFS_PATH_MAX /* bytes in a path (255) */
/* A path as shown: "/" + a partition's name (< LAYOUT_NAME_MAX) + the path
 * inside it (<= SVC_MAX_PATH: a relative path gains its "/") + NUL. */
#define SVC_SHOW_MAX (SVC_MAX_PATH + LAYOUT_NAME_MAX + 1)
#define SVC_MAX_CHUNK CODEC_MAX_CHUNK
/* Entries per List page (the generated max_count: host 32, device 3). */
#define SVC_LIST_MAX ((uint32_t)pb_arraysize(cellar_ListReply, entries))
/* Items of a request list (issue 14; HelloReply.max_items): Declare and
 * ManifestImport entries, Backup and Restore paths (host 16, device 3). */
#define SVC_MAX_ITEMS ((uint32_t)pb_arraysize(cellar_BackupRequest, paths))
_Static_assert(pb_arraysize(cellar_BackupRequest, paths) ==
                   pb_arraysize(cellar_RestoreRequest, paths) &&
               pb_arraysize(cellar_BackupRequest, paths) ==
                   pb_arraysize(cellar_UpdateDeclareRequest, entries) &&
               pb_arraysize(cellar_BackupRequest, paths) ==
                   pb_arraysize(cellar_ManifestImportRequest, entries),
               "one max_items for every request list");
#define SVC_MAX_PARTS 2u         /* usr and bak */
#define SVC_IDLE_DEFAULT_MS 300000u /* idle timeout when the config says 0 */
#define SVC_IDLE_NEVER UINT32_MAX   /* no idle timeout */

_Static_assert(SVC_OUT_BYTES >= CODEC_BUF_MIN,
               "the output queue holds at least one maximal frame");

#ifndef CELLAR_VERSION
#define CELLAR_VERSION "0.1.0"
#endif

/* ---- configuration -------------------------------------------------------- */
typedef void (*svc_log_fn)(void *ctx, const char *line);

typedef struct svc_config {
    const flash_dev_t *dev;   /* the flash device (required) */
    const char *device_id;    /* HelloReply.device; NULL = "cellar" */
    const char *firmware;     /* HelloReply.firmware; NULL =
                                 "cellard " CELLAR_VERSION */
    /* A connection that completes no request for this long is closed (after
     * an ETIMEDOUT error Response with id 0), and a handle not used for this
     * long is closed. Milliseconds; 0 = SVC_IDLE_DEFAULT_MS; SVC_IDLE_NEVER
     * disables both. Driven by svc_tick(). */
    uint32_t idle_timeout_ms;
    /* Wall clock for file times (seconds since 1970); NULL = times are 0. */
    uint32_t (*clock)(void *clock_ctx);
    void *clock_ctx;
    /* One line per connection open/close and per failed request (no
     * newline). NULL = silent. */
    svc_log_fn log;
    void *log_ctx;
    /* Provisioning at svc_setup: when block 0 holds no layout, write the
     * default one (layout_default with bak_blocks) and format both
     * partitions; when a partition holds no filesystem
     * (CFS_ERR_NOTMOUNTED), format it. A corrupt layout or filesystem is
     * never formatted over. false = fail instead. */
    bool provision;
    uint32_t bak_blocks;      /* for the default layout; 0 = a quarter */
    /* At setup, check every /usr file against the manifest and restore
     * what is missing or corrupt from /bak (logging each file). */
    bool check_at_start;
    /* A staged update whose client went away is dropped after this long
     * (milliseconds; 0 = SVC_TX_ABANDON_MS). */
    uint32_t tx_timeout_ms;
    /* The automatic GC threshold of the writable partitions, in blocks (at
     * least 6: cfs_set_gc_threshold), when gc_threshold_set; else cfs's
     * default. A value
     * a partition cannot take is logged and that partition keeps its
     * default. A GcConfig request changes it until restart. */
    uint32_t gc_threshold;
    bool gc_threshold_set;
    /* Access control (issue 13, svc_acl.h): the ACL every connection's
     * identity is looked up in; must outlive the service. NULL = no ACL:
     * every connection is admin (the daemon allows that only on loopback
     * or with --insecure). */
    const svc_acl_t *acl;
    /* Issue 15 (docs/RAW.md): raw partitions for provisioning a blank
     * device (layout_default_raw). On a device that has a layout they must
     * match it exactly (names and sizes), or svc_setup fails with
     * CFS_ERR_INVAL and changes nothing: a layout is never rewritten over
     * data. nraw == 0: take whatever the layout has. */
    const layout_raw_t *raw;
    uint32_t nraw;
} svc_config_t;

#define SVC_TX_ABANDON_MS (3600u * 1000u) /* one hour */

/* ---- objects (caller-owned; fields are private to svc_core.c) ------------- */
typedef struct svc svc_t;
typedef struct svc_conn svc_conn_t;

typedef struct svc_handle {
    uint32_t id;          /* 0 = slot free */
    uint8_t part;         /* partition index */
    uint8_t readable;
    uint8_t writable;
    uint8_t append;
    uint64_t last_ms;     /* last use, for the idle timeout */
    uint8_t shadow;       /* writes go to a shadow copy (/.cellar/w/N) */
    uint32_t shadow_no;
    cfs_file_t file;
    char path[SVC_SHOW_MAX]; /* normalised full path, for messages */
} svc_handle_t;

struct svc_conn {
    svc_t *svc;
    svc_conn_t *next;
    uint32_t num;         /* connection number, for logs */
    char peer[64];        /* transport's name for the peer */
    codec_parser_t in;
    uint32_t out_start, out_end; /* queued reply bytes: out[start..end) */
    uint64_t last_ms;     /* open, or last request taken */
    uint32_t requests;    /* requests answered */
    uint32_t errors;      /* of which failed */
    uint32_t handle_seq;
    uint8_t closing;      /* close once the output queue is drained */
    uint8_t abort;        /* close now, drop the output queue */
    uint8_t eof;          /* the peer sent everything it will send */
    uint8_t req_held;     /* issue 14: its decoded request is in `out`
                             (SVC_REQ_IN_QUEUE; svc_req_take/_give) */
    const char *close_reason;
    /* access control (issue 13): svc_conn_set_identity */
    char identity[SVC_ACL_NAME_MAX + 1]; /* "" = anonymous */
    uint8_t role;         /* SVC_ROLE_* */
    const svc_acl_rule_t *rule; /* the ACL rule that gave it, or NULL */
    /* (issue 14: the handles after the buffers: no padding on Cortex-M4) */
    uint8_t inbuf[CODEC_BUF_MIN];
#if SVC_REQ_IN_QUEUE
    /* issue 14: while req_held, the queue is empty and its bytes are the
     * request being served (and, once a Verify read its arguments, the
     * reply it builds in steps); the reply is encoded over them only after
     * svc_req_give */
    union {
        uint8_t out[SVC_OUT_BYTES];
        cellar_Request qreq;
        cellar_VerifyReply qvr;
    };
#else
    uint8_t out[SVC_OUT_BYTES];
#endif
    svc_handle_t h[SVC_MAX_HANDLES];
};
#if SVC_REQ_IN_QUEUE
_Static_assert(SVC_OUT_BYTES == CODEC_BUF_MIN,
               "the request lives in the queue only when the queue holds one "
               "frame: a request is served only when it is empty");
_Static_assert(sizeof(cellar_Request) <= SVC_OUT_BYTES &&
               sizeof(cellar_VerifyReply) <= SVC_OUT_BYTES,
               "the decoded request (and a Verify's reply) fit the queue");
#endif

/* A request path after validation. Issue 14: the path inside the
 * partition is the tail of show (or "/"), not a copy: do not copy an
 * svc_path_t by value. */
typedef struct svc_path {
    int part;                    /* partition index, or -1 for "/" itself */
    const char *fs;              /* path inside the partition: "/" or "/a/b" */
    char show[SVC_SHOW_MAX]; /* normalised full path: "/usr/a/b", "/" */
} svc_path_t;

/* What the service can do with a partition (proto PartState). */
enum {
    SVC_PART_OK = 0,
    SVC_PART_FULL = 1,        /* no room for bookkeeping: removals only */
    SVC_PART_NO_MANIFEST = 2, /* the manifest is unusable: read-only */
    SVC_PART_UNMOUNTED = 3,   /* no usable filesystem */
};
#define SVC_MAX_PROBLEMS ((uint32_t)pb_arraysize(cellar_HelloReply, problems))
#define SVC_PROBLEM_LEN 160u
/* Bytes of a partition the service keeps for its own bookkeeping (manifest
 * slots, staging plans, the commits of a remove, an abort or a rollback),
 * above the filesystem's reserve: an operation that would grow the files
 * into it fails up front with ENOSPC (docs/UPDATE.md, "Space"). */
#define SVC_KEEP_BYTES (16u * 4096u)

typedef struct svc_part {
    char name[LAYOUT_NAME_MAX]; /* "usr" */
    uint8_t mounted;
    uint8_t state;        /* SVC_PART_* */
    uint64_t full_claimed; /* PART_FULL: fs claimed bytes when it was set
                              (a retry waits for removals to lower it) */
    uint8_t read_only;    /* through file RPCs */
    uint8_t has_man;      /* man is open */
    cfs_config_t cfg;
    cfs_t fs;
    man_t man;            /* the partition's manifest */
} svc_part_t;

/* A long request runs as the service's one job, advanced by svc_process
 * in steps of at most SVC_JOB_STEP_BYTES of file data read (and as much
 * written), so other connections are served in between: Hash of a large
 * file, Verify (with --repair, each restore is a copy in steps), the
 * start-up check (likewise), Backup and Restore (a copy in steps, then one
 * atomic commit), UpdateCommit (the staged files are hashed in steps, then
 * the commit is one step as before) and UpdateDeclare (a file the device
 * has under another path is copied into the staging in steps). The reply goes out when it is
 * done; the requests behind it on its connection, and other connections'
 * long requests, wait. A cut (power, cancel) between steps leaves the old
 * state: what a copy staged is dropped. */
#define SVC_JOB_STEP_BYTES (32u * 1024u)
/* A GcRequest's step: the collector goes through at most this many blocks
 * (moving at most their live data, 16 KiB with 4 KiB blocks). */
#define SVC_GC_STEP_BLOCKS 4u
enum { SVC_JOB_NONE = 0, SVC_JOB_HASH, SVC_JOB_VERIFY, SVC_JOB_CHECK,
       SVC_JOB_COPY, SVC_JOB_COMMIT, SVC_JOB_DECLARE, SVC_JOB_GC,
       SVC_JOB_EXT /* a long request of a module above the job layer
                      (the /sd Hash): run through ext_step / ext_cancel */ };

/* A copy between partitions in steps (Backup, Restore, one restore of a
 * repair): the state of copy_tree in svc_update.c. */
typedef struct svc_copy {
    uint8_t active;        /* a copy is under way (phase) */
    uint8_t phase;
    uint8_t from, to;      /* partitions */
    uint8_t mirror;        /* also remove from `to` what `from` lacks */
    uint8_t backup;        /* the RPC: Backup (else Restore / a repair) */
    uint8_t dst_open;      /* dst is open (on `to`) */
    uint8_t pad;
    uint32_t n;            /* paths (0 = all) */
    uint32_t slot;         /* cursor over the source (or, mirroring, the
                              target) manifest */
    uint32_t idx;          /* entries declared in the copy transaction */
    uint32_t off, size;    /* the file being copied */
    const layout_part_t *rsrc; /* issue 15: the source is this raw
                              partition's bytes (a backup of a raw entry) */
    int err;               /* the result, once done */
    man_entry_t e;         /* the source entry being handled */
    man_entry_t cur;       /* the target's entry / the copy's result */
    cfs_file_t dst;
    /* issue 14: the paths and the reply live in the job's union (a
     * Backup's or Restore's), or are the job's entry (a repair: out NULL,
     * only `files` counted) */
    const char *rel[SVC_MAX_ITEMS];
    bool found[SVC_MAX_ITEMS];
    uint32_t files;        /* files copied */
    cellar_CopyReply *out; /* the reply so far, or NULL */
} svc_copy_t;

typedef struct svc_job {
    uint8_t kind;          /* SVC_JOB_*, NONE = no job */
    uint8_t part;          /* partition of the file / manifest */
    uint8_t hashing;       /* a file is being hashed (fp, sha, off, left) */
    uint8_t repair;        /* verify: restore problems from /bak */
    uint8_t hpart;         /* partition of the file being hashed */
    uint8_t hraw;          /* issue 15: hashing a raw partition's bytes
                              (fp NULL): hfirst its first block */
    uint8_t pad[2];
    uint32_t hfirst;
    svc_conn_t *conn;      /* whose request; NULL = the start-up check */
    uint32_t req_id;
    const char *op;
    cfs_file_t f;           /* the file being hashed, when it is the job's */
    cfs_file_t *fp;         /* &f, or a handle of conn (its own writes) */
    csha_t sha;
    uint32_t off, left, total;
    uint8_t digest[32];
    /* (show: the file hashed; e: the entry being checked, declared or
     * committed: in the union below, issue 14) */
    /* verify and the check: the slot cursor */
    uint32_t cursor, nslots, max, bad, fixed;
    uint8_t kprob;         /* the problem a repair's copy is fixing */
    uint64_t steps;        /* steps made (statistics, tests) */
    svc_copy_t cp;         /* a copy in steps (backup, restore, repair) */
    uint32_t centry;       /* commit: the next staged entry to hash */
    /* declare: the request, the entry it is at, the reply so far; a local
     * copy (a file the device has under another path) in steps */
    uint8_t lcopy;         /* a local copy is under way (f -> cp.dst) */
    uint8_t dstatus;       /* the entry's cellar_EntryStatus */
    uint32_t di;
    uint64_t dhave;
    /* One job kind at a time, and every job starts from a zeroed svc_job_t:
     * verify's reply, declare's request/reply and a copy's reply and paths
     * share their bytes (issue 14); a COPY uses neither e nor show
     * (SVC_JOB_NOT_COPY asserts it where they are set). With
     * SVC_REQ_IN_QUEUE (svcram2) verify's reply, declare's request and a
     * copy's paths are in the job's connection's queue instead. */
    union {
        struct {                           /* every kind but COPY */
            man_entry_t e;
            union {
                char show[SVC_SHOW_MAX];
                /* DECLARE: the path of the same content found elsewhere,
                 * read before a local copy (lcopy) names its staged file
                 * in show; written only while no local copy runs (svcram2,
                 * asserted in svc_declare_run) */
                char dother[MAN_PATH_MAX + 1];
            };
            /* issue 14: VERIFY's reply so far and DECLARE's request:
             * with SVC_REQ_IN_QUEUE in the connection's queue (its
             * request's bytes: qvr, qreq), else in the union below */
            union {
                cellar_VerifyReply *vr;    /* VERIFY (not CHECK) */
                const cellar_UpdateDeclareRequest *decl; /* DECLARE */
            };
            union {
#if !SVC_REQ_IN_QUEUE
                cellar_VerifyReply vr_own;
#endif
                struct {                   /* DECLARE */
#if !SVC_REQ_IN_QUEUE
                    cellar_UpdateDeclareRequest decl_own;
#endif
                    cellar_UpdateDeclareReply drep;
                };
            };
        };
        struct {                           /* COPY: Backup, Restore */
            cellar_CopyReply cout;
#if !SVC_REQ_IN_QUEUE /* (else the request's own paths, normalised) */
            char crel[SVC_MAX_ITEMS][SVC_MAX_PATH + 1];
#endif
        };
    };
    /* gc: blocks gained wanted (0 = all), swept so far and at most, the
     * start's free and stale bytes */
    uint32_t gc_want, gc_swept, gc_limit;
    uint64_t gc_free0, gc_stale0;
    /* SVC_JOB_EXT: one step (1 done, the reply in s->resp; 0 more to do)
     * and the clean-up of a job dropped before its end */
    int (*ext_step)(struct svc *s);
    void (*ext_cancel)(struct svc *s);
    /* issue 15: after an UpdateCommit, the committed raw images are
     * written in steps (svc_raw_install_step) before the reply */
    uint8_t rawing;        /* writing them */
    uint8_t rphase;        /* RAW_* of svc_raw.c */
    uint8_t ridx;          /* layout index of the partition at hand */
    uint32_t roff, rsize;
    txn_stats_t cst;       /* the commit's figures, for its reply */
} svc_job_t;

struct svc {
    svc_config_t cfg;
    uint32_t idle_ms;
    layout_t layout;
    uint32_t nparts;
    svc_part_t part[SVC_MAX_PARTS];
    cfs_work_t fs_work; /* issue 14 (fsram): the fs work area of both partitions */
    svc_conn_t *conns;
    uint32_t nconns;
    uint32_t conn_seq;
    uint64_t now_ms;
    uint8_t set_up;
    /* update transactions (usr) and copies (backup, restore) */
    txn_t tx;
    svc_conn_t *tx_owner;  /* connection driving the staged update */
    uint64_t tx_idle_since; /* when it lost its owner */
    uint64_t tx_need;      /* bytes of the files to send, declared so far */
    txn_t cp;
    txn_work_t txw;        /* issue 14: the scratch tx and cp share */
    /* what start-up found wrong, one line each (HelloReply.problems);
     * issue 14: kept as the words of the line (svc_problem: each a string
     * that lives as long as svc_t), written out by svc_problem_line */
    uint32_t nproblems;
    uint8_t problem_part[SVC_MAX_PROBLEMS]; /* 0xFF: not a partition's */
    struct svc_problem_words {
        const char *what, *why, *done;
    } problems[SVC_MAX_PROBLEMS];
    uint32_t shadow_seq;
    cfs_file_t t1, t2;      /* for copies and hashes; issue 14: t2 also
                               for a path truncate (svc_t2_take) */
    /* (the scratch entries me, me2: in txw, issue 14: svc_me_take) */
    /* scratch for the request being served (one at a time); issue 14:
     * with SVC_REQ_IN_QUEUE the decoded request is in its connection's
     * queue (svc_conn_t.qreq) */
#if !SVC_REQ_IN_QUEUE
    cellar_Request req;
#endif
    cellar_Response resp;
    /* (the scan of a request frame: serve_frame's, issue 14) */
    svc_path_t pa;        /* resolved paths of the request */
    /* issue 14: the ACL check (svc_acl_check: acl_path, the paths a
     * request writes) runs before the handler, which resolves pb itself:
     * one place for both; while acl_in is set only the ACL resolves */
    union { svc_path_t pb; svc_path_t acl_path; };
    uint8_t acl_in;
    cfs_dir_t dir;
    const char *op;       /* name of the request being served */
    /* (the log line is built in txw.tmp: svc_log_begin, issue 14) */
    uint8_t scratch[SVC_SCRATCH_BYTES]; /* cellar_config.h */
    /* ---- update bundles: the index of the staged bundle's paths */
    txn_index_t txix;
    /* ---- the long request in progress */
    svc_job_t job;
    uint8_t deferred;     /* the request being served started the job */
    uint8_t job_turn;     /* svc_process made a job step in this turn */
    uint8_t decided_check; /* a commit decided but maybe not finished (a
                              job ended or was cancelled, an abort, the
                              start): the next write request rolls it
                              forward first (svc_dispatch.c) */
    uint8_t t2_in;        /* issue 14: t2 is taken (svc_t2_take) */
    const struct svc_job_kinds *job_kinds; /* svc_int.h */
    /* ---- access control (issue 13) */
    uint32_t acl_denied;  /* requests refused by the ACL (svc_acl_denials) */
    struct svc_sd *sd;     /* issue 15 (sd): the SD card at /sd, or NULL
                              (svc_sd.h: svc_sd_attach) */
};

/* ---- requests and the permission each needs (svc_dispatch.c) ---------------- */

/* What a request needs of its caller, for roles (issue 13): a reader may
 * Hello, Ping, Stat, List, Open for reading, Read, Seek, Close, Hash,
 * StatFs, Manifest and Verify without repair; a writer also writes,
 * changes the namespace, updates, backs up, restores and repairs; an admin
 * also formats. The connection's role (svc_acl.h) is checked before every
 * request is served. */
typedef enum svc_perm {
    SVC_PERM_NONE = 0, /* not a request type this service knows */
    SVC_PERM_READ,
    SVC_PERM_WRITE,
    SVC_PERM_ADMIN,
} svc_perm_t;

/* The name of a request type (a cellar_Request_*_tag), NULL if unknown. */
const char *svc_request_name(uint32_t tag);
/* The permission a request of that type needs; with its decoded request q
 * (may be NULL: the type's own), Open and Verify take theirs from their
 * arguments. */
svc_perm_t svc_request_perm(uint32_t tag, const cellar_Request *q);
/* True for the types that may run as a long request (a job). */
bool svc_request_long(uint32_t tag);

/* ---- lifecycle ------------------------------------------------------------- */

/* Zero the service (cannot fail). */
void svc_init(svc_t *svc);

/* Read the layout from block 0 of cfg->dev and mount every partition
 * (provisioning first if cfg->provision, see svc_config_t). cfg is copied;
 * the strings it points to must outlive svc. Returns 0 or a negative
 * cfs_err_t / flash_err_t, and logs the reason. */
int svc_setup(svc_t *svc, const svc_config_t *cfg);

/* Close every connection still open (closing its handles), unmount every
 * partition (a checkpoint each) and sync the device. NULL-safe. Returns 0
 * or the first error met; svc is zeroed either way. */
int svc_free(svc_t *svc);

/* The partition table in use (valid after svc_setup). */
const layout_t *svc_layout(const svc_t *svc);
/* The raw partition called name (issue 15), or NULL. */
const layout_part_t *svc_raw_part(const svc_t *svc, const char *name);
/* The mounted filesystem of a partition ("usr", "bak"), or NULL. */
cfs_t *svc_fs(svc_t *svc, const char *name);

/* ---- time ------------------------------------------------------------------ */

/* Tell the service the time (a monotonic clock, milliseconds) and apply the
 * idle timeouts. Call it every loop turn, or at least every second. */
void svc_tick(svc_t *svc, uint64_t now_ms);

/* ---- connections ------------------------------------------------------------- */

/* Attach a caller-owned connection (logs "open"). peer names it in logs
 * (copied, may be NULL). */
void svc_conn_open(svc_t *svc, svc_conn_t *conn, const char *peer);

/* The connection's identity, from its transport once the handshake is done
 * (a certificate's CN, a PSK identity; NULL, "" or "anonymous" =
 * anonymous): looks up its role in cfg.acl and logs it. svc_conn_open
 * starts every connection anonymous. (Issue 13.) */
void svc_conn_set_identity(svc_t *svc, svc_conn_t *conn, const char *identity);
/* Requests the ACL refused since svc_setup. */
uint32_t svc_acl_denials(const svc_t *svc);

/* Detach it: close its handles and log "close" with the reason (NULL = the
 * one the core recorded, or "closed"). The struct may then be reused. */
void svc_conn_close(svc_t *svc, svc_conn_t *conn, const char *reason);

/* Input. svc_conn_input copies what fits and returns how many bytes it took
 * (fewer than len when the input buffer is full: offer the rest later).
 * svc_conn_input_space / _commit let a transport receive straight into the
 * buffer: space returns the free bytes at *dst (0 = do not read now). */
size_t svc_conn_input(svc_conn_t *conn, const void *bytes, size_t len);
uint32_t svc_conn_input_space(svc_conn_t *conn, uint8_t **dst);
void svc_conn_input_commit(svc_conn_t *conn, uint32_t n);
/* The peer closed its sending side: answer what is buffered, then close. */
void svc_conn_input_eof(svc_conn_t *conn);

/* Should the transport read from this connection now? (False when the
 * input buffer is full, the output queue is full, or the connection is
 * closing.) */
bool svc_conn_want_read(const svc_conn_t *conn);

/* Output: *ptr / *len (also returned) are the queued reply bytes; after
 * sending n of them call svc_conn_consumed(conn, n). */
size_t svc_conn_output(svc_conn_t *conn, const uint8_t **ptr, size_t *len);
void svc_conn_consumed(svc_conn_t *conn, size_t n);

/* Is the connection finished (error, idle timeout, or the peer's EOF with
 * everything answered and sent)? The transport then closes it and calls
 * svc_conn_close. */
bool svc_conn_done(svc_conn_t *conn);

/* Ask for a connection to be closed after its queued output is sent (no
 * more requests are taken). */
void svc_conn_shutdown(svc_conn_t *conn, const char *reason);

/* ---- serving ---------------------------------------------------------------- */

/* Serve at most one buffered request per connection (so every connection
 * makes progress, whatever the others send), and advance the long request
 * in progress (if any) by one bounded step (see svc_job_t). Returns the
 * number of requests served, plus 1 when a long request made a step: 0 =
 * nothing to do now. */
int svc_process(svc_t *svc);

/* Is there a buffered request that svc_process could serve right now, or a
 * long request in progress? (The event loop then polls without
 * sleeping.) */
bool svc_pending(svc_t *svc);

/* A connection the transport will not attach (over its connection limit)
 * gets these bytes before it is closed: one error Response with id 0
 * (ENOMEM, "connect: too many connections ..."), written to out[0..cap).
 * Returns the frame's size, or a negative codec error when cap is too
 * small (256 bytes is enough). Touches no connection; the transport never
 * builds protocol messages itself. */
int svc_reject_conn(svc_t *svc, uint8_t *out, size_t cap);

/* ---- helpers ---------------------------------------------------------------- */

/* The proto Code for a negative fs/flash/codec error (e.g. -2 ->
 * cellar_Code_ENOENT; unknown errors -> cellar_Code_EIO). */
cellar_Code svc_code(int err);
/* "ENOENT" for a Code. */
const char *svc_code_name(cellar_Code code);

#endif /* CELLAR_SVC_CORE_H */
