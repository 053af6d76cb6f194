/*
 * svc_rig.h - a cellar service in-process on a RAM flash_sim, driven with
 * encoded requests (tests of the service core).
 *
 *   rig_init(&r, blocks, &cfg_extra);   provision + mount, conns a and b
 *   rig_req(&r, cellar_Request_stat_tag); strcpy(r.rq.body.stat.path, ..);
 *   rc = rig_call(&r, &r.a);            0 or the error Code; reply in r.rs
 *   rig_restart(&r);                    svc_free + svc_setup on the same flash
 *   rig_free(&r);
 */
#ifndef CELLAR_SVC_RIG_H
#define CELLAR_SVC_RIG_H

#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "flash_sim.h"
#include "svc_core.h"
#include "svc_sd.h"

typedef struct rig {
    flash_sim_t *sim;
    svc_t svc;
    svc_config_t cfg;
    svc_conn_t a, b;
    cellar_Request rq;
    cellar_Response rs;
    uint64_t now_ms;
    uint32_t next_id;
    char log[1 << 16];
    size_t loglen;
    uint8_t wire[2 * CODEC_BUF_MIN];
    /* rig_card: an in-RAM FAT card at /sd (issue 15), attached at every
     * start. Raw partitions (cfg.raw/nraw) and an ACL (cfg.acl) come in
     * through rig_init's base config. */
    svc_sd_t sd;
    fat_blk_t card_bd;
    uint8_t *card, *card_fresh;
    uint32_t card_sectors, dirty_lo, dirty_hi;
    int card_err; /* svc_sd_attach's result at the last start */
} rig_t;

/* blocks: device size in 4 KiB blocks; base: config fields to use (dev,
 * log and provision are set by the rig), or NULL. Returns 0 or the
 * svc_setup error. The rig is large: make it static. */
int rig_init(rig_t *r, uint32_t blocks, const svc_config_t *base);
/* Close conns, svc_free, svc_setup again (same flash), reopen conns.
 * Returns the svc_setup result. */
int rig_restart(rig_t *r);
void rig_free(rig_t *r);
/* The same in two steps, so a test can change the flash in between. */
void rig_stop(rig_t *r);
int rig_start(rig_t *r);

void rig_req(rig_t *r, pb_size_t which);
int rig_call(rig_t *r, svc_conn_t *c);
void rig_tick(rig_t *r, uint64_t add_ms);
bool rig_log_has(const rig_t *r, const char *s);

/* Convenience RPCs on connection c. */
int rig_put(rig_t *r, svc_conn_t *c, const char *path, const void *data,
            uint32_t n);
/* Open (handle in *h, 0 on error), one Write of n bytes at off, Close. */
int rig_open(rig_t *r, svc_conn_t *c, const char *path, uint32_t flags, uint32_t *h);
int rig_write(rig_t *r, svc_conn_t *c, uint32_t h, uint64_t off, const void *data, uint32_t n);
int rig_close(rig_t *r, svc_conn_t *c, uint32_t h);
/* Verify of partition part ("/usr"), every page: the problems not
 * repaired, or -1 when a Verify fails. */
int rig_verify(rig_t *r, svc_conn_t *c, const char *part, bool repair);
/* Read a whole file (malloc'd into *out, size *n). */
int rig_get(rig_t *r, svc_conn_t *c, const char *path, uint8_t **out,
            uint32_t *n);
int rig_path_op(rig_t *r, svc_conn_t *c, pb_size_t which, const char *path);
/* Stage a bundle of one entry on connection a: UpdateBegin with bundle id
 * `id` (32 bytes), UpdateDeclare of path (size n, SHA-256 digest) and the
 * data in 16 KiB UpdateWrites; the UpdateCommit is the caller's. Returns
 * 0 or the first error Code (CHECKed too). */
int rig_stage_one(rig_t *r, const uint8_t id[32], const char *path, const uint8_t *data,
                  uint32_t n, const uint8_t digest[32]);

/* Send one request whose body (the encoded Request message, without the
 * 4-byte length) the caller built byte by byte - for fields over their
 * caps, which the nanopb structs cannot hold. body must start with field 1
 * (id) = r->next_id + 1 (rig_raw_id gives it). Returns as rig_call. */
uint32_t rig_raw_id(const rig_t *r);

/* Give the rig a card at /sd: kb KiB formatted FAT16 by mkfs.fat
 * (dosfstools), attached now (after svc_setup) and at every later start,
 * detached at every stop. Returns 0, -1 when mkfs.fat fails, or the
 * attach error. rig_card_reset puts the freshly formatted content back
 * (call it between rig_stop and rig_start; it copies only the sectors
 * written since). */
int rig_card(rig_t *r, unsigned kb);
void rig_card_reset(rig_t *r);
/* The identity of connection c (svc_conn_set_identity): "anonymous" or an
 * authenticated name looked up in cfg.acl. */
void rig_identity(rig_t *r, svc_conn_t *c, const char *identity);
int rig_call_raw(rig_t *r, svc_conn_t *c, const uint8_t *body, size_t n);

#endif /* CELLAR_SVC_RIG_H */
