/*
 * flash.h - the flash device interface every cellar backend implements.
 *
 * A flash device is a config struct: a context pointer, four callbacks and
 * the geometry. The filesystem only ever talks to flash through this struct,
 * so a RAM simulator, an image file or a real SPI NOR driver plug in alike.
 *
 * NOR rules the filesystem relies on:
 *  - erase sets a whole erase block to 0xFF;
 *  - prog can only clear bits (1 -> 0); programming an already-programmed
 *    byte with a value that would set a bit back to 1 is a device error;
 *  - a prog may cover any byte range inside one block (prog_size == 1 on
 *    the W25Q-class parts we target), it never crosses a block boundary.
 *
 * Return convention: 0 on success, a negative flash_err_t on failure.
 */
#ifndef CELLAR_FLASH_H
#define CELLAR_FLASH_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    FLASH_OK = 0,
    FLASH_ERR_IO = -5,       /* device failed (worn-out block, bus error) */
    FLASH_ERR_CORRUPT = -84, /* prog tried to set a bit (0 -> 1): EILSEQ */
    FLASH_ERR_INVAL = -22,   /* out of range / misaligned request */
    FLASH_ERR_POWER = -125,  /* simulator: power was cut, device is dead */
} flash_err_t;

typedef struct flash_dev flash_dev_t;

struct flash_dev {
    void *context; /* handed to every callback unchanged */

    /* Read len bytes at byte offset off of block `block` into buf. */
    int (*read)(const flash_dev_t *dev, uint32_t block, uint32_t off,
                void *buf, uint32_t len);
    /* Program len bytes (only clears bits). Never crosses a block. */
    int (*prog)(const flash_dev_t *dev, uint32_t block, uint32_t off,
                const void *buf, uint32_t len);
    /* Erase one block to 0xFF. */
    int (*erase)(const flash_dev_t *dev, uint32_t block);
    /* Make every completed prog/erase durable (may be NULL). */
    int (*sync)(const flash_dev_t *dev);

    uint32_t read_size;   /* minimum read unit in bytes (1 for NOR) */
    uint32_t prog_size;   /* minimum program unit in bytes (1 for NOR) */
    uint32_t page_size;   /* program page in bytes (256); timing only */
    uint32_t block_size;  /* erase block in bytes (4096) */
    uint32_t block_count; /* number of erase blocks */
};

#endif /* CELLAR_FLASH_H */
