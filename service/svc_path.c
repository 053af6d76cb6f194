/* svc_path.c - path rules: resolving "/usr/..." to a partition and a
 * filesystem path (svc_int.h, docs/ARCHITECTURE.md "Service core"). Device-
 * side code: no OS calls, no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

/* Validate and normalise a request path (see docs/PROTOCOL.md, "Paths").
 * Returns 0, or a negative error with the error reply set. */
int svc_resolve(svc_t *s, const char *in, svc_path_t *out)
{
    size_t len = strlen(in);
    /* issue 14: during the ACL check only its path (pb) is resolved */
    CFS_ASSERT(!s->acl_in || out == &s->acl_path);

    memset(out, 0, sizeof(*out));
    out->fs = out->show; /* "" until resolved */
    char *fb = NULL;     /* the path inside the partition: in show */
    if (len > SVC_MAX_PATH) {
        sb_t b = svc_err_begin(s, CFS_ERR_NAMETOOLONG);
        svc_sb_str(&b, " ");
        svc_sb_quoted(&b, in, 40);
        svc_sb_str(&b, ": path is ");
        svc_sb_u64(&b, len);
        svc_sb_str(&b, " bytes, the limit is 255");
        return CFS_ERR_NAMETOOLONG;
    }
    if (!svc_utf8_valid(in, len))
        return svc_fail_path(s, CFS_ERR_INVAL, in, "path is not valid UTF-8");

    /* Walk the components. */
    size_t i = 0;
    bool absolute = len > 0 && in[0] == '/';
    int part = absolute ? -1 : 0; /* relative paths live in /usr */
    size_t fn = 0;
    bool first = true;
    size_t st, cl;
    while (svc_path_comp(in, len, &i, &st, &cl)) {
        const char *comp = in + st;
        if (svc_dot_comp(comp, cl))
            return svc_fail_path(s, CFS_ERR_INVAL, in,
                             cl == 1 ? "\".\" components are not allowed"
                                     : "\"..\" components are not allowed");
        if (absolute && first) {
            part = svc_part_index(s, comp, cl);
            if (part < 0) {
                sb_t b = svc_err_begin(s, CFS_ERR_NOENT);
                svc_sb_str(&b, " ");
                svc_sb_qstr(&b, in);
                svc_sb_str(&b, ": no such partition ");
                svc_sb_quoted(&b, comp, cl);
                svc_sb_str(&b, " (\"/\" holds only /usr and /bak)");
                return CFS_ERR_NOENT;
            }
            first = false;
            continue;
        }
        first = false;
        if (fn + 1 + cl > SVC_MAX_PATH) {
            /* the start of the path only, so the reason is not cut */
            sb_t b = svc_err_begin(s, CFS_ERR_NAMETOOLONG);
            svc_sb_str(&b, " ");
            svc_sb_quoted(&b, in, len < 40 ? len : 40);
            svc_sb_str(&b, ": path is longer than 255 bytes inside its "
                           "partition");
            return CFS_ERR_NAMETOOLONG;
        }
        if (!fb) /* after "/" + the partition's name */
            fb = out->show + 1 + strlen(s->part[part].name);
        fb[fn++] = '/';
        memcpy(fb + fn, comp, cl);
        fn += cl;
    }
    if (fb)
        fb[fn] = 0;
    out->part = part;
    if (fb && strncmp(fb, MAN_DIR, sizeof(MAN_DIR) - 1) == 0 &&
        (fb[sizeof(MAN_DIR) - 1] == 0 || fb[sizeof(MAN_DIR) - 1] == '/'))
        return svc_fail_path(s, -(int)cellar_Code_EACCES, in,
                             "\"" MAN_DIR "\" is reserved for the service "
                             "(manifest, staging)");
    if (part < 0) {
        strcpy(out->show, "/");
        out->fs = "/";
    } else {
        size_t pn = strlen(s->part[part].name);
        out->show[0] = '/';
        memcpy(out->show + 1, s->part[part].name, pn);
        if (!fb)
            out->show[1 + pn] = 0;
        out->fs = fb ? fb : "/";
    }
    return 0;
}

bool svc_is_part_root(const svc_path_t *p)
{
    return p->part >= 0 && p->fs[0] == '/' && p->fs[1] == 0;
}

/* The mounted fs of a resolved path (part >= 0), or NULL with an error. */
cfs_t *svc_path_fs(svc_t *s, const svc_path_t *p)
{
    svc_part_t *pt = &s->part[p->part];
    if (!pt->mounted) {
        (void)svc_fail_path(s, CFS_ERR_IO, p->show, "partition is not mounted");
        return NULL;
    }
    return &pt->fs;
}

/* Copy a NUL-terminated string into a fixed field, cut to fit. */
void svc_copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

int svc_parent_dir(cfs_t *fs, const char *path, char *buf)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] != '/')
        n--;
    n = n > 1 ? n - 1 : 1;
    memcpy(buf, path, n);
    buf[n] = 0;
    cfs_stat_t st;
    int err = cfs_stat(fs, buf, &st);
    if (!err && st.type != CFS_TYPE_DIR)
        err = CFS_ERR_NOTDIR;
    return err;
}

int svc_open_flags(svc_t *s, const char *show, uint32_t fl)
{
    const uint32_t rw = cellar_OpenFlags_O_READ | cellar_OpenFlags_O_WRITE;
    if (!(fl & rw))
        return svc_fail_path(s, CFS_ERR_INVAL, show,
                             "open flags need O_READ and/or O_WRITE");
    if ((fl & ~rw) && !(fl & cellar_OpenFlags_O_WRITE))
        return svc_fail_path(s, CFS_ERR_INVAL, show,
                             "O_CREATE, O_EXCL, O_TRUNC and O_APPEND need O_WRITE");
    return 0;
}
