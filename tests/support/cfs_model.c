/* cfs_model.c - in-memory oracle of the filesystem (see cfs_model.h). */
#include "cfs_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- allocation ---------------------------------------------------------- */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "cfs_model: out of memory\n");
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

static uint32_t new_node(fsm_t *m, uint8_t type, uint32_t parent,
                         const char *name)
{
    if (m->nnodes == m->cap) {
        uint32_t ncap = m->cap ? m->cap * 2 : 64;
        if (ncap > FSM_MAX_NODES || m->nnodes >= FSM_MAX_NODES) {
            fprintf(stderr, "cfs_model: more than %u nodes\n", FSM_MAX_NODES);
            abort();
        }
        fsm_node_t *n = realloc(m->node, (size_t)ncap * sizeof(*n));
        if (!n) {
            fprintf(stderr, "cfs_model: out of memory\n");
            abort();
        }
        memset(n + m->cap, 0, (size_t)(ncap - m->cap) * sizeof(*n));
        m->node = n;
        m->cap = ncap;
    }
    uint32_t id = m->nnodes++;
    fsm_node_t *nd = &m->node[id];
    memset(nd, 0, sizeof(*nd));
    nd->used = 1;
    nd->type = type;
    nd->parent = parent;
    nd->name = xstrdup(name);
    m->nlive++;
    return id;
}

static void drop_node(fsm_t *m, uint32_t id)
{
    fsm_node_t *nd = &m->node[id];
    free(nd->name);
    free(nd->data);
    nd->name = NULL;
    nd->data = NULL;
    nd->len = 0;
    nd->used = 0;
    m->nlive--;
}

fsm_t *fsm_new(void)
{
    fsm_t *m = xmalloc(sizeof(*m));
    memset(m, 0, sizeof(*m));
    new_node(m, CFS_TYPE_DIR, 0, "");
    return m;
}

void fsm_free(fsm_t *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < m->nnodes; i++)
        if (m->node[i].used) {
            free(m->node[i].name);
            free(m->node[i].data);
        }
    free(m->node);
    free(m);
}

void fsm_copy(fsm_t *dst, const fsm_t *src)
{
    if (dst == src)
        return;
    for (uint32_t i = 0; i < dst->nnodes; i++)
        if (dst->node[i].used) {
            free(dst->node[i].name);
            free(dst->node[i].data);
        }
    if (dst->cap < src->cap) {
        free(dst->node);
        dst->node = xmalloc((size_t)src->cap * sizeof(fsm_node_t));
        dst->cap = src->cap;
    }
    memset(dst->node, 0, (size_t)dst->cap * sizeof(fsm_node_t));
    dst->nnodes = src->nnodes;
    dst->nlive = src->nlive;
    for (uint32_t i = 0; i < src->nnodes; i++) {
        const fsm_node_t *s = &src->node[i];
        fsm_node_t *d = &dst->node[i];
        if (!s->used)
            continue;
        *d = *s;
        d->name = xstrdup(s->name);
        d->data = NULL;
        if (s->len) {
            d->data = xmalloc(s->len);
            memcpy(d->data, s->data, s->len);
        }
    }
}

fsm_t *fsm_clone(const fsm_t *m)
{
    fsm_t *c = xmalloc(sizeof(*c));
    memset(c, 0, sizeof(*c));
    fsm_copy(c, m);
    return c;
}

bool fsm_equal(const fsm_t *a, const fsm_t *b)
{
    /* Same node table is the common case (clones); otherwise compare by
     * path through a walk of a. */
    if (a->nlive != b->nlive)
        return false;
    for (uint32_t i = 0; i < a->nnodes; i++) {
        const fsm_node_t *x = &a->node[i];
        if (!x->used)
            continue;
        char path[CFS_PATH_MAX + 2];
        fsm_path(a, i, path);
        int32_t j = fsm_lookup(b, path);
        if (j < 0)
            return false;
        const fsm_node_t *y = &b->node[j];
        if (x->type != y->type || x->len != y->len)
            return false;
        if (x->len && memcmp(x->data, y->data, x->len) != 0)
            return false;
    }
    return true;
}

/* ---- paths ----------------------------------------------------------------- */

int fsm_check_path(const char *path)
{
    if (!path)
        return CFS_ERR_INVAL;
    size_t n = strlen(path);
    if (n > CFS_PATH_MAX)
        return CFS_ERR_NAMETOOLONG;
    if (n == 0 || path[0] != '/')
        return CFS_ERR_INVAL;
    if (n == 1)
        return 0;
    const char *p = path + 1;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0)
            return CFS_ERR_INVAL;
        if (len > CFS_NAME_MAX)
            return CFS_ERR_NAMETOOLONG;
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return CFS_ERR_INVAL;
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

static int32_t child(const fsm_t *m, uint32_t dir, const char *name,
                     size_t len)
{
    for (uint32_t i = 1; i < m->nnodes; i++) {
        const fsm_node_t *nd = &m->node[i];
        if (nd->used && nd->parent == dir && strlen(nd->name) == len &&
            memcmp(nd->name, name, len) == 0)
            return (int32_t)i;
    }
    return -1;
}

/* Resolve the parent directory of path and the last component. */
static int32_t lookup_parent(const fsm_t *m, const char *path,
                             const char **last)
{
    int rc = fsm_check_path(path);
    if (rc < 0)
        return rc;
    if (path[1] == '\0')
        return CFS_ERR_INVAL; /* the root has no parent */
    uint32_t cur = 0;
    const char *p = path + 1;
    for (;;) {
        const char *e = strchr(p, '/');
        if (!e) {
            *last = p;
            return (int32_t)cur;
        }
        int32_t c = child(m, cur, p, (size_t)(e - p));
        if (c < 0)
            return CFS_ERR_NOENT;
        if (m->node[c].type != CFS_TYPE_DIR)
            return CFS_ERR_NOTDIR;
        cur = (uint32_t)c;
        p = e + 1;
    }
}

int32_t fsm_lookup(const fsm_t *m, const char *path)
{
    int rc = fsm_check_path(path);
    if (rc < 0)
        return rc;
    if (path[1] == '\0')
        return 0;
    const char *last;
    int32_t dir = lookup_parent(m, path, &last);
    if (dir < 0)
        return dir;
    int32_t c = child(m, (uint32_t)dir, last, strlen(last));
    return c < 0 ? CFS_ERR_NOENT : c;
}

void fsm_path(const fsm_t *m, uint32_t id, char *buf)
{
    if (id == 0) {
        strcpy(buf, "/");
        return;
    }
    /* Collect components from the leaf up, then write them root first. */
    uint32_t chain[CFS_PATH_MAX];
    uint32_t n = 0;
    for (uint32_t c = id; c != 0 && n < CFS_PATH_MAX; c = m->node[c].parent)
        chain[n++] = c;
    size_t off = 0;
    buf[0] = '\0';
    while (n--) {
        const char *name = m->node[chain[n]].name;
        size_t len = strlen(name);
        if (off + 1 + len > CFS_PATH_MAX) {
            /* Cannot happen for paths the model accepted; keep it safe. */
            break;
        }
        buf[off++] = '/';
        memcpy(buf + off, name, len);
        off += len;
        buf[off] = '\0';
    }
}

static bool has_children(const fsm_t *m, uint32_t dir)
{
    for (uint32_t i = 1; i < m->nnodes; i++)
        if (m->node[i].used && m->node[i].parent == dir)
            return true;
    return false;
}

bool fsm_is_under(const fsm_t *m, uint32_t id, uint32_t anc)
{
    for (uint32_t c = id;; c = m->node[c].parent) {
        if (c == anc)
            return true;
        if (c == 0)
            return false;
    }
}

/* ---- namespace operations ------------------------------------------------ */

int fsm_mkdir(fsm_t *m, const char *path)
{
    int rc = fsm_check_path(path);
    if (rc < 0)
        return rc;
    if (path[1] == '\0')
        return CFS_ERR_EXIST;
    const char *last;
    int32_t dir = lookup_parent(m, path, &last);
    if (dir < 0)
        return dir;
    if (child(m, (uint32_t)dir, last, strlen(last)) >= 0)
        return CFS_ERR_EXIST;
    new_node(m, CFS_TYPE_DIR, (uint32_t)dir, last);
    return 0;
}

int fsm_rmdir(fsm_t *m, const char *path)
{
    int rc = fsm_check_path(path);
    if (rc < 0)
        return rc;
    if (path[1] == '\0')
        return CFS_ERR_PERM;
    int32_t id = fsm_lookup(m, path);
    if (id < 0)
        return id;
    if (m->node[id].type != CFS_TYPE_DIR)
        return CFS_ERR_NOTDIR;
    if (has_children(m, (uint32_t)id))
        return CFS_ERR_NOTEMPTY;
    drop_node(m, (uint32_t)id);
    return 0;
}

int fsm_remove(fsm_t *m, const char *path)
{
    int rc = fsm_check_path(path);
    if (rc < 0)
        return rc;
    if (path[1] == '\0')
        return CFS_ERR_PERM;
    int32_t id = fsm_lookup(m, path);
    if (id < 0)
        return id;
    if (m->node[id].type == CFS_TYPE_DIR && has_children(m, (uint32_t)id))
        return CFS_ERR_NOTEMPTY;
    drop_node(m, (uint32_t)id);
    return 0;
}

int fsm_rename(fsm_t *m, const char *src, const char *dst)
{
    int rc = fsm_check_path(src);
    if (rc < 0)
        return rc;
    rc = fsm_check_path(dst);
    if (rc < 0)
        return rc;
    if (src[1] == '\0' || dst[1] == '\0')
        return CFS_ERR_PERM;
    int32_t s = fsm_lookup(m, src);
    if (s < 0)
        return s;
    const char *last;
    int32_t dir = lookup_parent(m, dst, &last);
    if (dir < 0)
        return dir;
    int32_t d = child(m, (uint32_t)dir, last, strlen(last));
    if (d == s)
        return 0;
    fsm_node_t *sn = &m->node[s];
    if (sn->type == CFS_TYPE_DIR && fsm_is_under(m, (uint32_t)dir, (uint32_t)s))
        return CFS_ERR_INVAL; /* moving a directory into itself */
    if (d >= 0) {
        fsm_node_t *dn = &m->node[d];
        if (sn->type == CFS_TYPE_DIR) {
            if (dn->type != CFS_TYPE_DIR)
                return CFS_ERR_NOTDIR;
            if (has_children(m, (uint32_t)d))
                return CFS_ERR_NOTEMPTY;
        } else if (dn->type == CFS_TYPE_DIR) {
            return CFS_ERR_ISDIR;
        }
        drop_node(m, (uint32_t)d);
    }
    sn = &m->node[s];
    free(sn->name);
    sn->name = xstrdup(last);
    sn->parent = (uint32_t)dir;
    return 0;
}

int fsm_rename_many(fsm_t *m, const char *const *src, const char *const *dst,
                    uint32_t n)
{
    if (n > CFS_RENAME_MANY_MAX || (n && (!src || !dst)))
        return CFS_ERR_INVAL;
    fsm_t *c = fsm_clone(m);
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        if (!src[i])
            rc = CFS_ERR_INVAL;
        else if (dst[i])
            rc = fsm_rename(c, src[i], dst[i]);
        else
            rc = fsm_remove(c, src[i]);
    }
    if (rc == 0)
        fsm_copy(m, c);
    fsm_free(c);
    return rc;
}

int32_t fsm_open(fsm_t *m, const char *path, int flags)
{
    int acc = flags & 3;
    if (acc == 0)
        return CFS_ERR_INVAL;
    int rc = fsm_check_path(path);
    if (rc < 0)
        return rc;
    if (path[1] == '\0')
        return CFS_ERR_ISDIR;
    const char *last;
    int32_t dir = lookup_parent(m, path, &last);
    if (dir < 0)
        return dir;
    int32_t c = child(m, (uint32_t)dir, last, strlen(last));
    if (c >= 0) {
        if ((flags & CFS_O_CREAT) && (flags & CFS_O_EXCL))
            return CFS_ERR_EXIST;
        if (m->node[c].type == CFS_TYPE_DIR)
            return CFS_ERR_ISDIR;
        return c;
    }
    if (!(flags & CFS_O_CREAT))
        return CFS_ERR_NOENT;
    return (int32_t)new_node(m, CFS_TYPE_FILE, (uint32_t)dir, last);
}

/* ---- contents -------------------------------------------------------------- */

const uint8_t *fsm_data(const fsm_t *m, uint32_t id, uint32_t *len)
{
    *len = m->node[id].len;
    return m->node[id].data;
}

void fsm_set_data(fsm_t *m, uint32_t id, const uint8_t *buf, uint32_t len)
{
    fsm_node_t *nd = &m->node[id];
    uint8_t *d = NULL;
    if (len) {
        d = xmalloc(len);
        memcpy(d, buf, len);
    }
    free(nd->data);
    nd->data = d;
    nd->len = len;
}

static void resize(fsm_node_t *nd, uint32_t size)
{
    if (size == nd->len)
        return;
    uint8_t *d = NULL;
    if (size) {
        d = xmalloc(size);
        uint32_t keep = nd->len < size ? nd->len : size;
        if (keep)
            memcpy(d, nd->data, keep);
        if (size > keep)
            memset(d + keep, 0, size - keep);
    }
    free(nd->data);
    nd->data = d;
    nd->len = size;
}

void fsm_write(fsm_t *m, uint32_t id, uint32_t off, const uint8_t *buf,
               uint32_t len)
{
    fsm_node_t *nd = &m->node[id];
    if (!len)
        return;
    if (off + len > nd->len)
        resize(nd, off + len);
    memcpy(nd->data + off, buf, len);
}

void fsm_truncate(fsm_t *m, uint32_t id, uint32_t size)
{
    resize(&m->node[id], size);
}

/* ---- counting ---------------------------------------------------------------- */

uint32_t fsm_files(const fsm_t *m)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->nnodes; i++)
        n += m->node[i].used && m->node[i].type == CFS_TYPE_FILE;
    return n;
}

uint32_t fsm_dirs(const fsm_t *m)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->nnodes; i++)
        n += m->node[i].used && m->node[i].type == CFS_TYPE_DIR;
    return n;
}

uint64_t fsm_bytes(const fsm_t *m)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < m->nnodes; i++)
        if (m->node[i].used && m->node[i].type == CFS_TYPE_FILE)
            n += m->node[i].len;
    return n;
}

uint32_t fsm_children(const fsm_t *m, uint32_t dir, uint32_t *out,
                      uint32_t max)
{
    uint32_t n = 0;
    for (uint32_t i = 1; i < m->nnodes; i++)
        if (m->node[i].used && m->node[i].parent == dir) {
            if (n < max)
                out[n] = i;
            n++;
        }
    return n;
}

uint32_t fsm_pick(const fsm_t *m, int type, uint64_t r)
{
    uint32_t count = 0;
    for (uint32_t i = 0; i < m->nnodes; i++)
        if (m->node[i].used && (type == 0 || m->node[i].type == type))
            count++;
    if (!count)
        return FSM_NONE;
    uint32_t k = (uint32_t)(r % count);
    for (uint32_t i = 0; i < m->nnodes; i++)
        if (m->node[i].used && (type == 0 || m->node[i].type == type)) {
            if (k == 0)
                return i;
            k--;
        }
    return FSM_NONE;
}

/* ---- comparison ------------------------------------------------------------ */

typedef struct cmp {
    const fsm_t *m;
    cfs_t *fs;
    const fsm_cmp_opts_t *o;
    int bad;
    uint8_t *buf;
    uint32_t bufcap;
} cmp_t;

static void mismatch(cmp_t *c, const char *fmt, const char *path, long a,
                     long b)
{
    c->bad++;
    if (c->o && c->o->quiet)
        return;
    fprintf(stderr, "%s: ", c->o && c->o->tag ? c->o->tag : "cfs_model");
    fprintf(stderr, fmt, path, a, b);
    fputc('\n', stderr);
}

static bool ensure(cmp_t *c, uint32_t n)
{
    if (n <= c->bufcap)
        return true;
    uint8_t *b = realloc(c->buf, n);
    if (!b)
        return false;
    c->buf = b;
    c->bufcap = n;
    return true;
}

/* Read the file at path fully into c->buf; returns size or a negative error. */
static int read_all(cmp_t *c, const char *path, uint32_t hint)
{
    cfs_file_t f;
    int rc = cfs_file_open(c->fs, &f, path, CFS_O_RDONLY);
    if (rc < 0)
        return rc;
    int32_t sz = cfs_file_size(c->fs, &f);
    if (sz < 0) {
        cfs_file_close(c->fs, &f);
        return sz;
    }
    uint32_t want = (uint32_t)sz > hint ? (uint32_t)sz : hint;
    if (!ensure(c, want + 1)) {
        cfs_file_close(c->fs, &f);
        return CFS_ERR_NOMEM;
    }
    uint32_t got = 0;
    for (;;) {
        uint32_t room = c->bufcap - got;
        if (room == 0) {
            if (!ensure(c, c->bufcap * 2)) {
                cfs_file_close(c->fs, &f);
                return CFS_ERR_NOMEM;
            }
            room = c->bufcap - got;
        }
        int n = cfs_file_read(c->fs, &f, c->buf + got, room > 4096 ? 4096 : room);
        if (n < 0) {
            cfs_file_close(c->fs, &f);
            return n;
        }
        if (n == 0)
            break;
        got += (uint32_t)n;
    }
    rc = cfs_file_close(c->fs, &f);
    if (rc < 0)
        return rc;
    if (got != (uint32_t)sz)
        return -1000 - (int)got; /* read length disagrees with size */
    return (int)got;
}

static void cmp_dir(cmp_t *c, uint32_t dir)
{
    char path[CFS_PATH_MAX + 2];
    fsm_path(c->m, dir, path);

    /* Model children. */
    uint32_t nkids = fsm_children(c->m, dir, NULL, 0);
    uint32_t *kids = xmalloc((nkids + 1) * sizeof(uint32_t));
    fsm_children(c->m, dir, kids, nkids);
    uint8_t *seen = xmalloc(nkids + 1);
    memset(seen, 0, nkids + 1);

    cfs_dir_t d;
    int rc = cfs_dir_open(c->fs, &d, path);
    if (rc < 0) {
        mismatch(c, "%s: dir_open failed %ld (%ld)", path, rc, 0);
        goto out;
    }
    for (;;) {
        char name[CFS_NAME_MAX + 2];
        cfs_stat_t st;
        memset(&st, 0, sizeof(st));
        rc = cfs_dir_read(c->fs, &d, name, sizeof(name), &st);
        if (rc < 0) {
            mismatch(c, "%s: dir_read failed %ld (%ld)", path, rc, 0);
            break;
        }
        if (rc == 0)
            break;
        uint32_t k;
        for (k = 0; k < nkids; k++)
            if (strcmp(c->m->node[kids[k]].name, name) == 0)
                break;
        char full[2 * CFS_PATH_MAX + 4];
        snprintf(full, sizeof(full), "%s%s%s", path, dir ? "/" : "", name);
        if (k == nkids) {
            mismatch(c, "%s: extra entry in fs (type %ld, size %ld)", full,
                     st.type, st.size);
            continue;
        }
        if (seen[k]) {
            mismatch(c, "%s: listed twice (%ld/%ld)", full, 0, 0);
            continue;
        }
        seen[k] = 1;
        const fsm_node_t *nd = &c->m->node[kids[k]];
        if ((int)st.type != nd->type)
            mismatch(c, "%s: type %ld in fs, %ld in model", full, st.type,
                     nd->type);
    }
    cfs_dir_close(c->fs, &d);
    for (uint32_t k = 0; k < nkids; k++) {
        const fsm_node_t *nd = &c->m->node[kids[k]];
        char full[CFS_PATH_MAX + 2];
        fsm_path(c->m, kids[k], full);
        if (!seen[k]) {
            mismatch(c, "%s: missing in fs listing (type %ld, size %ld)", full,
                     nd->type, nd->len);
            continue;
        }
        cfs_stat_t st;
        rc = cfs_stat(c->fs, full, &st);
        if (rc < 0) {
            mismatch(c, "%s: stat failed %ld (%ld)", full, rc, 0);
            continue;
        }
        if ((int)st.type != nd->type) {
            mismatch(c, "%s: stat type %ld, model %ld", full, st.type, nd->type);
            continue;
        }
        if (nd->type == CFS_TYPE_DIR) {
            cmp_dir(c, kids[k]);
            continue;
        }
        int n = read_all(c, full, nd->len);
        if (n < 0) {
            mismatch(c, "%s: read failed %ld (model size %ld)", full, n, nd->len);
            continue;
        }
        bool same = (uint32_t)n == nd->len && st.size == nd->len &&
                    (n == 0 || memcmp(c->buf, nd->data, (size_t)n) == 0);
        if (!same && c->o && c->o->accept &&
            (uint32_t)n == st.size &&
            c->o->accept(c->o->accept_ctx, c->m, kids[k], c->buf, (uint32_t)n))
            continue;
        if (!same) {
            long at = -1;
            uint32_t lim = (uint32_t)n < nd->len ? (uint32_t)n : nd->len;
            for (uint32_t i = 0; i < lim; i++)
                if (c->buf[i] != nd->data[i]) {
                    at = (long)i;
                    break;
                }
            if (at < 0 && (uint32_t)n != nd->len)
                at = (long)lim;
            mismatch(c, "%s: content differs: fs %ld bytes, model %ld bytes",
                     full, n, nd->len);
            if (!(c->o && c->o->quiet))
                fprintf(stderr, "    stat size %u, first difference at byte %ld\n",
                        st.size, at);
        }
    }
out:
    free(kids);
    free(seen);
}

int fsm_compare(const fsm_t *m, cfs_t *fs, const fsm_cmp_opts_t *opts)
{
    cmp_t c = { .m = m, .fs = fs, .o = opts };
    cfs_stat_t st;
    int rc = cfs_stat(fs, "/", &st);
    if (rc < 0 || st.type != CFS_TYPE_DIR)
        mismatch(&c, "%s: stat of root: %ld type %ld", "/", rc, st.type);
    cmp_dir(&c, 0);
    if (opts && opts->check_fs_counts) {
        cfs_statvfs_t v;
        rc = cfs_statvfs(fs, &v);
        if (rc < 0) {
            mismatch(&c, "%s: statvfs failed %ld (%ld)", "/", rc, 0);
        } else {
            if (v.files != fsm_files(m))
                mismatch(&c, "%s: statvfs.files %ld, model %ld", "/", v.files,
                         fsm_files(m));
            if (v.dirs != fsm_dirs(m))
                mismatch(&c, "%s: statvfs.dirs %ld, model %ld", "/", v.dirs,
                         fsm_dirs(m));
        }
    }
    free(c.buf);
    return c.bad;
}

static void dump_dir(const fsm_t *m, uint32_t dir, int depth)
{
    for (uint32_t i = 1; i < m->nnodes; i++) {
        const fsm_node_t *nd = &m->node[i];
        if (!nd->used || nd->parent != dir)
            continue;
        fprintf(stderr, "%*s%s%s", 2 * depth + 2, "", nd->name,
                nd->type == CFS_TYPE_DIR ? "/" : "");
        if (nd->type == CFS_TYPE_FILE)
            fprintf(stderr, " (%u bytes)", nd->len);
        fprintf(stderr, " [node %u]\n", i);
        if (nd->type == CFS_TYPE_DIR)
            dump_dir(m, i, depth + 1);
    }
}

void fsm_dump(const fsm_t *m, const char *tag)
{
    fprintf(stderr, "%s: model tree\n  /\n", tag ? tag : "cfs_model");
    dump_dir(m, 0, 1);
}

/* ---- helpers ------------------------------------------------------------------ */

void fsm_rng_seed(fsm_rng_t *r, uint64_t seed)
{
    r->s = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (!r->s)
        r->s = 1;
    for (int i = 0; i < 4; i++)
        fsm_rng_next(r);
}

uint64_t fsm_rng_next(fsm_rng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint32_t fsm_rng_below(fsm_rng_t *r, uint32_t n)
{
    return (uint32_t)(fsm_rng_next(r) % n);
}

void fsm_fill(uint8_t *buf, uint32_t len, uint32_t tag, uint32_t off)
{
    for (uint32_t i = 0; i < len; i++) {
        uint32_t x = (off + i) * 0x9E3779B1u ^ tag * 0x85EBCA77u;
        x ^= x >> 15;
        x *= 0x2C1B3C6Du;
        x ^= x >> 12;
        buf[i] = (uint8_t)(x ^ (x >> 8));
    }
}

int fsm_read_file(cfs_t *fs, const char *path, uint8_t **out)
{
    cmp_t c = { .fs = fs };
    int n = read_all(&c, path, 0);
    if (n < 0) {
        free(c.buf);
        *out = NULL;
        return n;
    }
    *out = c.buf ? c.buf : xmalloc(1);
    return n;
}

int fsm_write_file(cfs_t *fs, const char *path, const uint8_t *buf,
                   uint32_t len)
{
    cfs_file_t f;
    int rc = cfs_file_open(fs, &f, path, CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC);
    if (rc < 0)
        return rc;
    uint32_t done = 0;
    while (done < len) {
        uint32_t n = len - done > 4096 ? 4096 : len - done;
        rc = cfs_file_write(fs, &f, buf + done, n);
        if (rc < 0) {
            cfs_file_close(fs, &f);
            return rc;
        }
        if ((uint32_t)rc != n) {
            cfs_file_close(fs, &f);
            return CFS_ERR_IO;
        }
        done += n;
    }
    return cfs_file_close(fs, &f);
}
