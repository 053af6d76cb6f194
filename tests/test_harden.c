/* test_harden.c - every failure leaves a device that starts, serves and can
 * be repaired (issue 9, items 1, 2 and 4).
 *
 * Each case builds a bad state on a 4 MiB flash_sim image - through the
 * protocol (the reproductions of the issue) or directly with the fs API
 * between rig_stop and rig_start (damaged staging, a damaged or foreign
 * manifest, a full partition, a partition that will not mount) - then
 * restarts the service and checks that it starts, serves, reports the
 * problem (HelloReply.problems / Partition.state), and is repaired over the
 * protocol to a clean verify (no problem, no untracked file) without a
 * format, with cfs_fsck clean on both partitions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#include "check.h"
#include "flash_sim.h"
#include "cfs.h"
#include "layout.h"
#include "svc_rig.h"

#define BLOCKS 1024u /* 4 MiB */

#if MBEDTLS_VERSION_MAJOR >= 3
#define sha256_all(b, n, o) mbedtls_sha256((b), (n), (o), 0)
#else
#define sha256_all(b, n, o) mbedtls_sha256_ret((b), (n), (o), 0)
#endif

static rig_t R;

/* ---- helpers ------------------------------------------------------------ */

static int hello(rig_t *r)
{
    rig_req(r, cellar_Request_hello_tag);
    r->rq.body.hello.version = 1;
    strcpy(r->rq.body.hello.client, "test_harden");
    return rig_call(r, &r->a);
}

/* A problem line containing s in Hello. */
static bool hello_has(rig_t *r, const char *s)
{
    if (hello(r))
        return false;
    for (pb_size_t i = 0; i < r->rs.body.hello.problems_count; i++)
        if (strstr(r->rs.body.hello.problems[i], s))
            return true;
    return false;
}

static int part_state(rig_t *r, int i)
{
    if (hello(r) || (pb_size_t)i >= r->rs.body.hello.partitions_count)
        return -1;
    return (int)r->rs.body.hello.partitions[i].state;
}

static int open_h(rig_t *r, const char *path, uint32_t flags, uint32_t *h)
{
    rig_req(r, cellar_Request_open_tag);
    strcpy(r->rq.body.open.path, path);
    r->rq.body.open.flags = flags;
    int rc = rig_call(r, &r->a);
    *h = rc ? 0 : r->rs.body.open.handle;
    return rc;
}

static int write_h(rig_t *r, uint32_t h, uint64_t off, const void *d,
                   uint32_t n)
{
    rig_req(r, cellar_Request_write_tag);
    r->rq.body.write.handle = h;
    r->rq.body.write.offset = off;
    r->rq.body.write.data.size = (pb_size_t)n;
    memcpy(r->rq.body.write.data.bytes, d, n);
    return rig_call(r, &r->a);
}

static int close_h(rig_t *r, uint32_t h)
{
    rig_req(r, cellar_Request_close_tag);
    r->rq.body.close.handle = h;
    return rig_call(r, &r->a);
}

static int statfs_usr(rig_t *r, uint64_t *free_b, uint64_t *used)
{
    rig_req(r, cellar_Request_statfs_tag);
    strcpy(r->rq.body.statfs.path, "/usr");
    int rc = rig_call(r, &r->a);
    if (!rc) {
        *free_b = r->rs.body.statfs.free;
        *used = r->rs.body.statfs.used;
    }
    return rc;
}

static int truncate_path(rig_t *r, const char *path, uint64_t size)
{
    rig_req(r, cellar_Request_truncate_tag);
    strcpy(r->rq.body.truncate.path, path);
    r->rq.body.truncate.size = size;
    return rig_call(r, &r->a);
}

/* Problems verify finds in /usr (repair: restore what /bak has). */
static int verify_problems(rig_t *r, bool repair)
{
    return rig_verify(r, &r->a, "/usr", repair);
}

/* Is there a manifest entry for full path p? */
static bool tracked(rig_t *r, const char *p)
{
    uint32_t cursor = 0;
    do {
        rig_req(r, cellar_Request_manifest_tag);
        strcpy(r->rq.body.manifest.partition, "/usr");
        r->rq.body.manifest.cursor = cursor;
        if (rig_call(r, &r->a))
            return false;
        for (pb_size_t i = 0; i < r->rs.body.manifest.entries_count; i++)
            if (strcmp(r->rs.body.manifest.entries[i].path, p) == 0)
                return true;
        cursor = r->rs.body.manifest.next_cursor;
    } while (cursor);
    return false;
}

/* Files under dir without a manifest entry (a List walk, depth <= 4). */
static int untracked(rig_t *r, const char *dir, int depth)
{
    char names[32][256];
    bool isdir[32];
    int n = 0, bad = 0;
    uint32_t cursor = 0;
    do {
        rig_req(r, cellar_Request_list_tag);
        strcpy(r->rq.body.list.path, dir);
        r->rq.body.list.cursor = cursor;
        if (rig_call(r, &r->a))
            return 1000;
        for (pb_size_t i = 0; i < r->rs.body.list.entries_count && n < 32; i++) {
            snprintf(names[n], sizeof(names[n]), "%s/%s", dir,
                     r->rs.body.list.entries[i].name);
            isdir[n++] = r->rs.body.list.entries[i].type == cellar_FileType_DIR;
        }
        cursor = r->rs.body.list.next_cursor;
    } while (cursor);
    for (int i = 0; i < n; i++) {
        if (isdir[i])
            bad += depth < 4 ? untracked(r, names[i], depth + 1) : 0;
        else if (!tracked(r, names[i])) {
            fprintf(stderr, "  untracked %s\n", names[i]);
            bad++;
        }
    }
    return bad;
}

static int fsck_all(rig_t *r)
{
    int bad = 0;
    cfs_t *u = svc_fs(&r->svc, "usr"), *b = svc_fs(&r->svc, "bak");
    if (u && cfs_fsck(u, NULL, NULL))
        bad++;
    if (b && cfs_fsck(b, NULL, NULL))
        bad++;
    return bad;
}

/* The end of every case: a clean verify after repair, fsck clean, a
 * restart that reports nothing, and the device serves writes. */
static void check_clean(rig_t *r, const char *what)
{
    int before = check_fail_ > 0;
    (void)verify_problems(r, true);
    CHECK_EQ(verify_problems(r, false), 0);
    CHECK_EQ(untracked(r, "/usr", 0), 0);
    CHECK_EQ(fsck_all(r), 0);
    CHECK_EQ(rig_restart(r), 0);
    CHECK_EQ(part_state(r, 0), cellar_PartState_PART_OK);
    CHECK_EQ(r->rs.body.hello.problems_count, 0);
    CHECK_EQ(rig_put(r, &r->a, "/usr/after.txt", "ok", 2), 0);
    CHECK_EQ(verify_problems(r, false), 0);
    CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag,
                         "/usr/after.txt"), 0);
    if (check_fail_ > 0 && !before)
        fprintf(stderr, "  (in %s)\n", what);
}

/* The partition config of usr/bak, for work on the flash between stop
 * and start. */
static void part_cfg(rig_t *r, const char *name, cfs_config_t *c)
{
    layout_t l;
    memset(c, 0, sizeof(*c));
    if (layout_read(flash_sim_dev(r->sim), &l))
        return;
    const layout_part_t *p = layout_find(&l, name);
    c->dev = flash_sim_dev(r->sim);
    c->first_block = p->first_block;
    c->block_count = p->block_count;
}

static cfs_t FS;

static int cfs_on(rig_t *r, const char *name)
{
    cfs_config_t c;
    part_cfg(r, name, &c);
    return cfs_mount(&FS, &c);
}

/* The same, without the room the fs keeps for moving its keys: files
 * grow until GC frees no more, as the code before it let them. */
static int cfs_on_legacy(rig_t *r, const char *name)
{
    cfs_config_t c;
    part_cfg(r, name, &c);
    c.no_move_room = 1;
    return cfs_mount(&FS, &c);
}

static int cfs_put(const char *path, const void *d, uint32_t n)
{
    cfs_file_t f;
    int err = cfs_file_open(&FS, &f, path, CFS_O_WRONLY | CFS_O_CREAT |
                                              CFS_O_TRUNC);
    if (err)
        return err;
    int k = n ? cfs_file_write(&FS, &f, d, n) : 0;
    int e2 = cfs_file_close(&FS, &f);
    return k < 0 ? k : e2;
}

static void fresh(rig_t *r)
{
    if (r->sim)
        rig_free(r);
    CHECK_EQ(rig_init(r, BLOCKS, NULL), 0);
    static const char app[] = "print('hello')\n";
    CHECK_EQ(rig_put(r, &r->a, "/usr/app.py", app, sizeof(app) - 1), 0);
    CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_mkdir_tag, "/usr/lib"), 0);
    CHECK_EQ(rig_put(r, &r->a, "/usr/lib/m.py", "x = 1\n", 6), 0);
    rig_req(r, cellar_Request_backup_tag);
    CHECK_EQ(rig_call(r, &r->a), 0);
}

/* ---- item 2/4: the reproductions ------------------------------------------ */

static void repro_sparse_open(void)
{
    rig_t *r = &R;
    fresh(r);
    uint64_t free0, used0, free1, used1;
    uint32_t h;
    CHECK_EQ(statfs_usr(r, &free0, &used0), 0);
    CHECK_EQ(open_h(r, "/usr/s.bin", cellar_OpenFlags_O_WRITE |
                                         cellar_OpenFlags_O_CREATE, &h), 0);
    /* a hole the partition could never store: refused up front */
    CHECK_EQ(write_h(r, h, 8u << 20, "x", 1), cellar_Code_ENOSPC);
    CHECK(strstr(r->rs.error.message, "holes included") != NULL);
    /* a small hole is fine, and stored without allocating for it */
    CHECK_EQ(write_h(r, h, 512u << 10, "x", 1), 0);
    CHECK_EQ(close_h(r, h), 0);
    CHECK_EQ(open_h(r, "/usr/s.bin", cellar_OpenFlags_O_WRITE, &h), 0);
    CHECK_EQ(write_h(r, h, 0, "y", 1), 0);
    CHECK_EQ(close_h(r, h), 0);
    CHECK_EQ(statfs_usr(r, &free1, &used1), 0);
    CHECK(used1 < used0 + (128u << 10)); /* not 2 x 512 KiB */
    /* Truncate by path far past what /usr holds: refused, nothing changes */
    CHECK_EQ(truncate_path(r, "/usr/s.bin", 8u << 20), cellar_Code_ENOSPC);
    rig_req(r, cellar_Request_stat_tag);
    strcpy(r->rq.body.stat.path, "/usr/s.bin");
    CHECK_EQ(rig_call(r, &r->a), 0);
    CHECK_EQ(r->rs.body.stat.info.size, (512u << 10) + 1);
    CHECK_EQ(truncate_path(r, "/usr/s.bin", 1u << 20), 0);
    /* StatFs.available is exactly what a file may still grow by */
    uint32_t h2;
    CHECK_EQ(open_h(r, "/usr/edge.bin", cellar_OpenFlags_O_WRITE |
                                            cellar_OpenFlags_O_CREATE, &h2), 0);
    rig_req(r, cellar_Request_statfs_tag);
    strcpy(r->rq.body.statfs.path, "/usr");
    CHECK_EQ(rig_call(r, &r->a), 0);
    uint64_t avail = r->rs.body.statfs.available;
    CHECK(avail > (1u << 20) && avail < (3u << 20));
    CHECK_EQ(write_h(r, h2, avail, "e", 1), cellar_Code_ENOSPC);
    CHECK_EQ(write_h(r, h2, avail - 1, "e", 1), 0);
    CHECK_EQ(write_h(r, h2, avail, "e", 1), cellar_Code_ENOSPC);
    CHECK_EQ(close_h(r, h2), 0);
    CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag, "/usr/edge.bin"), 0);
    CHECK_EQ(verify_problems(r, false), 0);
    CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag, "/usr/s.bin"), 0);
    CHECK_EQ(rig_put(r, &r->a, "/usr/new.txt", "n", 1), 0);
    CHECK_EQ(rig_restart(r), 0);
    CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag, "/usr/new.txt"), 0);
    check_clean(r, "repro_sparse_open");
}

/* The state the old code left (issue 9, reproduction 1): an 8 MiB sparse
 * file, and /usr filled with the stale records of a shadow copy that
 * automatic syncs had committed. The service must start and recover. */
static void legacy_sparse_full(bool shadow_removed)
{
    rig_t *r = &R;
    fresh(r);
    rig_stop(r);
    CHECK_EQ(cfs_on_legacy(r, "usr"), 0);
    cfs_file_t f;
    CHECK_EQ(cfs_file_open(&FS, &f, "/s.bin", CFS_O_WRONLY | CFS_O_CREAT), 0);
    CHECK_EQ(cfs_file_pwrite(&FS, &f, "x", 1, 8u << 20), 1);
    CHECK_EQ(cfs_file_close(&FS, &f), 0);
    /* the copy: zeros written until the partition refuses */
    static uint8_t zero[16384];
    CHECK_EQ(cfs_file_open(&FS, &f, "/.cellar/w/1", CFS_O_WRONLY | CFS_O_CREAT), 0);
    int k = 0;
    for (uint32_t off = 0; k >= 0; off += sizeof(zero))
        k = cfs_file_pwrite(&FS, &f, zero, sizeof(zero), off);
    CHECK_EQ(k, CFS_ERR_NOSPC);
    /* and the last bytes above the reserve, in small pieces */
    int32_t end = cfs_file_size(&FS, &f);
    for (k = 0; k >= 0 && end > 0; end += 200)
        k = cfs_file_pwrite(&FS, &f, "z", 1, (uint32_t)end + 199);
    CHECK_EQ(k, CFS_ERR_NOSPC);
    (void)cfs_file_close(&FS, &f);
    cfs_statvfs_t v;
    CHECK_EQ(cfs_statvfs(&FS, &v), 0);
    CHECK(v.free <= v.reserve + 2 * 4096u);
    if (shadow_removed) /* only stale records are left: GC must run */
        CHECK_EQ(cfs_remove(&FS, "/.cellar/w/1"), 0);
    (void)cfs_unmount(&FS);
    CHECK_EQ(rig_start(r), 0);
    CHECK(hello_has(r, "claim more than"));
    CHECK_EQ(part_state(r, 0), cellar_PartState_PART_OK); /* GC ran */
    /* it serves: files read, growth is refused while the sparse file
     * claims more than /usr holds, its removal works, then new files */
    uint8_t *d;
    uint32_t n;
    CHECK_EQ(rig_get(r, &r->a, "/usr/app.py", &d, &n), 0);
    free(d);
    CHECK_EQ(rig_put(r, &r->a, "/usr/b.txt", "b", 1), cellar_Code_ENOSPC);
    CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag, "/usr/s.bin"), 0);
    CHECK_EQ(rig_put(r, &r->a, "/usr/b.txt", "b", 1), 0);
    CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag, "/usr/b.txt"), 0);
    check_clean(r, "legacy_sparse_full");
}

/* Item 2: on a partition filled to the service's limit, a remove, an
 * abort and the bookkeeping of a new small file still work. */
static void full_keeps_room(void)
{
    rig_t *r = &R;
    fresh(r);
    static uint8_t blob[16384];
    memset(blob, 0x5a, sizeof(blob));
    char p[64];
    int rc = 0, nfiles = 0;
    /* fill with 64 KiB files until the service refuses */
    for (int i = 0; i < 200 && !rc; i++) {
        uint32_t h;
        snprintf(p, sizeof(p), "/usr/f%03d.bin", i);
        rc = open_h(r, p, cellar_OpenFlags_O_WRITE | cellar_OpenFlags_O_CREATE, &h);
        for (uint32_t off = 0; !rc && off < (64u << 10); off += sizeof(blob))
            rc = write_h(r, h, off, blob, sizeof(blob));
        int rc2 = h ? close_h(r, h) : 0;
        if (!rc && !rc2)
            nfiles++;
        if (!rc)
            rc = rc2;
    }
    CHECK_EQ(rc, cellar_Code_ENOSPC);
    CHECK(nfiles > 20);
    /* a staged update refused for space is dropped; an abort works */
    rig_req(r, cellar_Request_update_abort_tag);
    CHECK_EQ(rig_call(r, &r->a), 0);
    /* verify is clean (the refused file left nothing half-written) */
    snprintf(p, sizeof(p), "/usr/f%03d.bin", nfiles);
    (void)rig_path_op(r, &r->a, cellar_Request_remove_tag, p);
    CHECK_EQ(verify_problems(r, false), 0);
    CHECK_EQ(rig_restart(r), 0);
    CHECK_EQ(part_state(r, 0), cellar_PartState_PART_OK);
    /* removes always work, then writes again */
    for (int i = 0; i < nfiles; i++) {
        snprintf(p, sizeof(p), "/usr/f%03d.bin", i);
        CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag, p), 0);
    }
    check_clean(r, "full_keeps_room");
}

/* Issue 9, reproduction 2: a bundle whose own entries conflict (a file
 * and a file below it). Before the bundle checks it committed half-way and
 * cellard refused to start ("cannot recover the update in /.cellar/tx: is
 * a directory"); with them it is refused up front. Either way the device
 * must start, and Remove / verify --repair bring it to a clean verify. */
static void repro_bundle_conflict(void)
{
    rig_t *r = &R;
    fresh(r);
    uint8_t id[32], sha4[32], sha0[32];
    memset(id, 0x42, sizeof(id));
    sha256_all((const uint8_t *)"abcd", 4, sha4);
    sha256_all((const uint8_t *)"", 0, sha0);
    rig_req(r, cellar_Request_update_begin_tag);
    r->rq.body.update_begin.bundle.size = 32;
    memcpy(r->rq.body.update_begin.bundle.bytes, id, 32);
    r->rq.body.update_begin.entries = 2;
    r->rq.body.update_begin.bytes = 4;
    CHECK_EQ(rig_call(r, &r->a), 0);
    rig_req(r, cellar_Request_update_declare_tag);
    cellar_UpdateDeclareRequest *d = &r->rq.body.update_declare;
    d->bundle.size = 32;
    memcpy(d->bundle.bytes, id, 32);
    cellar_BundleEntry *e = &d->entries[d->entries_count++];
    strcpy(e->path, "/usr/ff/x");
    e->size = 4;
    e->sha256.size = 32;
    memcpy(e->sha256.bytes, sha4, 32);
    e = &d->entries[d->entries_count++];
    strcpy(e->path, "/usr/ff/x/y");
    e->sha256.size = 32;
    memcpy(e->sha256.bytes, sha0, 32);
    if (rig_call(r, &r->a) == 0) {
        rig_req(r, cellar_Request_update_write_tag);
        r->rq.body.update_write.index = 0;
        r->rq.body.update_write.data.size = 4;
        memcpy(r->rq.body.update_write.data.bytes, "abcd", 4);
        (void)rig_call(r, &r->a);
        rig_req(r, cellar_Request_update_commit_tag);
        r->rq.body.update_commit.bundle.size = 32;
        memcpy(r->rq.body.update_commit.bundle.bytes, id, 32);
        (void)rig_call(r, &r->a); /* EISDIR before the fix, EINVAL after */
    }
    rig_req(r, cellar_Request_update_abort_tag);
    (void)rig_call(r, &r->a);
    CHECK_EQ(rig_restart(r), 0);
    CHECK_EQ(part_state(r, 0), cellar_PartState_PART_OK);
    /* serves */
    uint8_t *data;
    uint32_t n;
    CHECK_EQ(rig_get(r, &r->a, "/usr/app.py", &data, &n), 0);
    free(data);
    /* repair: what verify names and /bak does not have is removed */
    (void)verify_problems(r, true);
    (void)rig_path_op(r, &r->a, cellar_Request_remove_tag, "/usr/ff/x/y");
    (void)rig_path_op(r, &r->a, cellar_Request_remove_tag, "/usr/ff/x");
    (void)rig_path_op(r, &r->a, cellar_Request_remove_tag, "/usr/ff");
    check_clean(r, "repro_bundle_conflict");
}

/* ---- item 1: bad start-up states --------------------------------------- */

/* A partition filled with live data behind the service's back (a factory
 * image built too full): served read-only until removals free space. */
static void full_partition(bool no_manifest)
{
    rig_t *r = &R;
    fresh(r);
    rig_stop(r);
    CHECK_EQ(cfs_on_legacy(r, "usr"), 0);
    if (no_manifest) /* and none to open: it must be created */
        CHECK_EQ(cfs_remove(&FS, "/.cellar/manifest"), 0);
    static uint8_t blob[16384];
    memset(blob, 0xa5, sizeof(blob));
    int err = 0, n = 0;
    char p[64];
    for (; !err && n < 400; n++) {
        snprintf(p, sizeof(p), "/big%03d", n);
        err = cfs_put(p, blob, sizeof(blob));
    }
    CHECK_EQ(err, CFS_ERR_NOSPC);
    (void)cfs_remove(&FS, p); /* the one that failed, if it was created */
    n--;
    /* the last blocks with small files, collecting what is stale in
     * between, until nothing is left to gain: then not even the manifest
     * can be opened for writing */
    for (int i = 0, round = 0; round < 20 && i < 600; round++) {
        for (; i < 600; i++) {
            snprintf(p, sizeof(p), "/z%03d", i);
            err = cfs_put(p, blob, 100);
            if (err) {
                (void)cfs_remove(&FS, p);
                break;
            }
        }
        if (cfs_gc(&FS, 0) <= 0)
            break;
    }
    /* and empty files until not even a create fits (what the manifest's
     * open needs) */
    int ne = 0;
    for (; ne < 600; ne++) {
        cfs_file_t f;
        snprintf(p, sizeof(p), "/e%03d", ne);
        if (cfs_file_open(&FS, &f, p, CFS_O_WRONLY | CFS_O_CREAT)) {
            if (cfs_gc(&FS, 0) > 0 &&
                cfs_file_open(&FS, &f, p, CFS_O_WRONLY | CFS_O_CREAT) == 0) {
                (void)cfs_file_close(&FS, &f);
                continue;
            }
            break;
        }
        (void)cfs_file_close(&FS, &f);
    }
    cfs_statvfs_t v;
    CHECK_EQ(cfs_statvfs(&FS, &v), 0);
    if (getenv("RIG_LOG"))
        fprintf(stderr, "full: free %llu reserve %llu reclaimable %llu\n",
                (unsigned long long)v.free, (unsigned long long)v.reserve,
                (unsigned long long)v.reclaimable);
    (void)cfs_unmount(&FS);
    CHECK_EQ(rig_start(r), 0);
    int st = part_state(r, 0);
    if (no_manifest)
        CHECK_EQ(st, cellar_PartState_PART_NO_MANIFEST);
    else
        CHECK(st == cellar_PartState_PART_OK ||
              st == cellar_PartState_PART_FULL);
    uint8_t *d;
    uint32_t len;
    CHECK_EQ(rig_get(r, &r->a, "/usr/app.py", &d, &len), 0);
    free(d);
    if (st == cellar_PartState_PART_NO_MANIFEST) {
        CHECK(hello_has(r, "cannot open the manifest"));
        CHECK_EQ(rig_put(r, &r->a, "/usr/no.txt", "n", 1), cellar_Code_EIO);
    }
    if (st == cellar_PartState_PART_FULL) {
        CHECK(hello_has(r, "no room for the service's bookkeeping"));
        CHECK_EQ(rig_put(r, &r->a, "/usr/no.txt", "n", 1), cellar_Code_ENOSPC);
    }
    /* repair: remove the files that were never tracked */
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof(p), "/usr/big%03d", i);
        CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag, p), 0);
    }
    for (int i = 0; i < 600; i++) {
        snprintf(p, sizeof(p), "/usr/z%03d", i);
        if (rig_path_op(r, &r->a, cellar_Request_remove_tag, p))
            break;
    }
    for (int i = 0; i < ne; i++) {
        snprintf(p, sizeof(p), "/usr/e%03d", i);
        CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag, p), 0);
    }
    CHECK_EQ(part_state(r, 0), cellar_PartState_PART_OK);
    if (no_manifest) { /* a new manifest: the files are untracked */
        static const char app[] = "print('hello')\n";
        CHECK(untracked(r, "/usr", 0) > 0);
        CHECK_EQ(rig_put(r, &r->a, "/usr/app.py", app, sizeof(app) - 1), 0);
        CHECK_EQ(rig_put(r, &r->a, "/usr/lib/m.py", "x = 1\n", 6), 0);
    }
    check_clean(r, "full_partition");
}

/* Damaged staging areas: each is dropped, reported, and updates work. */
static void damaged_staging(int kind)
{
    rig_t *r = &R;
    fresh(r);
    rig_stop(r);
    CHECK_EQ(cfs_on(r, "usr"), 0);
    static const char junk[] = "\x01garbage\xff\x00 not a plan";
    const char *expect = "/.cellar/tx";
    switch (kind) {
    case 0: /* a file where the directory should be */
        CHECK_EQ(cfs_put("/.cellar/tx", junk, sizeof(junk)), 0);
        break;
    case 1: /* garbage plan and data, a subdirectory in it */
        CHECK_EQ(cfs_mkdir(&FS, "/.cellar/tx"), 0);
        CHECK_EQ(cfs_put("/.cellar/tx/plan", junk, sizeof(junk)), 0);
        CHECK_EQ(cfs_put("/.cellar/tx/d3", junk, 5), 0);
        CHECK_EQ(cfs_mkdir(&FS, "/.cellar/tx/sub"), 0);
        CHECK_EQ(cfs_mkdir(&FS, "/.cellar/tx/sub/deeper"), 0);
        CHECK_EQ(cfs_put("/.cellar/tx/sub/deeper/x", junk, 3), 0);
        expect = "/.cellar/tx";
        break;
    case 2: /* a decided commit whose roll forward cannot finish: the
             * commit marker is a directory (issue 9, reproduction 2) */
        CHECK_EQ(cfs_mkdir(&FS, "/.cellar/tx"), 0);
        CHECK_EQ(cfs_mkdir(&FS, "/.cellar/tx/commit"), 0);
        CHECK_EQ(cfs_put("/.cellar/tx/commit/junk", junk, 3), 0);
        break;
    case 3: /* the copy staging is a file, the shadow directory too */
        CHECK_EQ(cfs_put("/.cellar/cp", junk, sizeof(junk)), 0);
        (void)cfs_remove(&FS, "/.cellar/w");
        CHECK_EQ(cfs_put("/.cellar/w", junk, sizeof(junk)), 0);
        expect = "/.cellar/";
        break;
    case 4: /* the manifest is a directory */
        CHECK_EQ(cfs_remove(&FS, "/.cellar/manifest"), 0);
        CHECK_EQ(cfs_mkdir(&FS, "/.cellar/manifest"), 0);
        CHECK_EQ(cfs_put("/.cellar/manifest/x", junk, 3), 0);
        expect = "manifest is not a file";
        break;
    case 5: { /* garbage in a manifest slot, and a torn tail */
        cfs_file_t f;
        CHECK_EQ(cfs_file_open(&FS, &f, "/.cellar/manifest", CFS_O_RDWR), 0);
        uint8_t slot[300];
        memset(slot, 0x77, sizeof(slot));
        CHECK_EQ(cfs_file_pwrite(&FS, &f, slot, 300, 0), 300);
        int32_t sz = cfs_file_size(&FS, &f);
        CHECK_EQ(cfs_file_pwrite(&FS, &f, slot, 17, (uint32_t)sz), 17);
        CHECK_EQ(cfs_file_close(&FS, &f), 0);
        expect = "damaged slots";
        break;
    }
    case 6: { /* the manifest disagrees with the files */
        CHECK_EQ(cfs_put("/app.py", "changed behind its back", 23), 0);
        CHECK_EQ(cfs_remove(&FS, "/lib/m.py"), 0);
        expect = NULL;
        break;
    }
    }
    (void)cfs_unmount(&FS);
    CHECK_EQ(rig_start(r), 0);
    CHECK_EQ(part_state(r, 0), cellar_PartState_PART_OK);
    if (expect)
        CHECK(hello_has(r, expect));
    uint8_t *d;
    uint32_t n;
    CHECK_EQ(rig_get(r, &r->a, "/usr/lib/m.py", &d, &n) == 0 || kind == 6, 1);
    free(d);
    if (kind == 4 || kind == 5) {
        /* entries were lost: the files are untracked until rewritten */
        CHECK(untracked(r, "/usr", 0) > 0);
        static const char app[] = "print('hello')\n";
        CHECK_EQ(rig_put(r, &r->a, "/usr/app.py", app, sizeof(app) - 1), 0);
        CHECK_EQ(rig_put(r, &r->a, "/usr/lib/m.py", "x = 1\n", 6), 0);
    }
    if (kind == 6) {
        CHECK_EQ(verify_problems(r, false), 2);
        CHECK_EQ(verify_problems(r, true), 0); /* restored from /bak */
    }
    /* an update works on the repaired staging */
    rig_req(r, cellar_Request_update_begin_tag);
    r->rq.body.update_begin.bundle.size = 32;
    memset(r->rq.body.update_begin.bundle.bytes, kind + 1, 32);
    r->rq.body.update_begin.entries = 1;
    CHECK_EQ(rig_call(r, &r->a), 0);
    rig_req(r, cellar_Request_update_abort_tag);
    CHECK_EQ(rig_call(r, &r->a), 0);
    char what[32];
    snprintf(what, sizeof(what), "damaged_staging %d", kind);
    check_clean(r, what);
}

/* A partition that will not mount: reported, not served, formatted over
 * the protocol; /usr is served meanwhile. */
static void unmountable_bak(void)
{
    rig_t *r = &R;
    fresh(r);
    rig_stop(r);
    cfs_config_t c;
    part_cfg(r, "bak", &c);
    uint8_t *img = flash_sim_data(r->sim);
    /* garbage over the whole partition: no anchor survives */
    for (uint32_t i = 0; i < c.block_count * 4096u; i++)
        img[(uint64_t)c.first_block * 4096u + i] = (uint8_t)(i * 7 + 3);
    /* (provisioning on, as in cellard: it formats only an erased
     * partition, never one holding something) */
    CHECK_EQ(rig_start(r), 0);
    CHECK_EQ(part_state(r, 1), cellar_PartState_PART_UNMOUNTED);
    CHECK(hello_has(r, "/bak: cannot mount"));
    uint8_t *d;
    uint32_t n;
    CHECK_EQ(rig_get(r, &r->a, "/usr/app.py", &d, &n), 0);
    free(d);
    CHECK(rig_path_op(r, &r->a, cellar_Request_list_tag, "/bak") != 0);
    CHECK_EQ(rig_put(r, &r->a, "/usr/w.txt", "w", 1), 0);
    rig_req(r, cellar_Request_format_tag);
    strcpy(r->rq.body.format.partition, "/bak");
    r->rq.body.format.confirm = true;
    CHECK_EQ(rig_call(r, &r->a), 0);
    CHECK_EQ(part_state(r, 1), cellar_PartState_PART_OK);
    CHECK_EQ(r->rs.body.hello.problems_count, 0);
    rig_req(r, cellar_Request_backup_tag);
    CHECK_EQ(rig_call(r, &r->a), 0);
    CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag, "/usr/w.txt"), 0);
    check_clean(r, "unmountable_bak");
}

/* /usr will not mount: /bak is served, every /usr request is refused
 * cleanly, and Format + Restore bring the files back. */
static void unmountable_usr(void)
{
    rig_t *r = &R;
    fresh(r);
    rig_stop(r);
    cfs_config_t c;
    part_cfg(r, "usr", &c);
    uint8_t *img = flash_sim_data(r->sim);
    for (uint32_t i = 0; i < c.block_count * 4096u; i++)
        img[(uint64_t)c.first_block * 4096u + i] = (uint8_t)(i * 13 + 1);
    CHECK_EQ(rig_start(r), 0);
    CHECK_EQ(part_state(r, 0), cellar_PartState_PART_UNMOUNTED);
    CHECK(hello_has(r, "/usr: cannot mount"));
    uint8_t *d;
    uint32_t n;
    CHECK_EQ(rig_get(r, &r->a, "/bak/app.py", &d, &n), 0);
    free(d);
    CHECK_EQ(rig_get(r, &r->a, "/usr/app.py", &d, &n), cellar_Code_EIO);
    CHECK_EQ(rig_put(r, &r->a, "/usr/x", "x", 1), cellar_Code_EIO);
    rig_req(r, cellar_Request_update_begin_tag);
    r->rq.body.update_begin.bundle.size = 32;
    CHECK_EQ(rig_call(r, &r->a), cellar_Code_EIO);
    rig_req(r, cellar_Request_verify_tag);
    CHECK_EQ(rig_call(r, &r->a), cellar_Code_EIO);
    rig_req(r, cellar_Request_statfs_tag);
    strcpy(r->rq.body.statfs.path, "/");
    CHECK_EQ(rig_call(r, &r->a), 0);
    rig_req(r, cellar_Request_format_tag);
    strcpy(r->rq.body.format.partition, "/usr");
    r->rq.body.format.confirm = true;
    CHECK_EQ(rig_call(r, &r->a), 0);
    CHECK_EQ(part_state(r, 0), cellar_PartState_PART_OK);
    rig_req(r, cellar_Request_restore_tag);
    CHECK_EQ(rig_call(r, &r->a), 0);
    CHECK_EQ(r->rs.body.copy.files, 2);
    check_clean(r, "unmountable_usr");
}

/* Only a flash that is not cellar's at all is refused - and left alone. */
static void foreign_flash(void)
{
    rig_t *r = &R;
    fresh(r);
    rig_stop(r);
    uint8_t *img = flash_sim_data(r->sim);
    memcpy(img, "NOT-CELLAR-BOOTLOADER", 21);
    CHECK(rig_start(r) != 0);
    CHECK(rig_log_has(r, "not a cellar flash"));
    CHECK_EQ(memcmp(img, "NOT-CELLAR-BOOTLOADER", 21), 0);
    r->a.svc = NULL;
    r->b.svc = NULL;
    flash_sim_free(r->sim);
    r->sim = NULL;
}

/* A reader follows its file through a Rename (model test bug 4): a bundle
 * writing the old name is not busy, a Restore of the new name closes it. */
static void renamed_reader(void)
{
    rig_t *r = &R;
    fresh(r);
    uint32_t h;
    CHECK_EQ(open_h(r, "/usr/app.py", 1, &h), 0); /* O_READ */
    rig_req(r, cellar_Request_rename_tag);
    strcpy(r->rq.body.rename.from, "/usr/app.py");
    strcpy(r->rq.body.rename.to, "/usr/app2.py");
    CHECK_EQ(rig_call(r, &r->a), 0);
    uint8_t id[32], sha[32];
    memset(id, 0x17, sizeof(id));
    sha256_all((const uint8_t *)"new", 3, sha);
    rig_req(r, cellar_Request_update_begin_tag);
    r->rq.body.update_begin.bundle.size = 32;
    memcpy(r->rq.body.update_begin.bundle.bytes, id, 32);
    r->rq.body.update_begin.entries = 1;
    r->rq.body.update_begin.bytes = 3;
    CHECK_EQ(rig_call(r, &r->b), 0);
    rig_req(r, cellar_Request_update_declare_tag);
    cellar_UpdateDeclareRequest *d = &r->rq.body.update_declare;
    d->bundle.size = 32;
    memcpy(d->bundle.bytes, id, 32);
    cellar_BundleEntry *e = &d->entries[d->entries_count++];
    strcpy(e->path, "/usr/app.py");
    e->size = 3;
    e->sha256.size = 32;
    memcpy(e->sha256.bytes, sha, 32);
    CHECK_EQ(rig_call(r, &r->b), 0);
    rig_req(r, cellar_Request_update_write_tag);
    r->rq.body.update_write.data.size = 3;
    memcpy(r->rq.body.update_write.data.bytes, "new", 3);
    CHECK_EQ(rig_call(r, &r->b), 0);
    rig_req(r, cellar_Request_update_commit_tag);
    r->rq.body.update_commit.bundle.size = 32;
    memcpy(r->rq.body.update_commit.bundle.bytes, id, 32);
    CHECK_EQ(rig_call(r, &r->b), 0); /* EBUSY before: the reader kept the old name */
    /* the reader still reads the renamed file */
    rig_req(r, cellar_Request_read_tag);
    r->rq.body.read.handle = h;
    r->rq.body.read.length = 64;
    CHECK_EQ(rig_call(r, &r->a), 0);
    CHECK_EQ(r->rs.body.read.data.size, 15);
    CHECK_EQ(close_h(r, h), 0);
    /* the renamed file is untracked under its new name? no: entries move */
    rig_req(r, cellar_Request_update_abort_tag);
    (void)rig_call(r, &r->b);
    check_clean(r, "renamed_reader");
}

/* Remove always works on a /usr filled to the space rule's limit, even
 * when the manifest commit finds no room (it answered ENOSPC with the file
 * already gone). */
static void remove_when_full(void)
{
    rig_t *r = &R;
    fresh(r);
    static uint8_t buf[16384];
    memset(buf, 0x5a, sizeof(buf));
    char path[64];
    int files = 0;
    for (int i = 0; i < 200; i++) {
        uint32_t h;
        snprintf(path, sizeof(path), "/usr/f%03d", i);
        if (open_h(r, path, 2 | 4, &h))
            break;
        int rc = 0;
        for (uint32_t off = 0; off < 65536 && !rc; off += sizeof(buf))
            rc = write_h(r, h, off, buf, sizeof(buf));
        (void)close_h(r, h);
        files++;
        if (rc)
            break;
    }
    CHECK(files > 2);
    for (int i = 0; i < files; i++) {
        snprintf(path, sizeof(path), "/usr/f%03d", i);
        int rc = rig_path_op(r, &r->a, cellar_Request_remove_tag, path);
        CHECK(rc == 0 || rc == cellar_Code_ENOENT);
        cfs_stat_t st;
        CHECK(rc != 0 || cfs_stat(svc_fs(&r->svc, "usr"), path + 4, &st) == CFS_ERR_NOENT);
    }
    CHECK(!tracked(r, "/usr/f000"));
    check_clean(r, "remove_when_full");
}

static int read_h(rig_t *r, uint32_t h)
{
    rig_req(r, cellar_Request_read_tag);
    r->rq.body.read.handle = h;
    r->rq.body.read.length = 64;
    return rig_call(r, &r->a);
}

/* A Restore closes the /usr readers of its paths when it commits, and only
 * when it copies something (model test: a Restore with nothing to do left
 * them open, which the model did not expect, so a Close publishing over
 * such a reader, a Remove or an UpdateCommit answered EBUSY). */
static void restore_readers(void)
{
    rig_t *r = &R;
    fresh(r);
    uint32_t h, w;
    CHECK_EQ(open_h(r, "/usr/app.py", 1, &h), 0); /* O_READ */
    rig_req(r, cellar_Request_restore_tag);
    CHECK_EQ(rig_call(r, &r->a), 0);
    CHECK_EQ(r->rs.body.copy.files, 0); /* nothing to do: the reader stays */
    CHECK_EQ(read_h(r, h), 0);
    CHECK_EQ(r->rs.body.read.data.size, 15);
    CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag, "/usr/app.py"),
             cellar_Code_EBUSY);
    CHECK_EQ(open_h(r, "/usr/app.py", 2 | 16, &w), 0); /* O_WRITE|O_TRUNC */
    CHECK_EQ(write_h(r, w, 0, "zz", 2), 0);
    CHECK_EQ(close_h(r, w), cellar_Code_EBUSY); /* it would replace the reader's file */
    CHECK_EQ(read_h(r, h), 0);
    CHECK_EQ(r->rs.body.read.data.size, 15);
    /* a Restore that copies: every reader of its paths is closed */
    CHECK_EQ(rig_put(r, &r->a, "/usr/lib/m.py", "y = 2\n", 6), 0);
    rig_req(r, cellar_Request_restore_tag);
    CHECK_EQ(rig_call(r, &r->a), 0);
    CHECK_EQ(r->rs.body.copy.files, 1);
    CHECK_EQ(read_h(r, h), cellar_Code_EBADF);
    CHECK_EQ(close_h(r, h), cellar_Code_EBADF);
    CHECK_EQ(rig_path_op(r, &r->a, cellar_Request_remove_tag, "/usr/app.py"), 0);
    rig_req(r, cellar_Request_restore_tag);
    CHECK_EQ(rig_call(r, &r->a), 0);
    CHECK_EQ(r->rs.body.copy.files, 1);
    check_clean(r, "restore_readers");
}

int main(int argc, char **argv)
{
    /* argv[1]: run only the case of that number (debugging) */
    int only = argc > 1 ? atoi(argv[1]) : -1;
    if (only < 0 || only == 0)
        repro_sparse_open();
    if (only < 0 || only == 1) {
        legacy_sparse_full(false);
        legacy_sparse_full(true);
    }
    if (only < 0 || only == 2)
        full_keeps_room();
    if (only < 0 || only == 3)
        full_partition(false);
    if (only < 0 || only == 15)
        full_partition(true);
    for (int k = 0; k <= 6; k++)
        if (only < 0 || only == 4 + k)
            damaged_staging(k);
    if (only < 0 || only == 11)
        unmountable_bak();
    if (only < 0 || only == 12)
        foreign_flash();
    if (only < 0 || only == 13)
        repro_bundle_conflict();
    if (only < 0 || only == 14)
        unmountable_usr();
    if (only < 0 || only == 16)
        renamed_reader();
    if (only < 0 || only == 17)
        remove_when_full();
    if (only < 0 || only == 18)
        restore_readers();
    if (R.sim)
        rig_free(&R);
    return check_summary("harden");
}
