/*
 * libcellar_xfer.c - whole-file and tree transfers of libcellar: pipelined,
 * SHA-256 verified, atomic by temporary name + rename (see include/cellar.h).
 * Above the file RPCs (libcellar_fs.c) and the pipeline (libcellar_pipe.c);
 * see docs/ARCHITECTURE.md, "Clients".
 */
#include "libcellar_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void report(const cellar_xfer_t *x, const char *src, const char *dst,
                   bool is_dir, int result)
{
    if (x && x->on_file)
        x->on_file(x->on_file_ctx, src, dst, is_dir, result);
}

/* ---- upload ----------------------------------------------------------------------- */
typedef struct src {
    cellar_t *c;
    int fd;               /* local file, or -1 */
    const uint8_t *mem;   /* or memory */
    const char *path;     /* local path for messages (may be NULL) */
    bool failed;          /* a local read failed */
} src_t;

static int src_read(void *ctx, uint64_t pos, void *buf, uint32_t len)
{
    src_t *s = ctx;
    if (s->mem) {
        memcpy(buf, s->mem + pos, len);
        return (int)len;
    }
    uint32_t done = 0;
    while (done < len) {
        ssize_t n = pread(s->fd, (uint8_t *)buf + done, len - done,
                          (off_t)(pos + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            s->failed = true;
            if (n == 0)
                return cellar__local_fail(s->c, -EIO, s->path, "file shrank while reading");
            return cellar__local_fail(s->c, -errno, s->path, "read");
        }
        done += (uint32_t)n;
    }
    return (int)len;
}

static int src_sha(src_t *s, uint64_t size, uint8_t out[CELLAR_SHA256_SIZE])
{
    if (s->mem) {
        cellar_sha256(s->mem, (size_t)size, out);
        return 0;
    }
    int err = cellar__sha_fd(s->fd, size, out, NULL);
    if (err < 0) {
        s->failed = true;
        return cellar__local_fail(s->c, err, s->path, "read");
    }
    return 0;
}

static uint64_t verify_range(const cellar_xfer_t *x)
{
    return (x && x->verify_range) ? x->verify_range : CELLAR_VERIFY_RANGE;
}

/* The pipeline of a whole-file transfer of size bytes through handle h:
 * files over verify_range are checked per range by Hash of hash_path,
 * smaller ones are fed to sha (may be NULL) for one Hash at the end. */
static cellar__pipe_t xfer_pipe(const cellar_t *c, const cellar_xfer_t *x,
                                cellar_fh_t h, uint64_t size, const char *hash_path,
                                const char *path, csha_t *sha)
{
    uint64_t range = verify_range(x);
    bool ranged = size > range;
    cellar__pipe_t p = {
        .handle = h, .off = 0, .total = size,
        .chunk = cellar__chunk(c, x), .window = cellar__window(c, x),
        .sha = ranged ? NULL : sha,
        .range = ranged ? range : 0, .hash_path = hash_path,
        .progress = x ? x->progress : NULL,
        .progress_ctx = x ? x->progress_ctx : NULL, .path = path,
    };
    return p;
}

/* Close h after a transfer that ended with err: returns err, or the Close
 * error if err is 0; the message of an earlier failure is kept. */
static int close_after(cellar_t *c, cellar_fh_t h, int err)
{
    if (!cellar_connected(c))
        return err;
    char msg[sizeof(c->errmsg)];
    snprintf(msg, sizeof(msg), "%s", c->errmsg);
    int cerr = cellar_file_close(c, h);
    if (err == 0)
        return cerr;
    snprintf(c->errmsg, sizeof(c->errmsg), "%s", msg);
    return err;
}

/* One device Hash of the whole of hash_path, compared with the local
 * SHA-256 of size bytes. Returns 0, CELLAR_ERR_BADMSG or an error. */
static int verify_whole(cellar_t *c, const char *hash_path, const char *path,
                        const char *what, const uint8_t lsha[CELLAR_SHA256_SIZE],
                        uint64_t size)
{
    uint8_t rsha[CELLAR_SHA256_SIZE];
    uint64_t hashed = 0;
    int err = cellar_hash(c, hash_path, 0, 0, rsha, &hashed);
    if (err == 0 && (hashed != size || memcmp(lsha, rsha, CELLAR_SHA256_SIZE))) {
        char a[65], b[65];
        err = cellar__fail(c, CELLAR_ERR_BADMSG,
                           "%s: SHA-256 mismatch after %s (local %s, device %s, "
                           "%llu of %llu bytes)", path, what,
                           cellar_sha256_hex(lsha, a), cellar_sha256_hex(rsha, b),
                           (unsigned long long)hashed, (unsigned long long)size);
    }
    return err;
}

/* Stat and Hash of one path in one batch (issue 11). */
typedef struct sh {
    cellar_t *c;
    const char *path;
    cellar_stat_t st;
    int serr, herr;
    uint8_t sha[CELLAR_SHA256_SIZE];
    uint64_t hashed;
} sh_t;

static int sh_fill(void *ctx, size_t i)
{
    sh_t *q = ctx;
    int err;
    if (i == 1)
        return cellar__hash_req(q->c, q->path, 0, 0);
    return cellar__path_req(q->c, cellar_Request_stat_tag, q->path, &err) ? 0 : err;
}

static int sh_done(void *ctx, size_t i, int err)
{
    sh_t *q = ctx;
    if (err == 0)
        err = cellar__check(q->c, i ? cellar_Response_hash_tag : cellar_Response_stat_tag);
    if (i == 0) {
        q->serr = err;
        if (err == 0)
            cellar__copy_info(&q->st, &cellar__resp(q->c)->body.stat.info);
    } else {
        q->herr = err;
        if (err == 0) {
            memcpy(q->sha, cellar__resp(q->c)->body.hash.sha256, CELLAR_SHA256_SIZE);
            q->hashed = cellar__resp(q->c)->body.hash.length;
        }
    }
    return 0;
}

/* The end of an upload (issue 11): Close, then Hash of the temporary
 * (small files) or Rename into place (ranged files), in one batch. */
typedef struct fin {
    cellar_t *c;
    cellar_fh_t h;
    const char *tmp, *remote;
    bool ranged;
    int cerr, err2;
    uint8_t sha[CELLAR_SHA256_SIZE];
    uint64_t hashed;
} fin_t;

static int fin_fill(void *ctx, size_t i)
{
    fin_t *f = ctx;
    if (i == 0)
        return cellar__handle_req(f->c, cellar_Request_close_tag, f->h);
    if (!f->ranged)
        return cellar__hash_req(f->c, f->tmp, 0, 0);
    int err;
    cellar_Request *req = cellar__path_req(f->c, cellar_Request_rename_tag, f->tmp, &err);
    if (!req)
        return err;
    return cellar__path(f->c, req->body.rename.to, sizeof(req->body.rename.to), f->remote);
}

static int fin_done(void *ctx, size_t i, int err)
{
    fin_t *f = ctx;
    pb_size_t want = i == 0 || f->ranged ? cellar_Response_done_tag : cellar_Response_hash_tag;
    if (err == 0)
        err = cellar__check(f->c, want);
    if (i == 0) {
        f->cerr = err;
    } else {
        f->err2 = err;
        if (err == 0 && !f->ranged) {
            memcpy(f->sha, cellar__resp(f->c)->body.hash.sha256, CELLAR_SHA256_SIZE);
            f->hashed = cellar__resp(f->c)->body.hash.length;
        }
    }
    return 0;
}

static int put_common(cellar_t *c, src_t *s, uint64_t size, const char *remote,
                      const cellar_xfer_t *x)
{
    if (!cellar_connected(c))
        return cellar__fail(c, CELLAR_ERR_NOTCONN, "not connected");
    if (strlen(remote) > CELLAR_PATH_MAX) {
        cellar__fail(c, CELLAR_ERR_NAMETOOLONG, "%s: path too long", remote);
        return cellar__at_path(c, CELLAR_ERR_NAMETOOLONG, remote);
    }
    char tmp[CELLAR_PATH_MAX + 1];
    if (cellar__tmp_name(remote, tmp, sizeof(tmp), CELLAR_PATH_MAX) < 0) {
        cellar__fail(c, CELLAR_ERR_NAMETOOLONG, "%s: path too long", remote);
        return cellar__at_path(c, CELLAR_ERR_NAMETOOLONG, remote);
    }
    uint8_t lsha[CELLAR_SHA256_SIZE], rsha[CELLAR_SHA256_SIZE];
    bool have_lsha = false;
    uint64_t hashed = 0;
    int err;

    if (x && x->skip_unchanged) {
        /* issue 11: Stat and Hash in one batch (one round trip) */
        sh_t q = {.c = c, .path = remote};
        err = cellar__batch_run(c, 2, sh_fill, sh_done, &q, true);
        if (err == 0)
            err = q.serr;
        if (err == 0 && q.st.type == CELLAR_TYPE_DIR) {
            cellar__fail(c, CELLAR_ERR_ISDIR, "%s: is a directory", remote);
            return cellar__at_path(c, CELLAR_ERR_ISDIR, remote);
        }
        if (err == 0 && q.st.size == size && q.herr == 0) {
            err = src_sha(s, size, lsha);
            if (err < 0)
                return err;
            have_lsha = true;
            memcpy(rsha, q.sha, sizeof(rsha));
            hashed = q.hashed;
            if (hashed == size && !memcmp(lsha, rsha, sizeof(lsha)))
                return CELLAR_SKIPPED;
        }
        if (err < 0 && !cellar_connected(c))
            return cellar__at_path(c, err, remote);
    }

    cellar_fh_t h;
    err = cellar_file_open(c, tmp, CELLAR_O_WRITE | CELLAR_O_CREATE | CELLAR_O_TRUNC,
                           &h, NULL);
    if (err < 0)
        return cellar__at_path(c, err, remote);

    csha_t sha;
    csha_init(&sha);
    (void)csha_start(&sha);
    cellar__pipe_t p = xfer_pipe(c, x, h, size, tmp, remote, have_lsha ? NULL : &sha);
    err = cellar__pipe_write(c, &p, src_read, s);
    if (!have_lsha)
        (void)csha_finish(&sha, lsha);
    csha_free(&sha);

    if (err == 0) {
        /* issue 11: Close with the whole-file Hash (small files), or with
         * the Rename (ranged: every range, the last one to the end of the
         * file, is verified already), in one batch */
        fin_t fin = {.c = c, .h = h, .tmp = tmp, .remote = remote, .ranged = p.range != 0};
        err = cellar__batch_run(c, 2, fin_fill, fin_done, &fin, true);
        if (err == 0)
            err = fin.cerr ? fin.cerr : fin.err2;
        if (err == 0 && !p.range) {
            if (fin.hashed != size || memcmp(lsha, fin.sha, CELLAR_SHA256_SIZE)) {
                char a[65], b[65];
                err = cellar__fail(c, CELLAR_ERR_BADMSG,
                                   "%s: SHA-256 mismatch after upload (local %s, device %s, "
                                   "%llu of %llu bytes)", remote, cellar_sha256_hex(lsha, a),
                                   cellar_sha256_hex(fin.sha, b),
                                   (unsigned long long)fin.hashed, (unsigned long long)size);
            }
            if (err == 0)
                err = cellar_rename(c, tmp, remote);
        }
    } else {
        err = close_after(c, h, err);
    }
    if (err < 0) {
        if (cellar_connected(c)) {
            char msg[sizeof(c->errmsg)];
            snprintf(msg, sizeof(msg), "%s", c->errmsg);
            (void)cellar_remove(c, tmp);
            snprintf(c->errmsg, sizeof(c->errmsg), "%s", msg);
        }
        if (s->failed && s->path)
            snprintf(c->errpath, sizeof(c->errpath), "%s", s->path);
        else
            cellar__at_path(c, err, remote);
        return err;
    }
    return 0;
}

int cellar_put_file(cellar_t *c, const char *local, const char *remote,
                    const cellar_xfer_t *x)
{
    int ret;
    int fd = open(local, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ret = cellar__local_fail(c, -errno, local, NULL);
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        ret = cellar__local_fail(c, -errno, local, NULL);
        close(fd);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        ret = cellar__local_fail(c, S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL, local,
                         S_ISDIR(st.st_mode) ? NULL : "not a regular file");
        close(fd);
        goto out;
    }
    src_t s = {.c = c, .fd = fd, .path = local};
    ret = put_common(c, &s, (uint64_t)st.st_size, remote, x);
    close(fd);
out:
    report(x, local, remote, false, ret);
    return ret;
}

int cellar_put_mem(cellar_t *c, const void *data, size_t len, const char *remote,
                   const cellar_xfer_t *x)
{
    static const uint8_t empty[1];
    src_t s = {.c = c, .fd = -1, .mem = data ? data : empty};
    int ret = put_common(c, &s, len, remote, x);
    report(x, NULL, remote, false, ret);
    return ret;
}

/* ---- download --------------------------------------------------------------------- */
typedef struct sink {
    cellar_t *c;
    int fd;             /* write here, or */
    uint8_t *mem;       /* copy here (mem_cap bytes) */
    uint64_t mem_cap;
    const char *path;   /* local path for messages */
    bool failed;
} sink_t;

static int sink_write(void *ctx, uint64_t pos, const void *buf, uint32_t len)
{
    sink_t *k = ctx;
    if (k->mem) {
        if (pos + len > k->mem_cap)
            return cellar__fail(k->c, CELLAR_ERR_PROTO, "more data than the file size");
        memcpy(k->mem + pos, buf, len);
        return 0;
    }
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(k->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            k->failed = true;
            return cellar__local_fail(k->c, -errno, k->path ? k->path : "(output)", "write");
        }
        p += n;
        len -= (uint32_t)n;
    }
    return 0;
}

/* Open remote, stream it to the sink, close, check the device's SHA-256. */
static int get_core(cellar_t *c, const char *remote, sink_t *k,
                    const cellar_xfer_t *x, uint64_t *size_out)
{
    uint64_t size = 0, got = 0;
    cellar_fh_t h;
    int oerr = cellar_file_open(c, remote, CELLAR_O_READ, &h, &size);
    if (oerr < 0)
        return cellar__at_path(c, oerr, remote);
    if (k->mem && size > k->mem_cap) {
        (void)cellar_file_close(c, h);
        cellar__fail(c, CELLAR_ERR_FBIG, "%s: file changed size", remote);
        return cellar__at_path(c, CELLAR_ERR_FBIG, remote);
    }
    csha_t sha;
    csha_init(&sha);
    (void)csha_start(&sha);
    cellar__pipe_t p = xfer_pipe(c, x, h, size, remote, remote, &sha);
    int err = cellar__pipe_read(c, &p, sink_write, k, &got);
    uint8_t lsha[CELLAR_SHA256_SIZE];
    (void)csha_finish(&sha, lsha);
    csha_free(&sha);
    err = close_after(c, h, err);
    if (err == 0 && got != size)
        err = cellar__fail(c, CELLAR_ERR_BADMSG,
                           "%s: file changed during the transfer (%llu of %llu "
                           "bytes)", remote, (unsigned long long)got,
                           (unsigned long long)size);
    if (err == 0 && !p.range)
        err = verify_whole(c, remote, remote, "download", lsha, got);
    if (err < 0) {
        if (k->failed && k->path)
            snprintf(c->errpath, sizeof(c->errpath), "%s", k->path);
        else
            cellar__at_path(c, err, remote);
        return err;
    }
    if (size_out)
        *size_out = got;
    return 0;
}

int cellar_get_fd(cellar_t *c, const char *remote, int fd, const cellar_xfer_t *x)
{
    sink_t k = {.c = c, .fd = fd};
    return get_core(c, remote, &k, x, NULL);
}

int cellar_get_mem(cellar_t *c, const char *remote, size_t max_size, void **data,
                   size_t *len)
{
    *data = NULL;
    *len = 0;
    cellar_stat_t st;
    int err = cellar_stat(c, remote, &st);
    if (err < 0)
        return err;
    if (st.type == CELLAR_TYPE_DIR) {
        cellar__fail(c, CELLAR_ERR_ISDIR, "%s: is a directory", remote);
        return cellar__at_path(c, CELLAR_ERR_ISDIR, remote);
    }
    if (st.size > max_size) {
        cellar__fail(c, CELLAR_ERR_FBIG, "%s: %llu bytes, over %zu", remote,
                     (unsigned long long)st.size, max_size);
        return cellar__at_path(c, CELLAR_ERR_FBIG, remote);
    }
    /* Room for growth up to max_size is not needed: get_core reads the size
     * seen at open, and refuses a file that grew past our buffer. */
    uint64_t cap = st.size;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    sink_t k = {.c = c, .fd = -1, .mem = buf, .mem_cap = cap};
    uint64_t got = 0;
    err = get_core(c, remote, &k, NULL, &got);
    if (err < 0) {
        free(buf);
        return err;
    }
    *data = buf;
    *len = (size_t)got;
    return 0;
}

static int get_file(cellar_t *c, const char *remote, const char *local,
                    const cellar_xfer_t *x)
{
    cellar_stat_t st;
    int err = cellar_stat(c, remote, &st);
    if (err < 0)
        return cellar__at_path(c, err, remote);
    if (st.type == CELLAR_TYPE_DIR) {
        cellar__fail(c, CELLAR_ERR_ISDIR, "%s: is a directory", remote);
        return cellar__at_path(c, CELLAR_ERR_ISDIR, remote);
    }
    struct stat lst;
    bool exists = stat(local, &lst) == 0;
    if (exists && S_ISDIR(lst.st_mode))
        return cellar__local_fail(c, -EISDIR, local, NULL);
    if (x && x->skip_unchanged && exists && S_ISREG(lst.st_mode) &&
        (uint64_t)lst.st_size == st.size) {
        uint8_t lsha[CELLAR_SHA256_SIZE], rsha[CELLAR_SHA256_SIZE];
        uint64_t hashed = 0;
        err = cellar_sha256_file(local, lsha);
        if (err < 0)
            return cellar__local_fail(c, err, local, "read");
        err = cellar_hash(c, remote, 0, 0, rsha, &hashed);
        if (err < 0)
            return cellar__at_path(c, err, remote);
        if (hashed == st.size && !memcmp(lsha, rsha, sizeof(lsha)))
            return CELLAR_SKIPPED;
    }

    size_t n = strlen(local) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    if (cellar__tmp_name(local, tmp, n, n - 1) < 0) {
        free(tmp);
        return cellar__local_fail(c, -EINVAL, local, "bad file name");
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        err = cellar__local_fail(c, -errno, local, "create");
        free(tmp);
        return err;
    }
    sink_t k = {.c = c, .fd = fd, .path = local};
    err = get_core(c, remote, &k, x, NULL);
    if (err == 0 && !(x && x->no_mtime) && st.mtime) {
        struct timespec ts[2] = {{.tv_sec = st.mtime}, {.tv_sec = st.mtime}};
        (void)futimens(fd, ts);
    }
    if (close(fd) < 0 && err == 0)
        err = cellar__local_fail(c, -errno, local, "write");
    if (err == 0 && rename(tmp, local) < 0)
        err = cellar__local_fail(c, -errno, local, "rename");
    if (err < 0)
        unlink(tmp);
    free(tmp);
    return err;
}

int cellar_get_file(cellar_t *c, const char *remote, const char *local,
                    const cellar_xfer_t *x)
{
    int ret = get_file(c, remote, local, x);
    report(x, remote, local, false, ret);
    return ret;
}

/* cellar_put_tree and cellar_get_tree: libcellar_tree.c (issue 11). */
/* cellar_remove_tree: libcellar_batch.c (one batch, issue 11). */
