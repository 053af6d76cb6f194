/*
 * cellar.h - libcellar, the C client library of the cellar storage service.
 *
 * One cellar_t per connection to one device. The caller owns the cellar_t
 * (on the stack, in a struct, static or malloc'ed); its fields are private.
 * Lifecycle, as in mbedTLS:
 *
 *     cellar_t c;
 *     cellar_init(&c, NULL);                 // cannot fail
 *     int err = cellar_connect(&c, "tcp://127.0.0.1:7070");
 *     if (err < 0) { fprintf(stderr, "%s\n", cellar_errmsg(&c)); ... }
 *     err = cellar_put_file(&c, "main.py", "/usr/main.py", NULL);
 *     cellar_close(&c);                      // NULL-safe, always call it
 *
 * Errors: every call returns a negative cellar_err_t on failure (the errno
 * numbers of Linux, negated: CELLAR_ERR_NOENT == -2). Calls that produce a
 * size or a handle return it as a non-negative number. cellar_errmsg() gives
 * the message of the last failure: the device's own message when the device
 * refused a request, otherwise a local description (URL, socket error).
 *
 * Threads: there is no global state. A cellar_t must not be used by two
 * threads at once; use one handle per thread (each is its own connection).
 * The library never installs signal handlers: sockets are written with
 * MSG_NOSIGNAL, so a dropped connection is an error (CELLAR_ERR_PIPE /
 * CELLAR_ERR_CONNRESET), not a SIGPIPE.
 *
 * Memory: each connected handle uses one buffer of CELLAR_BUFFER_SIZE bytes,
 * allocated by cellar_connect() unless cellar_config_t.buffer hands one in.
 * A pipelined write or upload allocates a read-ahead buffer of at most
 * 80 chunks (1.25 MiB at 16 KiB) for its duration; a pipelined read
 * allocates CELLAR_MAX_INFLIGHT chunks (1 MiB) only if the device answers
 * out of order. Listings (cellar_list_alloc, tree copies) grow with the
 * directory, up to 1,000,000 entries. Nothing else is allocated in
 * proportion to what the device claims.
 *
 * Paths on the device: "/usr/..." is the working filesystem, a relative path
 * is relative to /usr, "/" lists the partitions ("usr", "bak") and "/bak" is
 * read-only through file RPCs. At most CELLAR_PATH_MAX bytes.
 *
 * Link with `pkg-config --libs cellar` (-lcellar -lprotobuf-nanopb
 * -lmbedcrypto).
 */
#ifndef CELLAR_H
#define CELLAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- constants ------------------------------------------------------------ */
#define CELLAR_LIB_VERSION "0.1.0"
#define CELLAR_PROTOCOL_VERSION 1      /* protocol version sent in Hello */
#define CELLAR_DEFAULT_PORT 7070       /* tcp:// without a port */
#define CELLAR_DEFAULT_TLS_PORT 7443   /* tls:// without a port */
#define CELLAR_DEFAULT_URL "tcp://127.0.0.1:7070"
#define CELLAR_PATH_MAX 255            /* bytes in a device path, no NUL */
#define CELLAR_CHUNK 16384             /* default and largest chunk, bytes */
#define CELLAR_MAX_INFLIGHT 64         /* client cap on the request window */
#define CELLAR_VERIFY_RANGE (256u * 1024) /* bytes per pipelined SHA-256 check */
#define CELLAR_MAX_PARTITIONS 8        /* partitions reported by Hello */
#define CELLAR_LIST_PAGE 32            /* largest page of a List reply */
#define CELLAR_SHA256_SIZE 32          /* bytes in a SHA-256 digest */
#define CELLAR_BUFFER_SIZE (160 * 1024) /* per-connection buffer, bytes */
#define CELLAR_TIMEOUT_MS 30000        /* default I/O timeout */
#define CELLAR_CONNECT_TIMEOUT_MS 5000 /* default connect timeout */

/* ---- errors ---------------------------------------------------------------- */
typedef enum {
    CELLAR_OK = 0,
    CELLAR_ERR_PERM = -1,          /* operation not permitted */
    CELLAR_ERR_NOENT = -2,         /* no such file or directory */
    CELLAR_ERR_IO = -5,            /* I/O error (device flash, local file) */
    CELLAR_ERR_BADF = -9,          /* unknown or closed file handle */
    CELLAR_ERR_NOMEM = -12,        /* out of memory / a device table is full */
    CELLAR_ERR_ACCES = -13,        /* not allowed (e.g. /bak is read-only) */
    CELLAR_ERR_BUSY = -16,         /* in use */
    CELLAR_ERR_EXIST = -17,        /* already exists */
    CELLAR_ERR_NOTDIR = -20,       /* not a directory */
    CELLAR_ERR_ISDIR = -21,        /* is a directory */
    CELLAR_ERR_INVAL = -22,        /* invalid argument, path or URL */
    CELLAR_ERR_FBIG = -27,         /* file too large */
    CELLAR_ERR_NOSPC = -28,        /* no space left on the device */
    CELLAR_ERR_ROFS = -30,         /* read-only filesystem */
    CELLAR_ERR_PIPE = -32,         /* connection closed by the device */
    CELLAR_ERR_NAMETOOLONG = -36,  /* path longer than CELLAR_PATH_MAX */
    CELLAR_ERR_NOTEMPTY = -39,     /* directory not empty */
    CELLAR_ERR_PROTO = -71,        /* protocol error (malformed reply) */
    CELLAR_ERR_BADMSG = -74,       /* SHA-256 or size mismatch after transfer */
    CELLAR_ERR_NOTMOUNTED = -77,   /* no filesystem on the partition */
    CELLAR_ERR_ILSEQ = -84,        /* data on flash is corrupt */
    CELLAR_ERR_MSGSIZE = -90,      /* frame or field too large */
    CELLAR_ERR_NOTSUP = -95,       /* not supported (transport, request) */
    CELLAR_ERR_CONNRESET = -104,   /* connection reset */
    CELLAR_ERR_NOTCONN = -107,     /* handle not connected (or broken) */
    CELLAR_ERR_TIMEDOUT = -110,    /* no answer within the timeout */
    CELLAR_ERR_CONNREFUSED = -111, /* nothing listens at the URL */
    CELLAR_ERR_HOSTUNREACH = -113, /* host unknown or unreachable */
} cellar_err_t;

/* Human-readable text of an error code ("no such file or directory"); never
 * NULL. Accepts negative or positive codes; unknown codes give "error N"
 * from a static table ("unknown error"). Thread-safe. */
const char *cellar_strerror(int err);

/* Short symbolic name of an error code ("ENOENT"), or "EUNKNOWN". */
const char *cellar_errname(int err);

/* ---- URLs -------------------------------------------------------------------- */
typedef enum {
    CELLAR_URL_TCP = 1,  /* tcp://HOST[:PORT] (also HOST:PORT) */
    CELLAR_URL_TLS = 2,  /* tls://HOST[:PORT] */
    CELLAR_URL_UART = 3, /* uart:/dev/ttyX[?baud=N] */
} cellar_url_kind_t;

typedef struct cellar_url {
    cellar_url_kind_t kind;
    char host[256];   /* TCP/TLS: host name or address (IPv6 without []) */
    uint16_t port;    /* TCP/TLS: port (default 7070 / 7443) */
    char device[256]; /* UART: device path */
    uint32_t baud;    /* UART: baud rate (default 115200) */
} cellar_url_t;

/* Parse a device URL. Returns 0 or CELLAR_ERR_INVAL. Accepted:
 * "tcp://HOST", "tcp://HOST:PORT", "tcp://[IPV6]:PORT", "HOST:PORT",
 * "tls://HOST[:PORT]", "uart:/dev/ttyX?baud=N" (also "uart:///dev/ttyX").
 * The daemon's parser (the same syntax for --listen): IPv6 addresses only
 * in brackets, a trailing "/" is ignored, the UART device is an absolute
 * path; port 0 is refused here (it means "any port" to a listener). */
int cellar_url_parse(const char *url, cellar_url_t *out);

/* ---- transports -------------------------------------------------------------- */
/* A byte stream in the mbedTLS BIO shape, so TLS and UART framing stack on
 * any transport. cellar_connect() uses the daemon's own transport layer
 * (transport/tp.h) through a blocking adapter of this shape; a caller may
 * hand in its own with cellar_connect_transport(). send/recv return a byte count (> 0), 0 on orderly close
 * (recv only), or a negative cellar_err_t. They block for at most
 * timeout_ms milliseconds and return CELLAR_ERR_TIMEDOUT after it;
 * timeout_ms 0 means "do not block" (recv is polled that way while a
 * transfer has other work to do). close is called once by cellar_close(). */
typedef struct cellar_transport {
    const char *name; /* "tcp", ... (for messages) */
    int (*send)(void *ctx, const void *buf, size_t len, uint32_t timeout_ms);
    int (*recv)(void *ctx, void *buf, size_t len, uint32_t timeout_ms);
    void (*close)(void *ctx);
} cellar_transport_t;

/* ---- configuration ----------------------------------------------------------- */
/* Zero fields mean "default". */
typedef struct cellar_config {
    const char *client_name;     /* sent in Hello (default "libcellar/0.1.0");
                                  * at most 63 bytes are sent */
    uint32_t timeout_ms;         /* per-request I/O timeout (CELLAR_TIMEOUT_MS) */
    uint32_t connect_timeout_ms; /* CELLAR_CONNECT_TIMEOUT_MS */
    void *buffer;                /* CELLAR_BUFFER_SIZE bytes, 16-byte aligned,
                                  * owned by the caller; NULL = allocate */
    /* tls:// (issue 13; docs/TLS.md). NULL = the environment variable in
     * brackets, "" = none. */
    const char *tls_cert;        /* own certificate file [CELLAR_CERT] */
    const char *tls_key;         /* its private key file [CELLAR_KEY] */
    const char *tls_ca;          /* CA of the device certificate [CELLAR_CA] */
    const char *tls_psk;         /* "IDENTITY:HEXKEY" [CELLAR_PSK]; with it
                                  * the handshake is ECDHE-PSK */
    /* issue 11: connect sends Hello and returns without waiting for its
     * answer, so the first requests travel with it (docs/PIPELINING.md).
     * The answer is taken before the first reply, or by cellar_info(); a
     * refused Hello then fails that call. false = wait in connect. */
    bool hello_pipelined;
} cellar_config_t;

/* ---- device information (from Hello) ----------------------------------------- */
typedef struct cellar_partition {
    char path[16];        /* "/usr", "/bak" */
    uint32_t first_block; /* first erase block on the flash */
    uint32_t block_count; /* erase blocks */
    bool read_only;       /* not writable through file RPCs */
    uint32_t state;       /* CELLAR_PART_OK, _FULL, _NO_MANIFEST, _UNMOUNTED */
    uint32_t kind;        /* issue 15: CELLAR_KIND_CFS, _RAW, _FAT (proto PartKind);
                             for _FAT (the SD card at /sd) block_count is the
                             card's size in block_size units */
} cellar_partition_t;

/* cellar_partition_t.kind (proto PartKind), issue 15. */
enum { CELLAR_KIND_CFS = 0, CELLAR_KIND_RAW = 1, CELLAR_KIND_FAT = 2 };

/* cellar_partition_t.state (proto PartState; docs/UPDATE.md, "Start-up
 * states"). */
enum {
    CELLAR_PART_OK = 0,          /* served as usual */
    CELLAR_PART_FULL = 1,        /* readable; too full for bookkeeping:
                                    only removals and aborts work */
    CELLAR_PART_NO_MANIFEST = 2, /* readable; writes refused (EIO); removals
                                    work; Format is the last resort */
    CELLAR_PART_UNMOUNTED = 3,   /* not served: Format it */
};
#define CELLAR_MAX_PROBLEMS 8  /* start-up problems reported by Hello */

typedef struct cellar_info {
    uint32_t version;      /* protocol version of the device */
    char device[64];       /* device identity */
    char firmware[64];     /* e.g. "cellard 0.1.0" */
    uint32_t max_frame;    /* largest frame the device accepts, bytes */
    uint32_t max_inflight; /* requests a client may keep in flight (>= 1) */
    uint32_t max_path;     /* longest path, bytes */
    uint32_t max_chunk;    /* largest Read length / Write data, bytes (>= 1) */
    uint32_t max_handles;  /* open file handles per connection */
    uint32_t block_size;   /* flash erase block, bytes */
    uint32_t block_count;  /* erase blocks on the flash */
    uint32_t page_size;    /* flash program page, bytes */
    uint32_t npartitions;
    cellar_partition_t partitions[CELLAR_MAX_PARTITIONS];
    uint32_t nproblems;    /* what start-up found wrong and did about it */
    char problems[CELLAR_MAX_PROBLEMS][160];
    /* access control (issue 13, docs/SECURITY.md); "" from a device that
     * does not report them */
    char identity[64];     /* who the device takes us for: "anonymous", a CN */
    char role[8];          /* "admin", "writer", "reader", "none" */
    uint32_t nprefixes;    /* a writer's write prefixes (0 = everywhere) */
    char prefixes[4][64];
    /* issue 14: items one request may carry in a list (update declare and
     * manifest import entries, backup and restore paths): 16, or what a
     * small-RAM device says (3 with 1 KiB frames) */
    uint32_t max_items;
} cellar_info_t;

/* ---- the handle ---------------------------------------------------------------- */
/* Caller-owned. All fields are private to the library. */
typedef struct cellar {
    const cellar_transport_t *tp; /* NULL when not connected */
    void *tp_ctx;
    int fd;                       /* socket of the built-in TCP transport */
    cellar_config_t cfg;
    uint8_t *buf;                 /* CELLAR_BUFFER_SIZE bytes */
    bool own_buf;                 /* buf was allocated by the library */
    bool broken;                  /* stream out of sync: refuse further I/O */
    uint32_t next_id;             /* next request id (never 0) */
    uint32_t rx_start, rx_end;    /* buffered received bytes in buf */
    cellar_info_t info;
    char errmsg[256];
    char errpath[512];
    /* tls:// (issue 13): the connection's TLS config and the session kept
     * for the next connect (resumption in one round trip) */
    void *tls;
    void *tls_conn;
    uint32_t tls_session_len;
    uint8_t tls_session[2048];
    /* issue 11: pipelined Hello and the link estimate (docs/PIPELINING.md) */
    bool hello_pending;           /* Hello sent, its answer not yet taken */
    int hello_err;                /* how it ended: 0 or the error */
    uint32_t hello_id;
    uint64_t hello_sent_us;
    uint32_t rtt_us;              /* smallest request -> answer time seen */
    uint64_t rate_bps;            /* receive rate seen in transfers (0 = unknown) */
} cellar_t;

/* Initialise a handle (cannot fail). cfg may be NULL (all defaults); it is
 * copied, but cfg->buffer and cfg->client_name must outlive the handle. */
void cellar_init(cellar_t *c, const cellar_config_t *cfg);

/* Connect to url (see cellar_url_parse) and exchange Hello; the device's
 * limits are then in cellar_info(). TCP resolves HOST with getaddrinfo and
 * tries every IPv4/IPv6 address; TCP_NODELAY is set. tls:// runs a TLS 1.2
 * handshake first (cellar_config_t.tls_*; the device certificate is checked
 * against tls_ca; a handle that connects again offers its last session and
 * resumes in one round trip); a failed handshake is CELLAR_ERR_ACCES (a
 * certificate or PSK refused) with the reason in cellar_errmsg. uart: opens
 * the serial port and sets the link up (issue 12, docs/UART.md); a link
 * reset by the device later fails calls with -ECONNRESET. Returns 0 or an error
 * (CELLAR_ERR_CONNREFUSED, _HOSTUNREACH, _TIMEDOUT, _INVAL for a bad URL,
 * _PROTO for a device that does not speak the protocol, _NOMEM). On failure
 * the handle is left unconnected; cellar_close() is still safe. Calling it
 * on a connected handle closes the old connection first. */
int cellar_connect(cellar_t *c, const char *url);

/* Connect over a caller-provided byte stream (socketpair, link emulator,
 * TLS session, ...) and exchange Hello. The transport's close is called by
 * cellar_close (and on a failed Hello). Returns as cellar_connect. */
int cellar_connect_transport(cellar_t *c, const cellar_transport_t *tp,
                             void *tp_ctx);

/* TLS facts of a tls:// connection (issue 13). */
typedef struct cellar_tls_info {
    bool tls;               /* the connection is TLS */
    bool resumed;           /* the handshake resumed the last session */
    bool psk;               /* ECDHE-PSK rather than certificates */
    uint32_t round_trips;   /* handshake round trips (2 full, 1 resumed) */
    uint32_t hs_bytes_out;  /* handshake bytes sent */
    uint32_t hs_bytes_in;   /* handshake bytes received */
    char suite[64];         /* cipher suite */
} cellar_tls_info_t;

/* Fill *out for the current connection (zeros when not TLS). Returns 0 or
 * CELLAR_ERR_NOTCONN. */
int cellar_tls_info(const cellar_t *c, cellar_tls_info_t *out);

/* Close the connection and free the buffer the library allocated. The
 * device closes every file handle of the connection. NULL-safe; the handle
 * may be connected again afterwards. */
void cellar_close(cellar_t *c);

/* true while the handle is connected and its stream is in sync. After a
 * transport error or a malformed reply the handle refuses further requests
 * with CELLAR_ERR_NOTCONN; close it and connect again. */
bool cellar_connected(const cellar_t *c);

/* The device's Hello data (valid while connected; zero when a pipelined
 * Hello was refused: cellar_hello_status). */
const cellar_info_t *cellar_info(const cellar_t *c);
/* How a pipelined Hello ended (issue 11): waits for its answer if still
 * due; 0, or the error that refused it (cellar_errmsg tells why, e.g. the
 * ACL gives this client no role). */
int cellar_hello_status(cellar_t *c);

/* Message of the last failure on this handle ("" if none). Valid until the
 * next call on the handle. */
const char *cellar_errmsg(const cellar_t *c);

/* The path the last failure is about: a local path as given, or a device
 * path prefixed with ':' (the real name, never a temporary); "" when the
 * failure is not about a path (connection, protocol). */
const char *cellar_errpath(const cellar_t *c);

/* Request timeout in milliseconds (0 = CELLAR_TIMEOUT_MS), from now on. */
void cellar_set_timeout(cellar_t *c, uint32_t timeout_ms);

/* ---- requests: one RPC each ---------------------------------------------------- */
typedef enum {
    CELLAR_TYPE_NONE = 0,
    CELLAR_TYPE_FILE = 1,
    CELLAR_TYPE_DIR = 2,
} cellar_type_t;

typedef struct cellar_stat {
    char name[256];     /* entry name (list) or the path asked (stat) */
    cellar_type_t type;
    uint64_t size;      /* bytes (0 for directories) */
    uint32_t ctime;     /* created, seconds since 1970 */
    uint32_t mtime;     /* last modified, seconds since 1970 */
    uint32_t id;        /* the file's id on its partition (0: not told) */
} cellar_stat_t;

/* Round trip with an echoed payload of at most 64 bytes (payload may be
 * NULL when len is 0). Returns 0, or CELLAR_ERR_PROTO if the echo differs. */
int cellar_ping(cellar_t *c, const void *payload, uint32_t len);

/* Information about one path. Returns 0 or an error (CELLAR_ERR_NOENT). */
int cellar_stat(cellar_t *c, const char *path, cellar_stat_t *st);

/* One page of a directory listing. *cursor is 0 for the first page and is
 * set to the cursor of the next page, 0 when the listing is complete.
 * max_entries 0 means the device default; at most CELLAR_LIST_PAGE entries
 * are stored. Returns the number of entries stored in out (>= 0). Entries
 * come in no particular order. */
int cellar_list(cellar_t *c, const char *path, uint32_t *cursor,
                cellar_stat_t *out, uint32_t max_entries);

/* Whole listing: calls fn for every entry, page after page. fn may make
 * other requests on the same handle. A non-zero return from fn stops the
 * listing and is returned. Returns 0, fn's value or an error. */
typedef int (*cellar_list_fn)(void *ctx, const cellar_stat_t *entry);
int cellar_list_all(cellar_t *c, const char *path, cellar_list_fn fn,
                    void *ctx);

/* Whole listing into a malloc'ed array (free() it). At most 1,000,000
 * entries (CELLAR_ERR_NOMEM beyond). Returns the number of entries. */
int cellar_list_alloc(cellar_t *c, const char *path, cellar_stat_t **out);

/* Open flags (the protocol's OpenFlags; combine with |). */
enum {
    CELLAR_O_READ = 1,
    CELLAR_O_WRITE = 2,
    CELLAR_O_RDWR = 3,
    CELLAR_O_CREATE = 4,  /* create if missing */
    CELLAR_O_EXCL = 8,    /* with CREATE: fail with EXIST if it exists */
    CELLAR_O_TRUNC = 16,  /* truncate to 0 */
    CELLAR_O_APPEND = 32, /* every write goes to the end */
};

/* A file handle chosen by the device (never 0). */
typedef uint32_t cellar_fh_t;

/* Open a file: *fh gets the handle, *size (may be NULL) the file size.
 * Returns 0 or an error. Handles belong to the connection (at most
 * cellar_info()->max_handles open at once) and close with it. */
int cellar_file_open(cellar_t *c, const char *path, uint32_t flags,
                     cellar_fh_t *fh, uint64_t *size);

/* Read up to len bytes at absolute offset off (handles keep no cursor).
 * Large reads are split into max_chunk requests and pipelined. Returns the
 * bytes read (short only at end of file; 0 at or past the end) or an error.
 * len is at most INT32_MAX. */
int32_t cellar_file_read(cellar_t *c, cellar_fh_t fh, uint64_t off, void *buf,
                         uint32_t len);

/* Write len bytes at absolute offset off (ignored with CELLAR_O_APPEND).
 * Large writes are split and pipelined. Data becomes durable at
 * cellar_file_sync or cellar_file_close. Returns len or an error. */
int32_t cellar_file_write(cellar_t *c, cellar_fh_t fh, uint64_t off,
                          const void *buf, uint32_t len);

/* Seek the device-side position (whence 0 set, 1 cur, 2 end). Returns the
 * new position (>= 0) or an error; *size (may be NULL) gets the file size. */
int64_t cellar_file_seek(cellar_t *c, cellar_fh_t fh, int64_t off, int whence,
                         uint64_t *size);

/* Truncate (or extend) an open file to size bytes. */
int cellar_file_truncate(cellar_t *c, cellar_fh_t fh, uint64_t size);

/* Truncate a file by path (it must not be open elsewhere for writing). */
int cellar_truncate(cellar_t *c, const char *path, uint64_t size);

/* Make the data written so far durable. */
int cellar_file_sync(cellar_t *c, cellar_fh_t fh);

/* Sync and close a handle. */
int cellar_file_close(cellar_t *c, cellar_fh_t fh);

/* Remove a file or an empty directory. */
int cellar_remove(cellar_t *c, const char *path);

/* Create a directory; with parents, create missing parents too and succeed
 * if it exists already (like mkdir -p). */
int cellar_mkdir(cellar_t *c, const char *path, bool parents);

/* Remove an empty directory. */
int cellar_rmdir(cellar_t *c, const char *path);

/* Rename atomically; replaces an existing file at `to`. */
int cellar_rename(cellar_t *c, const char *from, const char *to);

/* Space and wear of the partition holding path ("/usr" when NULL). */
typedef struct cellar_statfs {
    uint64_t total;       /* bytes usable for data and metadata */
    uint64_t used;        /* bytes the log holds (live and stale) */
    uint64_t live;        /* bytes of live records */
    uint64_t free;        /* bytes erased and ready */
    uint64_t reclaimable; /* stale bytes garbage collection can free */
    uint64_t available;   /* bytes files may still grow by (0 on /bak) */
    uint32_t files;
    uint32_t dirs;
    uint32_t erase_max;   /* erase counts over good blocks */
    uint32_t erase_mean;
    uint32_t erase_min;
    uint32_t bad_blocks;  /* blocks retired as worn out */
    uint32_t block_size;
    uint32_t block_count;
    /* flash pages (program units of page_size bytes) by state: free
     * (erased), used (live), erased (stale, GC reclaims them), bad */
    uint32_t page_size;
    uint32_t pages_free, pages_used, pages_erased, pages_bad;
    uint32_t gc_threshold; /* GC starts below this many free blocks */
} cellar_statfs_t;
int cellar_statfs(cellar_t *c, const char *path, cellar_statfs_t *out);

/* Garbage collection now on a partition ("/usr" when NULL): until blocks
 * blocks were gained (0: everything stale that can be reached). A long
 * request on the device, in steps. */
typedef struct cellar_gc_result {
    uint32_t blocks_swept;      /* blocks the collector went through */
    uint64_t reclaimed;         /* stale bytes reclaimed */
    uint64_t free_before, free_after; /* erased bytes */
    uint64_t reclaimable_after; /* stale bytes left */
} cellar_gc_result_t;
int cellar_gc(cellar_t *c, const char *partition, uint32_t blocks,
              cellar_gc_result_t *out);
/* Set the automatic GC threshold (blocks, at least 6) of a partition
 * until the device restarts; *previous (may be NULL) gets the
 * old one. Needs the admin role. */
int cellar_gc_threshold(cellar_t *c, const char *partition, uint32_t blocks,
                        uint32_t *previous);

/* SHA-256 of length bytes of a file from offset, computed on the device
 * (length 0 = to the end). *hashed (may be NULL) gets the bytes hashed. */
int cellar_hash(cellar_t *c, const char *path, uint64_t offset,
                uint64_t length, uint8_t sha256[CELLAR_SHA256_SIZE],
                uint64_t *hashed);

/* Erase and re-create the filesystem of a partition: "/usr" (NULL means
 * "/usr") or "" for every partition. Everything on it is lost. */
int cellar_format(cellar_t *c, const char *partition);

/* ---- whole files and trees ------------------------------------------------------ */
/* Result of one file of a transfer: 0 copied, CELLAR_SKIPPED unchanged. */
#define CELLAR_SKIPPED 1

/* Progress of the current file: done of total bytes, called after each
 * acknowledged chunk (and once with done == 0 at the start). */
typedef void (*cellar_progress_fn)(void *ctx, const char *path, uint64_t done,
                                   uint64_t total);

/* Called after each file of a transfer (and each directory created by a
 * tree copy, with result 0) with src/dst as given or joined, and the result:
 * 0 copied, CELLAR_SKIPPED, or a negative error (cellar_errmsg tells why). */
typedef void (*cellar_file_fn)(void *ctx, const char *src, const char *dst,
                               bool is_dir, int result);

/* Options of a transfer; NULL or zero fields mean defaults. */
typedef struct cellar_xfer {
    bool skip_unchanged;  /* do not copy files whose SHA-256 already match */
    bool no_mtime;        /* get: do not set local mtimes from the device */
    uint32_t chunk;       /* bytes per request (0 = min(16 KiB, max_chunk)) */
    uint32_t inflight;    /* requests in flight (0 = device max_inflight,
                           * capped at CELLAR_MAX_INFLIGHT) */
    uint32_t verify_range; /* files larger than this are SHA-256 verified per
                            * range of this many bytes, pipelined with the
                            * data (0 = CELLAR_VERIFY_RANGE; UINT32_MAX =
                            * always one Hash of the whole file at the end) */
    cellar_progress_fn progress;
    void *progress_ctx;
    cellar_file_fn on_file; /* tree copies and single files */
    void *on_file_ctx;
} cellar_xfer_t;

/* Upload a local file to the device. The data goes to a hidden temporary
 * file in the destination directory (".NAME.cellar-tmp"), pipelined
 * (`inflight` Write requests of `chunk` bytes in flight). It is then checked
 * against the SHA-256 computed locally (mbedTLS) by the device's Hash:
 * for files up to verify_range bytes one Hash of the whole file after it is
 * closed; for larger files one Hash per range, each sent (after a Sync) in
 * the same pipeline as the data, so the device hashes range k while range
 * k+1 is still flowing and a mismatch stops the transfer at once (the last
 * range is hashed to the end of the file, which also proves its size).
 * Only then is the temporary renamed over `remote` in one atomic step, so
 * a broken transfer never leaves a truncated file under the real name; on
 * any failure the temporary is removed if the connection still works (the
 * device closes a dead client's handles). Returns 0 (copied),
 * CELLAR_SKIPPED (skip_unchanged and the device already holds the same
 * SHA-256) or an error: CELLAR_ERR_BADMSG when a hash differs,
 * CELLAR_ERR_NOSPC, a negative errno for the local file, ... */
int cellar_put_file(cellar_t *c, const char *local, const char *remote,
                    const cellar_xfer_t *x);

/* Upload len bytes from memory, as cellar_put_file. */
int cellar_put_mem(cellar_t *c, const void *data, size_t len,
                   const char *remote, const cellar_xfer_t *x);

/* Download a file to a local path: pipelined Reads into a temporary
 * ".NAME.cellar-tmp" beside local, SHA-256 checked against the device's
 * Hash (whole file, or per verify_range range pipelined with the Reads, as
 * for cellar_put_file), then renamed over local (so local is never left
 * truncated). Sets the local mtime to the device's unless x->no_mtime.
 * Returns 0, or CELLAR_SKIPPED (skip_unchanged and local already
 * identical), or an error (CELLAR_ERR_BADMSG on a hash mismatch or a file
 * that changed during the transfer). */
int cellar_get_file(cellar_t *c, const char *remote, const char *local,
                    const cellar_xfer_t *x);

/* Download a file to an open file descriptor (a pipe, stdout, ...), with
 * the same SHA-256 verification; the data is already written when a
 * mismatch is found (CELLAR_ERR_BADMSG). skip_unchanged is ignored. */
int cellar_get_fd(cellar_t *c, const char *remote, int fd,
                  const cellar_xfer_t *x);

/* Download a whole file into a malloc'ed buffer (free() it), SHA-256
 * verified. At most max_size bytes (CELLAR_ERR_FBIG beyond). Returns 0 and
 * sets *data and *len. */
int cellar_get_mem(cellar_t *c, const char *remote, size_t max_size,
                   void **data, size_t *len);

/* Recursive upload of a local directory to remote (created, with parents,
 * if missing): every regular file is copied as cellar_put_file does,
 * sub-directories recursively. Symbolic links are followed; other special
 * files are skipped. Continues after a failed file and returns the first
 * error (0 if none); x->on_file reports each file. */
int cellar_put_tree(cellar_t *c, const char *localdir, const char *remotedir,
                    const cellar_xfer_t *x);

/* Recursive download of a device directory into localdir (created if
 * missing), as cellar_get_file for each file. Continues after a failed file
 * and returns the first error. */
int cellar_get_tree(cellar_t *c, const char *remotedir, const char *localdir,
                    const cellar_xfer_t *x);

/* Remove a file, or a directory and everything under it. */
int cellar_remove_tree(cellar_t *c, const char *path);

/* ---- issue 11: batched requests (docs/PIPELINING.md) ----------------------------
 * Each call sends all of its requests back to back (up to
 * CELLAR_BATCH_INFLIGHT small requests in flight) and reads the answers as
 * they come, so it costs about one round trip however many paths it has;
 * a tree listing costs one per directory level. */
#define CELLAR_BATCH_INFLIGHT 128   /* small requests (paths) in flight */
#define CELLAR_LIST_AHEAD 4         /* List pages asked at once for a directory */

/* One entry of a tree listing. */
typedef struct cellar_tree_entry {
    char *path;         /* full device path (st.name is the last component) */
    cellar_stat_t st;
    unsigned depth;     /* 1 = a child of the listed directory */
} cellar_tree_entry_t;

typedef struct cellar_tree {
    cellar_stat_t root;       /* Stat of the listed path (name = the path) */
    cellar_tree_entry_t *v;   /* entries in pre-order: a directory, then
                               * what is under it; names sorted bytewise */
    size_t n;
} cellar_tree_t;

/* Everything under path, max_depth levels down (0 = no limit, 1 = the
 * directory itself, as ls): one round trip per level (Stat and the first
 * CELLAR_LIST_AHEAD List pages of every directory of a level are sent at
 * once; a longer directory costs one more round per CELLAR_LIST_AHEAD
 * pages). A file path gives n = 0 and its Stat in root. The partition
 * root's ".cellar" is never listed. Returns 0 (free with cellar_tree_free)
 * or the first error (errpath names the directory). */
int cellar_tree_list(cellar_t *c, const char *path, unsigned max_depth,
                     cellar_tree_t *out);
void cellar_tree_free(cellar_tree_t *t);

/* Device SHA-256 of n whole files, pipelined: sha[i], sizes[i] (may be
 * NULL) and errs[i] (0 or the file's error). Returns 0 when every file was
 * hashed, the first file error, or a connection error. */
int cellar_hash_many(cellar_t *c, size_t n, const char *const *paths,
                     uint8_t (*sha)[CELLAR_SHA256_SIZE], uint64_t *sizes, int *errs);

/* StatFs of n paths, pipelined; errs[i] as cellar_hash_many. */
int cellar_statfs_many(cellar_t *c, size_t n, const char *const *paths,
                       cellar_statfs_t *out, int *errs);

/* Namespace requests about n paths, pipelined: one round trip for all of
 * them (touch: two per max_handles - 1 paths). The device serves them in
 * order, so `mkdir a a/b` works. each(ctx, i, err), if given, is called
 * once per path with its result, while cellar_errmsg / cellar_errpath are
 * that answer's. Return 0, the first path's error, or a connection error.
 * touch: open for appending with O_CREATE, then close; a directory is left
 * alone (no error). remove: the device's Remove, which takes a file or an
 * empty directory (the CLI's rm Stats first and refuses directories). */
typedef void (*cellar_each_fn)(void *ctx, size_t i, int err);
/* Stat of each path into st[i] (left as it was for a path that failed). */
int cellar_stat_many(cellar_t *c, size_t n, const char *const *paths, cellar_stat_t *st,
                     cellar_each_fn each, void *ctx);
int cellar_mkdir_many(cellar_t *c, size_t n, const char *const *paths, bool parents,
                      cellar_each_fn each, void *ctx);
int cellar_rmdir_many(cellar_t *c, size_t n, const char *const *paths,
                      cellar_each_fn each, void *ctx);
int cellar_remove_many(cellar_t *c, size_t n, const char *const *paths,
                       cellar_each_fn each, void *ctx);
int cellar_touch_many(cellar_t *c, size_t n, const char *const *paths,
                      cellar_each_fn each, void *ctx);
/* from[i] renamed to to[i], in order. */
int cellar_rename_many(cellar_t *c, size_t n, const char *const *from,
                       const char *const *to, cellar_each_fn each, void *ctx);

/* ---- SHA-256 helpers -------------------------------------------------------------- */
/* SHA-256 of a local file. Returns 0 or a negative errno. */
int cellar_sha256_file(const char *path, uint8_t sha256[CELLAR_SHA256_SIZE]);

/* SHA-256 of a buffer (cannot fail). */
void cellar_sha256(const void *data, size_t len,
                   uint8_t sha256[CELLAR_SHA256_SIZE]);

/* Lower-case hex of a digest into hex (65 bytes with the NUL); returns hex. */
char *cellar_sha256_hex(const uint8_t sha256[CELLAR_SHA256_SIZE], char hex[65]);

/* ---- manifest, update bundles, backup ------------------------------------------
 * The device keeps a manifest of every file of /usr: its size and SHA-256,
 * written in the same atomic step as the change that gave the file its
 * content. /bak has its own manifest, for the copies it holds. Each
 * partition has a reserved directory ".cellar" at its root, hidden from
 * listings and refused by file RPCs.
 *
 * An update ("bundle") is a declared list of files (path, size, SHA-256)
 * and removals under /usr; the device stages the data, checks every size
 * and SHA-256 at commit and makes the whole bundle and its manifest entries
 * visible in one atomic step. A bundle is named by the SHA-256 of its
 * declaration, so pushing the same tree again after a dropped connection or
 * a device restart resumes it: only the bytes not staged yet are sent. One
 * update runs per device at a time (CELLAR_ERR_BUSY for a second live one).
 *
 * The requests that may keep the device busy hashing or copying files
 * (UpdateBegin, UpdateCommit, Verify, Backup, Restore) wait at least
 * CELLAR_SLOW_TIMEOUT_MS (2 minutes) for their answer.
 */
#define CELLAR_MANIFEST_PAGE 32      /* entries per Manifest reply */
#define CELLAR_IMPORT_PAGE 16        /* entries per ManifestImport request */
#define CELLAR_VERIFY_PAGE 16        /* manifest entries per Verify request */
#define CELLAR_DECLARE_PAGE 16       /* bundle entries per Declare request */
#define CELLAR_COPY_PATHS 16         /* paths of one backup / restore */
#define CELLAR_COPY_SKIPPED 16       /* skipped paths one copy reply names */
#define CELLAR_MANIFEST_MAX 1000000  /* entries a listing may hold */
#define CELLAR_PUSH_MAX_FILES 100000 /* local files of one push */
#define CELLAR_SLOW_TIMEOUT_MS 120000

/* One manifest entry. */
typedef struct cellar_mentry {
    char path[256];         /* full device path: "/usr/a.py" */
    int64_t size;           /* bytes; -1 = not known (imported without one) */
    uint8_t sha256[CELLAR_SHA256_SIZE];
    uint32_t mtime;         /* when the entry was written, seconds since 1970
                             * (0 = not known) */
} cellar_mentry_t;

/* The whole manifest of a partition ("/usr", or NULL for it; "/bak") into
 * a malloc'ed array (free() it; NULL when empty), sorted by path (bytewise
 * strcmp). At most CELLAR_MANIFEST_MAX entries (CELLAR_ERR_NOMEM beyond).
 * Returns 0 and sets *out and *n, or an error. */
int cellar_manifest_list(cellar_t *c, const char *partition,
                         cellar_mentry_t **out, size_t *n);

/* The manifest digest that fleet tools compare: the SHA-256 of one line per
 * entry, in path order (bytewise strcmp; the entries may be given in any
 * order),
 *
 *     "<sha256 as 64 lower-case hex>  <size in decimal, or '-' if unknown>  <path>\n"
 *
 * (two spaces between fields; an empty manifest hashes the empty string).
 * These are exactly the lines `cellar manifest` prints, so
 * `cellar manifest | sha256sum` gives the same digest. Returns 0 or
 * CELLAR_ERR_NOMEM (only for unsorted input of more than one entry). */
int cellar_manifest_digest(const cellar_mentry_t *entries, size_t n,
                           uint8_t out[CELLAR_SHA256_SIZE]);

/* Set /usr manifest entries (size -1 allowed), CELLAR_IMPORT_PAGE entries
 * per request; each request is atomic on its own, so a failure part-way
 * leaves the earlier pages imported. Paths must be under "/usr/". Returns
 * 0 or an error (the device's message names the entry). */
int cellar_manifest_import(cellar_t *c, const cellar_mentry_t *entries,
                           size_t n);

/* Parse a QuecPython checksum.json: a JSON list of objects
 *     {"name": "/usr/a.py", "sha256": "<64 hex digits>"}
 * with an optional "size" (bytes; -1 or absent = unknown) and "mtime"; the
 * object `cellar --json manifest` prints (the list under "files") is
 * accepted too. Names must be normalised absolute paths under /usr (no
 * ".", "..", "//", trailing '/'; not the reserved /usr/.cellar), at most
 * CELLAR_PATH_MAX bytes, each listed once. On success *out is a
 * malloc'ed array (free() it; NULL when empty) in file order and *n its
 * length. On failure returns CELLAR_ERR_INVAL (bad JSON, bad field, bad
 * path) or CELLAR_ERR_NOMEM and writes a message naming the entry
 * ("entry 3 (/usr/x.py): sha256 is not 64 hex digits") into err (errcap
 * bytes; err may be NULL). */
int cellar_checksum_json_parse(const char *text, size_t len,
                               cellar_mentry_t **out, size_t *n, char *err,
                               size_t errcap);

/* The same from a file (a negative errno when it cannot be read; the
 * message then names the file). */
int cellar_checksum_json_load(const char *file, cellar_mentry_t **out,
                              size_t *n, char *err, size_t errcap);

/* What is wrong with a file. */
typedef enum {
    CELLAR_PROBLEM_MISSING = 1,       /* in the manifest, not on flash */
    CELLAR_PROBLEM_MISMATCH = 2,      /* size or SHA-256 differs */
    CELLAR_PROBLEM_UNREADABLE = 3,    /* flash data is corrupt */
    CELLAR_PROBLEM_NOT_IN_BACKUP = 4, /* repair/restore: no verified copy in /bak */
    CELLAR_PROBLEM_UNTRACKED = 5,     /* on flash, not in the manifest (found by
                                       * the client's walk of the tree) */
} cellar_problem_kind_t;

/* "missing", "mismatch", "unreadable", "not-in-backup", "untracked" (or
 * "problem N"); never NULL. */
const char *cellar_problem_name(int kind);

typedef struct cellar_problem {
    char path[256];              /* full device path */
    cellar_problem_kind_t kind;
    bool repaired;               /* restored from /bak (verify with repair) */
} cellar_problem_t;

typedef void (*cellar_problem_fn)(void *ctx, const cellar_problem_t *p);

typedef struct cellar_verify_report {
    uint32_t checked;        /* manifest entries the device checked */
    uint32_t files;          /* files found by walking the partition */
    uint32_t missing, mismatch, unreadable, not_in_backup, untracked;
    uint32_t repaired;       /* problems repaired from /bak */
    uint32_t unrepaired;     /* problems left, untracked files included */
} cellar_verify_report_t;

/* Check a partition ("/usr" or NULL, "/bak"): the device checks every
 * manifest entry against its file, page by page (with repair, /usr only,
 * it restores what is wrong from /bak); then the client lists the manifest
 * and walks the partition's tree with List to find untracked files. fn
 * (may be NULL) is called once per problem, untracked files included, in
 * path order, after the checks are done. rep (may be NULL) gets the
 * counts. Returns 0 when the check ran (look at rep->unrepaired for the
 * verdict) or an error. */
int cellar_verify(cellar_t *c, const char *partition, bool repair,
                  cellar_problem_fn fn, void *ctx, cellar_verify_report_t *rep);

/* Result of a backup or restore. */
typedef struct cellar_copy_report {
    uint32_t files;          /* files copied */
    uint32_t unchanged;      /* already identical, not copied */
    uint32_t removed;        /* backup of all: /bak copies of removed files */
    uint64_t bytes;          /* bytes copied */
    uint32_t nskipped;       /* paths not copied (at most CELLAR_COPY_SKIPPED) */
    cellar_problem_t skipped[CELLAR_COPY_SKIPPED]; /* each with the reason */
} cellar_copy_report_t;

/* Copy verified /usr files (and their manifest entries) into /bak in one
 * atomic step: paths are files or directories under /usr, at most
 * CELLAR_COPY_PATHS of them (CELLAR_ERR_INVAL beyond); n == 0 backs up all
 * of /usr (and drops /bak copies of files removed since). Files whose
 * content does not match the manifest are skipped and named in
 * rep->skipped. Returns 0 (look at rep->nskipped) or an error. */
int cellar_backup(cellar_t *c, const char *const *paths, size_t n,
                  cellar_copy_report_t *rep);

/* Copy verified /bak files back into /usr in one atomic step: paths are
 * /usr paths (or the /bak paths of the copies), at most CELLAR_COPY_PATHS;
 * n == 0 restores everything /bak holds. As cellar_backup. */
int cellar_restore(cellar_t *c, const char *const *paths, size_t n,
                   cellar_copy_report_t *rep);

/* Drop the staged update bundle (bundle may be NULL: whichever is staged).
 * Returns 0 or an error. */
int cellar_update_abort(cellar_t *c, const uint8_t bundle[CELLAR_SHA256_SIZE]);

/* ---- push: a local directory as one update bundle ---------------------------- */
typedef enum {
    CELLAR_PUSH_NEW = 1,       /* the path is new on the device */
    CELLAR_PUSH_CHANGED = 2,   /* the device has other content there */
    CELLAR_PUSH_UNCHANGED = 3, /* the device has this content: skipped */
    CELLAR_PUSH_DELETED = 4,   /* removed (delete_extra) */
    CELLAR_PUSH_ABSENT = 5,    /* removal of a path that was gone already */
} cellar_push_action_t;

/* "new", "changed", "unchanged", "deleted", "absent"; never NULL. */
const char *cellar_push_action_name(int action);

typedef struct cellar_push_entry {
    char path[256];          /* device path */
    uint64_t size;           /* bytes (0 for removals) */
    uint8_t sha256[CELLAR_SHA256_SIZE]; /* zero for removals */
    bool remove;             /* a removal entry */
    bool is_dir;             /* removal of a directory (removed at commit if
                              * empty by then) */
    cellar_push_action_t action;
    uint64_t have;           /* bytes the device had staged already (resume) */
    uint64_t sent;           /* file bytes sent by this push */
} cellar_push_entry_t;

/* A local file that is not pushed (symbolic link, device, socket, ...). */
typedef void (*cellar_warn_fn)(void *ctx, const char *local_path,
                               const char *why);

typedef struct cellar_push_opts {
    bool delete_extra;       /* remove device files and directories under
                              * remotedir that localdir does not have */
    bool dry_run;            /* change nothing, stage nothing: compare with
                              * the device's manifest and tree, and report
                              * what a push would do */
    uint32_t chunk;          /* bytes per UpdateWrite (0 = min(16 KiB,
                              * max_chunk)) */
    uint32_t inflight;       /* requests in flight (0 = device max_inflight,
                              * capped at CELLAR_MAX_INFLIGHT) */
    cellar_progress_fn progress; /* per file being sent (may be NULL) */
    void *progress_ctx;
    cellar_warn_fn warn;     /* files skipped locally (may be NULL) */
    void *warn_ctx;
} cellar_push_opts_t;

typedef struct cellar_push_report {
    cellar_push_entry_t *entries; /* the bundle in declaration order: files
                                   * sorted by path, then file removals,
                                   * then directory removals deepest first
                                   * (free with cellar_push_report_free) */
    size_t nentries;
    uint32_t nnew, nchanged, nunchanged, ndeleted, nabsent;
    uint32_t nskipped_local; /* local entries not pushed (see warn) */
    uint64_t bundle_bytes;   /* sum of the sizes of the bundle's files */
    uint64_t to_send;        /* bytes that had to be sent (dry run: would) */
    uint64_t bytes_sent;     /* file bytes sent by this push */
    bool resumed;            /* the device had this bundle staged */
    uint64_t staged;         /* bytes it had staged (UpdateBegin) */
    uint8_t bundle[CELLAR_SHA256_SIZE]; /* the bundle id */
    bool committed;          /* the commit succeeded */
    uint32_t commit_written, commit_removed, commit_unchanged;
    uint64_t commit_bytes;   /* the device's UpdateCommitReply */
    bool have_digest;        /* digest is set */
    uint8_t digest[CELLAR_SHA256_SIZE]; /* /usr manifest digest after the
                                         * commit (dry run: as it is now) */
} cellar_push_report_t;

/* Push localdir to remotedir (a directory under /usr; created as needed)
 * as one atomic update bundle:
 *  1. walk localdir recursively: regular files only (symbolic links and
 *     special files are skipped and reported to warn; ".NAME.cellar-tmp"
 *     leftovers are ignored); size and SHA-256 of each; device path =
 *     remotedir + "/" + the relative path; sorted by path;
 *  2. with delete_extra, list the device tree under remotedir and add a
 *     removal for every file localdir lacks, then for every directory it
 *     lacks (deepest first);
 *  3. bundle id = SHA-256 over the entries in order, each as: the path
 *     bytes, one 0 byte, the size as 8 bytes little-endian, the 32 SHA-256
 *     bytes (zero for removals), one byte 1 for a removal else 0 - so the
 *     same tree gives the same id and an interrupted push resumes;
 *  4. UpdateBegin, UpdateDeclare of every entry (pages of 16), then the
 *     missing bytes of each file to send, pipelined, file after file; each
 *     file is re-hashed locally while it is sent (CELLAR_ERR_BADMSG if it
 *     changed since step 1, before anything is committed); UpdateCommit;
 *  5. list the /usr manifest and compute its digest.
 * A push that fails before the commit leaves the staged data on the device
 * for the next push of the same tree to resume (cellar_update_abort drops
 * it). With dry_run nothing is begun or staged: the actions come from the
 * device's manifest and tree. rep is always initialised (free it with
 * cellar_push_report_free, also after a failure: it holds what was done).
 * Returns 0 or an error (CELLAR_ERR_BUSY: another client's update runs;
 * CELLAR_ERR_NOSPC: the bundle does not fit; CELLAR_ERR_BADMSG naming the
 * path: a file did not arrive intact; CELLAR_ERR_INVAL: remotedir is not
 * under /usr; a negative errno for localdir). */
int cellar_push(cellar_t *c, const char *localdir, const char *remotedir,
                const cellar_push_opts_t *opts, cellar_push_report_t *rep);

/* Free what a push report holds (NULL-safe; the report may be reused). */
void cellar_push_report_free(cellar_push_report_t *rep);

/* ---- bundles: build once, push to many devices -------------------------------
 * cellar_push is these two steps in one call. A fleet tool builds the
 * bundle of a directory once (step 1 of cellar_push: walk + one SHA-256
 * pass over every file, no connection) and pushes it to each device
 * (steps 2-5), from one thread after another or from several threads at
 * once, each with its own cellar_t: a push only reads the bundle.
 *
 *   cellar_bundle_t *b;
 *   cellar_t c;  cellar_init(&c, NULL);
 *   if (cellar_bundle_build(&c, "build/app", "/usr/app", NULL, NULL, &b) == 0)
 *       for (each device) {
 *           cellar_connect(&c, url);
 *           cellar_bundle_push(&c, b, &opts, &rep);  ...
 *           cellar_push_report_free(&rep);  cellar_close(&c);
 *       }
 *   cellar_bundle_free(b);
 *
 * The bundle keeps the paths of the local files, not their data: the
 * files are read again by every push (re-hashed while sent) and must not
 * change in between (a push of a changed file fails with
 * CELLAR_ERR_BADMSG naming it, before anything is committed: build again).
 */
typedef struct cellar_bundle cellar_bundle_t;

/* Build the bundle of localdir for the device directory remotedir (under
 * /usr; trailing slashes dropped): regular files only (symbolic links and
 * special files are skipped and reported to warn, which may be NULL;
 * ".NAME.cellar-tmp" leftovers are ignored), at most CELLAR_PUSH_MAX_FILES,
 * each read once for its size and SHA-256, sorted by device path. Nothing
 * is sent: c only receives the error (cellar_errmsg, cellar_errpath; it
 * need not be connected, and may be NULL for no message). On success *out
 * is a new bundle, owned by the caller (cellar_bundle_free); on failure
 * *out is NULL. Returns 0 or an error: CELLAR_ERR_INVAL (remotedir not
 * under /usr, or a file that would land in /usr/.cellar),
 * CELLAR_ERR_NAMETOOLONG (a device path over CELLAR_PATH_MAX bytes),
 * CELLAR_ERR_NOMEM (out of memory or too many files), or a negative errno
 * for a local file or directory (errpath names it). */
int cellar_bundle_build(cellar_t *c, const char *localdir, const char *remotedir,
                        cellar_warn_fn warn, void *warn_ctx, cellar_bundle_t **out);

/* Push a built bundle to the device of c: steps 2-5 of cellar_push, with
 * opts (may be NULL; its warn is not used: the build reported skipped
 * files, and rep->nskipped_local counts them). With delete_extra the
 * removals come from this device's tree, so the bundle id may differ from
 * device to device; without, it is cellar_bundle_id. The bundle is not
 * changed. rep is always initialised (free it with cellar_push_report_free).
 * Returns as cellar_push; CELLAR_ERR_INVAL when b is NULL,
 * CELLAR_ERR_NOTCONN when c is not connected. */
int cellar_bundle_push(cellar_t *c, const cellar_bundle_t *b,
                       const cellar_push_opts_t *opts, cellar_push_report_t *rep);

/* Files in the bundle (0 for NULL). */
size_t cellar_bundle_count(const cellar_bundle_t *b);

/* File i of the bundle, in declaration order (path, size in bytes,
 * SHA-256; action, have and sent are 0): owned by the bundle, valid until
 * cellar_bundle_free. NULL when i >= cellar_bundle_count(b). */
const cellar_push_entry_t *cellar_bundle_entry(const cellar_bundle_t *b, size_t i);

/* Sum of the sizes of the bundle's files, in bytes. */
uint64_t cellar_bundle_bytes(const cellar_bundle_t *b);

/* The id a push without delete_extra gives the bundle (see cellar_push,
 * step 3): the same on every device. */
void cellar_bundle_id(const cellar_bundle_t *b, uint8_t id[CELLAR_SHA256_SIZE]);

/* Free a bundle (NULL-safe). */
void cellar_bundle_free(cellar_bundle_t *b);

/* ---- raw partitions (issue 15, docs/RAW.md) ------------------------------------
 * Named, block-aligned areas of the flash outside any filesystem ("model",
 * "cfg"), listed by cellar_info() with kind CELLAR_KIND_RAW. Every range
 * must lie inside the partition (CELLAR_ERR_INVAL otherwise); an unknown
 * name is CELLAR_ERR_NOENT. */

/* The raw partition called name in cellar_info(c), or NULL. */
const cellar_partition_t *cellar_raw_find(const cellar_t *c, const char *name);
/* Read up to len bytes at offset (in max_chunk requests); stops at the end
 * of the partition. Returns the bytes read or an error. */
int64_t cellar_raw_read(cellar_t *c, const char *name, uint64_t offset, void *buf,
                        uint32_t len);
/* Program len bytes at offset: every byte written must be erased (0xff) on
 * the device, or that request fails with CELLAR_ERR_EXIST and writes
 * nothing (earlier max_chunk pieces stay written). Returns 0 or an error. */
int cellar_raw_write(cellar_t *c, const char *name, uint64_t offset, const void *buf,
                     uint32_t len);
/* Erase [offset, offset + length) (multiples of the block size, else
 * CELLAR_ERR_INVAL; length 0 = to the end). */
int cellar_raw_erase(cellar_t *c, const char *name, uint64_t offset, uint64_t length);
/* SHA-256 of [offset, offset + length) (length 0 = to the end); *hashed
 * (may be NULL) the bytes hashed. */
int cellar_raw_sha256(cellar_t *c, const char *name, uint64_t offset, uint64_t length,
                      uint8_t sha256[CELLAR_SHA256_SIZE], uint64_t *hashed);
/* Add a raw image to a built bundle (cellar_bundle_build): the entry
 * "raw:NAME" with localfile's size and SHA-256, so files and raw images
 * land in one atomic update (the images are written after the commit; see
 * docs/RAW.md). The file is read again when the bundle is pushed. Returns
 * 0 or an error (CELLAR_ERR_INVAL: a bad name, the name twice; a negative
 * errno for the file). */
int cellar_bundle_add_raw(cellar_t *c, cellar_bundle_t *b, const char *name,
                          const char *localfile);
/* Verified update of a whole raw partition with image (len bytes, at most
 * the partition's size): an update bundle of one entry "raw:NAME"; the
 * device stages the image in /usr, checks its SHA-256, commits it with its
 * manifest entry and only then writes the partition (finishing the write
 * at start-up after a power cut). *unchanged (may be NULL): the device had
 * this image already (nothing sent). Returns 0 or an error (the staging is
 * dropped). */
int cellar_raw_update(cellar_t *c, const char *name, const void *image, uint32_t len,
                      bool *unchanged);

#ifdef __cplusplus
}
#endif

#endif /* CELLAR_H */
