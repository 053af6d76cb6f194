/*
 * libcellar_update.c - the manifest, verify, backup/restore and update
 * bundles of libcellar, and cellar_push (see include/cellar.h).
 *
 * Every listing loop is bounded (a page count and an entry count) and
 * refuses a cursor that does not advance. cellar_push builds the bundle in
 * memory (one entry per local file, CELLAR_PUSH_MAX_FILES at most) and
 * streams file data with up to `inflight` UpdateWrite requests in flight,
 * file after file, reading each chunk from the local file straight into the
 * request.
 */
#include "libcellar_int.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIELD_COUNT(type, field) \
    (sizeof(((type *)0)->field) / sizeof(((type *)0)->field[0]))

_Static_assert(CELLAR_MANIFEST_PAGE == FIELD_COUNT(cellar_ManifestReply, entries),
               "CELLAR_MANIFEST_PAGE differs from ManifestReply.entries");
_Static_assert(CELLAR_IMPORT_PAGE == FIELD_COUNT(cellar_ManifestImportRequest, entries),
               "CELLAR_IMPORT_PAGE differs from ManifestImportRequest.entries");
_Static_assert(CELLAR_DECLARE_PAGE == FIELD_COUNT(cellar_UpdateDeclareRequest, entries),
               "CELLAR_DECLARE_PAGE differs from UpdateDeclareRequest.entries");
_Static_assert(CELLAR_DECLARE_PAGE == FIELD_COUNT(cellar_UpdateDeclareReply, status) &&
               CELLAR_DECLARE_PAGE == FIELD_COUNT(cellar_UpdateDeclareReply, have),
               "UpdateDeclareReply arrays differ from CELLAR_DECLARE_PAGE");
_Static_assert(CELLAR_COPY_PATHS == FIELD_COUNT(cellar_BackupRequest, paths) &&
               CELLAR_COPY_PATHS == FIELD_COUNT(cellar_RestoreRequest, paths),
               "CELLAR_COPY_PATHS differs from Backup/RestoreRequest.paths");
_Static_assert(CELLAR_COPY_SKIPPED == FIELD_COUNT(cellar_CopyReply, skipped),
               "CELLAR_COPY_SKIPPED differs from CopyReply.skipped");
_Static_assert(sizeof(((cellar_mentry_t *)0)->path) ==
                   sizeof(((cellar_ManifestEntry *)0)->path),
               "cellar_mentry_t.path differs from ManifestEntry.path");

#define MAX_PAGES (CELLAR_MANIFEST_MAX + 16u) /* bound of any cursor loop */
#define MAX_DEPTH 128u                        /* directory levels walked */
#define JSON_FILE_MAX (64u << 20)             /* checksum.json bytes */

/* ---- small helpers -------------------------------------------------------------- */
/* An RPC whose answer may take the device a while (it hashes files). */
static int slow_rpc(cellar_t *c, pb_size_t which)
{
    uint32_t saved = c->cfg.timeout_ms;
    if (c->cfg.timeout_ms < CELLAR_SLOW_TIMEOUT_MS)
        c->cfg.timeout_ms = CELLAR_SLOW_TIMEOUT_MS;
    int err = cellar__rpc(c, which);
    c->cfg.timeout_ms = saved;
    return err;
}

/* Record the device path a failure is about (keeps the message). */
static int at_path(cellar_t *c, int err, const char *path)
{
    if (err < 0 && path)
        snprintf(c->errpath, sizeof(c->errpath), ":%s", path);
    return err;
}

/* Record a local path a failure is about. */
static int local_fail(cellar_t *c, int err, const char *path, const char *what)
{
    char buf[128];
    const char *text = strerror_r(-err, buf, sizeof(buf)); /* GNU: thread-safe */
    cellar__fail(c, err, "%s: %s%s%s", path, what ? what : "", what ? ": " : "",
                 text);
    snprintf(c->errpath, sizeof(c->errpath), "%s", path);
    return err;
}

static const char *partition_of(const char *partition)
{
    return partition && *partition ? partition : "/usr";
}

static int set_partition(cellar_t *c, char *dst, size_t cap, const char *part)
{
    if (strlen(part) >= cap)
        return cellar__fail(c, CELLAR_ERR_INVAL, "%s: no such partition", part);
    memcpy(dst, part, strlen(part) + 1);
    return 0;
}

static bool plain_name(const char *name)
{
    return name[0] && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* A growing list of strings (paths), bounded. */
typedef struct strvec {
    char **v;
    size_t n, cap;
} strvec_t;

static int sv_add(strvec_t *s, const char *str, size_t max)
{
    if (s->n >= max)
        return CELLAR_ERR_NOMEM;
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 64;
        char **nv = realloc(s->v, ncap * sizeof(*nv));
        if (!nv)
            return CELLAR_ERR_NOMEM;
        s->v = nv;
        s->cap = ncap;
    }
    char *d = strdup(str);
    if (!d)
        return CELLAR_ERR_NOMEM;
    s->v[s->n++] = d;
    return 0;
}

static void sv_free(strvec_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void sv_sort(strvec_t *s)
{
    if (s->n > 1)
        qsort(s->v, s->n, sizeof(*s->v), cmp_str);
}

/* Is str in the sorted list? */
static bool sv_has(const strvec_t *s, const char *str)
{
    return s->n && bsearch(&str, s->v, s->n, sizeof(*s->v), cmp_str) != NULL;
}

/* Walk the device tree under dir: every file into files, every directory
 * into dirs (either may be NULL), as full paths. A partition root's
 * reserved ".cellar" is never followed. */
static int walk_remote(cellar_t *c, const char *dir, unsigned depth, strvec_t *files,
                       strvec_t *dirs)
{
    if (depth > MAX_DEPTH)
        return at_path(c, cellar__fail(c, CELLAR_ERR_NAMETOOLONG,
                                       "%s: more than %u directory levels", dir,
                                       MAX_DEPTH), dir);
    cellar_stat_t *ents = NULL;
    int n = cellar_list_alloc(c, dir, &ents);
    if (n < 0)
        return at_path(c, n, dir);
    bool root = strchr(dir + 1, '/') == NULL;
    int err = 0;
    for (int i = 0; i < n && err == 0; i++) {
        if (!plain_name(ents[i].name) || (root && !strcmp(ents[i].name, ".cellar")))
            continue;
        char *full = cellar__join(dir, ents[i].name);
        if (!full) {
            err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
            break;
        }
        if (strlen(full) <= CELLAR_PATH_MAX) {
            strvec_t *into = ents[i].type == CELLAR_TYPE_DIR ? dirs : files;
            if (into && sv_add(into, full, CELLAR_MANIFEST_MAX) < 0)
                err = cellar__fail(c, CELLAR_ERR_NOMEM,
                                   "out of memory (or over %d entries)",
                                   CELLAR_MANIFEST_MAX);
            if (err == 0 && ents[i].type == CELLAR_TYPE_DIR)
                err = walk_remote(c, full, depth + 1, files, dirs);
        }
        free(full);
    }
    free(ents);
    return err;
}

/* ---- manifest ----------------------------------------------------------------------- */
static int cmp_mentry(const void *a, const void *b)
{
    return strcmp(((const cellar_mentry_t *)a)->path, ((const cellar_mentry_t *)b)->path);
}

int cellar_manifest_list(cellar_t *c, const char *partition, cellar_mentry_t **out,
                         size_t *n)
{
    *out = NULL;
    *n = 0;
    const char *part = partition_of(partition);
    cellar_mentry_t *v = NULL;
    size_t len = 0, cap = 0;
    uint32_t cursor = 0;
    int err = 0;
    for (uint32_t page = 0;; page++) {
        if (page >= MAX_PAGES) {
            err = cellar__fail(c, CELLAR_ERR_PROTO, "manifest listing does not end");
            break;
        }
        cellar_Request *req = cellar__new_req(c, cellar_Request_manifest_tag);
        if (!req) {
            err = CELLAR_ERR_NOTCONN;
            break;
        }
        err = set_partition(c, req->body.manifest.partition,
                            sizeof(req->body.manifest.partition), part);
        if (err < 0)
            break;
        req->body.manifest.cursor = cursor;
        req->body.manifest.max_entries = CELLAR_MANIFEST_PAGE;
        err = cellar__rpc(c, cellar_Response_manifest_tag);
        if (err < 0) {
            at_path(c, err, part);
            break;
        }
        const cellar_ManifestReply *r = &cellar__resp(c)->body.manifest;
        size_t got = r->entries_count;
        if (len + got > CELLAR_MANIFEST_MAX) {
            err = cellar__fail(c, CELLAR_ERR_NOMEM, "%s: manifest over %d entries",
                               part, CELLAR_MANIFEST_MAX);
            break;
        }
        if (cap - len < got) {
            size_t ncap = cap ? cap * 2 : 64;
            while (ncap - len < got)
                ncap *= 2;
            cellar_mentry_t *nv = realloc(v, ncap * sizeof(*v));
            if (!nv) {
                err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
                break;
            }
            v = nv;
            cap = ncap;
        }
        for (size_t i = 0; i < got && err == 0; i++) {
            const cellar_ManifestEntry *m = &r->entries[i];
            cellar_mentry_t *e = &v[len];
            memset(e, 0, sizeof(*e));
            snprintf(e->path, sizeof(e->path), "%s", m->path);
            if (m->sha256.size != CELLAR_SHA256_SIZE || m->size < -1) {
                err = cellar__fail(c, CELLAR_ERR_PROTO,
                                   "manifest entry %s: bad size or SHA-256", e->path);
                break;
            }
            e->size = m->size;
            memcpy(e->sha256, m->sha256.bytes, CELLAR_SHA256_SIZE);
            e->mtime = m->mtime;
            len++;
        }
        if (err < 0)
            break;
        if (r->next_cursor == 0)
            break;
        if (r->next_cursor == cursor) {
            err = cellar__fail(c, CELLAR_ERR_PROTO, "manifest cursor does not advance");
            break;
        }
        cursor = r->next_cursor;
    }
    if (err < 0) {
        free(v);
        return err;
    }
    if (len > 1)
        qsort(v, len, sizeof(*v), cmp_mentry);
    *out = v;
    *n = len;
    return 0;
}

static int cmp_mentry_ptr(const void *a, const void *b)
{
    return strcmp((*(const cellar_mentry_t *const *)a)->path,
                  (*(const cellar_mentry_t *const *)b)->path);
}

int cellar_manifest_digest(const cellar_mentry_t *e, size_t n,
                           uint8_t out[CELLAR_SHA256_SIZE])
{
    bool sorted = true;
    for (size_t i = 1; i < n && sorted; i++)
        sorted = strncmp(e[i - 1].path, e[i].path, sizeof(e[i].path)) <= 0;
    const cellar_mentry_t **order = NULL;
    if (!sorted) {
        order = malloc(n * sizeof(*order));
        if (!order)
            return CELLAR_ERR_NOMEM;
        for (size_t i = 0; i < n; i++)
            order[i] = &e[i];
        qsort(order, n, sizeof(*order), cmp_mentry_ptr);
    }
    csha_t sha;
    csha_init(&sha);
    int err = csha_start(&sha) < 0 ? CELLAR_ERR_NOMEM : 0;
    for (size_t i = 0; i < n && err == 0; i++) {
        const cellar_mentry_t *m = order ? order[i] : &e[i];
        char hex[65], size[24], line[65 + 2 + 24 + 2 + 256 + 2];
        if (m->size < 0)
            snprintf(size, sizeof(size), "-");
        else
            snprintf(size, sizeof(size), "%lld", (long long)m->size);
        int k = snprintf(line, sizeof(line), "%s  %s  %.*s\n",
                         cellar_sha256_hex(m->sha256, hex), size,
                         (int)sizeof(m->path) - 1, m->path);
        if (csha_update(&sha, line, (size_t)k) < 0)
            err = CELLAR_ERR_NOMEM;
    }
    if (err == 0 && csha_finish(&sha, out) < 0)
        err = CELLAR_ERR_NOMEM;
    csha_free(&sha);
    free(order);
    return err;
}

int cellar_manifest_import(cellar_t *c, const cellar_mentry_t *e, size_t n)
{
    for (size_t i = 0; i < n; i += CELLAR_IMPORT_PAGE) {
        cellar_Request *req = cellar__new_req(c, cellar_Request_manifest_import_tag);
        if (!req)
            return CELLAR_ERR_NOTCONN;
        size_t k = n - i < CELLAR_IMPORT_PAGE ? n - i : CELLAR_IMPORT_PAGE;
        cellar_ManifestImportRequest *mi = &req->body.manifest_import;
        for (size_t j = 0; j < k; j++) {
            const cellar_mentry_t *s = &e[i + j];
            cellar_ManifestEntry *d = &mi->entries[j];
            if (memchr(s->path, 0, sizeof(s->path)) == NULL)
                return cellar__fail(c, CELLAR_ERR_NAMETOOLONG, "entry %zu: path too long",
                                    i + j + 1);
            int err = cellar__path(c, d->path, sizeof(d->path), s->path);
            if (err < 0)
                return err;
            d->size = s->size < 0 ? -1 : s->size;
            d->sha256.size = CELLAR_SHA256_SIZE;
            memcpy(d->sha256.bytes, s->sha256, CELLAR_SHA256_SIZE);
            d->mtime = s->mtime;
        }
        mi->entries_count = (pb_size_t)k;
        int err = cellar__rpc(c, cellar_Response_done_tag);
        if (err < 0)
            return k == 1 ? at_path(c, err, e[i].path) : err;
    }
    return 0;
}

/* ---- checksum.json ---------------------------------------------------------------------- */
static int jfail(char *err, size_t cap, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int jfail(char *err, size_t cap, int code, const char *fmt, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* A normalised absolute path under /usr, not the reserved /usr/.cellar. */
static bool usr_path_ok(const char *p)
{
    size_t n = strlen(p);
    if (n <= 5 || n > CELLAR_PATH_MAX || strncmp(p, "/usr/", 5) != 0 || p[n - 1] == '/')
        return false;
    for (const char *s = p; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    /* every component: not empty, not ".", not ".." */
    const char *comp = p + 1;
    for (;;) {
        const char *slash = strchr(comp, '/');
        size_t cl = slash ? (size_t)(slash - comp) : strlen(comp);
        if (cl == 0 || (cl == 1 && comp[0] == '.') ||
            (cl == 2 && comp[0] == '.' && comp[1] == '.'))
            return false;
        if (!slash)
            break;
        comp = slash + 1;
    }
    return !(strncmp(p, "/usr/.cellar", 12) == 0 && (p[12] == 0 || p[12] == '/'));
}

static int parse_entry(const cJSON *item, size_t idx, cellar_mentry_t *e, char *err,
                       size_t cap)
{
    memset(e, 0, sizeof(*e));
    if (!cJSON_IsObject(item))
        return jfail(err, cap, CELLAR_ERR_INVAL, "entry %zu: not an object", idx);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
    if (!cJSON_IsString(name) || !name->valuestring)
        return jfail(err, cap, CELLAR_ERR_INVAL, "entry %zu: no \"name\" string", idx);
    const char *p = name->valuestring;
    if (!usr_path_ok(p))
        return jfail(err, cap, CELLAR_ERR_INVAL,
                     "entry %zu (%.200s): name is not a file path under /usr "
                     "(absolute, normalised, at most %d bytes, not /usr/.cellar)",
                     idx, p, CELLAR_PATH_MAX);
    snprintf(e->path, sizeof(e->path), "%s", p);
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(item, "sha256");
    if (!cJSON_IsString(sha) || !sha->valuestring || strlen(sha->valuestring) != 64)
        return jfail(err, cap, CELLAR_ERR_INVAL,
                     "entry %zu (%s): \"sha256\" is not 64 hex digits", idx, e->path);
    for (int i = 0; i < 32; i++) {
        int hi = hexval(sha->valuestring[2 * i]), lo = hexval(sha->valuestring[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return jfail(err, cap, CELLAR_ERR_INVAL,
                         "entry %zu (%s): \"sha256\" is not 64 hex digits", idx, e->path);
        e->sha256[i] = (uint8_t)(hi << 4 | lo);
    }
    e->size = -1;
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(item, "size");
    if (size && !cJSON_IsNull(size)) {
        double d = cJSON_IsNumber(size) ? size->valuedouble : -2;
        if (d < -1 || d > 9007199254740992.0 || d != (double)(int64_t)d)
            return jfail(err, cap, CELLAR_ERR_INVAL,
                         "entry %zu (%s): \"size\" is not a byte count", idx, e->path);
        e->size = (int64_t)d;
    }
    const cJSON *mtime = cJSON_GetObjectItemCaseSensitive(item, "mtime");
    if (mtime && !cJSON_IsNull(mtime)) {
        double d = cJSON_IsNumber(mtime) ? mtime->valuedouble : -1;
        if (d < 0 || d > 4294967295.0 || d != (double)(uint32_t)d)
            return jfail(err, cap, CELLAR_ERR_INVAL,
                         "entry %zu (%s): \"mtime\" is not seconds since 1970", idx,
                         e->path);
        e->mtime = (uint32_t)d;
    }
    return 0;
}

int cellar_checksum_json_parse(const char *text, size_t len, cellar_mentry_t **out,
                               size_t *n, char *err, size_t errcap)
{
    *out = NULL;
    *n = 0;
    if (err && errcap)
        err[0] = 0;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) {
        /* The error pointer is cJSON's global: only a hint. */
        const char *where = cJSON_GetErrorPtr();
        unsigned line = 1;
        if (where && where >= text && where <= text + len) {
            for (const char *s = text; s < where; s++)
                line += *s == '\n';
            return jfail(err, errcap, CELLAR_ERR_INVAL, "invalid JSON (near line %u)",
                         line);
        }
        return jfail(err, errcap, CELLAR_ERR_INVAL, "invalid JSON");
    }
    const cJSON *list = root;
    if (cJSON_IsObject(root))
        list = cJSON_GetObjectItemCaseSensitive(root, "files");
    int ret = 0;
    cellar_mentry_t *v = NULL;
    const cellar_mentry_t **order = NULL;
    if (!cJSON_IsArray(list)) {
        ret = jfail(err, errcap, CELLAR_ERR_INVAL,
                    "expected a JSON list of {\"name\": ..., \"sha256\": ...} objects");
        goto out;
    }
    int cnt = cJSON_GetArraySize(list);
    if (cnt < 0 || cnt > CELLAR_MANIFEST_MAX) {
        ret = jfail(err, errcap, CELLAR_ERR_INVAL, "more than %d entries",
                    CELLAR_MANIFEST_MAX);
        goto out;
    }
    v = calloc(cnt ? (size_t)cnt : 1, sizeof(*v));
    order = malloc((cnt ? (size_t)cnt : 1) * sizeof(*order));
    if (!v || !order) {
        ret = jfail(err, errcap, CELLAR_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t k = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        if (k >= (size_t)cnt)
            break;
        ret = parse_entry(item, k + 1, &v[k], err, errcap);
        if (ret < 0)
            goto out;
        order[k] = &v[k];
        k++;
    }
    if (k > 1) {
        qsort(order, k, sizeof(*order), cmp_mentry_ptr);
        for (size_t i = 1; i < k; i++)
            if (strcmp(order[i - 1]->path, order[i]->path) == 0) {
                ret = jfail(err, errcap, CELLAR_ERR_INVAL, "%s: listed more than once",
                            order[i]->path);
                goto out;
            }
    }
    if (k == 0) {
        free(v);
        v = NULL;
    }
    *out = v;
    *n = k;
    v = NULL;
out:
    free(order);
    free(v);
    cJSON_Delete(root);
    return ret;
}

int cellar_checksum_json_load(const char *file, cellar_mentry_t **out, size_t *n,
                              char *err, size_t errcap)
{
    *out = NULL;
    *n = 0;
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = -errno;
        return jfail(err, errcap, e, "%s: %s", file, strerror(-e));
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = -errno;
        close(fd);
        return jfail(err, errcap, e, "%s: %s", file, strerror(-e));
    }
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)JSON_FILE_MAX) {
        int e = S_ISDIR(st.st_mode) ? -EISDIR : !S_ISREG(st.st_mode) ? -EINVAL : -EFBIG;
        close(fd);
        return jfail(err, errcap, e, "%s: %s", file,
                     e == -EFBIG ? "larger than 64 MiB" : e == -EINVAL
                                                              ? "not a regular file"
                                                              : strerror(-e));
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    if (!buf) {
        close(fd);
        return jfail(err, errcap, CELLAR_ERR_NOMEM, "out of memory");
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = 0;
    char msg[256];
    int ret = cellar_checksum_json_parse(buf, got, out, n, msg, sizeof(msg));
    if (ret < 0)
        jfail(err, errcap, ret, "%s: %s", file, msg);
    free(buf);
    return ret;
}

/* ---- verify --------------------------------------------------------------------------------- */
const char *cellar_problem_name(int kind)
{
    switch (kind) {
    case CELLAR_PROBLEM_MISSING: return "missing";
    case CELLAR_PROBLEM_MISMATCH: return "mismatch";
    case CELLAR_PROBLEM_UNREADABLE: return "unreadable";
    case CELLAR_PROBLEM_NOT_IN_BACKUP: return "not-in-backup";
    case CELLAR_PROBLEM_UNTRACKED: return "untracked";
    default: return "problem";
    }
}

static cellar_problem_kind_t kind_of(cellar_ProblemKind k)
{
    switch (k) {
    case cellar_ProblemKind_MISSING: return CELLAR_PROBLEM_MISSING;
    case cellar_ProblemKind_MISMATCH: return CELLAR_PROBLEM_MISMATCH;
    case cellar_ProblemKind_UNREADABLE: return CELLAR_PROBLEM_UNREADABLE;
    case cellar_ProblemKind_NOT_IN_BACKUP: return CELLAR_PROBLEM_NOT_IN_BACKUP;
    default: return (cellar_problem_kind_t)0;
    }
}

typedef struct probvec {
    cellar_problem_t *v;
    size_t n, cap;
} probvec_t;

static int pv_add(probvec_t *p, const char *path, cellar_problem_kind_t kind,
                  bool repaired)
{
    if (p->n >= CELLAR_MANIFEST_MAX * 2u)
        return CELLAR_ERR_NOMEM;
    if (p->n == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 16;
        cellar_problem_t *nv = realloc(p->v, ncap * sizeof(*nv));
        if (!nv)
            return CELLAR_ERR_NOMEM;
        p->v = nv;
        p->cap = ncap;
    }
    cellar_problem_t *e = &p->v[p->n++];
    memset(e, 0, sizeof(*e));
    snprintf(e->path, sizeof(e->path), "%s", path);
    e->kind = kind;
    e->repaired = repaired;
    return 0;
}

static int cmp_problem(const void *a, const void *b)
{
    const cellar_problem_t *x = a, *y = b;
    int r = strcmp(x->path, y->path);
    return r ? r : (int)x->kind - (int)y->kind;
}

static int bsearch_mentry(const cellar_mentry_t *v, size_t n, const char *path)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(v[mid].path, path);
        if (r == 0)
            return (int)mid;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int cellar_verify(cellar_t *c, const char *partition, bool repair, cellar_problem_fn fn,
                  void *ctx, cellar_verify_report_t *rep)
{
    const char *part = partition_of(partition);
    cellar_verify_report_t r;
    memset(&r, 0, sizeof(r));
    if (rep)
        *rep = r;
    probvec_t probs = {0};
    cellar_mentry_t *man = NULL;
    size_t nman = 0;
    strvec_t files = {0};
    uint32_t cursor = 0;
    int err = 0;

    /* 1. the device checks the manifest, page by page */
    for (uint32_t page = 0;; page++) {
        if (page >= MAX_PAGES) {
            err = cellar__fail(c, CELLAR_ERR_PROTO, "verify does not end");
            goto out;
        }
        cellar_Request *req = cellar__new_req(c, cellar_Request_verify_tag);
        if (!req) {
            err = CELLAR_ERR_NOTCONN;
            goto out;
        }
        err = set_partition(c, req->body.verify.partition,
                            sizeof(req->body.verify.partition), part);
        if (err < 0)
            goto out;
        req->body.verify.cursor = cursor;
        req->body.verify.max_entries = CELLAR_VERIFY_PAGE;
        req->body.verify.repair = repair;
        err = slow_rpc(c, cellar_Response_verify_tag);
        if (err < 0) {
            at_path(c, err, part);
            goto out;
        }
        const cellar_VerifyReply *vr = &cellar__resp(c)->body.verify;
        r.checked += vr->checked;
        for (pb_size_t i = 0; i < vr->problems_count; i++) {
            const cellar_Problem *pr = &vr->problems[i];
            cellar_problem_kind_t k = kind_of(pr->kind);
            if (k == 0) {
                err = cellar__fail(c, CELLAR_ERR_PROTO, "%s: unknown problem kind %d",
                                   pr->path, (int)pr->kind);
                goto out;
            }
            if (pv_add(&probs, pr->path, k, pr->repaired) < 0) {
                err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
                goto out;
            }
        }
        if (vr->next_cursor == 0)
            break;
        if (vr->next_cursor == cursor) {
            err = cellar__fail(c, CELLAR_ERR_PROTO, "verify cursor does not advance");
            goto out;
        }
        cursor = vr->next_cursor;
    }

    /* 2. untracked files: the tree against the manifest (after a repair,
     *    so restored files count as present) */
    err = cellar_manifest_list(c, part, &man, &nman);
    if (err < 0)
        goto out;
    err = walk_remote(c, part, 0, &files, NULL);
    if (err < 0)
        goto out;
    r.files = (uint32_t)files.n;
    for (size_t i = 0; i < files.n; i++) {
        if (bsearch_mentry(man, nman, files.v[i]) >= 0)
            continue;
        if (pv_add(&probs, files.v[i], CELLAR_PROBLEM_UNTRACKED, false) < 0) {
            err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
            goto out;
        }
    }

    /* 3. report, in path order */
    if (probs.n > 1)
        qsort(probs.v, probs.n, sizeof(*probs.v), cmp_problem);
    for (size_t i = 0; i < probs.n; i++) {
        const cellar_problem_t *p = &probs.v[i];
        switch (p->kind) {
        case CELLAR_PROBLEM_MISSING: r.missing++; break;
        case CELLAR_PROBLEM_MISMATCH: r.mismatch++; break;
        case CELLAR_PROBLEM_UNREADABLE: r.unreadable++; break;
        case CELLAR_PROBLEM_NOT_IN_BACKUP: r.not_in_backup++; break;
        case CELLAR_PROBLEM_UNTRACKED: r.untracked++; break;
        }
        if (p->repaired)
            r.repaired++;
        else
            r.unrepaired++;
        if (fn)
            fn(ctx, p);
    }
    if (rep)
        *rep = r;
out:
    free(probs.v);
    free(man);
    sv_free(&files);
    return err;
}

/* ---- backup, restore, abort ------------------------------------------------------------------ */
static int copy_rpc(cellar_t *c, pb_size_t which, const char *what,
                    const char *const *paths, size_t n, cellar_copy_report_t *rep)
{
    if (rep)
        memset(rep, 0, sizeof(*rep));
    if (n > CELLAR_COPY_PATHS)
        return cellar__fail(c, CELLAR_ERR_INVAL,
                            "%s: at most %d paths at once (one atomic step)", what,
                            CELLAR_COPY_PATHS);
    cellar_Request *req = cellar__new_req(c, which);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    char(*dst)[256] = which == cellar_Request_backup_tag ? req->body.backup.paths
                                                          : req->body.restore.paths;
    for (size_t i = 0; i < n; i++) {
        int err = cellar__path(c, dst[i], sizeof(dst[i]), paths[i]);
        if (err < 0)
            return at_path(c, err, paths[i]);
    }
    if (which == cellar_Request_backup_tag)
        req->body.backup.paths_count = (pb_size_t)n;
    else
        req->body.restore.paths_count = (pb_size_t)n;
    int err = slow_rpc(c, cellar_Response_copy_tag);
    if (err < 0)
        return n == 1 ? at_path(c, err, paths[0]) : err;
    const cellar_CopyReply *r = &cellar__resp(c)->body.copy;
    if (rep) {
        rep->files = r->files;
        rep->unchanged = r->unchanged;
        rep->removed = r->removed;
        rep->bytes = r->bytes;
        for (pb_size_t i = 0; i < r->skipped_count && i < CELLAR_COPY_SKIPPED; i++) {
            cellar_problem_t *p = &rep->skipped[rep->nskipped++];
            snprintf(p->path, sizeof(p->path), "%s", r->skipped[i].path);
            p->kind = kind_of(r->skipped[i].kind);
            if (p->kind == 0)
                p->kind = CELLAR_PROBLEM_MISMATCH;
            p->repaired = false;
        }
    }
    return 0;
}

int cellar_backup(cellar_t *c, const char *const *paths, size_t n,
                  cellar_copy_report_t *rep)
{
    return copy_rpc(c, cellar_Request_backup_tag, "backup", paths, n, rep);
}

int cellar_restore(cellar_t *c, const char *const *paths, size_t n,
                   cellar_copy_report_t *rep)
{
    return copy_rpc(c, cellar_Request_restore_tag, "restore", paths, n, rep);
}

int cellar_update_abort(cellar_t *c, const uint8_t bundle[CELLAR_SHA256_SIZE])
{
    cellar_Request *req = cellar__new_req(c, cellar_Request_update_abort_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    if (bundle) {
        req->body.update_abort.bundle.size = CELLAR_SHA256_SIZE;
        memcpy(req->body.update_abort.bundle.bytes, bundle, CELLAR_SHA256_SIZE);
    }
    return cellar__rpc(c, cellar_Response_done_tag);
}

/* ---- push ------------------------------------------------------------------------------------ */
const char *cellar_push_action_name(int action)
{
    switch (action) {
    case CELLAR_PUSH_NEW: return "new";
    case CELLAR_PUSH_CHANGED: return "changed";
    case CELLAR_PUSH_UNCHANGED: return "unchanged";
    case CELLAR_PUSH_DELETED: return "deleted";
    case CELLAR_PUSH_ABSENT: return "absent";
    default: return "unknown";
    }
}

void cellar_push_report_free(cellar_push_report_t *rep)
{
    if (!rep)
        return;
    free(rep->entries);
    memset(rep, 0, sizeof(*rep));
}

/* One bundle entry while it is built, with its local file. */
typedef struct item {
    cellar_push_entry_t e;
    char *local;              /* NULL for removals */
} item_t;

typedef struct push {
    cellar_t *c;
    const cellar_push_opts_t *o;
    cellar_push_report_t *rep;
    item_t *items;
    size_t n, cap;
    strvec_t ldirs;           /* device paths of the local directories */
} push_t;

static int item_add(push_t *p, const char *path, const char *local)
{
    if (p->n >= (size_t)CELLAR_PUSH_MAX_FILES + CELLAR_MANIFEST_MAX)
        return cellar__fail(p->c, CELLAR_ERR_NOMEM, "too many entries");
    if (p->n == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 64;
        item_t *nv = realloc(p->items, ncap * sizeof(*nv));
        if (!nv)
            return cellar__fail(p->c, CELLAR_ERR_NOMEM, "out of memory");
        p->items = nv;
        p->cap = ncap;
    }
    item_t *it = &p->items[p->n];
    memset(it, 0, sizeof(*it));
    snprintf(it->e.path, sizeof(it->e.path), "%s", path);
    if (local) {
        it->local = strdup(local);
        if (!it->local)
            return cellar__fail(p->c, CELLAR_ERR_NOMEM, "out of memory");
    }
    p->n++;
    return 0;
}

static void warn(push_t *p, const char *local, const char *why)
{
    p->rep->nskipped_local++;
    if (p->o->warn)
        p->o->warn(p->o->warn_ctx, local, why);
}

static int not_dots(const struct dirent *d)
{
    return strcmp(d->d_name, ".") && strcmp(d->d_name, "..") && !cellar__is_tmp_name(d->d_name);
}

/* Size and SHA-256 of an open local file, read to its end. */
static int hash_fd(cellar_t *c, int fd, const char *path, uint64_t *size,
                   uint8_t sha[CELLAR_SHA256_SIZE])
{
    enum { BUF = 64 * 1024 };
    uint8_t *buf = malloc(BUF);
    if (!buf)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    csha_t s;
    csha_init(&s);
    int err = csha_start(&s) < 0 ? cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory") : 0;
    uint64_t total = 0;
    while (err == 0) {
        ssize_t r = read(fd, buf, BUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = local_fail(c, -errno, path, "read");
            break;
        }
        if (r == 0)
            break;
        (void)csha_update(&s, buf, (size_t)r);
        total += (uint64_t)r;
    }
    if (err == 0 && csha_finish(&s, sha) < 0)
        err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    csha_free(&s);
    free(buf);
    *size = total;
    return err;
}

static bool reserved(const char *path)
{
    return strncmp(path, "/usr/.cellar", 12) == 0 && (path[12] == 0 || path[12] == '/');
}

/* Walk the local directory ldir whose device path is rdir. */
static int walk_local(push_t *p, const char *ldir, const char *rdir, unsigned depth)
{
    cellar_t *c = p->c;
    if (depth > MAX_DEPTH)
        return local_fail(c, -ELOOP, ldir, "too many directory levels");
    struct dirent **names = NULL;
    int n = scandir(ldir, &names, not_dots, alphasort);
    if (n < 0)
        return local_fail(c, -errno, ldir, NULL);
    int err = 0;
    for (int i = 0; i < n && err == 0; i++) {
        char *lp = cellar__join(ldir, names[i]->d_name);
        char *rp = cellar__join(rdir, names[i]->d_name);
        struct stat st;
        if (!lp || !rp) {
            err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        } else if (lstat(lp, &st) < 0) {
            err = local_fail(c, -errno, lp, NULL);
        } else if (S_ISLNK(st.st_mode)) {
            warn(p, lp, "symbolic link, not pushed");
        } else if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
            warn(p, lp, "not a regular file, not pushed");
        } else if (strlen(rp) > CELLAR_PATH_MAX) {
            /* the reason must survive errmsg's 256 bytes: shorten the path */
            size_t ll = strlen(lp);
            err = cellar__fail(c, CELLAR_ERR_NAMETOOLONG,
                               "%s%s: its device path is longer than %d bytes",
                               ll > 160 ? "..." : "", ll > 160 ? lp + ll - 160 : lp,
                               CELLAR_PATH_MAX);
            snprintf(c->errpath, sizeof(c->errpath), "%s", lp);
        } else if (reserved(rp)) {
            err = cellar__fail(c, CELLAR_ERR_INVAL,
                               "%s: /usr/.cellar is reserved for the device", lp);
            snprintf(c->errpath, sizeof(c->errpath), "%s", lp);
        } else if (S_ISDIR(st.st_mode)) {
            if (sv_add(&p->ldirs, rp, CELLAR_PUSH_MAX_FILES) < 0)
                err = cellar__fail(c, CELLAR_ERR_NOMEM,
                                   "out of memory (or over %d directories)",
                                   CELLAR_PUSH_MAX_FILES);
            else
                err = walk_local(p, lp, rp, depth + 1);
        } else {
            size_t files = p->n;
            if (files >= CELLAR_PUSH_MAX_FILES)
                err = cellar__fail(c, CELLAR_ERR_NOMEM, "%s: more than %d files",
                                   ldir, CELLAR_PUSH_MAX_FILES);
            else
                err = item_add(p, rp, lp);
        }
        free(lp);
        free(rp);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return err;
}

/* Size and SHA-256 of every local file. */
static int hash_items(push_t *p)
{
    for (size_t i = 0; i < p->n; i++) {
        item_t *it = &p->items[i];
        int fd = open(it->local, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return local_fail(p->c, -errno, it->local, NULL);
        int err = hash_fd(p->c, fd, it->local, &it->e.size, it->e.sha256);
        close(fd);
        if (err < 0)
            return err;
        p->rep->bundle_bytes += it->e.size;
    }
    return 0;
}

static int cmp_item(const void *a, const void *b)
{
    return strcmp(((const item_t *)a)->e.path, ((const item_t *)b)->e.path);
}

static unsigned depth_of(const char *path)
{
    unsigned d = 0;
    for (; *path; path++)
        d += *path == '/';
    return d;
}

static int cmp_dir_deepest(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    unsigned dx = depth_of(x), dy = depth_of(y);
    if (dx != dy)
        return dx > dy ? -1 : 1;
    return strcmp(x, y);
}

static bool item_has(const push_t *p, size_t nfiles, const char *path)
{
    size_t lo = 0, hi = nfiles;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(p->items[mid].e.path, path);
        if (r == 0)
            return true;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* The device tree under rdir (missing = empty). */
static int remote_tree(cellar_t *c, const char *rdir, strvec_t *files, strvec_t *dirs)
{
    cellar_stat_t st;
    int err = cellar_stat(c, rdir, &st);
    if (err == CELLAR_ERR_NOENT)
        return 0;
    if (err < 0)
        return at_path(c, err, rdir);
    if (st.type != CELLAR_TYPE_DIR)
        return at_path(c, cellar__fail(c, CELLAR_ERR_NOTDIR, "%s: not a directory", rdir),
                       rdir);
    err = walk_remote(c, rdir, 0, files, dirs);
    sv_sort(files);
    sv_sort(dirs);
    return err;
}

/* Removal entries for what the device has under rdir and localdir lacks. */
static int add_removals(push_t *p, size_t nfiles, const strvec_t *rfiles,
                        strvec_t *rdirs)
{
    for (size_t i = 0; i < rfiles->n; i++) {
        if (item_has(p, nfiles, rfiles->v[i]))
            continue;
        int err = item_add(p, rfiles->v[i], NULL);
        if (err < 0)
            return err;
        p->items[p->n - 1].e.remove = true;
    }
    if (rdirs->n > 1)
        qsort(rdirs->v, rdirs->n, sizeof(*rdirs->v), cmp_dir_deepest);
    for (size_t i = 0; i < rdirs->n; i++) {
        /* a directory that a local file replaces goes with its content:
         * removing its path too would name the path twice (a conflict) */
        if (sv_has(&p->ldirs, rdirs->v[i]) || item_has(p, nfiles, rdirs->v[i]))
            continue;
        int err = item_add(p, rdirs->v[i], NULL);
        if (err < 0)
            return err;
        p->items[p->n - 1].e.remove = true;
        p->items[p->n - 1].e.is_dir = true;
    }
    sv_sort(rdirs);
    return 0;
}

static void bundle_id(const push_t *p, uint8_t out[CELLAR_SHA256_SIZE])
{
    csha_t s;
    csha_init(&s);
    (void)csha_start(&s);
    static const uint8_t zero[CELLAR_SHA256_SIZE];
    for (size_t i = 0; i < p->n; i++) {
        const cellar_push_entry_t *e = &p->items[i].e;
        uint8_t le[8];
        uint64_t size = e->remove ? 0 : e->size;
        for (int b = 0; b < 8; b++)
            le[b] = (uint8_t)(size >> (8 * b));
        uint8_t rm = e->remove ? 1 : 0;
        (void)csha_update(&s, e->path, strlen(e->path) + 1); /* with the 0 byte */
        (void)csha_update(&s, le, sizeof(le));
        (void)csha_update(&s, e->remove ? zero : e->sha256, CELLAR_SHA256_SIZE);
        (void)csha_update(&s, &rm, 1);
    }
    (void)csha_finish(&s, out);
    csha_free(&s);
}

static void count_actions(push_t *p)
{
    cellar_push_report_t *r = p->rep;
    r->nnew = r->nchanged = r->nunchanged = r->ndeleted = r->nabsent = 0;
    for (size_t i = 0; i < p->n; i++) {
        switch (p->items[i].e.action) {
        case CELLAR_PUSH_NEW: r->nnew++; break;
        case CELLAR_PUSH_CHANGED: r->nchanged++; break;
        case CELLAR_PUSH_UNCHANGED: r->nunchanged++; break;
        case CELLAR_PUSH_DELETED: r->ndeleted++; break;
        case CELLAR_PUSH_ABSENT: r->nabsent++; break;
        }
    }
}

static int manifest_digest(cellar_t *c, cellar_push_report_t *r)
{
    cellar_mentry_t *man = NULL;
    size_t n = 0;
    int err = cellar_manifest_list(c, "/usr", &man, &n);
    if (err == 0) {
        err = cellar_manifest_digest(man, n, r->digest);
        if (err < 0)
            cellar__fail(c, err, "out of memory");
        r->have_digest = err == 0;
    }
    free(man);
    return err;
}

/* Dry run: the actions from the device's manifest and tree. */
static int dry_run(push_t *p, const strvec_t *rfiles)
{
    cellar_mentry_t *man = NULL;
    size_t nman = 0;
    int err = cellar_manifest_list(p->c, "/usr", &man, &nman);
    if (err < 0)
        return err;
    for (size_t i = 0; i < p->n; i++) {
        cellar_push_entry_t *e = &p->items[i].e;
        if (e->remove) {
            e->action = CELLAR_PUSH_DELETED; /* it is in the tree: we listed it */
            continue;
        }
        if (!sv_has(rfiles, e->path)) {
            e->action = CELLAR_PUSH_NEW;
        } else {
            int k = bsearch_mentry(man, nman, e->path);
            /* as the device decides: an entry without a size (imported)
             * never counts as unchanged */
            bool same = k >= 0 && !memcmp(man[k].sha256, e->sha256, CELLAR_SHA256_SIZE) &&
                        man[k].size >= 0 && (uint64_t)man[k].size == e->size;
            e->action = same ? CELLAR_PUSH_UNCHANGED : CELLAR_PUSH_CHANGED;
        }
        if (e->action != CELLAR_PUSH_UNCHANGED)
            p->rep->to_send += e->size;
    }
    err = cellar_manifest_digest(man, nman, p->rep->digest);
    if (err < 0)
        cellar__fail(p->c, err, "out of memory");
    p->rep->have_digest = err == 0;
    free(man);
    return err;
}

static void set_bundle(pb_size_t *size, uint8_t *bytes, const uint8_t id[32])
{
    *size = CELLAR_SHA256_SIZE;
    memcpy(bytes, id, CELLAR_SHA256_SIZE);
}

static int begin(push_t *p)
{
    cellar_t *c = p->c;
    cellar_push_report_t *r = p->rep;
    cellar_Request *req = cellar__new_req(c, cellar_Request_update_begin_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    set_bundle(&req->body.update_begin.bundle.size, req->body.update_begin.bundle.bytes,
               r->bundle);
    req->body.update_begin.entries = (uint32_t)p->n;
    req->body.update_begin.bytes = r->bundle_bytes;
    int err = slow_rpc(c, cellar_Response_update_begin_tag);
    if (err < 0)
        return err;
    const cellar_UpdateBeginReply *b = &cellar__resp(c)->body.update_begin;
    r->resumed = b->resumed;
    r->staged = b->staged;
    return 0;
}

static int declare(push_t *p)
{
    cellar_t *c = p->c;
    cellar_push_report_t *r = p->rep;
    for (size_t first = 0; first < p->n; first += CELLAR_DECLARE_PAGE) {
        size_t k = p->n - first < CELLAR_DECLARE_PAGE ? p->n - first : CELLAR_DECLARE_PAGE;
        cellar_Request *req = cellar__new_req(c, cellar_Request_update_declare_tag);
        if (!req)
            return CELLAR_ERR_NOTCONN;
        cellar_UpdateDeclareRequest *d = &req->body.update_declare;
        set_bundle(&d->bundle.size, d->bundle.bytes, r->bundle);
        d->first = (uint32_t)first;
        for (size_t j = 0; j < k; j++) {
            const cellar_push_entry_t *e = &p->items[first + j].e;
            cellar_BundleEntry *be = &d->entries[j];
            snprintf(be->path, sizeof(be->path), "%s", e->path);
            be->remove = e->remove;
            if (!e->remove) {
                be->size = e->size;
                be->sha256.size = CELLAR_SHA256_SIZE;
                memcpy(be->sha256.bytes, e->sha256, CELLAR_SHA256_SIZE);
            }
        }
        d->entries_count = (pb_size_t)k;
        int err = cellar__rpc(c, cellar_Response_update_declare_tag);
        if (err < 0)
            return k == 1 ? at_path(c, err, p->items[first].e.path) : err;
        const cellar_UpdateDeclareReply *dr = &cellar__resp(c)->body.update_declare;
        if (dr->status_count != k || (dr->have_count != k && dr->have_count != 0))
            return cellar__fail(c, CELLAR_ERR_PROTO,
                                "declare reply has %u statuses for %zu entries",
                                (unsigned)dr->status_count, k);
        for (size_t j = 0; j < k; j++) {
            cellar_push_entry_t *e = &p->items[first + j].e;
            uint64_t have = dr->have_count ? dr->have[j] : 0;
            cellar_EntryStatus s = dr->status[j];
            bool ok = true;
            switch (s) {
            case cellar_EntryStatus_SEND_NEW:
            case cellar_EntryStatus_SEND_CHANGED:
                ok = !e->remove && have <= e->size;
                e->action = s == cellar_EntryStatus_SEND_NEW ? CELLAR_PUSH_NEW
                                                             : CELLAR_PUSH_CHANGED;
                e->have = have;
                r->to_send += e->size - (have <= e->size ? have : e->size);
                break;
            case cellar_EntryStatus_UNCHANGED:
                ok = !e->remove;
                e->action = CELLAR_PUSH_UNCHANGED;
                break;
            case cellar_EntryStatus_REMOVE:
                ok = e->remove;
                e->action = CELLAR_PUSH_DELETED;
                break;
            case cellar_EntryStatus_ABSENT:
                ok = e->remove;
                e->action = CELLAR_PUSH_ABSENT;
                break;
            default:
                ok = false;
            }
            if (!ok)
                return at_path(c, cellar__fail(c, CELLAR_ERR_PROTO,
                                               "%s: bad declare status %d (have %llu)",
                                               e->path, (int)s,
                                               (unsigned long long)have),
                               e->path);
        }
    }
    return 0;
}

/* The next entry at or after i whose data must be sent. */
static size_t next_send(const push_t *p, size_t i)
{
    for (; i < p->n; i++) {
        const cellar_push_entry_t *e = &p->items[i].e;
        if ((e->action == CELLAR_PUSH_NEW || e->action == CELLAR_PUSH_CHANGED) &&
            e->have < e->size)
            return i;
    }
    return p->n;
}

/* The local file of entry cur, opened to send from e->have: the bytes
 * before it (staged already) are hashed first. */
static int open_send(push_t *p, size_t cur, int *fd, csha_t *sha)
{
    cellar_t *c = p->c;
    item_t *it = &p->items[cur];
    *fd = open(it->local, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return local_fail(c, -errno, it->local, NULL);
    struct stat st;
    if (fstat(*fd, &st) < 0)
        return local_fail(c, -errno, it->local, NULL);
    if ((uint64_t)st.st_size != it->e.size)
        goto changed;
    if (csha_start(sha) < 0)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    if (it->e.have) {
        uint8_t *buf = malloc(64 * 1024);
        if (!buf)
            return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        uint64_t pos = 0;
        while (pos < it->e.have) {
            size_t want = it->e.have - pos < 64 * 1024 ? (size_t)(it->e.have - pos)
                                                       : 64 * 1024;
            ssize_t r = pread(*fd, buf, want, (off_t)pos);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                free(buf);
                if (r == 0)
                    goto changed;
                return local_fail(c, -errno, it->local, "read");
            }
            (void)csha_update(sha, buf, (size_t)r);
            pos += (uint64_t)r;
        }
        free(buf);
    }
    if (p->o->progress) {
        p->o->progress(p->o->progress_ctx, it->e.path, 0, it->e.size);
        if (it->e.have)
            p->o->progress(p->o->progress_ctx, it->e.path, it->e.have, it->e.size);
    }
    return 0;
changed:
    cellar__fail(c, CELLAR_ERR_BADMSG, "%s: changed while pushing; push again",
                 it->local);
    snprintf(c->errpath, sizeof(c->errpath), "%s", it->local);
    return CELLAR_ERR_BADMSG;
}

typedef struct flight {
    uint32_t id;
    uint32_t idx;
    uint32_t len;
    bool done;
} flight_t;

/* The first error of a pipeline, with its message (later failures, such
 * as the replies drained after it, must not overwrite it). */
typedef struct first {
    int err;
    char msg[sizeof(((cellar_t *)0)->errmsg)];
    char path[sizeof(((cellar_t *)0)->errpath)];
} first_t;

static void first_set(cellar_t *c, first_t *f, int err)
{
    if (f->err == 0 && err < 0) {
        f->err = err;
        memcpy(f->msg, c->errmsg, sizeof(f->msg));
        memcpy(f->path, c->errpath, sizeof(f->path));
    }
}

static int first_restore(cellar_t *c, const first_t *f)
{
    if (f->err < 0) {
        memcpy(c->errmsg, f->msg, sizeof(f->msg));
        memcpy(c->errpath, f->path, sizeof(f->path));
    }
    return f->err;
}

/* Read len bytes of the local file of `it` at pos into data. */
static int read_chunk(cellar_t *c, const item_t *it, int fd, uint64_t pos,
                      uint8_t *data, uint32_t len)
{
    uint32_t done = 0;
    while (done < len) {
        ssize_t rd = pread(fd, data + done, len - done, (off_t)(pos + done));
        if (rd < 0 && errno == EINTR)
            continue;
        if (rd < 0)
            return local_fail(c, -errno, it->local, "read");
        if (rd == 0) {
            cellar__fail(c, CELLAR_ERR_BADMSG, "%s: changed while pushing; push again",
                         it->local);
            snprintf(c->errpath, sizeof(c->errpath), "%s", it->local);
            return CELLAR_ERR_BADMSG;
        }
        done += (uint32_t)rd;
    }
    return 0;
}

/* Send the missing bytes of every file, pipelined: up to `window`
 * UpdateWrite requests in flight, file after file, each file re-hashed
 * locally as it goes. */
static int send_data(push_t *p)
{
    cellar_t *c = p->c;
    cellar_push_report_t *r = p->rep;
    cellar_xfer_t x = {.chunk = p->o->chunk, .inflight = p->o->inflight};
    uint32_t chunk = cellar__chunk(c, &x), window = cellar__window(c, &x);
    flight_t ring[CELLAR_MAX_INFLIGHT];
    uint32_t head = 0, count = 0;
    size_t cur = next_send(p, 0);
    uint64_t pos = 0;
    int fd = -1;
    first_t first = {.err = 0};
    csha_t sha;
    csha_init(&sha);
    if (!cellar_connected(c))
        return cellar__fail(c, CELLAR_ERR_NOTCONN, "not connected");

    for (;;) {
        /* 1. fill the window */
        while (first.err == 0 && count < window && cur < p->n) {
            item_t *it = &p->items[cur];
            if (fd < 0) {
                first_set(c, &first, open_send(p, cur, &fd, &sha));
                pos = it->e.have;
                if (first.err < 0)
                    break;
            }
            if (pos == it->e.size) {
                uint8_t got[CELLAR_SHA256_SIZE];
                (void)csha_finish(&sha, got);
                close(fd);
                fd = -1;
                if (memcmp(got, it->e.sha256, sizeof(got))) {
                    cellar__fail(c, CELLAR_ERR_BADMSG,
                                 "%s: changed while pushing; push again", it->local);
                    snprintf(c->errpath, sizeof(c->errpath), "%s", it->local);
                    first_set(c, &first, CELLAR_ERR_BADMSG);
                    break;
                }
                cur = next_send(p, cur + 1);
                continue;
            }
            uint64_t left = it->e.size - pos;
            uint32_t n = left < chunk ? (uint32_t)left : chunk;
            /* Only the fields encoded: no need to clear the 16 KiB struct. */
            cellar_Request *req = cellar__req(c);
            req->which_body = cellar_Request_update_write_tag;
            req->body.update_write.index = (uint32_t)cur;
            req->body.update_write.offset = pos;
            req->body.update_write.data.size = (pb_size_t)n;
            uint8_t *data = req->body.update_write.data.bytes;
            first_set(c, &first, read_chunk(c, it, fd, pos, data, n));
            if (first.err < 0)
                break;
            (void)csha_update(&sha, data, n);
            int64_t id = cellar__send(c);
            if (id < 0) {
                first_set(c, &first, (int)id);
                break;
            }
            flight_t *f = &ring[(head + count++) % CELLAR_MAX_INFLIGHT];
            f->id = (uint32_t)id;
            f->idx = (uint32_t)cur;
            f->len = n;
            f->done = false;
            pos += n;
        }
        if (count == 0 || !cellar_connected(c))
            break;

        /* 2. one reply (after a failure: drained, not interpreted) */
        int err = cellar__recv(c);
        if (err < 0) {
            first_set(c, &first, err);
            break;
        }
        cellar_Response *resp = cellar__resp(c);
        flight_t *f = NULL;
        for (uint32_t i = 0; i < count && !f; i++) {
            flight_t *g = &ring[(head + i) % CELLAR_MAX_INFLIGHT];
            if (!g->done && g->id == resp->id)
                f = g;
        }
        if (!f) {
            c->broken = true;
            err = resp->id == 0 && resp->has_error ? cellar__check(c, 0) : 0;
            if (err == 0)
                err = cellar__fail(c, CELLAR_ERR_PROTO, "reply id %u matches no request",
                                   (unsigned)resp->id);
            first_set(c, &first, err);
            break;
        }
        f->done = true;
        if (first.err == 0) {
            cellar_push_entry_t *e = &p->items[f->idx].e;
            err = cellar__check(c, cellar_Response_write_tag);
            if (err == 0 && resp->body.write.written != f->len)
                err = cellar__fail(c, CELLAR_ERR_IO, "%s: short write (%u of %u bytes)",
                                   e->path, (unsigned)resp->body.write.written,
                                   (unsigned)f->len);
            if (err < 0) {
                first_set(c, &first, at_path(c, err, e->path));
            } else {
                e->sent += f->len;
                r->bytes_sent += f->len;
                if (p->o->progress)
                    p->o->progress(p->o->progress_ctx, e->path, e->have + e->sent,
                                   e->size);
            }
        } else if (!resp->has_error && resp->which_body == cellar_Response_write_tag &&
                   resp->body.write.written == f->len) {
            p->items[f->idx].e.sent += f->len; /* staged all the same */
            r->bytes_sent += f->len;
        }
        while (count > 0 && ring[head].done) {
            head = (head + 1) % CELLAR_MAX_INFLIGHT;
            count--;
        }
    }
    if (fd >= 0)
        close(fd);
    csha_free(&sha);
    return first_restore(c, &first);
}

static int commit(push_t *p)
{
    cellar_t *c = p->c;
    cellar_push_report_t *r = p->rep;
    cellar_Request *req = cellar__new_req(c, cellar_Request_update_commit_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    set_bundle(&req->body.update_commit.bundle.size, req->body.update_commit.bundle.bytes,
               r->bundle);
    int err = slow_rpc(c, cellar_Response_update_commit_tag);
    if (err < 0) {
        /* The device names the path in its message: the longest entry path
         * found in it is the one (for errpath). */
        const char *msg = cellar_errmsg(c);
        size_t best = 0;
        for (size_t i = 0; i < p->n; i++) {
            size_t len = strlen(p->items[i].e.path);
            if (len > best && strstr(msg, p->items[i].e.path)) {
                snprintf(c->errpath, sizeof(c->errpath), ":%s", p->items[i].e.path);
                best = len;
            }
        }
        return err;
    }
    const cellar_UpdateCommitReply *cr = &cellar__resp(c)->body.update_commit;
    r->committed = true;
    r->commit_written = cr->written;
    r->commit_removed = cr->removed;
    r->commit_unchanged = cr->unchanged;
    r->commit_bytes = cr->bytes;
    return 0;
}

/* Copy the items into the report (the entries survive a failure too). */
static int publish(push_t *p)
{
    cellar_push_report_t *r = p->rep;
    free(r->entries);
    r->entries = NULL;
    r->nentries = 0;
    if (p->n == 0)
        return 0;
    r->entries = malloc(p->n * sizeof(*r->entries));
    if (!r->entries)
        return cellar__fail(p->c, CELLAR_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < p->n; i++)
        r->entries[i] = p->items[i].e;
    r->nentries = p->n;
    return 0;
}

int cellar_push(cellar_t *c, const char *localdir, const char *remotedir,
                const cellar_push_opts_t *opts, cellar_push_report_t *rep)
{
    static const cellar_push_opts_t defaults;
    memset(rep, 0, sizeof(*rep));
    push_t p = {.c = c, .o = opts ? opts : &defaults, .rep = rep};
    strvec_t rfiles = {0}, rdirs = {0};
    int err = 0;
    char rdir[CELLAR_PATH_MAX + 1];

    if (!remotedir || strlen(remotedir) > CELLAR_PATH_MAX) {
        err = cellar__fail(c, remotedir ? CELLAR_ERR_NAMETOOLONG : CELLAR_ERR_INVAL,
                           "bad device directory");
        goto out;
    }
    /* Trailing slashes off; it must be /usr or below. */
    size_t rl = strlen(remotedir);
    while (rl > 1 && remotedir[rl - 1] == '/')
        rl--;
    memcpy(rdir, remotedir, rl);
    rdir[rl] = 0;
    if (strncmp(rdir, "/usr", 4) != 0 || (rdir[4] != 0 && rdir[4] != '/') ||
        strstr(rdir, "//") || strstr(rdir, "/./") || strstr(rdir, "/../") ||
        (rl >= 2 && !strcmp(rdir + rl - 2, "/.")) ||
        (rl >= 3 && !strcmp(rdir + rl - 3, "/..")) || reserved(rdir)) {
        err = at_path(c, cellar__fail(c, CELLAR_ERR_INVAL,
                                      "%s: not a directory path under /usr", rdir),
                      rdir);
        goto out;
    }
    struct stat st;
    if (stat(localdir, &st) < 0) {
        err = local_fail(c, -errno, localdir, NULL);
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        err = local_fail(c, -ENOTDIR, localdir, NULL);
        goto out;
    }
    if (!cellar_connected(c)) {
        err = cellar__fail(c, CELLAR_ERR_NOTCONN, "not connected");
        goto out;
    }

    /* 1. the local files, hashed and sorted */
    err = walk_local(&p, localdir, rdir, 0);
    if (err == 0)
        err = hash_items(&p);
    if (err < 0)
        goto out;
    if (p.n > 1)
        qsort(p.items, p.n, sizeof(*p.items), cmp_item);
    sv_sort(&p.ldirs);
    size_t nfiles = p.n;

    /* 2. removals; the device tree also tells a dry run what is new */
    if (p.o->delete_extra || p.o->dry_run) {
        err = remote_tree(c, rdir, &rfiles, &rdirs);
        if (err == 0 && p.o->delete_extra)
            err = add_removals(&p, nfiles, &rfiles, &rdirs);
        if (err < 0)
            goto out;
    }

    /* 3. the bundle id */
    bundle_id(&p, rep->bundle);

    if (p.o->dry_run) {
        err = dry_run(&p, &rfiles);
        count_actions(&p);
        goto out;
    }

    /* 4. the transaction */
    if (p.n > 0) {
        err = begin(&p);
        if (err == 0)
            err = declare(&p);
        if (err == 0)
            err = send_data(&p);
        count_actions(&p);
        if (err == 0)
            err = commit(&p);
        if (err < 0)
            goto out;
    }

    /* 5. the manifest digest */
    err = manifest_digest(c, rep);
out:
    {
        int perr = publish(&p);
        if (err == 0)
            err = perr;
    }
    for (size_t i = 0; i < p.n; i++)
        free(p.items[i].local);
    free(p.items);
    sv_free(&p.ldirs);
    sv_free(&rfiles);
    sv_free(&rdirs);
    return err;
}
