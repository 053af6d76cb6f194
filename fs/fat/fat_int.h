/* fat_int.h - what fat.c (volume, FAT, files) and fat_dir.c (directories,
 * names, paths) share. Private to fs/fat/. */
#ifndef CELLAR_FAT_INT_H
#define CELLAR_FAT_INT_H

#include "fat.h"

/* fat.c */
uint16_t fat_rd16(const uint8_t *p);
uint32_t fat_rd32(const uint8_t *p);
void fat_wr16(uint8_t *p, uint16_t v);
void fat_wr32(uint8_t *p, uint32_t v);
int fat_dflush(fat_t *fs);
int fat_dload(fat_t *fs, uint32_t lba);
int fat_dzero(fat_t *fs, uint32_t lba);
int fat_flush(fat_t *fs);                 /* data buffer, then the FAT */
bool fat_valid_cluster(const fat_t *fs, uint32_t cl);
int fat_next(fat_t *fs, uint32_t cl, uint32_t *nx);
uint32_t fat_clus_lba(const fat_t *fs, uint32_t cl);
int fat_alloc(fat_t *fs, uint32_t prev, uint32_t *out);
int fat_link(fat_t *fs, uint32_t prev, uint32_t cl);
int fat_end_chain(fat_t *fs, uint32_t cl);
int fat_free_chain(fat_t *fs, uint32_t cl);
int fat_zero_cluster(fat_t *fs, uint32_t cl);
void fat_time_now(fat_t *fs, uint16_t *date, uint16_t *time);
uint32_t fat_time_unix(uint16_t date, uint16_t time);
fat_file_t *fat_find_open(fat_t *fs, uint32_t lba, uint32_t idx);

/* fat_dir.c */
/* The entry of path (e->root for "/"): 0, FAT_ERR_NOENT, FAT_ERR_NOTDIR. */
int fat_lookup(fat_t *fs, const char *path, fat_ent_t *e);
/* Make a new entry at path (its parent must exist, the name must not):
 * attr, first cluster, size; times now, or tmpl's (a 32-byte entry). */
int fat_create(fat_t *fs, const char *path, uint8_t attr, uint32_t cluster,
               uint32_t size, const uint8_t *tmpl, fat_ent_t *out);

#endif /* CELLAR_FAT_INT_H */
