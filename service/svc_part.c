/* svc_part.c - partitions: names, problems found at start-up, the room rule
 * (svc_int.h, docs/ARCHITECTURE.md "Service core"). Device-side code: no OS
 * calls, no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

/* ---- partitions ---------------------------------------------------------------- */

const char *const svc_part_names[SVC_MAX_PARTS] = { "usr", "bak" };

const layout_t *svc_layout(const svc_t *svc)
{
    return &svc->layout;
}

cfs_t *svc_fs(svc_t *svc, const char *name)
{
    for (uint32_t i = 0; i < svc->nparts; i++)
        if (strcmp(svc->part[i].name, name) == 0 && svc->part[i].mounted)
            return &svc->part[i].fs;
    return NULL;
}

void svc_init(svc_t *svc)
{
    memset(svc, 0, sizeof(*svc));
    svc->tx.w = svc->cp.w = &svc->txw; /* issue 14 */
}

#if CELLAR_WITH_LOG /* issue 14: else a macro of svc_int.h */
void svc_log_part(svc_t *s, const char *what, const svc_part_t *p, int err)
{
    if (!SVC_LOGS(s))
        return;
    sb_t b = svc_log_begin(s, NULL);
    svc_sb_str(&b, what);
    svc_sb_str(&b, " /");
    svc_sb_str(&b, p->name);
    svc_sb_str(&b, " (blocks ");
    svc_sb_u64(&b, p->cfg.first_block);
    svc_sb_str(&b, "..");
    svc_sb_u64(&b, (uint64_t)p->cfg.first_block + p->cfg.block_count - 1);
    svc_sb_str(&b, ")");
    if (err < 0) {
        svc_sb_str(&b, ": ");
        svc_sb_str(&b, svc_reason(err));
    }
    svc_log_end(s);
}
#endif

static void problem_line(const svc_t *s, uint32_t part,
                         const struct svc_problem_words *w, sb_t *b)
{
    if (part != 0xFF) {
        svc_sb_str(b, "/");
        svc_sb_str(b, s->part[part].name);
        svc_sb_str(b, ": ");
    }
    svc_sb_str(b, w->what);
    if (w->why) {
        svc_sb_str(b, " (");
        svc_sb_str(b, w->why);
        svc_sb_str(b, ")");
    }
    if (w->done) {
        svc_sb_str(b, ": ");
        svc_sb_str(b, w->done);
    }
}

void svc_problem_line(const svc_t *s, uint32_t i, char *out, size_t cap)
{
    sb_t b;
    svc_sb_init(&b, out, cap < SVC_PROBLEM_LEN ? cap : SVC_PROBLEM_LEN);
    problem_line(s, s->problem_part[i], &s->problems[i], &b);
}

static bool same_words(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

void svc_problem(svc_t *s, uint32_t part, const char *what, const char *why,
                 const char *done)
{
    struct svc_problem_words w = { what, why, done };
    for (uint32_t i = 0; i < s->nproblems; i++)
        if (s->problem_part[i] == (uint8_t)part &&
            same_words(s->problems[i].what, what) &&
            same_words(s->problems[i].why, why) &&
            same_words(s->problems[i].done, done))
            return; /* once */
    if (SVC_LOGS(s)) { /* (the log line: not cut at SVC_PROBLEM_LEN) */
        sb_t b = svc_log_begin(s, NULL);
        problem_line(s, part, &w, &b);
        svc_log_end(s);
    }
    if (s->nproblems < SVC_MAX_PROBLEMS) {
        s->problem_part[s->nproblems] = (uint8_t)part;
        s->problems[s->nproblems++] = w;
    }
}

void svc_problems_forget(svc_t *s, uint32_t part)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < s->nproblems; i++)
        if (s->problem_part[i] != part) {
            if (k != i) {
                s->problem_part[k] = s->problem_part[i];
                s->problems[k] = s->problems[i];
            }
            k++;
        }
    s->nproblems = k;
}

uint64_t svc_room_bytes(svc_t *s, uint32_t part)
{
    cfs_statvfs_t v;
    if (!s->part[part].mounted || cfs_statvfs(&s->part[part].fs, &v))
        return 0;
    /* the service's own: 1/32 of the partition, 6 to 16 blocks */
    uint64_t keep = v.total / 32, bs = v.block_size;
    if (keep < 6 * bs)
        keep = 6 * bs;
    if (keep > SVC_KEEP_BYTES && SVC_KEEP_BYTES >= 6 * bs)
        keep = SVC_KEEP_BYTES;
    /* what open write handles have grown their files by since their last
     * commit counts too: it is not in `claimed` yet */
    uint64_t claimed = v.claimed;
    for (svc_conn_t *c = s->conns; c; c = c->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++) {
            svc_handle_t *h = &c->h[k];
            if (!h->id || !h->writable || h->part != part)
                continue;
            int32_t sz = cfs_file_size(&s->part[part].fs, &h->file);
            int32_t cs = cfs_file_committed_size(&s->part[part].fs, &h->file);
            if (sz > cs && cs >= 0)
                claimed += (uint64_t)(sz - cs);
        }
    /* and the fs's room to move its keys (cfs_statvfs_t.move_room): the
     * fs refuses growth into it, the service stops its clients `keep`
     * before that */
    uint64_t kept = v.reserve + v.move_room + keep;
    return v.total > claimed + kept ? v.total - claimed - kept : 0;
}

int svc_room(svc_t *s, uint32_t part, uint64_t grow, const char *show)
{
    uint64_t have = svc_room_bytes(s, part);
    if (grow <= have)
        return 0;
    sb_t b = svc_err_begin(s, CFS_ERR_NOSPC);
    svc_sb_str(&b, " ");
    svc_sb_qstr(&b, show);
    svc_sb_str(&b, ": no space, needs ");
    svc_sb_u64(&b, grow);
    svc_sb_str(&b, " more bytes, /");
    svc_sb_str(&b, s->part[part].name);
    svc_sb_str(&b, " has ");
    svc_sb_u64(&b, have);
    svc_sb_str(&b, " (a file's size counts in full, holes included)");
    return CFS_ERR_NOSPC;
}

int svc_part_index(const svc_t *s, const char *name, size_t n)
{
    for (uint32_t i = 0; i < s->nparts; i++)
        if (strlen(s->part[i].name) == n &&
            memcmp(s->part[i].name, name, n) == 0)
            return (int)i;
    return -1;
}

void svc_part_gc_tune(svc_t *s, uint32_t i)
{
    svc_part_t *p = &s->part[i];
    if (!s->cfg.gc_threshold_set || p->read_only || !p->mounted)
        return;
    int err = cfs_set_gc_threshold(&p->fs, s->cfg.gc_threshold, NULL);
    if (err)
        svc_log_part(s, "the gc threshold does not fit (default kept):", p, err);
}
