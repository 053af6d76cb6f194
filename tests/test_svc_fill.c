/* test_svc_fill.c - through the service, a /usr filled to ENOSPC can always
 * be emptied (issue 9, item 2).
 *
 * Each case fills /usr over the protocol until the service refuses (many
 * small files, or one file in writes of 100, 768 or 4,096 bytes), then
 * checks: every close and remove succeeds, a new file then fits, verify is
 * clean, cfs_fsck is clean, nothing is left claimed (a write refused at
 * Close leaves no shadow copy behind), and a restart finds /usr PART_OK.
 * Runs with the host profile (make test) and the device profile (make
 * test-device) on 4 MiB; `--big` adds 16 MiB (minutes under ASan; make
 * sweep-fill-svc runs it on both profiles).
 *
 * Found with it: a file written in 100-byte writes until ENOSPC left /usr
 * with 5 free blocks, its shadow copy (1.5 MB) could not be removed, and
 * the restart found /usr PART_FULL for good (docs/FS.md section 6). And
 * on 16 MiB with the device profile, 3,487 small files: every Remove
 * after the 9th was refused, GC moving the manifest's 300-byte slots one
 * by one at ~1 KB of log each (docs/FS.md section 9). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cfs.h"
#include "svc_rig.h"

static rig_t R;

/* n bytes of the fill at file offset off (the offset in each byte: no two
 * pieces alike) */
static const uint8_t *piece(uint64_t off, uint32_t n)
{
    static uint8_t buf[4096];
    for (uint32_t i = 0; i < n && i < sizeof(buf); i++)
        buf[i] = (uint8_t)((off + i) * 31 + (off >> 12));
    return buf;
}

static int usr_state(rig_t *r)
{
    rig_req(r, cellar_Request_hello_tag);
    r->rq.body.hello.version = 1;
    strcpy(r->rq.body.hello.client, "test_svc_fill");
    if (rig_call(r, &r->a) || r->rs.body.hello.partitions_count < 1)
        return -1;
    return (int)r->rs.body.hello.partitions[0].state;
}

/* chunk 0: many files of 2,305 bytes; else one file in chunk-byte writes */
static void fill_empty(uint32_t blocks, uint32_t chunk)
{
    rig_t *r = &R;
    long before = check_fail_;
    if (r->sim)
        rig_free(r);
    CHECK_EQ(rig_init(r, blocks, NULL), 0);
    char p[64];
    int rc = 0, nfiles = 0, bad_close = 0;
    uint64_t bytes = 0;
    if (chunk == 0) {
        for (int i = 0; i < 20000 && !rc; i++) {
            uint32_t h;
            snprintf(p, sizeof(p), "/usr/f%05d", i);
            rc = rig_open(r, &r->a, p, cellar_OpenFlags_O_WRITE | cellar_OpenFlags_O_CREATE, &h);
            if (rc)
                break;
            uint32_t most = sizeof(r->rq.body.write.data.bytes);
            for (uint32_t off = 0; !rc && off < 2305; off += most) {
                uint32_t n = 2305 - off < most ? 2305 - off : most;
                rc = rig_write(r, &r->a, h, off, piece(off, n), n);
            }
            int rc2 = rig_close(r, &r->a, h);
            if (rc2 && rc2 != cellar_Code_ENOSPC)
                bad_close++;
            nfiles++; /* made, even if refused: it must be removable */
            if (!rc)
                rc = rc2;
            if (!rc)
                bytes += 2305;
        }
    } else {
        uint32_t h;
        CHECK_EQ(rig_open(r, &r->a, "/usr/big",
                          cellar_OpenFlags_O_WRITE | cellar_OpenFlags_O_CREATE, &h), 0);
        if (chunk > sizeof(r->rq.body.write.data.bytes))
            chunk = sizeof(r->rq.body.write.data.bytes);
        for (uint64_t off = 0; !rc && off < ((uint64_t)blocks << 12); off += chunk) {
            rc = rig_write(r, &r->a, h, off, piece(off, chunk), chunk);
            if (!rc)
                bytes += chunk;
        }
        int rc2 = rig_close(r, &r->a, h);
        if (rc2 && rc2 != cellar_Code_ENOSPC)
            bad_close++;
        nfiles = 1;
    }
    CHECK_EQ(rc, cellar_Code_ENOSPC);
    CHECK_EQ(bad_close, 0);
    int bad_rm = 0;
    for (int i = 0; i < nfiles; i++) {
        if (chunk)
            snprintf(p, sizeof(p), "/usr/big");
        else
            snprintf(p, sizeof(p), "/usr/f%05d", i);
        int e = rig_path_op(r, &r->a, cellar_Request_remove_tag, p);
        if (e && e != cellar_Code_ENOENT) {
            if (!bad_rm)
                fprintf(stderr, "  remove %s: %d\n", p, e);
            bad_rm++;
        }
    }
    CHECK_EQ(bad_rm, 0);
    /* no leak: what is claimed is the manifest (its slots stay) and the
     * two files of the fresh rig */
    cfs_t *u = svc_fs(&r->svc, "usr");
    cfs_statvfs_t v;
    cfs_stat_t ms;
    CHECK(u && cfs_statvfs(u, &v) == 0 && cfs_stat(u, "/.cellar/manifest", &ms) == 0);
    CHECK(v.claimed < ms.size + 16 * 1024);
    static uint8_t five[5000];
    memset(five, 0x33, sizeof(five));
    CHECK_EQ(rig_put(r, &r->a, "/usr/after.bin", five, sizeof(five)), 0);
    CHECK_EQ(rig_verify(r, &r->a, "/usr", false), 0);
    CHECK(u && cfs_fsck(u, NULL, NULL) == 0);
    CHECK_EQ(rig_restart(r), 0);
    CHECK_EQ(usr_state(r), cellar_PartState_PART_OK);
    printf("fill %5u blocks, %s %4u: %8llu bytes in %5d file(s): %s\n", blocks,
           chunk ? "writes of" : "files    ", chunk ? chunk : 2305u,
           (unsigned long long)bytes, nfiles,
           check_fail_ > before ? "NOT emptied" : "emptied");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    /* 4 MiB in make test; --big adds 16 MiB (minutes under ASan) */
    int big = argc > 1 && strcmp(argv[1], "--big") == 0;
    uint32_t sizes[] = {1024, 4096};
    uint32_t chunks[] = {0, 100, 768, 4096};
    uint32_t most = (uint32_t)sizeof(R.rq.body.write.data.bytes);
    for (unsigned si = 0; si < (big ? 2u : 1u); si++)
        for (unsigned c = 0; c < 4; c++)
            if (c < 3 || chunks[c] <= most) /* the device's writes stop at 768 */
                fill_empty(sizes[si], chunks[c]);
    rig_free(&R);
    return check_summary("test_svc_fill");
}
