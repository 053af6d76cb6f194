/*
 * test_svc_sd.c - /sd in the service (issue 15): the file requests on a RAM
 * FAT card made by mkfs.fat, in-process (svc_rig). Covered: Hello lists /sd
 * (PART_FAT), List of "/" shows it, /usr and /sd handles on one connection
 * never mix (ids, data, another connection's handle), the shadow-and-rename
 * rule (the name holds the old file until Close; a dropped connection or a
 * failed write leaves it untouched), Stat/List/Mkdir -p/Rename/Remove/
 * StatFs/Hash/Truncate/Seek, bad input (reserved /.cellar, rename across
 * partitions, a full card), and an unmounted card beside a served /usr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "csha.h"
#include "svc_int.h"
#include "svc_rig.h"
#include "svc_sd.h"

static uint8_t *card_;
static uint32_t sectors_;

static int rd(const fat_blk_t *bd, uint32_t lba, void *buf, uint32_t n)
{
    (void)bd;
    if ((uint64_t)lba + n > sectors_)
        return -5;
    memcpy(buf, card_ + (size_t)lba * 512, (size_t)n * 512);
    return 0;
}

static int wr(const fat_blk_t *bd, uint32_t lba, const void *buf, uint32_t n)
{
    (void)bd;
    if ((uint64_t)lba + n > sectors_)
        return -5;
    memcpy(card_ + (size_t)lba * 512, buf, (size_t)n * 512);
    return 0;
}

static void make_card(unsigned kb)
{
    char path[256], cmd[512];
    snprintf(path, sizeof(path), "%s/test_svc_sd.%d.img",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    unlink(path);
    snprintf(cmd, sizeof(cmd), "mkfs.fat -F 16 -s 1 -C '%s' %u >/dev/null 2>&1", path, kb);
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "test_svc_sd: mkfs.fat (dosfstools) is needed\n");
        exit(1);
    }
    free(card_);
    sectors_ = kb * 2;
    card_ = calloc(sectors_, 512);
    if (fread(card_, 512, sectors_, f) != sectors_)
        exit(1);
    fclose(f);
    unlink(path);
}

static rig_t r;
static svc_sd_t sd;
static fat_blk_t bd = { NULL, rd, wr, NULL, 0 };

static uint32_t open_h(svc_conn_t *c, const char *path, uint32_t flags, int *rc)
{
    rig_req(&r, cellar_Request_open_tag);
    strcpy(r.rq.body.open.path, path);
    r.rq.body.open.flags = flags;
    *rc = rig_call(&r, c);
    return *rc ? 0 : r.rs.body.open.handle;
}

static int write_h(svc_conn_t *c, uint32_t h, uint32_t off, const char *data)
{
    rig_req(&r, cellar_Request_write_tag);
    r.rq.body.write.handle = h;
    r.rq.body.write.offset = off;
    r.rq.body.write.data.size = (pb_size_t)strlen(data);
    memcpy(r.rq.body.write.data.bytes, data, strlen(data));
    return rig_call(&r, c);
}

static int read_h(svc_conn_t *c, uint32_t h, char *out, size_t cap)
{
    rig_req(&r, cellar_Request_read_tag);
    r.rq.body.read.handle = h;
    r.rq.body.read.length = (uint32_t)cap - 1;
    int rc = rig_call(&r, c);
    if (!rc) {
        memcpy(out, r.rs.body.read.data.bytes, r.rs.body.read.data.size);
        out[r.rs.body.read.data.size] = 0;
    }
    return rc;
}

static int close_h(svc_conn_t *c, uint32_t h)
{
    rig_req(&r, cellar_Request_close_tag);
    r.rq.body.close.handle = h;
    return rig_call(&r, c);
}

static int statfs_sd(void)
{
    rig_req(&r, cellar_Request_statfs_tag);
    strcpy(r.rq.body.statfs.path, "/sd");
    return rig_call(&r, &r.a);
}

static int content_is(const char *path, const char *want)
{
    uint8_t *b;
    uint32_t n;
    int rc = rig_get(&r, &r.a, path, &b, &n);
    int ok = rc == 0 && n == strlen(want) && memcmp(b, want, n) == 0;
    free(b);
    return ok;
}

static void served(void)
{
    const uint32_t W = cellar_OpenFlags_O_WRITE | cellar_OpenFlags_O_CREATE |
                       cellar_OpenFlags_O_TRUNC;
    const uint32_t R = cellar_OpenFlags_O_READ;
    int rc;
    CHECK_EQ(rig_init(&r, 256, NULL), 0);
    make_card(8192);
    bd.sector_count = sectors_;
    CHECK_EQ(svc_sd_attach(&r.svc, &sd, &bd), 0);
    CHECK(rig_log_has(&r, "mounted /sd (FAT16"));

    /* Hello and List of "/" */
    rig_req(&r, cellar_Request_hello_tag);
    r.rq.body.hello.version = 1;
    CHECK_EQ(rig_call(&r, &r.a), 0);
    cellar_HelloReply *hr = &r.rs.body.hello;
    CHECK_EQ(hr->partitions_count, 3);
    CHECK(strcmp(hr->partitions[2].path, "/sd") == 0);
    CHECK_EQ(hr->partitions[2].kind, cellar_PartKind_PART_FAT);
    CHECK_EQ(hr->partitions[2].state, cellar_PartState_PART_OK);
    CHECK_EQ(hr->partitions[0].kind, cellar_PartKind_PART_CFS);
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_list_tag, "/"), 0);
    CHECK_EQ(r.rs.body.list.entries_count, 3);
    CHECK(strcmp(r.rs.body.list.entries[2].name, "sd") == 0);

    /* handles of /usr and /sd on one connection never mix */
    uint32_t hu = open_h(&r.a, "/usr/same.txt", W | R, &rc);
    CHECK_EQ(rc, 0);
    uint32_t hs = open_h(&r.a, "/sd/same.txt", W | R, &rc);
    CHECK_EQ(rc, 0);
    CHECK(hu != hs && (hs & 15u) == 15u && (hu & 15u) != 15u);
    CHECK_EQ(write_h(&r.a, hu, 0, "flash data"), 0);
    CHECK_EQ(write_h(&r.a, hs, 0, "card data"), 0);
    char buf[64];
    CHECK_EQ(read_h(&r.a, hs, buf, sizeof(buf)), 0);
    CHECK(strcmp(buf, "card data") == 0);
    CHECK_EQ(read_h(&r.a, hu, buf, sizeof(buf)), 0);
    CHECK(strcmp(buf, "flash data") == 0);
    CHECK_EQ(read_h(&r.b, hs, buf, sizeof(buf)), cellar_Code_EBADF); /* not b's */
    CHECK_EQ(close_h(&r.b, hs), cellar_Code_EBADF);
    /* the name holds nothing until Close publishes the shadow */
    CHECK_EQ(rig_path_op(&r, &r.b, cellar_Request_stat_tag, "/sd/same.txt"),
             cellar_Code_ENOENT);
    CHECK_EQ(close_h(&r.a, hs), 0);
    CHECK_EQ(close_h(&r.a, hu), 0);
    CHECK_EQ(close_h(&r.a, hs), cellar_Code_EBADF); /* closed */
    CHECK(content_is("/sd/same.txt", "card data"));
    CHECK(content_is("/usr/same.txt", "flash data"));
    CHECK(content_is("//sd//same.txt", "card data"));

    /* an overwrite: readers see the old file until Close */
    hs = open_h(&r.a, "/sd/same.txt", cellar_OpenFlags_O_WRITE, &rc);
    CHECK_EQ(rc, 0);
    CHECK_EQ(write_h(&r.a, hs, 5, "DATA+more"), 0);
    CHECK(content_is("/sd/same.txt", "card data"));
    CHECK_EQ(close_h(&r.a, hs), 0);
    CHECK(content_is("/sd/same.txt", "card DATA+more"));
    /* a dropped connection: the shadow goes, the file stays */
    hs = open_h(&r.b, "/sd/same.txt", W, &rc);
    CHECK_EQ(write_h(&r.b, hs, 0, "lost"), 0);
    uint32_t hnew = open_h(&r.b, "/sd/never.txt", W, &rc);
    CHECK_EQ(rc, 0);
    (void)hnew;
    svc_conn_close(&r.svc, &r.b, "test");
    svc_conn_open(&r.svc, &r.b, "b again");
    CHECK(content_is("/sd/same.txt", "card DATA+more"));
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_stat_tag, "/sd/never.txt"),
             cellar_Code_ENOENT);
    fat_dir_t d;
    fat_stat_t st;
    CHECK_EQ(fat_dir_open(&sd.fat, "/.cellar", &d), 0);
    CHECK_EQ(fat_dir_read(&sd.fat, &d, &st), 0); /* no shadow left */

    /* an idle write handle is closed without publishing */
    hs = open_h(&r.a, "/sd/same.txt", W, &rc);
    CHECK_EQ(write_h(&r.a, hs, 0, "idle"), 0);
    r.svc.idle_ms = 60000; /* the rig runs without idle timeouts */
    rig_tick(&r, 40000); /* the handle and the connection idle */
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_stat_tag, "/sd"), 0); /* the connection not */
    rig_tick(&r, 40000);
    r.svc.idle_ms = SVC_IDLE_NEVER;
    CHECK(rig_log_has(&r, "closed: idle for 80 s"));
    CHECK_EQ(close_h(&r.a, hs), cellar_Code_EBADF);
    CHECK(content_is("/sd/same.txt", "card DATA+more"));

    /* namespace requests */
    rig_req(&r, cellar_Request_mkdir_tag);
    strcpy(r.rq.body.mkdir.path, "/sd/a/b c/d");
    r.rq.body.mkdir.parents = true;
    CHECK_EQ(rig_call(&r, &r.a), 0);
    CHECK_EQ(rig_call(&r, &r.a), 0); /* -p: there already */
    r.rq.body.mkdir.parents = false;
    CHECK_EQ(rig_call(&r, &r.a), cellar_Code_EEXIST); /* without -p */
    CHECK_EQ(rig_put(&r, &r.a, "/sd/a/b c/d/Long Name File.txt", "x", 1), 0);
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_stat_tag, "/sd/A/B C/D/long name file.TXT"), 0);
    CHECK(strcmp(r.rs.body.stat.info.name, "/sd/A/B C/D/long name file.TXT") == 0);
    CHECK_EQ(r.rs.body.stat.info.size, 1);
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_rmdir_tag, "/sd/a"), cellar_Code_ENOTEMPTY);
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_remove_tag, "/sd/a"), cellar_Code_EISDIR);
    rig_req(&r, cellar_Request_rename_tag);
    strcpy(r.rq.body.rename.from, "/sd/a/b c/d/Long Name File.txt");
    strcpy(r.rq.body.rename.to, "/sd/moved.txt");
    CHECK_EQ(rig_call(&r, &r.a), 0);
    rig_req(&r, cellar_Request_rename_tag);
    strcpy(r.rq.body.rename.from, "/sd/moved.txt");
    strcpy(r.rq.body.rename.to, "/usr/moved.txt");
    CHECK_EQ(rig_call(&r, &r.a), cellar_Code_EINVAL);
    rig_req(&r, cellar_Request_rename_tag);
    strcpy(r.rq.body.rename.from, "/sd/a");
    strcpy(r.rq.body.rename.to, "/sd/a/b c/inside");
    CHECK_EQ(rig_call(&r, &r.a), cellar_Code_EINVAL);
    /* List with a cursor: pages of 2 */
    for (int i = 0; i < 5; i++) {
        char p[64];
        snprintf(p, sizeof(p), "/sd/a/file %d.txt", i);
        CHECK_EQ(rig_put(&r, &r.a, p, p, (uint32_t)strlen(p)), 0);
    }
    uint32_t cursor = 0, seen = 0;
    for (int pages = 0; pages < 10; pages++) {
        rig_req(&r, cellar_Request_list_tag);
        strcpy(r.rq.body.list.path, "/sd/a");
        r.rq.body.list.cursor = cursor;
        r.rq.body.list.max_entries = 2;
        CHECK_EQ(rig_call(&r, &r.a), 0);
        seen += r.rs.body.list.entries_count;
        cursor = r.rs.body.list.next_cursor;
        if (!cursor)
            break;
    }
    CHECK_EQ(seen, 6); /* "b c" and five files */

    /* Hash, Truncate by path, Seek, StatFs */
    rig_req(&r, cellar_Request_hash_tag);
    strcpy(r.rq.body.hash.path, "/sd/same.txt");
    CHECK_EQ(rig_call(&r, &r.a), 0);
    uint8_t want[32];
    csha_t sha;
    csha_init(&sha);
    csha_start(&sha);
    csha_update(&sha, "card DATA+more", 14);
    csha_finish(&sha, want);
    csha_free(&sha);
    CHECK(memcmp(r.rs.body.hash.sha256, want, 32) == 0);
    CHECK_EQ(r.rs.body.hash.length, 14);

    /* A Hash of a large file runs in steps (a long request): a Ping on
     * the other connection is answered while it runs; then the digest. */
    {
        static uint8_t big[200000], w[1024];
        svc_conn_close(&r.svc, &r.b, "test"); /* b went idle above: anew */
        svc_conn_open(&r.svc, &r.b, "b 3");
        for (uint32_t i = 0; i < sizeof(big); i++)
            big[i] = (uint8_t)(i * 7 + (i >> 9));
        CHECK_EQ(rig_put(&r, &r.a, "/sd/big.bin", big, sizeof(big)), 0);
        rig_req(&r, cellar_Request_hash_tag);
        strcpy(r.rq.body.hash.path, "/sd/big.bin");
        r.rq.id = ++r.next_id;
        int n = codec_encode_request(&r.rq, w, sizeof(w));
        CHECK(n > 0);
        CHECK_EQ(svc_conn_input(&r.a, w, (size_t)n), (size_t)n);
        CHECK(svc_process(&r.svc));
        CHECK(r.svc.job.kind == SVC_JOB_EXT); /* still hashing */
        rig_req(&r, cellar_Request_ping_tag);
        CHECK_EQ(rig_call(&r, &r.b), 0);
        while (svc_process(&r.svc))
            ;
        const uint8_t *p;
        size_t len, have = 0;
        static uint8_t acc[4096];
        while (svc_conn_output(&r.a, &p, &len)) {
            if (have + len <= sizeof(acc))
                memcpy(acc + have, p, len);
            have += len;
            svc_conn_consumed(&r.a, len);
        }
        cellar_Response rs;
        memset(&rs, 0, sizeof(rs));
        CHECK(have > CODEC_HDR && have <= sizeof(acc) &&
              codec_decode_response(&rs, acc + CODEC_HDR, have - CODEC_HDR, NULL) == 0);
        csha_init(&sha);
        csha_start(&sha);
        csha_update(&sha, big, sizeof(big));
        csha_finish(&sha, want);
        csha_free(&sha);
        CHECK(!rs.has_error && memcmp(rs.body.hash.sha256, want, 32) == 0);
        CHECK_EQ(rs.body.hash.length, sizeof(big));
        CHECK(r.svc.job.kind == SVC_JOB_NONE);
    }
    rig_req(&r, cellar_Request_truncate_tag);
    strcpy(r.rq.body.truncate.path, "/sd/same.txt");
    r.rq.body.truncate.size = 4;
    CHECK_EQ(rig_call(&r, &r.a), 0);
    CHECK(content_is("/sd/same.txt", "card"));
    hs = open_h(&r.a, "/sd/same.txt", R, &rc);
    rig_req(&r, cellar_Request_seek_tag);
    r.rq.body.seek.handle = hs;
    r.rq.body.seek.whence = 2;
    CHECK_EQ(rig_call(&r, &r.a), 0);
    CHECK_EQ(r.rs.body.seek.position, 4);
    CHECK_EQ(write_h(&r.a, hs, 0, "no"), cellar_Code_EBADF); /* read-only */
    CHECK_EQ(close_h(&r.a, hs), 0);
    CHECK_EQ(statfs_sd(), 0);
    CHECK(r.rs.body.statfs.total > 3000000 && r.rs.body.statfs.free > 0);
    CHECK_EQ(r.rs.body.statfs.block_size, 512);

    /* bad input */
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_list_tag, "/sd/.cellar"), cellar_Code_EACCES);
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_stat_tag, "/sd/../usr"), cellar_Code_EINVAL);
    CHECK_EQ(rig_put(&r, &r.a, "/sd/bad|name", "x", 1), cellar_Code_EINVAL);
    CHECK_EQ(rig_put(&r, &r.a, "/sd/nodir/x", "x", 1), cellar_Code_ENOENT);
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_remove_tag, "/sd"), cellar_Code_EPERM);
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_stat_tag, "/sdx"), cellar_Code_ENOENT); /* not /sd */

    /* a full card: the write fails, Close does not publish */
    CHECK_EQ(rig_put(&r, &r.a, "/sd/keep.bin", "old", 3), 0);
    hs = open_h(&r.a, "/sd/keep.bin", W, &rc);
    static uint8_t chunk[SVC_MAX_CHUNK];
    int wrc = 0;
    for (uint32_t off = 0; off < 8u * 1024 * 1024 && !wrc; off += sizeof(chunk)) {
        rig_req(&r, cellar_Request_write_tag);
        r.rq.body.write.handle = hs;
        r.rq.body.write.offset = off;
        r.rq.body.write.data.size = sizeof(chunk);
        memcpy(r.rq.body.write.data.bytes, chunk, sizeof(chunk));
        wrc = rig_call(&r, &r.a);
    }
    CHECK_EQ(wrc, cellar_Code_ENOSPC);
    CHECK(strstr(r.rs.error.message, "full") != NULL);
    CHECK_EQ(close_h(&r.a, hs), cellar_Code_EIO);
    CHECK(content_is("/sd/keep.bin", "old"));
    CHECK_EQ(statfs_sd(), 0);
    CHECK(r.rs.body.statfs.free > 4000000); /* the shadow's clusters came back */

    /* a corrupt chain: EILSEQ with the reason, the service goes on */
    static uint8_t big[40000];
    memset(big, 'z', sizeof(big));
    CHECK_EQ(rig_put(&r, &r.a, "/sd/chain.bin", big, sizeof(big)), 0);
    fat_stat_t cs;
    CHECK_EQ(fat_stat(&sd.fat, "/chain.bin", &cs), 0);
    for (uint32_t k = 0; k < 2; k++) { /* both FATs: the 3rd link is "free" */
        uint8_t *e = card_ + (size_t)(sd.fat.fat_lba + k * sd.fat.fat_sectors) * 512 +
                     (cs.cluster + 2) * 2;
        e[0] = e[1] = 0;
    }
    sd.fat.fbuf_valid = 0; /* drop the module's copy of the FAT sector */
    uint32_t hc = open_h(&r.a, "/sd/chain.bin", R, &rc);
    CHECK_EQ(rc, 0);
    rig_req(&r, cellar_Request_read_tag);
    r.rq.body.read.handle = hc;
    r.rq.body.read.offset = 30000;
    r.rq.body.read.length = 100;
    CHECK_EQ(rig_call(&r, &r.a), cellar_Code_EILSEQ);
    CHECK(strstr(r.rs.error.message, "corrupt") != NULL);
    CHECK_EQ(close_h(&r.a, hc), 0);
    CHECK(content_is("/sd/same.txt", "card"));

    rig_free(&r);
    CHECK_EQ(svc_sd_detach(&sd), 0);
}

static void unmounted(void)
{
    CHECK_EQ(rig_init(&r, 256, NULL), 0);
    memset(card_, 0x5A, (size_t)sectors_ * 512);
    CHECK_EQ(svc_sd_attach(&r.svc, &sd, &bd), FAT_ERR_NOTFAT);
    rig_req(&r, cellar_Request_hello_tag);
    r.rq.body.hello.version = 1;
    CHECK_EQ(rig_call(&r, &r.a), 0);
    CHECK_EQ(r.rs.body.hello.partitions[2].state, cellar_PartState_PART_UNMOUNTED);
    int found = 0;
    for (pb_size_t i = 0; i < r.rs.body.hello.problems_count; i++)
        found += strstr(r.rs.body.hello.problems[i], "/sd: the card holds no FAT") != NULL;
    CHECK_EQ(found, 1);
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_list_tag, "/sd"), cellar_Code_EIO);
    CHECK(strstr(r.rs.error.message, "not mounted") != NULL);
    CHECK_EQ(rig_put(&r, &r.a, "/sd/x", "x", 1), cellar_Code_EIO);
    CHECK_EQ(rig_put(&r, &r.a, "/usr/x", "x", 1), 0); /* the rest is served */
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_list_tag, "/"), 0);
    CHECK_EQ(r.rs.body.list.entries_count, 3);
    rig_free(&r);
    CHECK_EQ(svc_sd_detach(&sd), 0);
    /* no card at all */
    CHECK_EQ(rig_init(&r, 256, NULL), 0);
    CHECK(svc_sd_attach(&r.svc, &sd, NULL) < 0);
    CHECK_EQ(rig_path_op(&r, &r.a, cellar_Request_stat_tag, "/sd/x"), cellar_Code_EIO);
    rig_free(&r);
    svc_sd_detach(&sd);
}

int main(void)
{
    served();
    unmounted();
    free(card_);
    return check_summary("svc_sd");
}
