/*
 * svc_sd.h - the SD card at /sd (issue 15): a FAT16/FAT32 card (fs/fat/fat.h)
 * served through the same file requests as /usr (Stat, List, Open, Read,
 * Write, Seek, Truncate, Sync, Close, Remove, Mkdir, Rmdir, Rename, StatFs,
 * Hash), with the same shadow-and-rename rule for writes: a file opened for
 * writing is written as a shadow in /.cellar on the card and renamed over
 * its name at Close (docs/FAT.md).
 *
 * The caller owns the svc_sd_t and the card's block device, and attaches
 * them after svc_setup:
 *   static svc_sd_t sd;
 *   svc_sd_attach(&svc, &sd, &card_bd);   // < 0: /sd shows as unmounted
 *   ... serve ...
 *   svc_free(&svc); svc_sd_detach(&sd);
 * A card that is missing or not FAT leaves /sd unmounted with a problem
 * line in HelloReply.problems; everything else is served as before.
 * Portable device-side code: no OS calls, no allocation, no stdio.
 */
#ifndef CELLAR_SVC_SD_H
#define CELLAR_SVC_SD_H

#include "fat/fat.h"

struct svc;
struct svc_conn;

/* Client handles open on the card, all connections together; the card's
 * last open file is the service's (the source of a shadow's copy). */
#define SVC_SD_HANDLES (FAT_MAX_OPEN - 1u)
#define SVC_SD_DIR "/.cellar" /* the service's own directory on the card */

typedef struct svc_sd_handle {
    uint32_t id;               /* 0 = free; (seq << 4) | 0xF */
    struct svc_conn *conn;
    fat_file_t *f;             /* the file, or its shadow */
    uint8_t readable, writable, append, shadow;
    uint8_t failed;            /* a write or truncate failed: Close drops the shadow */
    uint32_t pos;              /* Seek's position */
    uint64_t last_ms;          /* last use, for the idle timeout */
    char shadow_path[24];      /* "/.cellar/w17" */
    char fs[FAT_PATH_MAX + 2]; /* the path on the card */
    char show[FAT_PATH_MAX + 8]; /* "/sd/..." for messages */
} svc_sd_handle_t;

typedef struct svc_sd {
    fat_t fat;
    uint8_t mounted;
    int mount_err;             /* fat_mount's error when not mounted */
    uint32_t sectors;
    uint32_t seq, shadow_seq;
    svc_sd_handle_t h[SVC_SD_HANDLES];
    fat_file_t *hf;            /* the file a Hash job reads (svc_sd.c) */
    uint8_t hown;              /* hf was opened by the job (closed at its end) */
    int hrc;                   /* the Hash's result when it ended in its
                                  first step */
} svc_sd_t;

/* Mount the card (bd may be NULL: no card) and serve it at /sd. Returns 0
 * or the mount error (then /sd is listed as unmounted, with a problem). */
int svc_sd_attach(struct svc *s, svc_sd_t *sd, const fat_blk_t *bd);
/* Unmount (after svc_free, or before: its handles are closed). NULL-safe. */
int svc_sd_detach(svc_sd_t *sd);

#endif /* CELLAR_SVC_SD_H */
