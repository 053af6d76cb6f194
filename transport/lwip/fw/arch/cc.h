/* arch/cc.h - the example firmware's lwIP port header (bare metal, newlib):
 * see lwipopts.h beside it. */
#ifndef CELLAR_FW_ARCH_CC_H
#define CELLAR_FW_ARCH_CC_H
#include <stdint.h>
#include <stdlib.h>
#define LWIP_NO_UNISTD_H 1
#define LWIP_ERRNO_STDINCLUDE 1
#define LWIP_PLATFORM_DIAG(x) do { } while (0)
#define LWIP_PLATFORM_ASSERT(x) do { abort(); } while (0)
#define LWIP_RAND() ((u32_t)rand())
#endif
