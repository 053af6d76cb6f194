/*
 * libcellar_util.c - local helpers of libcellar that need no connection:
 * SHA-256 of memory and files, names (joining, temporary names, the
 * reserved /usr/.cellar) and bounded string lists. It calls no other file
 * of libcellar (see docs/ARCHITECTURE.md, "Clients").
 */
#include "libcellar_int.h"

#include <time.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP_SUFFIX ".cellar-tmp"

/* ---- SHA-256 ---------------------------------------------------------------------- */
void cellar_sha256(const void *data, size_t len, uint8_t out[CELLAR_SHA256_SIZE])
{
    csha_t sha;
    csha_init(&sha);
    (void)csha_start(&sha);
    (void)csha_update(&sha, data, len);
    (void)csha_finish(&sha, out);
    csha_free(&sha);
}

char *cellar_sha256_hex(const uint8_t sha[CELLAR_SHA256_SIZE], char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < CELLAR_SHA256_SIZE; i++) {
        hex[2 * i] = digits[sha[i] >> 4];
        hex[2 * i + 1] = digits[sha[i] & 15];
    }
    hex[64] = 0;
    return hex;
}

int cellar__sha_fd(int fd, uint64_t size, uint8_t out[CELLAR_SHA256_SIZE], uint64_t *got)
{
    enum { BUF = 64 * 1024 };
    uint8_t *buf = malloc(BUF);
    if (!buf)
        return -ENOMEM;
    csha_t sha;
    csha_init(&sha);
    (void)csha_start(&sha);
    int err = 0;
    uint64_t pos = 0;
    for (;;) {
        size_t want = BUF;
        if (size != UINT64_MAX && size - pos < want)
            want = (size_t)(size - pos);
        if (want == 0)
            break;
        ssize_t n = pread(fd, buf, want, (off_t)pos);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = -errno;
            break;
        }
        if (n == 0) {
            if (size != UINT64_MAX)
                err = -EIO; /* shrank while hashing */
            break;
        }
        (void)csha_update(&sha, buf, (size_t)n);
        pos += (uint64_t)n;
    }
    (void)csha_finish(&sha, out);
    csha_free(&sha);
    free(buf);
    if (got)
        *got = pos;
    return err;
}

int cellar_sha256_file(const char *path, uint8_t out[CELLAR_SHA256_SIZE])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)) {
        int err = S_ISDIR(st.st_mode) ? -EISDIR : -errno;
        close(fd);
        return err;
    }
    int err = cellar__sha_fd(fd, UINT64_MAX, out, NULL);
    close(fd);
    return err;
}

/* ---- names ------------------------------------------------------------------------ */
/* Split path into the directory prefix (with its trailing '/', possibly "")
 * and the last component. */
static void split(const char *path, size_t *dirlen, const char **base)
{
    const char *slash = strrchr(path, '/');
    *dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    *base = slash ? slash + 1 : path;
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* dir/.base.cellar-tmp, or dir/.ct-XXXXXXXX.cellar-tmp when that would be
 * longer than max (or the component longer than 255). */
int cellar__tmp_name(const char *path, char *out, size_t cap, size_t max)
{
    size_t dl;
    const char *base;
    split(path, &dl, &base);
    if (!*base)
        return -EINVAL;
    size_t blen = strlen(base);
    if (dl + 1 + blen + sizeof(TMP_SUFFIX) - 1 <= max && 1 + blen + 11 <= 255)
        snprintf(out, cap, "%.*s.%s" TMP_SUFFIX, (int)dl, path, base);
    else
        snprintf(out, cap, "%.*s.ct-%08x" TMP_SUFFIX, (int)dl, path,
                 (unsigned)fnv1a(base));
    return strlen(out) <= max ? 0 : -ENAMETOOLONG;
}

bool cellar__is_tmp_name(const char *name)
{
    size_t n = strlen(name), s = sizeof(TMP_SUFFIX) - 1;
    return name[0] == '.' && n > s && strcmp(name + n - s, TMP_SUFFIX) == 0;
}

char *cellar__join(const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    bool slash = dl > 0 && dir[dl - 1] == '/';
    size_t n = dl + (slash ? 0 : 1) + strlen(name) + 1;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s%s%s", dir, slash || dl == 0 ? "" : "/", name);
    return p;
}

/* A name a device listing may hand us that is safe to join to a local or
 * device directory: not empty, no '/', not "." or "..". */
bool cellar__plain_name(const char *name)
{
    return name[0] && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

bool cellar__reserved(const char *path)
{
    return strncmp(path, "/usr/.cellar", 12) == 0 && (path[12] == 0 || path[12] == '/');
}

/* ---- string lists ------------------------------------------------------------------ */
int cellar__sv_add(cellar__strvec_t *s, const char *str, size_t max)
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

void cellar__sv_free(cellar__strvec_t *s)
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

void cellar__sv_sort(cellar__strvec_t *s)
{
    if (s->n > 1)
        qsort(s->v, s->n, sizeof(*s->v), cmp_str);
}

bool cellar__sv_has(const cellar__strvec_t *s, const char *str)
{
    return s->n && bsearch(&str, s->v, s->n, sizeof(*s->v), cmp_str) != NULL;
}

/* ---- clock (issue 11) ------------------------------------------------------------- */
uint64_t cellar__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
