/*
 * libcellar_verify.c - checking and repairing a partition against its
 * manifest (Verify, plus the untracked files of the tree), and the copies
 * between /usr and /bak (Backup, Restore). Above the manifest
 * (libcellar_manifest.c) and the tree walk (libcellar_fs.c); see
 * docs/ARCHITECTURE.md, "Clients".
 */
#include "libcellar_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(CELLAR_COPY_PATHS == CELLAR__FIELD_COUNT(cellar_BackupRequest, paths) &&
               CELLAR_COPY_PATHS == CELLAR__FIELD_COUNT(cellar_RestoreRequest, paths),
               "CELLAR_COPY_PATHS differs from Backup/RestoreRequest.paths");
_Static_assert(CELLAR_COPY_SKIPPED == CELLAR__FIELD_COUNT(cellar_CopyReply, skipped),
               "CELLAR_COPY_SKIPPED differs from CopyReply.skipped");

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


/* Verify pages asked ahead (issue 11). */
typedef struct vpages {
    cellar_t *c;
    const char *part;
    bool repair, done;
    probvec_t *probs;
    cellar_verify_report_t *r;
    uint32_t start, stride, cursor;
} vpages_t;

static int vp_fill(void *ctx, size_t i)
{
    vpages_t *v = ctx;
    cellar_Request *req = cellar__new_req(v->c, cellar_Request_verify_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    int err = cellar__set_partition(v->c, req->body.verify.partition,
                                    sizeof(req->body.verify.partition), v->part);
    if (err < 0)
        return err;
    req->body.verify.cursor = v->start + (uint32_t)i * v->stride;
    req->body.verify.max_entries = CELLAR_VERIFY_PAGE;
    req->body.verify.repair = v->repair;
    return 0;
}

static int vp_done(void *ctx, size_t i, int err)
{
    vpages_t *v = ctx;
    cellar_t *c = v->c;
    uint32_t cursor = v->start + (uint32_t)i * v->stride;
    if (err == 0)
        err = cellar__check(c, cellar_Response_verify_tag);
    if (err < 0)
        return cellar__at_path(c, err, v->part);
    if (v->done || cursor != v->cursor)
        return 0; /* past the end, or not where the last page ended */
    const cellar_VerifyReply *vr = &cellar__resp(c)->body.verify;
    v->r->checked += vr->checked;
    for (pb_size_t k = 0; k < vr->problems_count; k++) {
        const cellar_Problem *pr = &vr->problems[k];
        cellar_problem_kind_t kind = kind_of(pr->kind);
        if (kind == 0)
            return cellar__fail(c, CELLAR_ERR_PROTO, "%s: unknown problem kind %d",
                                pr->path, (int)pr->kind);
        if (pv_add(v->probs, pr->path, kind, pr->repaired) < 0)
            return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    }
    if (vr->next_cursor == 0) {
        v->done = true;
        return 0;
    }
    if (vr->next_cursor <= cursor) {
        c->broken = true;
        return cellar__fail(c, CELLAR_ERR_PROTO, "verify cursor does not advance");
    }
    v->cursor = vr->next_cursor;
    return 0;
}

int cellar_verify(cellar_t *c, const char *partition, bool repair, cellar_problem_fn fn,
                  void *ctx, cellar_verify_report_t *rep)
{
    const char *part = cellar__partition_of(partition);
    cellar_verify_report_t r;
    memset(&r, 0, sizeof(r));
    if (rep)
        *rep = r;
    probvec_t probs = {0};
    cellar_mentry_t *man = NULL;
    size_t nman = 0;
    cellar__strvec_t files = {0};
    int err = 0;

    /* 1. the device checks the manifest, page by page; without repair,
     *    CELLAR_LIST_AHEAD pages at once (issue 11): a page is taken only
     *    if it starts exactly where the pages before it ended (so nothing
     *    is counted twice), the rest asked again in the next round */
    vpages_t vp = {.c = c, .part = part, .repair = repair, .probs = &probs, .r = &r,
                   .stride = CELLAR_VERIFY_PAGE};
    for (uint32_t round = 0; !vp.done; round++) {
        if (round >= CELLAR__MAX_PAGES) {
            err = cellar__fail(c, CELLAR_ERR_PROTO, "verify does not end");
            goto out;
        }
        vp.start = vp.cursor;
        err = cellar__batch_run(c, repair ? 1 : CELLAR_LIST_AHEAD, vp_fill, vp_done, &vp, true);
        if (err < 0)
            goto out;
    }

    /* 2. untracked files: the tree against the manifest (after a repair,
     *    so restored files count as present) */
    err = cellar_manifest_list(c, part, &man, &nman);
    if (err < 0)
        goto out;
    err = cellar__walk(c, part, 0, &files, NULL);
    if (err < 0)
        goto out;
    r.files = (uint32_t)files.n;
    for (size_t i = 0; i < files.n; i++) {
        if (cellar__mentry_find(man, nman, files.v[i]) >= 0)
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
    cellar__sv_free(&files);
    return err;
}

/* ---- backup, restore ------------------------------------------------------------------ */
static int copy_rpc(cellar_t *c, pb_size_t which, const char *what,
                    const char *const *paths, size_t n, cellar_copy_report_t *rep)
{
    if (rep)
        memset(rep, 0, sizeof(*rep));
    if (n > CELLAR_COPY_PATHS)
        return cellar__fail(c, CELLAR_ERR_INVAL,
                            "%s: at most %d paths at once (one atomic step)", what,
                            CELLAR_COPY_PATHS);
    if (n > cellar__items(c, CELLAR_COPY_PATHS)) /* issue 14 */
        return cellar__fail(c, CELLAR_ERR_INVAL,
                            "%s: at most %zu paths at once on this device (one atomic step)",
                            what, cellar__items(c, CELLAR_COPY_PATHS));
    cellar_Request *req = cellar__new_req(c, which);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    char(*dst)[256] = which == cellar_Request_backup_tag ? req->body.backup.paths
                                                          : req->body.restore.paths;
    for (size_t i = 0; i < n; i++) {
        int err = cellar__path(c, dst[i], sizeof(dst[i]), paths[i]);
        if (err < 0)
            return cellar__at_path(c, err, paths[i]);
    }
    if (which == cellar_Request_backup_tag)
        req->body.backup.paths_count = (pb_size_t)n;
    else
        req->body.restore.paths_count = (pb_size_t)n;
    int err = cellar__slow_rpc(c, cellar_Response_copy_tag);
    if (err < 0)
        return n == 1 ? cellar__at_path(c, err, paths[0]) : err;
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
