/*
 * cellar_config.h - every compile-time option of cellar in one place, in
 * the way of LFS_CONFIG or MBEDTLS_CONFIG_FILE.
 *
 * To change an option, give the build a file of your own:
 *     make CELLAR_CFLAGS='-DCELLAR_CONFIG_FILE="\"my_config.h\""'
 * It is included first; what it defines wins, the rest keeps the defaults
 * below. Every module that uses an option includes this header (never
 * define an option in a .c file). service/common/ is on every layer's
 * include path.
 *
 * The two profiles:
 *   host   (default): the daemon on Linux, libcellar, the CLI, the tests.
 *   device (CELLAR_PROFILE_DEVICE defined; `make size` builds with it): a
 *          module's firmware: CRC-32 from a 64-byte nibble table instead of
 *          zlib, SHA-256 from mbedTLS instead of OpenSSL; 1 KiB frames,
 *          few handles and small tables (make size / make ram /
 *          make test-device build with it).
 * (CELLAR_PROFILE_DEVICE is a compile-time switch; CELLAR_DEVICE is the
 * CLI's environment variable for the device URL.)
 *
 * Where the profiles differ the comment says "host X, device Y"; the
 * device values are the small-RAM build (docs/DEVICE.md, `make ram`).
 */
#ifndef CELLAR_CONFIG_H
#define CELLAR_CONFIG_H

#ifdef CELLAR_CONFIG_FILE
#include CELLAR_CONFIG_FILE
#endif

/* ---- features (issue 14: code size; docs/DEVICE.md "Feature switches") -------
 * Each is 1 by default on both profiles; 0 leaves its code out of the
 * device set (the way LFS_READONLY or mbedTLS's MBEDTLS_* options do).
 * Built without one, its requests answer ENOTSUP "<op>: <feature> is not
 * built into this device", a configuration that asks for it
 * (svc_config_t, cellard's flag) is refused with ENOTSUP, and nothing else
 * changes. `make size` shows the device set with all of them off
 * ("minimal"); `make test-device` runs such a daemon (build/min/).
 *   CELLAR_WITH_SD   the SD card at /sd: svc_sd.c and fs/fat/ (a firmware
 *                    then links nothing of fs/fat/); cellard --sd.
 *   CELLAR_WITH_RAW  raw partitions (svc_raw.c): RawRead/Write/Erase/Hash,
 *                    "raw:NAME" bundle entries, svc_config_t.raw, --raw.
 *                    A layout that has raw partitions still mounts; they
 *                    are listed, not served.
 *   CELLAR_WITH_ACL  access control (the ACL parser and the check of
 *                    svc_acl.c): without it every connection is admin and
 *                    svc_config_t.acl / --acl are refused (never ignored).
 *   CELLAR_WITH_LOG  the service's log lines (svc_config_t.log: connections,
 *                    failed requests, mounts, repairs): without it the
 *                    callback is called once at svc_setup to say so, then
 *                    never; error replies are unchanged.
 *                                                      host 1, device 1 */
#ifndef CELLAR_WITH_SD
#define CELLAR_WITH_SD 1
#endif
#ifndef CELLAR_WITH_RAW
#define CELLAR_WITH_RAW 1
#endif
#ifndef CELLAR_WITH_ACL
#define CELLAR_WITH_ACL 1
#endif
#ifndef CELLAR_WITH_LOG
#define CELLAR_WITH_LOG 1
#endif

/* ---- filesystem (fs/) ------------------------------------------------------ */

/* CFS_ASSERT(x): the filesystem's internal invariant checks (cfs_internal.h).
 * Default assert(), so NDEBUG removes them; a firmware may map them to its
 * own fault handler. Costs no RAM. */
#ifndef CFS_ASSERT
#include <assert.h>
#define CFS_ASSERT(x) assert(x)
#endif

/* ---- the filesystem's RAM and stack (issue 14, docs/FS.md section 8) -------
 * Keys the journal index holds between checkpoints (12 bytes each in
 * cfs_t). A checkpoint is written when it is half full, so a smaller index
 * means more checkpoints (more flash programmed per small commit: bench-fs
 * on the device values). Every commit's keys must fit it (else the commit
 * fails, CFS_ERR_NOMEM, before it writes): the device's autosync and
 * commit sizes below keep a sync's commit to at most 25 keys, a rename to
 * about 6 keys + CFS_COMMIT_MAX, and the service's commit_with of 4
 * renames (TXN_BATCH) with a manifest of up to 9 segments to 46. Below
 * about 50 a full device no longer recovers room for a new file after a
 * big file is removed (test_svc_core's full-device test on the device
 * profile: ENOSPC with 46, passes with 52, 56, 60). An image whose
 * journal holds more keys than this (written by a build with a bigger
 * index and not unmounted) does not mount: CFS_ERR_NOMEM.
 *                                                    host 128, device 56 */
#ifndef CFS_JOURNAL_MAX
#ifdef CELLAR_PROFILE_DEVICE
#define CFS_JOURNAL_MAX 56
#else
#define CFS_JOURNAL_MAX 128
#endif
#endif

/* Bucket directory pages a partition may have (4 bytes each in cfs_t):
 * 64 buckets each, a bucket per 2 blocks (at most 4,096 buckets: 64 pages
 * serve any partition), so 16 pages serve partitions of up to 2,050 blocks
 * (8 MiB of 4 KiB blocks); a bigger one is refused (CFS_ERR_INVAL at
 * format and mount). The device profile keeps 64: make test-device serves
 * a 128 MiB image.                                    host 64, device 64 */
#ifndef CFS_DIRPAGES_MAX
#define CFS_DIRPAGES_MAX 64
#endif

/* Blocks retired as worn out that a partition can list (2 bytes each in
 * cfs_t); one more makes it read-only (CFS_ERR_ROFS). host 64, device 16 */
#ifndef CFS_BAD_MAX
#ifdef CELLAR_PROFILE_DEVICE
#define CFS_BAD_MAX 16
#else
#define CFS_BAD_MAX 64
#endif
#endif

/* Explicit entries the fs puts in one commit it writes (the format allows
 * 40, and a replay reads 40): 12 bytes each in every commit being built on
 * the stack (a namespace operation's, a sync's, a GC pass's). Removals of
 * a big file's segment keys beyond it go in further commits, GC commits
 * its relocations in batches of this many.             host 40, device 12 */
#ifndef CFS_COMMIT_MAX
#ifdef CELLAR_PROFILE_DEVICE
#define CFS_COMMIT_MAX 12
#else
#define CFS_COMMIT_MAX 40
#endif
#endif

/* Segments (16 KiB of file offsets each) a handle's unsynced writes may
 * touch before an automatic sync: each is a key of that sync's commit.
 * (Counted as switches between segments: a handle that alternates between
 * two segments counts each switch.)                   host 48, device 12 */
#ifndef CFS_AUTOSYNC_SEGS
#ifdef CELLAR_PROFILE_DEVICE
#define CFS_AUTOSYNC_SEGS 12
#else
#define CFS_AUTOSYNC_SEGS 48
#endif
#endif

/* Bytes of the stack buffers that checksums, copies and reads of record
 * payloads go through (the same bytes are read, in more calls when it is
 * smaller).                                          host 256, device 64 */
#ifndef CFS_READ_CHUNK
#ifdef CELLAR_PROFILE_DEVICE
#define CFS_READ_CHUNK 64
#else
#define CFS_READ_CHUNK 256
#endif
#endif

/* Extent entries an extent-map rebuild programs at once (8 bytes each on
 * the stack).                                          host 64, device 16 */
#ifndef CFS_EXT_BATCH
#ifdef CELLAR_PROFILE_DEVICE
#define CFS_EXT_BATCH 16
#else
#define CFS_EXT_BATCH 64
#endif
#endif

/* cfs_config_t.work NULL: 1 = the fs uses a work area of its own thread
 * (a _Thread_local one), 0 = refused (CFS_ERR_INVAL): the caller gives one
 * (cfs_work_t, shared by every cfs_t it mounts in one thread).
 *                                                        host 1, device 0 */
#ifndef CFS_WORK_TLS
#ifdef CELLAR_PROFILE_DEVICE
#define CFS_WORK_TLS 0
#else
#define CFS_WORK_TLS 1
#endif
#endif

/* ---- frames and the device profile (issue 14) --------------------------------
 * The largest frame (the length N after the 4-byte prefix) and the largest
 * Read length / Write data; HelloReply advertises both (max_frame,
 * max_chunk) and libcellar and the CLI size every request from them. The
 * device profile builds the service with build/gen-device/cellar.pb.h,
 * generated with proto/cellar-device.options after proto/cellar.options:
 * its data fields hold CELLAR_MAX_CHUNK bytes and its lists a few items,
 * so every request and reply struct fits one 1 KiB frame (codec.h checks
 * both at compile time, and CELLAR_MAX_CHUNK against the data fields).
 * A frame of another size needs its own options file (data max_size =
 * CELLAR_MAX_CHUNK, counts until codec.h's checks pass).
 *   RAM: each connection holds an input buffer of CELLAR_MAX_FRAME + 4
 *   bytes; the output queue is SVC_OUT_BYTES; svc_t holds one reply and
 *   (host) one decoded request, about CELLAR_MAX_FRAME + its lists each
 *   (device: the request is in the queue, SVC_REQ_IN_QUEUE).
 *                                      host 16896 / 16384, device 1024 / 768 */
#ifndef CELLAR_MAX_FRAME
#ifdef CELLAR_PROFILE_DEVICE
#define CELLAR_MAX_FRAME 1024u
#else
#define CELLAR_MAX_FRAME (16384u + 512u)
#endif
#endif
#ifndef CELLAR_MAX_CHUNK
#ifdef CELLAR_PROFILE_DEVICE
#define CELLAR_MAX_CHUNK 768u
#else
#define CELLAR_MAX_CHUNK 16384u
#endif
#endif

/* Connections a device serves at once (the lwIP port and firmware loops
 * size their tables by it; the host daemon's is LOOP_DEFAULT_MAX_CONNS).
 * Each costs one svc_conn_t (make ram).                    host 64, device 2 */
#ifndef SVC_MAX_CONNS
#ifdef CELLAR_PROFILE_DEVICE
#define SVC_MAX_CONNS 2u
#else
#define SVC_MAX_CONNS 64u
#endif
#endif

/* Bytes of the service's scratch buffer (copies, hashes and checks read
 * through it; a directory entry's name is read into it, so >= 512).
 * Smaller means more fs reads per step, not less function.
 *                                                   host 4096, device 512 */
#ifndef SVC_SCRATCH_BYTES
#ifdef CELLAR_PROFILE_DEVICE
#define SVC_SCRATCH_BYTES 512u
#else
#define SVC_SCRATCH_BYTES 4096u
#endif
#endif

/* Entries of one update bundle (UpdateBegin.entries above it: EINVAL) and
 * the bits of the filter of its directories: the bundle index costs
 * 4 bytes per entry + bits / 8 (txn_index_t, in svc_t). Fewer bits cost
 * no function: a false hit of the filter only reads the plan's entries
 * again while a bundle is declared (issue 14: the device's 1024 bits are
 * 4 per entry of a full bundle).       host 1024 / 16384, device 256 / 1024 */
#ifndef TXN_MAX_ENTRIES
#ifdef CELLAR_PROFILE_DEVICE
#define TXN_MAX_ENTRIES 256u
#else
#define TXN_MAX_ENTRIES 1024u
#endif
#endif
/* Issue 14: bytes of the bundle index's hash of each entry's path (2 or
 * 4). A hash only picks the entries read back from the plan to confirm a
 * conflict: with 2 bytes a bundle of 256 entries reads a few more (about
 * n * depth / 32768 per entry), and nothing else changes.
 *                                                       host 4, device 2 */
#ifndef TXN_INDEX_HASH_BYTES
#ifdef CELLAR_PROFILE_DEVICE
#define TXN_INDEX_HASH_BYTES 2u
#else
#define TXN_INDEX_HASH_BYTES 4u
#endif
#endif
#ifndef TXN_BLOOM_BITS
#ifdef CELLAR_PROFILE_DEVICE
#define TXN_BLOOM_BITS 1024u
#else
#define TXN_BLOOM_BITS 16384u
#endif
#endif

/* Renames a transaction batches into one fs commit (<= CFS_RENAME_MANY_MAX,
 * 16). A commit of fewer actions moves the files in place in one step;
 * a larger one goes through the "commit" marker and rolls forward in
 * batches (docs/UPDATE.md): both are atomic. Each costs 320 bytes in each
 * of the two txn_t of svc_t.                            host 16, device 4 */
#ifndef TXN_BATCH
#ifdef CELLAR_PROFILE_DEVICE
#define TXN_BATCH 4u
#else
#define TXN_BATCH 16u
#endif
#endif

/* ---- service (service/svc_*.c) ------------------------------------------------
 * RAM: each connection (svc_conn_t) holds one input buffer of one maximal
 * frame (CODEC_BUF_MIN, 16,900 bytes), SVC_OUT_BYTES of output queue and
 * SVC_MAX_HANDLES handle slots (tens of bytes each). The daemon's loop makes
 * at most LOOP_DEFAULT_MAX_CONNS of them (its --max-conns); a module with
 * one link needs one. */

/* Open handles per connection (about 350 bytes each).  host 8, device 4 */
#ifndef SVC_MAX_HANDLES
#ifdef CELLAR_PROFILE_DEVICE
#define SVC_MAX_HANDLES 4u
#else
#define SVC_MAX_HANDLES 8u
#endif
#endif

/* Client handles per partition, all connections together; the filesystem
 * allows CFS_MAX_OPEN (72) open files, the rest (SVC_OWN_FILES) is the
 * service's own. Each open fs file costs the fs's handle size.
 *                                                     host 64, device 8 */
#ifndef SVC_DEVICE_HANDLES
#ifdef CELLAR_PROFILE_DEVICE
#define SVC_DEVICE_HANDLES 8u
#else
#define SVC_DEVICE_HANDLES 64u
#endif
#endif

/* Requests a client should keep in flight (HelloReply advertises it; the
 * service itself takes one request at a time; what a client pipelines
 * waits in the transport's window, not in svc RAM). host 16, device 4 */
#ifndef SVC_MAX_INFLIGHT
#ifdef CELLAR_PROFILE_DEVICE
#define SVC_MAX_INFLIGHT 4u
#else
#define SVC_MAX_INFLIGHT 16u
#endif
#endif

/* Output queue per connection, bytes: room for two maximal frames, so one
 * reply is taken while the previous one is still being sent (>= CODEC_BUF_MIN,
 * which is defined in codec.h: this macro expands where it is used). The
 * device keeps one frame: the next request is served once the transport
 * took the previous reply (lwIP copies it into its send buffer at once).
 *               host 2 * CODEC_BUF_MIN (33,800), device CODEC_BUF_MIN (1,028) */
#ifndef SVC_OUT_BYTES
#ifdef CELLAR_PROFILE_DEVICE
#define SVC_OUT_BYTES CODEC_BUF_MIN
#else
#define SVC_OUT_BYTES (2u * CODEC_BUF_MIN)
#endif
#endif

/* Issue 14 (svcram2): the decoded request lives in its connection's output
 * queue rather than in svc_t. Only where the queue holds exactly one frame
 * (SVC_OUT_BYTES == CODEC_BUF_MIN): a request is then served only when the
 * queue is empty, and its reply is encoded there only after the handler (or
 * the long request it started) is done with it. A long request keeps what
 * it needs of its request there (UpdateDeclare's entries, Backup's and
 * Restore's paths, Verify's reply so far): svc_core.h, svc_req_take.
 *                                                      host 0, device 1 */
#ifndef SVC_REQ_IN_QUEUE
#ifdef CELLAR_PROFILE_DEVICE
#define SVC_REQ_IN_QUEUE 1
#else
#define SVC_REQ_IN_QUEUE 0
#endif
#endif

/* ---- access control (service/svc_acl.c, issue 13) ------------------------------ */

/* Rules in an ACL (lines IDENTITY ROLE [PREFIX...]).       host and device */
#ifndef SVC_ACL_MAX_RULES
#define SVC_ACL_MAX_RULES 32u
#endif

/* Write prefixes of one rule (HelloReply.prefixes holds 4).  host and device */
#ifndef SVC_ACL_MAX_PREFIXES
#define SVC_ACL_MAX_PREFIXES 4u
#endif

/* Bytes of an identity (the transport's tp_conn.identity is 64 with its NUL)
 * and of a prefix (HelloReply.prefixes: 64 with the NUL).  host and device */
#ifndef SVC_ACL_NAME_MAX
#define SVC_ACL_NAME_MAX 63u
#endif

/* Bytes for every identity and prefix of an ACL together, NULs included
 * (the rules point into this pool: svc_acl_t is 2,504 bytes by default).
 *                                                         host and device */
#ifndef SVC_ACL_POOL_BYTES
#define SVC_ACL_POOL_BYTES 2048u
#endif

/* ---- host daemon (service/host/loop.c) ---------------------------------------- */

/* Connections at once when --max-conns is not given (at most 1024); each
 * costs one svc_conn_t (about 51 KB with the defaults above). host only */
#ifndef LOOP_DEFAULT_MAX_CONNS
#define LOOP_DEFAULT_MAX_CONNS 64
#endif

/* Listeners (--listen URLs) the loop serves at once.   host only */
#ifndef LOOP_MAX_LISTENERS
#define LOOP_MAX_LISTENERS 8
#endif

/* ---- lwIP transport (transport/lwip/tp_lwip.c; issue 14) -------------------
 * Static pools, no malloc: a connection slot is 216 bytes on a Cortex-M4
 * (272 on x86-64: tp_conn_t, the pcb pointer, the received-pbuf ring), a
 * listener about 330 (its URL); `make size-lwip`. lwIP's own RAM per
 * connection (a tcp_pcb, the pbufs of the receive window, the send buffer)
 * is set by the firmware's lwipopts.h (TCP_WND, TCP_SND_BUF): docs/LWIP.md. */

/* Connections at once, accepted ones waiting for tp_accept included; lwIP
 * aborts a connection it accepts beyond this. cellard --stack lwip serves
 * TP_LWIP_MAX_CONNS - 1, so the last slot still gets the ENOMEM reply.
 *                                                     host 10, device 2 */
#ifndef TP_LWIP_MAX_CONNS
#define TP_LWIP_MAX_CONNS 10u
#endif

/* Listeners (one dual-stack pcb serves IPv4 and IPv6).  host 2, device 1 */
#ifndef TP_LWIP_MAX_LISTENERS
#define TP_LWIP_MAX_LISTENERS 2u
#endif

/* Received pbuf chains queued per connection before they are merged
 * (each holds at most 65,535 bytes, lwIP's tot_len). host 8, device 8 */
#ifndef TP_LWIP_RX_RING
#define TP_LWIP_RX_RING 8u
#endif

#endif /* CELLAR_CONFIG_H */
