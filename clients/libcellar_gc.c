/*
 * libcellar_gc.c - garbage collection on request and the automatic GC
 * threshold (GcRequest, GcConfigRequest): SPIFlashFileSystem's gc() and
 * setAutoGc(). See docs/PROTOCOL.md, "Gc".
 */
#include "libcellar_int.h"

#include <string.h>

/* Put the partition name in a request's field of cap bytes. */
static int part_arg(cellar_t *c, char *dst, size_t cap, const char *partition)
{
    const char *p = partition ? partition : "/usr";
    if (strlen(p) >= cap)
        return cellar__fail(c, CELLAR_ERR_INVAL, "%s: no such partition", p);
    strcpy(dst, p);
    return 0;
}

int cellar_gc(cellar_t *c, const char *partition, uint32_t blocks,
              cellar_gc_result_t *out)
{
    cellar_Request *req = cellar__new_req(c, cellar_Request_gc_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    int err = part_arg(c, req->body.gc.partition, sizeof(req->body.gc.partition),
                       partition);
    if (err < 0)
        return err;
    req->body.gc.blocks = blocks;
    err = cellar__slow_rpc(c, cellar_Response_gc_tag);
    if (err < 0)
        return cellar__at_path(c, err, partition ? partition : "/usr");
    const cellar_GcReply *r = &cellar__resp(c)->body.gc;
    if (out) {
        memset(out, 0, sizeof(*out));
        out->blocks_swept = r->blocks_swept;
        out->reclaimed = r->reclaimed;
        out->free_before = r->free_before;
        out->free_after = r->free_after;
        out->reclaimable_after = r->reclaimable_after;
    }
    return 0;
}

int cellar_gc_threshold(cellar_t *c, const char *partition, uint32_t blocks,
                        uint32_t *previous)
{
    cellar_Request *req = cellar__new_req(c, cellar_Request_gc_config_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    int err = part_arg(c, req->body.gc_config.partition,
                       sizeof(req->body.gc_config.partition), partition);
    if (err < 0)
        return err;
    req->body.gc_config.threshold = blocks;
    err = cellar__rpc(c, cellar_Response_gc_config_tag);
    if (err < 0)
        return cellar__at_path(c, err, partition ? partition : "/usr");
    if (previous)
        *previous = cellar__resp(c)->body.gc_config.previous;
    return 0;
}
