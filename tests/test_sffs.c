/* test_sffs.c - SPIFlashFileSystem's controls in cellar (issue 15, item 3):
 * file ids in listings, page statistics in StatFs, garbage collection on
 * request (GcRequest, a long request in steps) and the automatic GC
 * threshold (GcConfigRequest, svc_config_t.gc_threshold), on the service
 * core in-process (svc_rig). The CLI side (ls -t/--sort, df, gc, rm of a
 * wildcard) is in tests/e2e_sffs.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfs.h"
#include "check.h"
#include "svc_rig.h"

static rig_t rig;

static void fill(uint8_t *b, uint32_t n, uint32_t seed)
{
    for (uint32_t i = 0; i < n; i++)
        b[i] = (uint8_t)((i * 2654435761u + seed * 40503u) >> 13);
}

static int statfs(rig_t *r, const char *path, cellar_StatFsReply *out)
{
    rig_req(r, cellar_Request_statfs_tag);
    strcpy(r->rq.body.statfs.path, path);
    int rc = rig_call(r, &r->a);
    if (rc == 0)
        *out = r->rs.body.statfs;
    return rc;
}

static int gc(rig_t *r, svc_conn_t *c, const char *part, uint32_t blocks)
{
    rig_req(r, cellar_Request_gc_tag);
    strcpy(r->rq.body.gc.partition, part);
    r->rq.body.gc.blocks = blocks;
    return rig_call(r, c);
}

static int gc_config(rig_t *r, const char *part, uint32_t threshold)
{
    rig_req(r, cellar_Request_gc_config_tag);
    strcpy(r->rq.body.gc_config.partition, part);
    r->rq.body.gc_config.threshold = threshold;
    return rig_call(r, &r->a);
}

/* Pages by state add up to the good pages of the partition. */
static void check_pages(const cellar_StatFsReply *f)
{
    CHECK_EQ(f->page_size, 256);
    CHECK_EQ((uint64_t)f->pages_free + f->pages_used + f->pages_erased,
             f->total / f->page_size);
    CHECK_EQ(f->pages_free, f->free / f->page_size);
    CHECK_EQ(f->pages_bad, f->bad_blocks * (f->block_size / f->page_size));
}

/* Every file of names[] still holds what fill(seed i) wrote. */
static void check_files(const char *const *names, int n, uint32_t size)
{
    uint8_t *want = malloc(size);
    for (int i = 0; i < n; i++) {
        uint8_t *got = NULL;
        uint32_t len = 0;
        fill(want, size, (uint32_t)i);
        CHECK_EQ(rig_get(&rig, &rig.a, names[i], &got, &len), 0);
        CHECK(len == size && got && memcmp(got, want, size) == 0);
        free(got);
    }
    free(want);
}

static void test_ids_and_pages(void)
{
    static uint8_t buf[20000];
    CHECK_EQ(rig_init(&rig, 1024, NULL), 0);
    fill(buf, sizeof(buf), 0);
    CHECK_EQ(rig_put(&rig, &rig.a, "/usr/a", buf, sizeof(buf)), 0);
    CHECK_EQ(rig_put(&rig, &rig.a, "/usr/b", buf, 100), 0);
    /* ids: in List and Stat, distinct, kept by a rename */
    rig_req(&rig, cellar_Request_stat_tag);
    strcpy(rig.rq.body.stat.path, "/usr/a");
    CHECK_EQ(rig_call(&rig, &rig.a), 0);
    uint32_t id_a = rig.rs.body.stat.info.id;
    CHECK(id_a != 0);
    rig_req(&rig, cellar_Request_list_tag);
    strcpy(rig.rq.body.list.path, "/usr");
    CHECK_EQ(rig_call(&rig, &rig.a), 0);
    uint32_t id_b = 0, seen_a = 0;
    for (pb_size_t i = 0; i < rig.rs.body.list.entries_count; i++) {
        const cellar_FileInfo *e = &rig.rs.body.list.entries[i];
        if (!strcmp(e->name, "a"))
            seen_a = e->id;
        if (!strcmp(e->name, "b"))
            id_b = e->id;
    }
    CHECK_EQ(seen_a, id_a);
    CHECK(id_b != 0 && id_b != id_a);
    rig_req(&rig, cellar_Request_rename_tag);
    strcpy(rig.rq.body.rename.from, "/usr/a");
    strcpy(rig.rq.body.rename.to, "/usr/c");
    CHECK_EQ(rig_call(&rig, &rig.a), 0);
    rig_req(&rig, cellar_Request_stat_tag);
    strcpy(rig.rq.body.stat.path, "/usr/c");
    CHECK_EQ(rig_call(&rig, &rig.a), 0);
    CHECK_EQ(rig.rs.body.stat.info.id, id_a);

    /* pages: they add up; removing a file turns used pages into erased
     * (stale) ones, not free ones */
    cellar_StatFsReply f0, f1;
    CHECK_EQ(statfs(&rig, "/usr", &f0), 0);
    check_pages(&f0);
    CHECK(f0.gc_threshold >= 6);
    CHECK_EQ(rig_path_op(&rig, &rig.a, cellar_Request_remove_tag, "/usr/c"), 0);
    CHECK_EQ(statfs(&rig, "/usr", &f1), 0);
    check_pages(&f1);
    CHECK(f1.pages_erased >= f0.pages_erased + sizeof(buf) / 256 - 1);
    CHECK(f1.pages_used < f0.pages_used);
    CHECK(f1.pages_free <= f0.pages_free);
    cellar_StatFsReply fb;
    CHECK_EQ(statfs(&rig, "/bak", &fb), 0);
    check_pages(&fb);
    rig_free(&rig);
}

static void test_gc_request(void)
{
    enum { N = 24, SIZE = 12000 };
    static uint8_t buf[SIZE];
    static char names[N][24];
    const char *keep[N];
    CHECK_EQ(rig_init(&rig, 1024, NULL), 0);
    int nkeep = 0;
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "/usr/f%02d", i);
        fill(buf, SIZE, (uint32_t)nkeep);
        if (i % 3 != 0) /* these stay: their content follows nkeep */
            keep[nkeep++] = names[i];
        else
            fill(buf, SIZE, 1000u + (uint32_t)i);
        CHECK_EQ(rig_put(&rig, &rig.a, names[i], buf, SIZE), 0);
    }
    for (int i = 0; i < N; i += 3)
        CHECK_EQ(rig_path_op(&rig, &rig.a, cellar_Request_remove_tag, names[i]), 0);
    cellar_StatFsReply before, after;
    CHECK_EQ(statfs(&rig, "/usr", &before), 0);
    CHECK(before.reclaimable >= (N / 3) * SIZE);

    /* A bounded GC: gains at least the blocks asked for (or stops at the
     * end of the log), reports what it did */
    uint64_t steps0 = rig.svc.job.steps;
    CHECK_EQ(gc(&rig, &rig.a, "/usr", 2), 0);
    CHECK_EQ(rig.rs.which_body, cellar_Response_gc_tag);
    cellar_GcReply g = rig.rs.body.gc;
    CHECK_EQ(g.free_before, before.free);
    CHECK(g.free_after >= g.free_before + 2 * 4096);
    CHECK(g.blocks_swept >= 2);
    CHECK(g.reclaimed > 0);

    /* GC of everything: it runs in steps (a long request), the stale data
     * is gone (up to a block), every kept file is intact */
    CHECK_EQ(gc(&rig, &rig.a, "", 0), 0);
    g = rig.rs.body.gc;
    CHECK(rig.svc.job.steps > steps0 + 1);
    CHECK_EQ(statfs(&rig, "/usr", &after), 0);
    if (getenv("SFFS_DEBUG"))
        fprintf(stderr, "gc: swept %u reclaimed %llu free %llu -> %llu, stale before %llu after %llu, used before %llu after %llu\n",
                g.blocks_swept, (unsigned long long)g.reclaimed, (unsigned long long)g.free_before,
                (unsigned long long)g.free_after, (unsigned long long)before.reclaimable,
                (unsigned long long)after.reclaimable, (unsigned long long)before.used, (unsigned long long)after.used);
    check_pages(&after);
    /* what is left stale is at most an eighth of the log, or the pass
     * went over the whole log (the rules of a GC of everything:
     * docs/PROTOCOL.md, Gc): moving live data leaves stale records of its
     * own (GC copying the manifest's segment whole leaves its slots in
     * the youngest blocks stale) */
    CHECK(after.reclaimable <= after.used / 8 || after.reclaimable <= 4096 ||
          g.blocks_swept + 4 >= before.used / 4096);
    CHECK(after.reclaimable < before.reclaimable / 3);
    CHECK_EQ(g.reclaimable_after, after.reclaimable);
    CHECK(after.free >= before.free + (N / 3) * SIZE * 3 / 4);
    CHECK(after.pages_erased < before.pages_erased / 3);
    /* one pass over the log at most: the blocks swept are bounded by what
     * was in use */
    CHECK(g.blocks_swept <= before.used / 4096 + 1 + SVC_GC_STEP_BLOCKS);
    check_files(keep, nkeep, SIZE);
    /* a second GC sweeps the (now short) log once at most and frees what
     * the first left (or finds nothing worth doing); a third finds
     * nothing: it moves nothing */
    CHECK_EQ(gc(&rig, &rig.a, "/usr", 0), 0);
    CHECK(rig.rs.body.gc.blocks_swept <= after.used / 4096 + 1 + SVC_GC_STEP_BLOCKS);
    CHECK(rig.rs.body.gc.free_after >= rig.rs.body.gc.free_before);
    CHECK_EQ(gc(&rig, &rig.a, "/usr", 0), 0);
    CHECK_EQ(rig.rs.body.gc.blocks_swept, 0);
    CHECK_EQ(rig.rs.body.gc.free_after, rig.rs.body.gc.free_before);
    /* /bak may be collected too (maintenance, no content changes) */
    CHECK_EQ(gc(&rig, &rig.a, "/bak", 0), 0);

    /* bad input: a clear error, nothing changes */
    CHECK_EQ(gc(&rig, &rig.a, "/nope", 0), 2);  /* ENOENT */
    CHECK(strstr(rig.rs.error.message, "no such partition") != NULL);
    CHECK_EQ(gc(&rig, &rig.a, "usr/x", 0), 2);

    /* A Ping on another connection is answered while a GC runs: make
     * garbage again, start the GC on a, then ping on b. */
    for (int i = 0; i < N; i += 3) {
        fill(buf, SIZE, 2000u + (uint32_t)i);
        CHECK_EQ(rig_put(&rig, &rig.a, names[i], buf, SIZE), 0);
    }
    for (int i = 0; i < N; i += 3)
        CHECK_EQ(rig_path_op(&rig, &rig.a, cellar_Request_remove_tag, names[i]), 0);
    {
        static uint8_t w[2048];
        rig_req(&rig, cellar_Request_gc_tag);
        strcpy(rig.rq.body.gc.partition, "/usr");
        rig.rq.id = ++rig.next_id;
        int n = codec_encode_request(&rig.rq, w, sizeof(w));
        CHECK(n > 0);
        CHECK_EQ(svc_conn_input(&rig.a, w, (size_t)n), (size_t)n);
        CHECK(svc_process(&rig.svc)); /* the GC starts: a job */
        CHECK(rig.svc.job.kind == SVC_JOB_GC);
        rig_req(&rig, cellar_Request_ping_tag);
        CHECK_EQ(rig_call(&rig, &rig.b), 0); /* b is served meanwhile */
        const uint8_t *p;
        size_t len;
        while (svc_process(&rig.svc))
            ;
        CHECK(svc_conn_output(&rig.a, &p, &len)); /* then a's answer */
        while (svc_conn_output(&rig.a, &p, &len))
            svc_conn_consumed(&rig.a, len);
    }
    check_files(keep, nkeep, SIZE);
    rig_free(&rig);
}

static void test_threshold(void)
{
    enum { SIZE = 16000 };
    static uint8_t buf[SIZE];
    svc_config_t base = {.gc_threshold = 6, .gc_threshold_set = true};
    CHECK_EQ(rig_init(&rig, 256, &base), 0);
    cellar_StatFsReply f;
    CHECK_EQ(statfs(&rig, "/usr", &f), 0);
    CHECK_EQ(f.gc_threshold, 6); /* the latest GC may start, from the config */
    /* out of range: EINVAL, the threshold stays (0 too: a pass needs free
     * blocks to move live data into, so GC cannot wait for a full log) */
    CHECK_EQ(gc_config(&rig, "/usr", 0), 22);
    CHECK_EQ(gc_config(&rig, "/usr", 5), 22);
    CHECK(strstr(rig.rs.error.message, "threshold") != NULL);
    CHECK_EQ(gc_config(&rig, "/usr", 100000), 22);
    CHECK_EQ(statfs(&rig, "/usr", &f), 0);
    CHECK_EQ(f.gc_threshold, 6);
    CHECK_EQ(gc_config(&rig, "/nope", 8), 2);

    /* With GC as late as it may start, a partition rewritten many times
     * over still takes every write. */
    for (uint32_t round = 0; round < 60; round++) {
        char name[24];
        snprintf(name, sizeof(name), "/usr/r%u", round % 5);
        fill(buf, SIZE, round);
        CHECK_EQ(rig_put(&rig, &rig.a, name, buf, SIZE), 0);
    }
    for (uint32_t k = 0; k < 5; k++) {
        char name[24];
        uint8_t *got = NULL;
        uint32_t len = 0;
        snprintf(name, sizeof(name), "/usr/r%u", k);
        fill(buf, SIZE, 55 + k);
        CHECK_EQ(rig_get(&rig, &rig.a, name, &got, &len), 0);
        CHECK(len == SIZE && got && memcmp(got, buf, SIZE) == 0);
        free(got);
    }
    /* set, read back through StatFs, the previous value returned */
    CHECK_EQ(gc_config(&rig, "/usr", 10), 0);
    CHECK_EQ(rig.rs.body.gc_config.threshold, 10);
    CHECK_EQ(rig.rs.body.gc_config.previous, 6);
    CHECK_EQ(statfs(&rig, "/usr", &f), 0);
    CHECK_EQ(f.gc_threshold, 10);
    /* until restart: the config's value comes back */
    CHECK_EQ(rig_restart(&rig), 0);
    CHECK_EQ(statfs(&rig, "/usr", &f), 0);
    CHECK_EQ(f.gc_threshold, 6);
    rig_free(&rig);

    /* a config value a partition cannot take: logged, the default kept,
     * the service serves */
    svc_config_t big = {.gc_threshold = 5000, .gc_threshold_set = true};
    CHECK_EQ(rig_init(&rig, 256, &big), 0);
    CHECK(rig_log_has(&rig, "gc threshold does not fit"));
    CHECK_EQ(statfs(&rig, "/usr", &f), 0);
    CHECK(f.gc_threshold >= 6);
    rig_req(&rig, cellar_Request_ping_tag);
    CHECK_EQ(rig_call(&rig, &rig.a), 0);
    rig_free(&rig);
}

int main(void)
{
    test_ids_and_pages();
    test_gc_request();
    test_threshold();
    return check_summary("test_sffs");
}
