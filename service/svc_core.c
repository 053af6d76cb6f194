/* svc_core.c - the service's life: setup and free, connections opened and
 * closed, time passing (svc_tick) (svc_int.h, docs/ARCHITECTURE.md "Service
 * core"). Device-side code: no OS calls, no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

/* Is the partition erased from end to end (a new device, where
 * provisioning may format it)? Anything else that does not mount is data
 * the service must not write over: it is reported, and Format is the
 * user's call. Stops at the first byte written. */
static bool part_blank(svc_t *s, const svc_part_t *p)
{
    const flash_dev_t *dev = p->cfg.dev;
    uint32_t chunk = (uint32_t)sizeof(s->scratch);
    for (uint32_t b = 0; b < p->cfg.block_count; b++)
        for (uint32_t off = 0; off < dev->block_size; off += chunk) {
            uint32_t n = dev->block_size - off < chunk ? dev->block_size - off
                                                      : chunk;
            if (dev->read(dev, p->cfg.first_block + b, off, s->scratch, n))
                return false;
            for (uint32_t i = 0; i < n; i++)
                if (s->scratch[i] != 0xff)
                    return false;
        }
    return true;
}

int svc_setup(svc_t *s, const svc_config_t *cfg)
{
    int err;
    bool format_all = false;

    if (!cfg || !cfg->dev)
        return CFS_ERR_INVAL;
    svc_init(s);
    s->job_kinds = &svc_job_kinds; /* the job layer runs them */
    s->cfg = *cfg;
    if (!s->cfg.device_id)
        s->cfg.device_id = "cellar";
    if (!s->cfg.firmware)
        s->cfg.firmware = "cellard " CELLAR_VERSION;
    s->idle_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms
                                      : SVC_IDLE_DEFAULT_MS;
    /* issue 14: a feature built out is refused, never ignored */
    if ((!CELLAR_WITH_RAW && cfg->nraw) || (!CELLAR_WITH_ACL && cfg->acl)) {
        svc_log_msg(s, NULL, !CELLAR_WITH_RAW && cfg->nraw
                                 ? "raw partitions are not built into this device"
                                 : "access control (ACL) is not built into this device");
        return SVC_ENOTSUP;
    }
    if (!CELLAR_WITH_LOG && cfg->log) /* said once; nothing else is logged */
        cfg->log(cfg->log_ctx, "the service's log lines are not built into "
                               "this device (CELLAR_WITH_LOG 0)");

    err = layout_read(cfg->dev, &s->layout);
    if (!err && CELLAR_WITH_RAW && cfg->nraw && !layout_raw_match(&s->layout, cfg->raw,
                                               cfg->nraw)) {
        /* issue 15: the layout is never rewritten over data */
        svc_log_msg(s, NULL, "the raw partitions asked for differ from the "
                             "ones in the flash's partition table; a table "
                             "is only written on a blank flash (left alone)");
        err = CFS_ERR_INVAL;
        goto fail;
    }
    if (err == -2 && cfg->provision) {
        err = CELLAR_WITH_RAW /* issue 14: nraw is 0 without */
            ? layout_default_raw(cfg->dev->block_count, cfg->bak_blocks,
                                 cfg->raw, cfg->nraw, &s->layout)
            : layout_default(cfg->dev->block_count, cfg->bak_blocks, &s->layout);
        if (err) {
            svc_log_msg(s, NULL, "no partition table, and the device is too "
                             "small for the default layout");
            goto fail;
        }
        svc_log_msg(s, NULL, "no partition table: writing the default layout");
        err = layout_write(cfg->dev, &s->layout);
        if (err) {
            svc_log_msg(s, NULL, "writing the partition table failed");
            goto fail;
        }
        format_all = true;
    } else if (err) {
        svc_log_msg(s, NULL, err == -2 ? "no partition table in block 0"
                             : err == LAYOUT_ERR_FOREIGN
                                 ? "block 0 holds no cellar partition table: "
                                   "not a cellar flash, left alone"
                                 : "the partition table is corrupt");
        goto fail;
    }

    for (uint32_t i = 0; i < SVC_MAX_PARTS; i++) {
        const layout_part_t *lp = layout_find(&s->layout, svc_part_names[i]);
        svc_part_t *p = &s->part[i];
        if (!lp) {
            sb_t b = svc_log_begin(s, NULL);
            svc_sb_str(&b, "the partition table has no \"");
            svc_sb_str(&b, svc_part_names[i]);
            svc_sb_str(&b, "\" partition");
            svc_log_end(s);
            err = CFS_ERR_CORRUPT;
            goto fail;
        }
        memcpy(p->name, lp->name, sizeof(p->name));
        p->name[sizeof(p->name) - 1] = 0;
        p->read_only = strcmp(p->name, "bak") == 0;
        p->cfg.dev = cfg->dev;
        p->cfg.first_block = lp->first_block;
        p->cfg.block_count = lp->block_count;
        p->cfg.clock = cfg->clock;
        p->cfg.clock_ctx = cfg->clock_ctx;
        p->cfg.work = &s->fs_work; /* issue 14 (fsram): one for both partitions */
        s->nparts = i + 1;
        if (format_all) {
            svc_log_part(s, "formatting", p, 0);
            err = cfs_format(&p->fs, &p->cfg);
            if (err) {
                svc_log_part(s, "format failed:", p, err);
                goto fail;
            }
        }
        err = cfs_mount(&p->fs, &p->cfg);
        if (err == CFS_ERR_NOTMOUNTED && cfg->provision && !format_all &&
            part_blank(s, p)) {
            svc_log_part(s, "no filesystem on", p, 0);
            svc_log_part(s, "formatting", p, 0);
            err = cfs_format(&p->fs, &p->cfg);
            if (!err)
                err = cfs_mount(&p->fs, &p->cfg);
        }
        if (err) {
            /* reported, not served: Format is the repair */
            svc_log_part(s, "cannot mount", p, err);
            p->state = SVC_PART_UNMOUNTED;
            svc_problem(s, i, "cannot mount", svc_reason(err),
                        "not served; format it");
            err = 0;
            continue;
        }
        p->mounted = 1;
        svc_log_part(s, "mounted", p, 0);
        svc_part_gc_tune(s, i);
    }
    err = svc_store_setup(s);
    if (err)
        goto fail;
    s->set_up = 1;
    s->decided_check = 1; /* a roll forward the start kept (decided) */
    return 0;

fail:
    svc_store_free(s);
    for (uint32_t i = 0; i < s->nparts; i++)
        if (s->part[i].mounted)
            (void)cfs_unmount(&s->part[i].fs);
    s->nparts = 0;
    return err;
}

void svc_conn_open(svc_t *s, svc_conn_t *c, const char *peer)
{
    /* the two big buffers need no clearing */
    memset(c, 0, offsetof(svc_conn_t, inbuf));
    memset(c->h, 0, sizeof(c->h));
    c->svc = s;
    (void)codec_parser_init(&c->in, c->inbuf, sizeof(c->inbuf));
    if (peer) {
        size_t n = strlen(peer);
        if (n >= sizeof(c->peer))
            n = sizeof(c->peer) - 1;
        memcpy(c->peer, peer, n);
        c->peer[n] = 0;
    }
    c->num = ++s->conn_seq;
    c->last_ms = s->now_ms;
    c->next = s->conns;
    s->conns = c;
    s->nconns++;
    svc_acl_conn_init(s, c, NULL); /* anonymous until the transport says */
    svc_log_msg(s, c, "open");
}

void svc_conn_close(svc_t *s, svc_conn_t *c, const char *why)
{
    svc_conn_t **pp = &s->conns;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (!*pp)
        return; /* not attached */
    *pp = c->next;
    s->nconns--;
    if (s->job.kind && s->job.conn == c)
        svc_job_cancel(s, 0, NULL); /* nobody to answer */
    for (uint32_t i = 0; i < SVC_MAX_HANDLES; i++)
        if (c->h[i].id)
            svc_handle_release(s, &c->h[i]);
    svc_sd_conn_gone(s, c); /* issue 15 (sd): its /sd handles */
    svc_store_conn_gone(s, c);
    if (SVC_LOGS(s)) {
        sb_t b = svc_log_begin(s, c);
        svc_sb_str(&b, "close (");
        svc_sb_str(&b, why ? why : c->close_reason ? c->close_reason : "closed");
        svc_sb_str(&b, "; ");
        svc_sb_u64(&b, c->requests);
        svc_sb_str(&b, " requests, ");
        svc_sb_u64(&b, c->errors);
        svc_sb_str(&b, " failed)");
        svc_log_end(s);
    }
    c->svc = NULL;
    c->next = NULL;
}

int svc_free(svc_t *s)
{
    int first = 0;
    if (!s)
        return 0;
    while (s->conns)
        svc_conn_close(s, s->conns, "service stopping");
    svc_job_cancel(s, 0, NULL); /* the start-up check, if still running */
    svc_store_free(s);
    for (uint32_t i = 0; i < s->nparts; i++) {
        svc_part_t *p = &s->part[i];
        if (!p->mounted)
            continue;
        int err = cfs_unmount(&p->fs);
        if (err) {
            svc_log_part(s, "unmount failed:", p, err);
            if (!first)
                first = err;
        } else {
            svc_log_part(s, "unmounted", p, 0);
        }
    }
    if (s->cfg.dev && s->cfg.dev->sync) {
        int err = s->cfg.dev->sync(s->cfg.dev);
        if (err && !first)
            first = err;
    }
    svc_init(s);
    return first;
}

void svc_tick(svc_t *s, uint64_t now_ms)
{
    s->now_ms = now_ms;
    svc_store_tick(s);
    if (s->idle_ms == SVC_IDLE_NEVER)
        return;
    svc_sd_tick(s); /* issue 15 (sd): idle /sd handles */
    for (svc_conn_t *c = s->conns; c; c = c->next) {
        if (c->closing || c->abort)
            continue;
        for (uint32_t i = 0; i < SVC_MAX_HANDLES; i++) {
            svc_handle_t *h = &c->h[i];
            if (!h->id || now_ms - h->last_ms < s->idle_ms)
                continue;
            if (SVC_LOGS(s)) {
                sb_t b = svc_log_begin(s, c);
                svc_sb_str(&b, "handle ");
                svc_sb_u64(&b, h->id);
                svc_sb_str(&b, " ");
                svc_sb_qstr(&b, h->path);
                svc_sb_str(&b, " closed: idle for ");
                svc_sb_u64(&b, (now_ms - h->last_ms) / 1000);
                svc_sb_str(&b, " s");
                svc_log_end(s);
            }
            svc_handle_release(s, h);
        }
        if (now_ms - c->last_ms < s->idle_ms)
            continue;
        if (c->req_held) /* issue 14: its long request runs (busy, not */
            continue;    /* idle), and its request holds the queue */
        svc_resp_reset(s, 0);
        s->op = "connection";
        sb_t b = svc_err_begin(s, -(int)cellar_Code_ETIMEDOUT);
        svc_sb_str(&b, ": no complete request for ");
        svc_sb_u64(&b, (now_ms - c->last_ms) / 1000);
        svc_sb_str(&b, " s; closing");
        c->closing = 1;
        c->close_reason = "idle timeout";
        if (svc_out_room(c, 512))
            svc_resp_send(s, c);
        else
            c->abort = 1;
    }
}
