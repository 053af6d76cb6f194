/*
 * test_raw.c - raw partitions (issue 15, docs/RAW.md): the layout with raw
 * partitions, provisioning and a --raw that disagrees with the flash,
 * RawRead / RawWrite / RawErase / RawHash with every bound (ranges past the
 * end, unaligned erases, writes over programmed bytes, unknown names),
 * their permissions, verified raw updates through an update bundle
 * ("raw:NAME"), verify of raw entries, and a power-cut sweep of a raw
 * update: after any cut and a restart the partition holds the old image
 * with the old manifest entry or the new image with the new one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/csha.h"
#include "layout.h"
#include "svc_rig.h"

#define BS 4096u
static rig_t R;
static const layout_raw_t RAWS[] = { { "model", 64 }, { "cfg", 1 } };

static void sha(const void *d, size_t n, uint8_t out[32])
{
    csha_t h;
    csha_init(&h);
    (void)csha_start(&h);
    (void)csha_update(&h, d, n);
    (void)csha_finish(&h, out);
    csha_free(&h);
}

static void gen(uint8_t *d, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        d[i] = (uint8_t)(seed >> 16);
    }
}

/* ---- requests ----------------------------------------------------------- */
static int raw_read(const char *name, uint64_t off, uint32_t len)
{
    rig_req(&R, cellar_Request_raw_read_tag);
    strcpy(R.rq.body.raw_read.name, name);
    R.rq.body.raw_read.offset = off;
    R.rq.body.raw_read.length = len;
    return rig_call(&R, &R.a);
}

static int raw_write(const char *name, uint64_t off, const void *d, uint32_t n)
{
    rig_req(&R, cellar_Request_raw_write_tag);
    strcpy(R.rq.body.raw_write.name, name);
    R.rq.body.raw_write.offset = off;
    R.rq.body.raw_write.data.size = (pb_size_t)n;
    memcpy(R.rq.body.raw_write.data.bytes, d, n);
    return rig_call(&R, &R.a);
}

static int raw_erase(const char *name, uint64_t off, uint64_t len)
{
    rig_req(&R, cellar_Request_raw_erase_tag);
    strcpy(R.rq.body.raw_erase.name, name);
    R.rq.body.raw_erase.offset = off;
    R.rq.body.raw_erase.length = len;
    return rig_call(&R, &R.a);
}

static int raw_hash(const char *name, uint64_t off, uint64_t len)
{
    rig_req(&R, cellar_Request_raw_hash_tag);
    strcpy(R.rq.body.raw_hash.name, name);
    R.rq.body.raw_hash.offset = off;
    R.rq.body.raw_hash.length = len;
    return rig_call(&R, &R.a);
}

/* The device's bytes of a raw partition, straight from the simulator. */
static const uint8_t *area(const char *name)
{
    const layout_part_t *p = svc_raw_part(&R.svc, name);
    return p ? flash_sim_data(R.sim) + (size_t)p->first_block * BS : NULL;
}

static bool erased(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0xff)
            return false;
    return true;
}

/* ---- a verified raw update: one bundle entry "raw:NAME" ------------------- */
static uint8_t last_status;

static int raw_update_ex(const char *name, const uint8_t *img, uint32_t n,
                         const uint8_t *send, bool remove)
{
    uint8_t id[32], digest[32];
    sha(img, n, digest);
    memcpy(id, digest, 32);
    id[0] ^= (uint8_t)n;
    id[1] ^= (uint8_t)name[0];
    rig_req(&R, cellar_Request_update_begin_tag);
    R.rq.body.update_begin.bundle.size = 32;
    memcpy(R.rq.body.update_begin.bundle.bytes, id, 32);
    R.rq.body.update_begin.entries = 1;
    R.rq.body.update_begin.bytes = n;
    int rc = rig_call(&R, &R.a);
    if (rc)
        return rc;
    rig_req(&R, cellar_Request_update_declare_tag);
    cellar_UpdateDeclareRequest *d = &R.rq.body.update_declare;
    d->bundle.size = 32;
    memcpy(d->bundle.bytes, id, 32);
    d->entries_count = 1;
    snprintf(d->entries[0].path, sizeof(d->entries[0].path), "raw:%s", name);
    d->entries[0].size = n;
    d->entries[0].remove = remove;
    d->entries[0].sha256.size = 32;
    memcpy(d->entries[0].sha256.bytes, digest, 32);
    rc = rig_call(&R, &R.a);
    if (rc)
        goto abort;
    last_status = (uint8_t)R.rs.body.update_declare.status[0];
    if (last_status != cellar_EntryStatus_UNCHANGED)
        for (uint32_t off = 0; off < n;) {
            uint32_t k = n - off < 8192 ? n - off : 8192;
            rig_req(&R, cellar_Request_update_write_tag);
            R.rq.body.update_write.index = 0;
            R.rq.body.update_write.offset = off;
            R.rq.body.update_write.data.size = (pb_size_t)k;
            memcpy(R.rq.body.update_write.data.bytes, send + off, k);
            if ((rc = rig_call(&R, &R.a)))
                goto abort;
            off += k;
        }
    rig_req(&R, cellar_Request_update_commit_tag);
    R.rq.body.update_commit.bundle.size = 32;
    memcpy(R.rq.body.update_commit.bundle.bytes, id, 32);
    rc = rig_call(&R, &R.a);
    if (!rc)
        return 0;
abort:;
    cellar_Response keep = R.rs;
    rig_req(&R, cellar_Request_update_abort_tag);
    (void)rig_call(&R, &R.a);
    R.rs = keep;
    return rc;
}

static int raw_update(const char *name, const uint8_t *img, uint32_t n)
{
    return raw_update_ex(name, img, n, img, false);
}

/* The manifest entry of a raw partition: 1 found (sha, size), 0 not. */
static int raw_entry(const char *name, uint8_t sha_out[32], uint32_t *size)
{
    char path[64];
    man_entry_t e;
    uint32_t slot;
    snprintf(path, sizeof(path), "/.cellar/raw/%s", name);
    int k = man_find(&R.svc.part[0].man, path, &e, &slot);
    if (k == 1) {
        memcpy(sha_out, e.sha, 32);
        *size = e.size;
    }
    return k;
}

static bool staged_left(const char *name)
{
    char path[64];
    cfs_stat_t st;
    snprintf(path, sizeof(path), "/.cellar/raw/%s", name);
    return cfs_stat(svc_fs(&R.svc, "usr"), path, &st) == 0;
}

/* ---- the layout ------------------------------------------------------------ */
static void test_layout(void)
{
    layout_t l;
    layout_raw_t bad[3] = { { "usr", 4 }, { "Model", 4 }, { "toolongname", 4 } };
    for (int i = 0; i < 3; i++)
        CHECK_EQ(layout_default_raw(256, 0, &bad[i], 1, &l), -22);
    layout_raw_t twice[2] = { { "m", 4 }, { "m", 2 } };
    CHECK_EQ(layout_default_raw(256, 0, twice, 2, &l), -22);
    layout_raw_t zero = { "z", 0 };
    CHECK_EQ(layout_default_raw(256, 0, &zero, 1, &l), -22);
    layout_raw_t huge = { "h", 250 };
    CHECK_EQ(layout_default_raw(256, 0, &huge, 1, &l), -22); /* no room */
    layout_raw_t many[7] = { { "a", 1 }, { "b", 1 }, { "c", 1 }, { "d", 1 },
                             { "e", 1 }, { "f", 1 }, { "g", 1 } };
    CHECK_EQ(layout_default_raw(256, 0, many, 7, &l), -22);
    CHECK_EQ(layout_default_raw(256, 0, many, 6, &l), 0);
    CHECK_EQ(l.nparts, 8);
    CHECK_EQ(layout_default_raw(256, 0, RAWS, 2, &l), 0);
    CHECK_EQ(l.nparts, 4);
    CHECK(strcmp(l.part[0].name, "model") == 0 && l.part[0].first_block == 1 &&
          l.part[0].block_count == 64 && l.part[0].kind == LAYOUT_KIND_RAW);
    CHECK(l.part[1].first_block == 65 && l.part[1].block_count == 1);
    const layout_part_t *u = layout_find(&l, "usr"), *b = layout_find(&l, "bak");
    CHECK(u && b && u->first_block == 66 && u->kind == LAYOUT_KIND_CFS);
    CHECK(b && b->first_block + b->block_count == 256);
    CHECK_EQ(layout_raw_match(&l, RAWS, 2), 1);
    CHECK_EQ(layout_raw_match(&l, RAWS, 1), 0);
    layout_raw_t other[2] = { { "model", 32 }, { "cfg", 1 } };
    CHECK_EQ(layout_raw_match(&l, other, 2), 0);

    /* round trip through a flash: version 2 with kinds; version 1 without */
    flash_sim_config_t fc = { .block_count = 256, .seed = 3 };
    flash_sim_t *sim = flash_sim_new(&fc);
    const flash_dev_t *dev = flash_sim_dev(sim);
    layout_t back;
    CHECK_EQ(layout_read(dev, &back), -2);
    CHECK_EQ(layout_write(dev, &l), 0);
    CHECK_EQ(layout_read(dev, &back), 0);
    CHECK_EQ(back.nparts, 4);
    CHECK_EQ(flash_sim_data(sim)[4], 2); /* version 2 */
    for (uint32_t i = 0; i < 4; i++)
        CHECK(memcmp(&back.part[i], &l.part[i], sizeof(l.part[i])) == 0);
    flash_sim_data(sim)[40] ^= 1; /* a flipped bit: the CRC says so */
    CHECK_EQ(layout_read(dev, &back), -84);
    CHECK_EQ(layout_default(256, 0, &l), 0);
    CHECK_EQ(layout_write(dev, &l), 0);
    CHECK_EQ(flash_sim_data(sim)[4], 1); /* no raw: still version 1 */
    CHECK_EQ(layout_read(dev, &back), 0);
    CHECK_EQ(back.nparts, 2);
    CHECK_EQ(back.part[0].kind, LAYOUT_KIND_CFS);
    flash_sim_free(sim);
}

/* ---- provisioning, Hello, a --raw that disagrees ------------------------------ */
static void test_setup(void)
{
    rig_req(&R, cellar_Request_hello_tag);
    CHECK_EQ(rig_call(&R, &R.a), 0);
    const cellar_HelloReply *h = &R.rs.body.hello;
    CHECK_EQ(h->partitions_count, 4);
    int raws = 0;
    for (uint32_t i = 0; i < h->partitions_count; i++)
        if (h->partitions[i].kind == cellar_PartKind_PART_RAW) {
            raws++;
            CHECK(strcmp(h->partitions[i].path, "model") == 0 ||
                  strcmp(h->partitions[i].path, "cfg") == 0);
        } else {
            CHECK(h->partitions[i].path[0] == '/');
        }
    CHECK_EQ(raws, 2);
    CHECK(erased(area("model"), 64 * BS));

    /* another set of raw partitions: refused, nothing changed */
    uint8_t blk0[256];
    memcpy(blk0, flash_sim_data(R.sim), sizeof(blk0));
    layout_raw_t other[1] = { { "model", 32 } };
    rig_stop(&R);
    R.cfg.raw = other;
    R.cfg.nraw = 1;
    CHECK_EQ(rig_start(&R), -22);
    CHECK(memcmp(blk0, flash_sim_data(R.sim), sizeof(blk0)) == 0);
    rig_stop(&R);
    R.cfg.nraw = 0; /* none given: whatever the flash has */
    CHECK_EQ(rig_start(&R), 0);
    CHECK(svc_raw_part(&R.svc, "cfg") != NULL);
    rig_stop(&R);
    R.cfg.raw = RAWS; /* the same again: fine */
    R.cfg.nraw = 2;
    CHECK_EQ(rig_start(&R), 0);

    /* permissions and long requests */
    CHECK_EQ(svc_request_perm(cellar_Request_raw_read_tag, NULL), SVC_PERM_READ);
    CHECK_EQ(svc_request_perm(cellar_Request_raw_hash_tag, NULL), SVC_PERM_READ);
    CHECK_EQ(svc_request_perm(cellar_Request_raw_write_tag, NULL), SVC_PERM_WRITE);
    CHECK_EQ(svc_request_perm(cellar_Request_raw_erase_tag, NULL), SVC_PERM_WRITE);
    CHECK(svc_request_long(cellar_Request_raw_hash_tag));
    CHECK(!svc_request_long(cellar_Request_raw_write_tag));
    CHECK(strcmp(svc_request_name(cellar_Request_raw_hash_tag), "raw sha256") == 0);
}

/* ---- read, write, erase, hash ------------------------------------------------ */
static void test_requests(void)
{
    static uint8_t d[3 * BS], all[64 * BS];
    gen(d, sizeof(d), 1);
    const uint32_t MS = 64 * BS;

    /* unknown names */
    CHECK_EQ(raw_read("nope", 0, 10), cellar_Code_ENOENT);
    CHECK(strstr(R.rs.error.message, "model") != NULL); /* names the ones there are */
    CHECK_EQ(raw_write("usr", 0, d, 10), cellar_Code_ENOENT); /* a filesystem */
    CHECK_EQ(raw_erase("nope", 0, 0), cellar_Code_ENOENT);
    CHECK_EQ(raw_hash("", 0, 0), cellar_Code_ENOENT);

    /* a name over 7 bytes: refused before decoding */
    uint8_t body[32];
    size_t bn = 0;
    uint32_t id = rig_raw_id(&R);
    body[bn++] = 0x08; /* id */
    body[bn++] = (uint8_t)id;
    body[bn++] = 0xc2; /* field 120 (raw_read), length-delimited */
    body[bn++] = 0x07;
    body[bn++] = 11;
    body[bn++] = 0x0a; /* name */
    body[bn++] = 9;
    memcpy(body + bn, "longnames", 9);
    bn += 9;
    CHECK_EQ(rig_call_raw(&R, &R.a, body, bn), cellar_Code_ENAMETOOLONG);
    CHECK(strstr(R.rs.error.message, "partition name is 9 bytes, the limit is 7") != NULL);

    /* writes: across a block boundary, then read back */
    CHECK_EQ(raw_write("model", BS - 100, d, 9000), 0);
    CHECK_EQ(R.rs.body.write.written, 9000);
    CHECK(memcmp(area("model") + BS - 100, d, 9000) == 0);
    CHECK_EQ(raw_read("model", BS - 100, 9000), 0);
    CHECK_EQ(R.rs.body.read.data.size, 9000);
    CHECK(memcmp(R.rs.body.read.data.bytes, d, 9000) == 0);
    CHECK(!R.rs.body.read.eof);

    /* over programmed bytes: refused, nothing written (also the erased
     * part of the range) */
    memcpy(all, area("model"), MS);
    CHECK_EQ(raw_write("model", BS - 200, d + 1, 300), cellar_Code_EEXIST);
    CHECK(strstr(R.rs.error.message, "byte 3996") != NULL);
    CHECK(memcmp(all, area("model"), MS) == 0);
    /* past the end, and straddling it */
    CHECK_EQ(raw_write("model", MS, d, 1), cellar_Code_EINVAL);
    CHECK(strstr(R.rs.error.message, "past the end") != NULL);
    CHECK_EQ(raw_write("model", MS - 10, d, 11), cellar_Code_EINVAL);
    CHECK_EQ(raw_write("model", UINT64_MAX - 2, d, 11), cellar_Code_EINVAL);
    CHECK(memcmp(all, area("model"), MS) == 0);
    CHECK_EQ(raw_write("model", MS - 10, d, 10), 0); /* up to the end: fine */
    CHECK_EQ(raw_write("cfg", 0, d, BS), 0);
    CHECK_EQ(raw_write("cfg", 0, d, 0), 0); /* empty: nothing to do */

    /* reads: past the end, cut at the end, capped at max_chunk */
    CHECK_EQ(raw_read("model", MS + 1, 1), cellar_Code_EINVAL);
    CHECK_EQ(raw_read("model", UINT64_MAX, 1), cellar_Code_EINVAL);
    CHECK_EQ(raw_read("model", MS - 10, 100), 0);
    CHECK_EQ(R.rs.body.read.data.size, 10);
    CHECK(R.rs.body.read.eof);
    CHECK_EQ(raw_read("model", MS, 100), 0);
    CHECK_EQ(R.rs.body.read.data.size, 0);
    CHECK_EQ(raw_read("model", 0, 100000), 0);
    CHECK_EQ(R.rs.body.read.data.size, 16384);

    /* hash: a range, the whole partition (in job steps), bounds */
    uint8_t want[32];
    sha(d, 9000, want);
    CHECK_EQ(raw_hash("model", BS - 100, 9000), 0);
    CHECK(memcmp(R.rs.body.hash.sha256, want, 32) == 0);
    CHECK_EQ(R.rs.body.hash.length, 9000);
    uint64_t steps0 = R.svc.job.steps;
    CHECK_EQ(raw_hash("model", 0, 0), 0);
    sha(area("model"), MS, want);
    CHECK(memcmp(R.rs.body.hash.sha256, want, 32) == 0);
    CHECK_EQ(R.rs.body.hash.length, MS);
    CHECK(R.svc.job.steps - steps0 >= MS / SVC_JOB_STEP_BYTES - 1); /* stepped */
    CHECK_EQ(raw_hash("model", MS, 0), 0); /* empty range at the end */
    CHECK_EQ(R.rs.body.hash.length, 0);
    CHECK_EQ(raw_hash("model", MS + 1, 0), cellar_Code_EINVAL);
    CHECK_EQ(raw_hash("model", 10, MS), cellar_Code_EINVAL);
    CHECK_EQ(raw_hash("cfg", 0, 0), 0);
    sha(d, BS, want);
    CHECK(memcmp(R.rs.body.hash.sha256, want, 32) == 0);

    /* erase: unaligned, past the end, then a block, then the rest */
    memcpy(all, area("model"), MS);
    CHECK_EQ(raw_erase("model", 100, BS), cellar_Code_EINVAL);
    CHECK(strstr(R.rs.error.message, "multiples of the block size") != NULL);
    CHECK_EQ(raw_erase("model", 0, 100), cellar_Code_EINVAL);
    CHECK_EQ(raw_erase("model", MS, BS), cellar_Code_EINVAL);
    CHECK_EQ(raw_erase("model", 63 * BS, 2 * BS), cellar_Code_EINVAL);
    CHECK_EQ(raw_erase("model", 2 * MS, 0), cellar_Code_EINVAL);
    CHECK(memcmp(all, area("model"), MS) == 0);
    CHECK_EQ(raw_erase("model", BS, BS), 0);
    CHECK(erased(area("model") + BS, BS));
    CHECK(memcmp(area("model"), all, BS) == 0); /* the block before: kept */
    CHECK(memcmp(area("model") + 2 * BS, all + 2 * BS, BS) == 0);
    CHECK_EQ(raw_write("model", BS + 7, d, 100), 0); /* erased: writable */
    CHECK_EQ(raw_erase("model", 0, 0), 0);
    CHECK(erased(area("model"), MS));
    CHECK_EQ(raw_erase("cfg", 0, BS), 0);
    CHECK(erased(area("cfg"), BS));
    /* the filesystems beside it were not touched */
    CHECK(cfs_fsck(svc_fs(&R.svc, "usr"), NULL, NULL) == 0);
}

/* ---- verified raw updates ----------------------------------------------------- */
static void test_updates(void)
{
    static uint8_t img[40000], img2[20000], bad[20000];
    uint8_t want[32], got[32];
    uint32_t size = 0;
    gen(img, sizeof(img), 5);
    gen(img2, sizeof(img2), 6);

    CHECK_EQ(raw_update("model", img, sizeof(img)), 0);
    CHECK(memcmp(area("model"), img, sizeof(img)) == 0);
    CHECK(erased(area("model") + sizeof(img), 64 * BS - sizeof(img)));
    CHECK_EQ(raw_entry("model", got, &size), 1);
    sha(img, sizeof(img), want);
    CHECK(memcmp(got, want, 32) == 0 && size == sizeof(img));
    CHECK(!staged_left("model"));
    CHECK(rig_log_has(&R, "writing the committed image"));

    /* the same image again: sent and written again (the entry alone cannot
     * vouch for the partition's bytes) */
    CHECK_EQ(raw_update("model", img, sizeof(img)), 0);
    CHECK_EQ(last_status, cellar_EntryStatus_SEND_CHANGED);
    CHECK(memcmp(area("model"), img, sizeof(img)) == 0);

    /* a smaller one replaces it whole (the rest is erased) */
    CHECK_EQ(raw_update("model", img2, sizeof(img2)), 0);
    CHECK(memcmp(area("model"), img2, sizeof(img2)) == 0);
    CHECK(erased(area("model") + sizeof(img2), 64 * BS - sizeof(img2)));

    /* data that does not match its SHA-256: refused, nothing changed */
    memcpy(bad, img2, sizeof(bad));
    bad[777] ^= 1;
    uint8_t *before = malloc(64 * BS);
    memcpy(before, area("model"), 64 * BS);
    gen(img, sizeof(img), 9);
    memcpy(bad, img, sizeof(bad));
    bad[5] ^= 0x40;
    CHECK_EQ(raw_update_ex("model", img, sizeof(bad), bad, false), cellar_Code_EBADMSG);
    CHECK(memcmp(before, area("model"), 64 * BS) == 0);
    CHECK_EQ(raw_entry("model", got, &size), 1);
    CHECK(size == sizeof(img2));
    /* bad entries: an unknown name, an image too large, a removal */
    CHECK_EQ(raw_update("nope", img, 100), cellar_Code_ENOENT);
    static uint8_t big[BS + 1];
    CHECK_EQ(raw_update("cfg", big, sizeof(big)), cellar_Code_EFBIG);
    CHECK_EQ(raw_update_ex("cfg", img, 10, img, true), cellar_Code_EINVAL);
    CHECK(memcmp(before, area("model"), 64 * BS) == 0);
    free(before);

    /* verify: a raw entry checks the partition's bytes */
    rig_req(&R, cellar_Request_verify_tag);
    CHECK_EQ(rig_call(&R, &R.a), 0);
    CHECK_EQ(R.rs.body.verify.problems_count, 0);
    CHECK(R.rs.body.verify.checked >= 1);
    flash_sim_data(R.sim)[(size_t)svc_raw_part(&R.svc, "model")->first_block * BS + 9] ^= 4;
    rig_req(&R, cellar_Request_verify_tag);
    CHECK_EQ(rig_call(&R, &R.a), 0);
    CHECK_EQ(R.rs.body.verify.problems_count, 1);
    CHECK(strstr(R.rs.body.verify.problems[0].path, "/.cellar/raw/model") != NULL);
    CHECK_EQ(R.rs.body.verify.problems[0].kind, cellar_ProblemKind_MISMATCH);
    /* a fresh update repairs it */
    CHECK_EQ(raw_update("model", img2, sizeof(img2)), 0);
    CHECK(memcmp(area("model"), img2, sizeof(img2)) == 0);
    /* a staged image whose write a cut interrupted is finished at start */
    CHECK_EQ(raw_erase("model", 0, 0), 0); /* as a torn write could leave it */
    cfs_file_t f;
    cfs_t *u = svc_fs(&R.svc, "usr");
    CHECK_EQ(cfs_file_open(u, &f, "/.cellar/raw/model", CFS_O_WRONLY | CFS_O_CREAT), 0);
    CHECK_EQ(cfs_file_write(u, &f, img2, sizeof(img2)), (int)sizeof(img2));
    CHECK_EQ(cfs_file_close(u, &f), 0);
    CHECK_EQ(raw_read("model", 0, 10), cellar_Code_EIO); /* not yet written */
    CHECK(strstr(R.rs.error.message, "written at the next start") != NULL);
    CHECK_EQ(raw_erase("model", 0, 0), cellar_Code_EIO);
    CHECK_EQ(rig_restart(&R), 0);
    CHECK_EQ(raw_read("model", 0, 10), 0);
    CHECK(memcmp(area("model"), img2, sizeof(img2)) == 0);
    CHECK(!staged_left("model"));
}

/* ---- backup, restore, repair ------------------------------------------------------ */
static void test_backup_restore(void)
{
    static uint8_t img[30000];
    gen(img, sizeof(img), 31);
    CHECK_EQ(raw_update("model", img, sizeof(img)), 0);
    rig_req(&R, cellar_Request_backup_tag); /* all of /usr, raw entries too */
    CHECK_EQ(rig_call(&R, &R.a), 0);
    CHECK(R.rs.body.copy.files >= 1);
    CHECK_EQ(R.rs.body.copy.skipped_count, 0);
    /* /bak holds the image as a file, with its entry */
    cfs_t *bak = svc_fs(&R.svc, "bak");
    cfs_stat_t st;
    CHECK_EQ(cfs_stat(bak, "/.cellar/raw/model", &st), 0);
    CHECK_EQ(st.size, sizeof(img));
    man_entry_t e;
    uint32_t slot;
    CHECK_EQ(man_find(&R.svc.part[1].man, "/.cellar/raw/model", &e, &slot), 1);
    uint8_t want[32];
    sha(img, sizeof(img), want);
    CHECK(memcmp(e.sha, want, 32) == 0);
    /* a backup again: unchanged (the partition's bytes were checked) */
    rig_req(&R, cellar_Request_backup_tag);
    CHECK_EQ(rig_call(&R, &R.a), 0);
    CHECK(R.rs.body.copy.unchanged >= 1);
    CHECK_EQ(R.rs.body.copy.files, 0);

    /* a corrupt partition: verify --repair writes it back from /bak */
    const layout_part_t *p = svc_raw_part(&R.svc, "model");
    flash_sim_data(R.sim)[(size_t)p->first_block * BS + 100] ^= 0x10;
    rig_req(&R, cellar_Request_verify_tag);
    R.rq.body.verify.repair = true;
    CHECK_EQ(rig_call(&R, &R.a), 0);
    CHECK_EQ(R.rs.body.verify.problems_count, 1);
    CHECK(R.rs.body.verify.problems[0].repaired);
    CHECK(memcmp(area("model"), img, sizeof(img)) == 0);
    CHECK(!staged_left("model"));

    /* an erased partition: Restore (all) writes it back */
    CHECK_EQ(raw_erase("model", 0, 0), 0);
    rig_req(&R, cellar_Request_restore_tag);
    CHECK_EQ(rig_call(&R, &R.a), 0);
    CHECK(R.rs.body.copy.files >= 1);
    CHECK(memcmp(area("model"), img, sizeof(img)) == 0);
    CHECK(!staged_left("model"));
    /* and the start-up check restores it too */
    CHECK_EQ(raw_erase("model", 0, 0), 0);
    rig_stop(&R);
    R.cfg.check_at_start = true;
    CHECK_EQ(rig_start(&R), 0);
    while (R.svc.job.kind)
        (void)svc_process(&R.svc);
    R.cfg.check_at_start = false;
    CHECK(memcmp(area("model"), img, sizeof(img)) == 0);
    CHECK(cfs_fsck(bak, NULL, NULL) == 0);
}

/* ---- the install runs in job steps; the partition is busy meanwhile ------------ */
static void test_install_steps(void)
{
    static uint8_t img[200000];
    static uint8_t wire[CODEC_BUF_MIN];
    gen(img, sizeof(img), 41);
    uint8_t id[32], digest[32];
    sha(img, sizeof(img), digest);
    memcpy(id, digest, 32);
    id[31] ^= 0x5a;
    CHECK_EQ(rig_stage_one(&R, id, "raw:model", img, sizeof(img), digest), 0);
    /* the commit, fed by hand: a few turns, then another client asks */
    rig_req(&R, cellar_Request_update_commit_tag);
    R.rq.body.update_commit.bundle.size = 32;
    memcpy(R.rq.body.update_commit.bundle.bytes, id, 32);
    R.rq.id = ++R.next_id;
    int n = codec_encode_request(&R.rq, wire, sizeof(wire));
    CHECK(n > 0);
    CHECK_EQ(svc_conn_input(&R.a, wire, (size_t)n), (size_t)n);
    uint64_t steps0 = R.svc.job.steps;
    for (int i = 0; i < 12 && !R.svc.job.rawing; i++)
        (void)svc_process(&R.svc);
    CHECK(R.svc.job.rawing);
    CHECK(staged_left("model"));
    rig_req(&R, cellar_Request_raw_read_tag);
    strcpy(R.rq.body.raw_read.name, "model");
    R.rq.body.raw_read.length = 10;
    int rc = rig_call(&R, &R.b);
    /* b is served between two steps of the install (256 blocks to erase
     * at 8 a step, then 200000 bytes to program and to read back) */
    CHECK_EQ(rc, cellar_Code_EBUSY);
    CHECK(strstr(R.rs.error.message, "being written") != NULL);
    for (int i = 0; i < 1000 && R.svc.job.kind; i++)
        (void)svc_process(&R.svc);
    CHECK_EQ(R.svc.job.kind, 0);
    CHECK(R.svc.job.steps - steps0 >= 3 * sizeof(img) / SVC_JOB_STEP_BYTES);
    const uint8_t *out;
    size_t len;
    (void)svc_conn_output(&R.a, &out, &len); /* the commit's reply: drop */
    svc_conn_consumed(&R.a, len);
    CHECK(memcmp(area("model"), img, sizeof(img)) == 0);
    CHECK(!staged_left("model"));
    CHECK(rig_log_has(&R, "committed"));
}

/* ---- power cuts during a raw update ------------------------------------------- */
static uint8_t PA[9000], PB[7000];

/* Cut the power at every flash operation of a raw update of name from
 * image A (na bytes) to image B (nb bytes). */
static void sweep(const char *name, uint32_t na, uint32_t nb)
{
    uint8_t sa[32], sb[32], got[32], area_sha[32];
    CHECK_EQ(raw_update(name, PA, na), 0);
    sha(PA, na, sa);
    sha(PB, nb, sb);
    size_t size = flash_sim_size(R.sim);
    uint8_t *base = malloc(size);
    rig_stop(&R);
    memcpy(base, flash_sim_data(R.sim), size);
    CHECK_EQ(rig_start(&R), 0);
    flash_sim_stats_t s0, s1;
    flash_sim_stats(R.sim, &s0);
    CHECK_EQ(raw_update(name, PB, nb), 0);
    flash_sim_stats(R.sim, &s1);
    uint64_t ops = (s1.progs - s0.progs) + (s1.erases - s0.erases);
    int cuts = 0, bad = 0, olds = 0, news = 0;
    for (uint64_t n = 1; n <= ops + 1; n++) {
        rig_stop(&R);
        memcpy(flash_sim_data(R.sim), base, size);
        if (rig_start(&R) != 0) {
            bad++;
            continue;
        }
        flash_sim_cut_after(R.sim, n, true);
        (void)raw_update(name, PB, nb);
        bool cut = flash_sim_power_lost(R.sim);
        flash_sim_power_on(R.sim);
        flash_sim_cut_after(R.sim, 0, false);
        rig_stop(&R);
        if (rig_start(&R) != 0) {
            fprintf(stderr, "%s cut %llu: no restart\n", name, (unsigned long long)n);
            bad++;
            continue;
        }
        uint32_t esize = 0;
        int k = raw_entry(name, got, &esize);
        bool is_old = false, is_new = false;
        if (k == 1 && (esize == na || esize == nb)) {
            sha(area(name), esize, area_sha);
            is_old = esize == na && !memcmp(got, sa, 32) && !memcmp(area_sha, sa, 32);
            is_new = esize == nb && !memcmp(got, sb, 32) && !memcmp(area_sha, sb, 32);
        }
        if (!(is_old || is_new) || staged_left(name) ||
            cfs_fsck(svc_fs(&R.svc, "usr"), NULL, NULL) != 0) {
            fprintf(stderr, "%s cut %llu of %llu: entry %d, area %s, staged %d\n", name,
                    (unsigned long long)n, (unsigned long long)ops, k,
                    is_old ? "old" : is_new ? "new" : "neither",
                    (int)staged_left(name));
            bad++;
        }
        olds += is_old;
        news += is_new;
        cuts += cut;
        if (!cut)
            break;
    }
    CHECK_EQ(bad, 0);
    CHECK(cuts > 0);
    CHECK(olds > 0 && news > 0);
    printf("  raw update %-5s %5llu flash ops: %d cuts, %d old, %d new, %d bad\n", name,
           (unsigned long long)ops, cuts, olds, news, bad);
    free(base);
}

/* A cut during the start-up's own write of a staged image: the next start
 * writes it again, from the same staged copy. */
static void test_startup_cuts(void)
{
    gen(PB, sizeof(PB), 23);
    CHECK_EQ(raw_update("model", PB, sizeof(PB)), 0);
    CHECK_EQ(raw_erase("model", 0, 0), 0); /* as a cut could leave it */
    cfs_file_t f;
    cfs_t *u = svc_fs(&R.svc, "usr");
    CHECK_EQ(cfs_file_open(u, &f, "/.cellar/raw/model", CFS_O_WRONLY | CFS_O_CREAT), 0);
    CHECK_EQ(cfs_file_write(u, &f, PB, sizeof(PB)), (int)sizeof(PB));
    CHECK_EQ(cfs_file_close(u, &f), 0);
    size_t size = flash_sim_size(R.sim);
    uint8_t *base = malloc(size);
    rig_stop(&R);
    memcpy(base, flash_sim_data(R.sim), size);
    flash_sim_stats_t s0, s1;
    flash_sim_stats(R.sim, &s0);
    CHECK_EQ(rig_start(&R), 0);
    flash_sim_stats(R.sim, &s1);
    CHECK(memcmp(area("model"), PB, sizeof(PB)) == 0);
    uint64_t ops = (s1.progs - s0.progs) + (s1.erases - s0.erases);
    int cuts = 0, bad = 0;
    for (uint64_t n = 1; n <= ops; n++) {
        rig_stop(&R);
        memcpy(flash_sim_data(R.sim), base, size);
        flash_sim_cut_after(R.sim, n, true);
        (void)rig_start(&R); /* cut somewhere in its recovery */
        cuts += flash_sim_power_lost(R.sim);
        flash_sim_power_on(R.sim);
        flash_sim_cut_after(R.sim, 0, false);
        rig_stop(&R);
        if (rig_start(&R) != 0 || memcmp(area("model"), PB, sizeof(PB)) != 0 ||
            staged_left("model") || cfs_fsck(svc_fs(&R.svc, "usr"), NULL, NULL)) {
            fprintf(stderr, "start-up cut %llu of %llu: not repaired\n",
                    (unsigned long long)n, (unsigned long long)ops);
            bad++;
        }
    }
    CHECK_EQ(bad, 0);
    CHECK(cuts > 0);
    printf("  start-up write    %5llu flash ops: %d cuts, %d bad\n",
           (unsigned long long)ops, cuts, bad);
    free(base);
}

static void test_power_cuts(void)
{
    gen(PA, sizeof(PA), 21);
    gen(PB, sizeof(PB), 22);
    sweep("cfg", BS, BS);                /* one block, rewritten */
    sweep("model", sizeof(PA), sizeof(PB)); /* 64 blocks, install in steps */
    test_startup_cuts();
}

int main(void)
{
    test_layout();
    svc_config_t base = { .tx_timeout_ms = 60000, .raw = RAWS, .nraw = 2 };
    CHECK_EQ(rig_init(&R, 256, &base), 0);
    test_setup();
    test_requests();
    test_updates();
    test_backup_restore();
    test_install_steps();
    rig_free(&R);
    CHECK_EQ(rig_init(&R, 160, &base), 0);
    test_power_cuts();
    rig_free(&R);
    return check_summary("raw");
}
