/* svc_rig.c - see svc_rig.h. */
#include "svc_rig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void rig_log(void *ctx, const char *line)
{
    rig_t *r = ctx;
    size_t n = strlen(line);
    if (r->loglen + n + 2 < sizeof(r->log)) {
        memcpy(r->log + r->loglen, line, n);
        r->loglen += n;
        r->log[r->loglen++] = '\n';
        r->log[r->loglen] = 0;
    }
    if (getenv("RIG_LOG"))
        fprintf(stderr, "log: %s\n", line);
}

static uint32_t rig_clock(void *ctx)
{
    rig_t *r = ctx;
    return (uint32_t)(1700000000u + r->now_ms / 1000);
}

static int setup(rig_t *r)
{
    svc_init(&r->svc);
    svc_tick(&r->svc, r->now_ms);
    int err = svc_setup(&r->svc, &r->cfg);
    if (err)
        return err;
    svc_tick(&r->svc, r->now_ms);
    if (r->card)
        r->card_err = svc_sd_attach(&r->svc, &r->sd, &r->card_bd);
    svc_conn_open(&r->svc, &r->a, "rig a");
    svc_conn_open(&r->svc, &r->b, "rig b");
    return 0;
}

int rig_init(rig_t *r, uint32_t blocks, const svc_config_t *base)
{
    flash_sim_config_t fc = { .block_count = blocks, .seed = 7 };
    memset(r, 0, sizeof(*r));
    r->sim = flash_sim_new(&fc);
    if (!r->sim)
        return -12;
    if (base)
        r->cfg = *base;
    r->cfg.dev = flash_sim_dev(r->sim);
    r->cfg.log = rig_log;
    r->cfg.log_ctx = r;
    r->cfg.clock = rig_clock;
    r->cfg.clock_ctx = r;
    r->cfg.provision = true;
    if (!r->cfg.idle_timeout_ms)
        r->cfg.idle_timeout_ms = SVC_IDLE_NEVER;
    r->now_ms = 1000;
    r->next_id = 1;
    return setup(r);
}

void rig_stop(rig_t *r)
{
    if (r->a.svc)
        svc_conn_close(&r->svc, &r->a, "rig stop");
    if (r->b.svc)
        svc_conn_close(&r->svc, &r->b, "rig stop");
    (void)svc_free(&r->svc); /* may fail after a power cut */
    if (r->card)
        (void)svc_sd_detach(&r->sd);
}

int rig_start(rig_t *r)
{
    return setup(r);
}

int rig_restart(rig_t *r)
{
    rig_stop(r);
    return setup(r);
}

void rig_free(rig_t *r)
{
    if (r->a.svc)
        svc_conn_close(&r->svc, &r->a, "rig done");
    if (r->b.svc)
        svc_conn_close(&r->svc, &r->b, "rig done");
    (void)svc_free(&r->svc);
    if (r->card)
        (void)svc_sd_detach(&r->sd);
    free(r->card);
    free(r->card_fresh);
    r->card = r->card_fresh = NULL;
    flash_sim_free(r->sim);
    r->sim = NULL;
}

void rig_req(rig_t *r, pb_size_t which)
{
    memset(&r->rq, 0, sizeof(r->rq));
    r->rq.which_body = which;
}

void rig_tick(rig_t *r, uint64_t add_ms)
{
    r->now_ms += add_ms;
    svc_tick(&r->svc, r->now_ms);
}

bool rig_log_has(const rig_t *r, const char *s)
{
    return strstr(r->log, s) != NULL;
}

static int exchange(rig_t *r, svc_conn_t *c, int n);

int rig_call(rig_t *r, svc_conn_t *c)
{
    r->rq.id = ++r->next_id;
    int n = codec_encode_request(&r->rq, r->wire + 0, sizeof(r->wire));
    if (n < 0)
        return -2000;
    return exchange(r, c, n);
}

uint32_t rig_raw_id(const rig_t *r)
{
    return r->next_id + 1;
}

int rig_call_raw(rig_t *r, svc_conn_t *c, const uint8_t *body, size_t n)
{
    if (n + CODEC_HDR > sizeof(r->wire))
        return -2000;
    memset(&r->rq, 0, sizeof(r->rq));
    r->rq.id = ++r->next_id;
    codec_put_len(r->wire, (uint32_t)n);
    memcpy(r->wire + CODEC_HDR, body, n);
    return exchange(r, c, (int)(n + CODEC_HDR));
}

/* Feed n wire bytes to c, serve, and decode the one reply into r->rs. */
static int exchange(rig_t *r, svc_conn_t *c, int n)
{
    size_t off = 0;
    while (off < (size_t)n) {
        size_t k = svc_conn_input(c, r->wire + off, (size_t)n - off);
        if (k == 0)
            return -2001;
        off += k;
        while (svc_process(&r->svc))
            ;
    }
    while (svc_process(&r->svc))
        ;
    /* one reply */
    static uint8_t acc[2 * CODEC_BUF_MIN];
    size_t have = 0;
    const uint8_t *p;
    size_t len;
    while (svc_conn_output(c, &p, &len)) {
        if (have + len > sizeof(acc))
            return -2002;
        memcpy(acc + have, p, len);
        have += len;
        svc_conn_consumed(c, len);
    }
    if (have < CODEC_HDR)
        return -2003;
    uint32_t fl = codec_get_len(acc);
    memset(&r->rs, 0, sizeof(r->rs));
    if (CODEC_HDR + fl != have ||
        codec_decode_response(&r->rs, acc + CODEC_HDR, fl, NULL) != 0)
        return -2004;
    if (r->rs.id != r->rq.id)
        return -2005;
    if (r->rs.has_error && getenv("RIG_LOG"))
        fprintf(stderr, "  -> %s %s\n", svc_code_name(r->rs.error.code),
                r->rs.error.message);
    return r->rs.has_error ? (int)r->rs.error.code : 0;
}

int rig_path_op(rig_t *r, svc_conn_t *c, pb_size_t which, const char *path)
{
    rig_req(r, which);
    switch (which) {
    case cellar_Request_stat_tag: strcpy(r->rq.body.stat.path, path); break;
    case cellar_Request_remove_tag: strcpy(r->rq.body.remove.path, path); break;
    case cellar_Request_rmdir_tag: strcpy(r->rq.body.rmdir.path, path); break;
    case cellar_Request_mkdir_tag:
        strcpy(r->rq.body.mkdir.path, path);
        r->rq.body.mkdir.parents = true;
        break;
    case cellar_Request_hash_tag: strcpy(r->rq.body.hash.path, path); break;
    case cellar_Request_list_tag: strcpy(r->rq.body.list.path, path); break;
    default: return -1;
    }
    return rig_call(r, c);
}

int rig_open(rig_t *r, svc_conn_t *c, const char *path, uint32_t flags, uint32_t *h)
{
    rig_req(r, cellar_Request_open_tag);
    strcpy(r->rq.body.open.path, path);
    r->rq.body.open.flags = flags;
    int rc = rig_call(r, c);
    *h = rc ? 0 : r->rs.body.open.handle;
    return rc;
}

int rig_write(rig_t *r, svc_conn_t *c, uint32_t h, uint64_t off, const void *data, uint32_t n)
{
    rig_req(r, cellar_Request_write_tag);
    r->rq.body.write.handle = h;
    r->rq.body.write.offset = off;
    r->rq.body.write.data.size = (pb_size_t)n;
    memcpy(r->rq.body.write.data.bytes, data, n);
    return rig_call(r, c);
}

int rig_close(rig_t *r, svc_conn_t *c, uint32_t h)
{
    rig_req(r, cellar_Request_close_tag);
    r->rq.body.close.handle = h;
    return rig_call(r, c);
}

int rig_verify(rig_t *r, svc_conn_t *c, const char *part, bool repair)
{
    int n = 0;
    uint32_t cursor = 0;
    do {
        rig_req(r, cellar_Request_verify_tag);
        strcpy(r->rq.body.verify.partition, part);
        r->rq.body.verify.cursor = cursor;
        r->rq.body.verify.repair = repair;
        if (rig_call(r, c))
            return -1;
        for (pb_size_t i = 0; i < r->rs.body.verify.problems_count; i++)
            if (!r->rs.body.verify.problems[i].repaired)
                n++;
        cursor = r->rs.body.verify.next_cursor;
    } while (cursor);
    return n;
}

int rig_put(rig_t *r, svc_conn_t *c, const char *path, const void *data,
            uint32_t n)
{
    uint32_t h;
    int rc = rig_open(r, c, path, cellar_OpenFlags_O_WRITE | cellar_OpenFlags_O_CREATE |
                                      cellar_OpenFlags_O_TRUNC, &h);
    if (rc)
        return rc;
    for (uint32_t off = 0; off < n && !rc;) {
        uint32_t k = n - off < SVC_MAX_CHUNK ? n - off : SVC_MAX_CHUNK;
        rc = rig_write(r, c, h, off, (const uint8_t *)data + off, k);
        off += k;
    }
    int rc2 = rig_close(r, c, h);
    return rc ? rc : rc2;
}

int rig_get(rig_t *r, svc_conn_t *c, const char *path, uint8_t **out,
            uint32_t *n)
{
    *out = NULL;
    *n = 0;
    rig_req(r, cellar_Request_open_tag);
    strcpy(r->rq.body.open.path, path);
    r->rq.body.open.flags = cellar_OpenFlags_O_READ;
    int rc = rig_call(r, c);
    if (rc)
        return rc;
    uint32_t h = r->rs.body.open.handle;
    uint32_t size = (uint32_t)r->rs.body.open.size;
    uint8_t *buf = malloc(size ? size : 1);
    for (uint32_t off = 0; off < size && !rc;) {
        rig_req(r, cellar_Request_read_tag);
        r->rq.body.read.handle = h;
        r->rq.body.read.offset = off;
        r->rq.body.read.length = SVC_MAX_CHUNK;
        rc = rig_call(r, c);
        if (!rc) {
            uint32_t k = r->rs.body.read.data.size;
            if (k == 0 || off + k > size) {
                rc = -2010;
                break;
            }
            memcpy(buf + off, r->rs.body.read.data.bytes, k);
            off += k;
        }
    }
    rig_req(r, cellar_Request_close_tag);
    r->rq.body.close.handle = h;
    int rc2 = rig_call(r, c);
    if (rc || rc2) {
        free(buf);
        return rc ? rc : rc2;
    }
    *out = buf;
    *n = size;
    return 0;
}

/* ---- the card (issue 15) ---------------------------------------------------- */

static int card_rd(const fat_blk_t *bd, uint32_t lba, void *buf, uint32_t n)
{
    rig_t *r = bd->context;
    if ((uint64_t)lba + n > r->card_sectors)
        return -5;
    memcpy(buf, r->card + (size_t)lba * 512, (size_t)n * 512);
    return 0;
}

static int card_wr(const fat_blk_t *bd, uint32_t lba, const void *buf, uint32_t n)
{
    rig_t *r = bd->context;
    if ((uint64_t)lba + n > r->card_sectors)
        return -5;
    memcpy(r->card + (size_t)lba * 512, buf, (size_t)n * 512);
    if (lba < r->dirty_lo)
        r->dirty_lo = lba;
    if (lba + n > r->dirty_hi)
        r->dirty_hi = lba + n;
    return 0;
}

int rig_card(rig_t *r, unsigned kb)
{
    char path[256], cmd[600];
    snprintf(path, sizeof(path), "%s/svc_rig_card.%d.img",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    unlink(path);
    snprintf(cmd, sizeof(cmd), "mkfs.fat -F 16 -s 1 -C '%s' %u >/dev/null 2>&1", path, kb);
    int st = system(cmd);
    FILE *f = fopen(path, "rb");
    uint32_t sectors = kb * 2u;
    uint8_t *img = calloc(sectors, 512);
    bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && f && img &&
              fread(img, 512, sectors, f) == sectors;
    if (f)
        fclose(f);
    unlink(path);
    if (!ok) {
        free(img);
        return -1;
    }
    free(r->card);
    free(r->card_fresh);
    r->card_fresh = img;
    r->card = malloc((size_t)sectors * 512);
    memcpy(r->card, img, (size_t)sectors * 512);
    r->card_sectors = sectors;
    r->dirty_lo = sectors;
    r->dirty_hi = 0;
    r->card_bd = (fat_blk_t){ r, card_rd, card_wr, NULL, sectors };
    r->card_err = svc_sd_attach(&r->svc, &r->sd, &r->card_bd);
    return r->card_err;
}

void rig_card_reset(rig_t *r)
{
    if (!r->card || r->dirty_lo >= r->dirty_hi)
        return;
    memcpy(r->card + (size_t)r->dirty_lo * 512, r->card_fresh + (size_t)r->dirty_lo * 512,
           (size_t)(r->dirty_hi - r->dirty_lo) * 512);
    r->dirty_lo = r->card_sectors;
    r->dirty_hi = 0;
}

void rig_identity(rig_t *r, svc_conn_t *c, const char *identity)
{
    svc_conn_set_identity(&r->svc, c, identity);
}

int rig_stage_one(rig_t *r, const uint8_t id[32], const char *path, const uint8_t *data,
                  uint32_t n, const uint8_t digest[32])
{
    int rc;
    rig_req(r, cellar_Request_update_begin_tag);
    r->rq.body.update_begin.bundle.size = 32;
    memcpy(r->rq.body.update_begin.bundle.bytes, id, 32);
    r->rq.body.update_begin.entries = 1;
    r->rq.body.update_begin.bytes = n;
    if ((rc = rig_call(r, &r->a)) != 0)
        return rc;
    rig_req(r, cellar_Request_update_declare_tag);
    cellar_UpdateDeclareRequest *d = &r->rq.body.update_declare;
    d->bundle.size = 32;
    memcpy(d->bundle.bytes, id, 32);
    d->entries_count = 1;
    snprintf(d->entries[0].path, sizeof(d->entries[0].path), "%s", path);
    d->entries[0].size = n;
    d->entries[0].sha256.size = 32;
    memcpy(d->entries[0].sha256.bytes, digest, 32);
    if ((rc = rig_call(r, &r->a)) != 0)
        return rc;
    for (uint32_t off = 0; off < n; off += 16384) {
        uint32_t k = n - off < 16384 ? n - off : 16384;
        rig_req(r, cellar_Request_update_write_tag);
        r->rq.body.update_write.offset = off;
        r->rq.body.update_write.data.size = (pb_size_t)k;
        memcpy(r->rq.body.update_write.data.bytes, data + off, k);
        if ((rc = rig_call(r, &r->a)) != 0)
            return rc;
    }
    return 0;
}
