/*
 * libcellar_manifest.c - the manifest of libcellar: listing, digest and
 * import (Manifest, ManifestImport), and checksum.json parsed into
 * manifest entries. Every listing loop is bounded (a page count and an
 * entry count) and refuses a cursor that does not advance. Above the
 * plumbing of libcellar.c; see docs/ARCHITECTURE.md, "Clients".
 */
#include "libcellar_int.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(CELLAR_MANIFEST_PAGE == CELLAR__FIELD_COUNT(cellar_ManifestReply, entries),
               "CELLAR_MANIFEST_PAGE differs from ManifestReply.entries");
_Static_assert(CELLAR_IMPORT_PAGE == CELLAR__FIELD_COUNT(cellar_ManifestImportRequest, entries),
               "CELLAR_IMPORT_PAGE differs from ManifestImportRequest.entries");
_Static_assert(sizeof(((cellar_mentry_t *)0)->path) ==
                   sizeof(((cellar_ManifestEntry *)0)->path),
               "cellar_mentry_t.path differs from ManifestEntry.path");

#define JSON_FILE_MAX (64u << 20)             /* checksum.json bytes */

const char *cellar__partition_of(const char *partition)
{
    return partition && *partition ? partition : "/usr";
}

int cellar__set_partition(cellar_t *c, char *dst, size_t cap, const char *part)
{
    if (strlen(part) >= cap)
        return cellar__fail(c, CELLAR_ERR_INVAL, "%s: no such partition", part);
    memcpy(dst, part, strlen(part) + 1);
    return 0;
}

int cellar__mentry_find(const cellar_mentry_t *v, size_t n, const char *path)
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

/* ---- manifest ----------------------------------------------------------------------- */
static int cmp_mentry(const void *a, const void *b)
{
    return strcmp(((const cellar_mentry_t *)a)->path, ((const cellar_mentry_t *)b)->path);
}

/* The listing asks CELLAR_LIST_AHEAD pages at once (issue 11,
 * docs/PIPELINING.md): the cursor is a slot index and a page of n entries
 * covers at least n slots, so pages asked at cursor + k * stride overlap
 * the true next page or start exactly at it. Pages are taken in order
 * while they start inside what is covered so far; the duplicates an
 * overlap brings are dropped after sorting. */
int cellar__ml_fill(void *ctx, size_t i)
{
    cellar__mlist_t *m = ctx;
    cellar_Request *req = cellar__new_req(m->c, cellar_Request_manifest_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    int err = cellar__set_partition(m->c, req->body.manifest.partition,
                                    sizeof(req->body.manifest.partition), m->part);
    if (err < 0)
        return err;
    req->body.manifest.cursor = m->start + (uint32_t)i * m->stride;
    req->body.manifest.max_entries = CELLAR_MANIFEST_PAGE;
    return 0;
}

int cellar__ml_done(void *ctx, size_t i, int err)
{
    cellar__mlist_t *m = ctx;
    cellar_t *c = m->c;
    uint32_t cursor = m->start + (uint32_t)i * m->stride;
    if (err == 0)
        err = cellar__check(c, cellar_Response_manifest_tag);
    if (err < 0)
        return cellar__at_path(c, err, m->part);
    if (m->cov == UINT64_MAX || cursor > m->cov)
        return 0; /* past the end, or a gap: asked again next round */
    const cellar_ManifestReply *r = &cellar__resp(c)->body.manifest;
    size_t got = r->entries_count;
    if (m->len + got > CELLAR_MANIFEST_MAX)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "%s: manifest over %d entries", m->part,
                            CELLAR_MANIFEST_MAX);
    if (r->next_cursor && r->next_cursor <= cursor) {
        c->broken = true;
        return cellar__fail(c, CELLAR_ERR_PROTO, "manifest cursor does not advance");
    }
    if (m->cap - m->len < got) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        while (ncap - m->len < got)
            ncap *= 2;
        cellar_mentry_t *nv = realloc(m->v, ncap * sizeof(*nv));
        if (!nv)
            return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        m->v = nv;
        m->cap = ncap;
    }
    for (size_t k = 0; k < got; k++) {
        const cellar_ManifestEntry *me = &r->entries[k];
        cellar_mentry_t *e = &m->v[m->len];
        memset(e, 0, sizeof(*e));
        snprintf(e->path, sizeof(e->path), "%s", me->path);
        if (me->sha256.size != CELLAR_SHA256_SIZE || me->size < -1)
            return cellar__fail(c, CELLAR_ERR_PROTO,
                                "manifest entry %s: bad size or SHA-256", e->path);
        e->size = me->size;
        memcpy(e->sha256, me->sha256.bytes, CELLAR_SHA256_SIZE);
        e->mtime = me->mtime;
        m->len++;
    }
    if (r->next_cursor == 0)
        m->cov = UINT64_MAX;
    else if (r->next_cursor > m->cov)
        m->cov = r->next_cursor;
    if (r->next_cursor && got == CELLAR_MANIFEST_PAGE && r->next_cursor - cursor < m->stride)
        m->stride = r->next_cursor - cursor;
    return 0;
}

int cellar__ml_finish(cellar__mlist_t *m)
{
    cellar_t *c = m->c;
    int err = 0;
    for (uint32_t round = 0; m->cov != UINT64_MAX; round++) {
        if (round >= CELLAR__MAX_PAGES) {
            err = cellar__fail(c, CELLAR_ERR_PROTO, "manifest listing does not end");
            break;
        }
        m->start = (uint32_t)m->cov;
        err = cellar__batch_run(c, CELLAR_LIST_AHEAD, cellar__ml_fill, cellar__ml_done, m,
                                false);
        if (err < 0)
            break;
    }
    if (err < 0) {
        free(m->v);
        m->v = NULL;
        m->len = 0;
        return err;
    }
    if (m->len > 1) {
        qsort(m->v, m->len, sizeof(*m->v), cmp_mentry);
        size_t k = 1;
        for (size_t i = 1; i < m->len; i++)
            if (strcmp(m->v[i].path, m->v[k - 1].path))
                m->v[k++] = m->v[i];
        m->len = k;
    }
    return 0;
}

int cellar_manifest_list(cellar_t *c, const char *partition, cellar_mentry_t **out,
                         size_t *n)
{
    *out = NULL;
    *n = 0;
    cellar__mlist_t m = {.c = c, .part = cellar__partition_of(partition),
                         .stride = CELLAR_MANIFEST_PAGE};
    int err = cellar__ml_finish(&m);
    if (err < 0)
        return err;
    *out = m.v;
    *n = m.len;
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
    size_t page = cellar__items(c, CELLAR_IMPORT_PAGE); /* issue 14 */
    for (size_t i = 0; i < n;) {
        cellar_Request *req = cellar__new_req(c, cellar_Request_manifest_import_tag);
        if (!req)
            return CELLAR_ERR_NOTCONN;
        size_t k = n - i < page ? n - i : page;
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
        k = cellar__fit(c, &mi->entries_count); /* within max_frame */
        int err = cellar__rpc(c, cellar_Response_done_tag);
        if (err < 0)
            return k == 1 ? cellar__at_path(c, err, e[i].path) : err;
        i += k;
    }
    return 0;
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
    return !cellar__reserved(p);
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
