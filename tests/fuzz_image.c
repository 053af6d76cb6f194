/*
 * fuzz_image.c - libFuzzer target: a damaged filesystem image.
 *
 * A small image with directories, files of several sizes, a rename, a
 * removal and an uncommitted tail is built once. Each input is a list of
 * 4-byte damages {offset (3 bytes), xor mask} applied to a copy of it; the
 * copy is then mounted, checked with cfs_fsck, every file is listed and read,
 * a new file is written and the fs is mounted again. Any outcome is fine
 * except a crash, a sanitizer report, a hang or a program that sets a bit
 * (the simulator counts those).
 *
 *   make fuzz            (FUZZ_SECONDS per target)
 *   build/fuzz/fuzz_image -max_total_time=60
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash_sim.h"
#include "cfs.h"

#define BLOCKS 32u
#define BSIZE 4096u

static uint8_t base[BLOCKS * BSIZE];
static int built;

static void put(cfs_t *fs, const char *path, uint32_t len, uint8_t tag, int sync)
{
    static uint8_t buf[20000];
    cfs_file_t f;
    for (uint32_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(tag + i * 7);
    if (cfs_file_open(fs, &f, path, CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC) != 0)
        return;
    (void)cfs_file_write(fs, &f, buf, len);
    if (sync)
        (void)cfs_file_close(fs, &f);
}

static void build(void)
{
    flash_sim_config_t sc = {.block_size = BSIZE, .block_count = BLOCKS, .seed = 1};
    flash_sim_t *sim = flash_sim_new(&sc);
    cfs_config_t cfg = {.dev = flash_sim_dev(sim)};
    cfs_t fs;
    if (!sim || cfs_format(&fs, &cfg) || cfs_mount(&fs, &cfg))
        abort();
    (void)cfs_mkdir(&fs, "/lib");
    (void)cfs_mkdir(&fs, "/lib/deep");
    put(&fs, "/main.py", 700, 1, 1);
    put(&fs, "/lib/util.py", 5000, 2, 1);
    put(&fs, "/lib/deep/blob.bin", 17000, 3, 1);
    put(&fs, "/tmp.bin", 3000, 4, 1);
    (void)cfs_rename(&fs, "/tmp.bin", "/lib/moved.bin");
    put(&fs, "/gone", 100, 5, 1);
    (void)cfs_remove(&fs, "/gone");
    (void)cfs_unmount(&fs);
    (void)cfs_mount(&fs, &cfg);
    put(&fs, "/main.py", 900, 6, 1); /* journal after the checkpoint */
    put(&fs, "/pending", 2000, 7, 0); /* never committed */
    memcpy(base, flash_sim_data(sim), sizeof(base));
    flash_sim_free(sim);
    built = 1;
}

static void read_all(cfs_t *fs, const char *dir, int depth)
{
    cfs_dir_t d;
    char name[CFS_NAME_MAX + 1], path[CFS_PATH_MAX + 1];
    cfs_stat_t st;
    static uint8_t buf[4096];
    if (depth > 8 || cfs_dir_open(fs, &d, dir) != 0)
        return;
    for (int n = 0; n < 200 && cfs_dir_read(fs, &d, name, sizeof(name), &st) == 1; n++) {
        int len = snprintf(path, sizeof(path), "%s/%s", strcmp(dir, "/") ? dir : "", name);
        if (len < 0 || len >= (int)sizeof(path))
            continue;
        if (st.type == CFS_TYPE_DIR) {
            read_all(fs, path, depth + 1);
            continue;
        }
        cfs_file_t f;
        if (cfs_file_open(fs, &f, path, CFS_O_RDONLY) != 0)
            continue;
        for (int k = 0; k < 64 && cfs_file_read(fs, &f, buf, sizeof(buf)) > 0; k++)
            ;
        (void)cfs_file_close(fs, &f);
    }
    (void)cfs_dir_close(fs, &d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!built)
        build();
    if (size > 4 * 256)
        return 0;
    flash_sim_config_t sc = {.block_size = BSIZE, .block_count = BLOCKS, .seed = 2};
    flash_sim_t *sim = flash_sim_new(&sc);
    if (!sim)
        return 0;
    uint8_t *img = flash_sim_data(sim);
    memcpy(img, base, sizeof(base));
    for (size_t i = 0; i + 4 <= size; i += 4) {
        uint32_t off = ((uint32_t)data[i] | (uint32_t)data[i + 1] << 8 |
                        (uint32_t)data[i + 2] << 16) % (uint32_t)sizeof(base);
        img[off] ^= data[i + 3];
    }
    cfs_config_t cfg = {.dev = flash_sim_dev(sim)};
    cfs_t fs;
    if (cfs_mount(&fs, &cfg) == 0) {
        (void)cfs_fsck(&fs, NULL, NULL);
        read_all(&fs, "/", 0);
        cfs_statvfs_t v;
        (void)cfs_statvfs(&fs, &v);
        put(&fs, "/new.txt", 3000, 9, 1);
        (void)cfs_rename(&fs, "/new.txt", "/main.py");
        (void)cfs_gc(&fs, 2);
        (void)cfs_unmount(&fs);
        if (cfs_mount(&fs, &cfg) == 0) {
            read_all(&fs, "/", 0);
            (void)cfs_unmount(&fs);
        }
    }
    flash_sim_stats_t st;
    flash_sim_stats(sim, &st);
    if (st.illegal_progs)
        abort(); /* the fs tried to set a bit without an erase */
    flash_sim_free(sim);
    return 0;
}
