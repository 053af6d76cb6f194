/*
 * sweep_fill.c - can a full partition always be emptied? (issue 9, item 2)
 *
 * It prints which fills end emptied, writes JSON, and exits 1 unless all
 * did (all 40 since the room to move, docs/FS.md section 6; a sweep of
 * minutes, so not in make test: test_fs_unit runs the smaller fills).
 * Each case formats a partition and fills it until a write
 * fails with CFS_ERR_NOSPC, either with one file in writes of a given size
 * (never synced until its close) or with files of 2,305 bytes; then the
 * case is "emptied" when every file closes, every remove succeeds, a new
 * 5,000-byte file fits without an explicit cfs_gc, and fsck is clean.
 * Built twice by `make sweep-fill`: with the host profile's fs values and
 * with the device profile's (build/devfs).
 *
 *   sweep_fill [OUT.json]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash_sim.h"
#include "cfs.h"
#include "cfs_model.h"

typedef struct kase {
    uint32_t blocks;
    uint32_t chunk; /* one file in writes of this size; 0: many small files */
} kase_t;

typedef struct result {
    uint64_t bytes;   /* file data written until NOSPC */
    uint32_t files;   /* files made */
    uint32_t refused; /* closes and removes that failed */
    int after;        /* the new file's result */
    int fsck;
} result_t;

static int run(const kase_t *k, result_t *r)
{
    static uint8_t buf[8192];
    for (uint32_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    memset(r, 0, sizeof(*r));
    flash_sim_config_t sc = { .block_size = 4096, .block_count = k->blocks, .seed = 7 };
    flash_sim_t *sim = flash_sim_new(&sc);
    if (!sim)
        return -1;
    cfs_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.dev = flash_sim_dev(sim);
    cfs_t fs;
    if (cfs_format(&fs, &cfg) || cfs_mount(&fs, &cfg)) {
        flash_sim_free(sim);
        return -1;
    }
    char p[32];
    if (k->chunk) {
        cfs_file_t f;
        if (cfs_file_open(&fs, &f, "/fill", CFS_O_WRONLY | CFS_O_CREAT) == 0) {
            int w;
            while ((w = cfs_file_write(&fs, &f, buf, k->chunk)) == (int)k->chunk)
                r->bytes += (uint64_t)w;
            r->refused += cfs_file_close(&fs, &f) != 0;
            r->files = 1;
        }
        r->refused += cfs_remove(&fs, "/fill") != 0;
    } else {
        for (; r->files < 100000; r->files++) {
            snprintf(p, sizeof(p), "/m%u", (unsigned)r->files);
            if (fsm_write_file(&fs, p, buf, 2305) != 0)
                break;
            r->bytes += 2305;
        }
        (void)cfs_remove(&fs, p); /* the refused one, if it was created */
        for (uint32_t m = 0; m < r->files; m++) {
            snprintf(p, sizeof(p), "/m%u", (unsigned)m);
            r->refused += cfs_remove(&fs, p) != 0;
        }
    }
    r->after = fsm_write_file(&fs, "/after", buf, 5000);
    r->fsck = cfs_fsck(&fs, NULL, NULL);
    cfs_unmount(&fs);
    flash_sim_free(sim);
    return 0;
}

int main(int argc, char **argv)
{
    static const uint32_t sizes[] = { 256, 1024, 2048, 4096, 8192 };
    static const uint32_t chunks[] = { 768, 100, 4096, 0 };
    FILE *js = argc > 1 ? fopen(argv[1], "w") : NULL;
    if (js)
        fprintf(js, "{\"cases\": [");
    unsigned total = 0, emptied = 0;
    printf("%-8s %-22s %12s %7s %8s %6s %5s %s\n", "blocks", "fill", "bytes", "files", "refused",
           "after", "fsck", "emptied");
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
        for (size_t ci = 0; ci < sizeof(chunks) / sizeof(chunks[0]); ci++) {
            kase_t k = { sizes[si], chunks[ci] };
            result_t r;
            if (run(&k, &r)) {
                fprintf(stderr, "sweep_fill: cannot set up %u blocks\n", (unsigned)k.blocks);
                return 1;
            }
            char what[32];
            if (k.chunk)
                snprintf(what, sizeof(what), "one file, %u B writes", (unsigned)k.chunk);
            else
                snprintf(what, sizeof(what), "files of 2,305 B");
            int ok = r.refused == 0 && r.after == 0 && r.fsck == 0;
            total++;
            emptied += (unsigned)ok;
            printf("%-8u %-22s %12llu %7u %8u %6d %5d %s\n", (unsigned)k.blocks, what,
                   (unsigned long long)r.bytes, (unsigned)r.files, (unsigned)r.refused, r.after,
                   r.fsck, ok ? "yes" : "NO");
            if (js)
                fprintf(js, "%s\n  {\"blocks\": %u, \"chunk\": %u, \"bytes\": %llu, \"files\": %u, "
                            "\"refused\": %u, \"after\": %d, \"fsck\": %d, \"emptied\": %s}",
                        total > 1 ? "," : "", (unsigned)k.blocks, (unsigned)k.chunk,
                        (unsigned long long)r.bytes, (unsigned)r.files, (unsigned)r.refused,
                        r.after, r.fsck, ok ? "true" : "false");
        }
    if (js) {
        fprintf(js, "\n], \"emptied\": %u, \"total\": %u}\n", emptied, total);
        fclose(js);
    }
    printf("sweep-fill: %u of %u fills emptied\n", emptied, total);
    return emptied == total ? 0 : 1;
}
