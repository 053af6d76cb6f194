/* fuzz_request.c - libFuzzer target for request decoding and dispatch: the
 * whole service core on a small RAM flash.
 *
 * The input is a sequence of records [len_lo, len_hi, body...]: each body is
 * framed (4-byte length) and sent to one connection of a freshly mounted
 * service, in pieces of varying size; the service runs until idle, replies
 * are drained and checked to be well-formed frames that decode. Every input
 * starts from the same formatted image, so crashes reproduce. A few inputs
 * are raw streams (first byte 0xff) to reach the framing errors too.
 *
 * The service has what a device may have (issue 15, 13): two raw
 * partitions ("m", 2 blocks; "c", 1 block), an SD card at /sd (a FAT16
 * image made by mkfs.fat at start-up, put back to fresh after every input)
 * and an ACL. A record of length 0 followed by one byte switches the
 * connection's identity (anonymous = admin, "rd" reader, "wr" writer under
 * /usr/a and /bak/a, "ad" admin, "nobody" without a rule). A record whose
 * body starts with 0xfe is a template (one of the new requests, encoded at
 * start-up: Raw*, Gc, GcConfig, /sd paths; the next byte picks it) with the
 * rest of the body appended as further fields (protobuf merges them), so
 * the fuzzer reaches those handlers without finding their tags first. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "flash_sim.h"
#include "svc_acl.h"
#include "svc_core.h"
#include "svc_rig.h"

#define BLOCKS 128u

static rig_t rig;
static bool up;
static uint8_t *pristine;
#define svc (rig.svc)
#define conn (rig.a)
static cellar_Response resp;
static uint8_t frame[CODEC_BUF_MIN];
static svc_acl_t acl;
static const layout_raw_t raws[] = { { "m", 2 }, { "c", 1 } };
static const char *const idents[] = { "anonymous", "rd", "wr", "ad", "nobody" };

#define NTPL 14
static uint8_t tpl[NTPL][600];
static size_t tpl_len[NTPL];

static void make_templates(void)
{
    static cellar_Request q;
    static uint8_t buf[CODEC_BUF_MIN];
    for (int i = 0; i < NTPL; i++) {
        memset(&q, 0, sizeof(q));
        q.id = 7;
        switch (i) {
        case 0: q.which_body = cellar_Request_raw_read_tag;
            strcpy(q.body.raw_read.name, "m"); q.body.raw_read.length = 100; break;
        case 1: q.which_body = cellar_Request_raw_write_tag;
            strcpy(q.body.raw_write.name, "m"); q.body.raw_write.offset = 4090;
            q.body.raw_write.data.size = 16; memset(q.body.raw_write.data.bytes, 0x5a, 16); break;
        case 2: q.which_body = cellar_Request_raw_erase_tag;
            strcpy(q.body.raw_erase.name, "m"); q.body.raw_erase.offset = 4096; break;
        case 3: q.which_body = cellar_Request_raw_hash_tag;
            strcpy(q.body.raw_hash.name, "c"); break;
        case 4: q.which_body = cellar_Request_gc_tag;
            strcpy(q.body.gc.partition, "/usr"); break;
        case 5: q.which_body = cellar_Request_gc_config_tag;
            strcpy(q.body.gc_config.partition, "/bak"); q.body.gc_config.threshold = 8; break;
        case 6: q.which_body = cellar_Request_open_tag;
            strcpy(q.body.open.path, "/sd/f");
            q.body.open.flags = cellar_OpenFlags_O_WRITE | cellar_OpenFlags_O_CREATE; break;
        case 7: q.which_body = cellar_Request_open_tag;
            strcpy(q.body.open.path, "/sd/f"); q.body.open.flags = cellar_OpenFlags_O_READ; break;
        case 8: q.which_body = cellar_Request_list_tag; strcpy(q.body.list.path, "/sd"); break;
        case 9: q.which_body = cellar_Request_mkdir_tag; strcpy(q.body.mkdir.path, "/sd/d/e");
            q.body.mkdir.parents = true; break;
        case 10: q.which_body = cellar_Request_rename_tag; strcpy(q.body.rename.from, "/sd/f");
            strcpy(q.body.rename.to, "/sd/d/g"); break;
        case 11: q.which_body = cellar_Request_remove_tag; strcpy(q.body.remove.path, "/sd/f"); break;
        case 12: q.which_body = cellar_Request_hash_tag; strcpy(q.body.hash.path, "/sd/f"); break;
        default: q.which_body = cellar_Request_statfs_tag; strcpy(q.body.statfs.path, "/sd"); break;
        }
        int n = codec_encode_request(&q, buf, sizeof(buf));
        if (n < 4 || (size_t)n - 4 > sizeof(tpl[i]))
            abort();
        tpl_len[i] = (size_t)n - 4;
        memcpy(tpl[i], buf + 4, tpl_len[i]);
    }
}

static void init_once(void)
{
    if (up)
        return;
    make_templates();
    static const char text[] = "anonymous admin\nrd reader\nwr writer /usr/a /bak/a\nad admin\n";
    if (svc_acl_parse(&acl, text, sizeof(text) - 1, NULL, 0) != 0)
        abort();
    svc_config_t cfg = { .idle_timeout_ms = 60000, .raw = raws, .nraw = 2, .acl = &acl };
    if (rig_init(&rig, BLOCKS, &cfg) != 0)
        abort();
    rig.cfg.provision = false;
    if (rig_card(&rig, 4096) != 0)
        abort(); /* mkfs.fat (dosfstools) is needed */
    rig_stop(&rig);
    pristine = malloc(flash_sim_size(rig.sim));
    memcpy(pristine, flash_sim_data(rig.sim), flash_sim_size(rig.sim));
    up = true;
}

static void drain_out(void)
{
    static uint8_t acc[2 * CODEC_BUF_MIN];
    static size_t have;
    const uint8_t *p;
    size_t len;
    while (svc_conn_output(&conn, &p, &len)) {
        size_t take = len;
        if (take > sizeof(acc) - have)
            take = sizeof(acc) - have;
        memcpy(acc + have, p, take);
        have += take;
        svc_conn_consumed(&conn, take);
        while (have >= 4) {
            uint32_t n = codec_get_len(acc);
            if (n == 0 || n > CODEC_MAX_FRAME)
                abort(); /* the device never sends a bad frame */
            if (have < 4 + n)
                break;
            if (codec_decode_response(&resp, acc + 4, n, NULL) != 0)
                abort(); /* ... nor one that does not decode */
            memmove(acc, acc + 4 + n, have - 4 - n);
            have -= 4 + n;
        }
        if (have == sizeof(acc))
            abort();
    }
    have = 0;
}

static void feed(const uint8_t *p, size_t n, size_t piece)
{
    size_t off = 0;
    int guard = 0;
    while (off < n && guard++ < 100000) {
        size_t k = n - off < piece ? n - off : piece;
        off += svc_conn_input(&conn, p + off, k);
        while (svc_process(&svc))
            ;
        drain_out();
        if (svc_conn_done(&conn))
            return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_once();
    memcpy(flash_sim_data(rig.sim), pristine, flash_sim_size(rig.sim));
    rig_card_reset(&rig);
    rig.now_ms = 1000;
    rig.loglen = 0;
    if (rig_start(&rig) != 0 || rig.card_err != 0)
        abort();

    if (size && data[0] == 0xff) {
        feed(data + 1, size - 1, 1 + (size % 97));
    } else {
        size_t off = 0;
        while (off + 2 <= size && !svc_conn_done(&conn)) {
            size_t n = (size_t)data[off] | (size_t)data[off + 1] << 8;
            off += 2;
            if (n > size - off)
                n = size - off;
            if (n > CODEC_MAX_FRAME)
                n = CODEC_MAX_FRAME;
            if (n == 0) { /* an identity switch */
                if (off < size)
                    rig_identity(&rig, &conn, idents[data[off++] % 5]);
                continue;
            }
            size_t t = 0;
            if (n >= 2 && data[off] == 0xfe) { /* a template, then the rest */
                const int k = data[off + 1] % NTPL;
                memcpy(frame + 4, tpl[k], tpl_len[k]);
                t = tpl_len[k];
                off += 2;
                n -= 2;
                if (t + n > CODEC_MAX_FRAME)
                    n = CODEC_MAX_FRAME - t;
            }
            codec_put_len(frame, (uint32_t)(t + n));
            memcpy(frame + 4 + t, data + off, n);
            off += n;
            feed(frame, t + n + 4, 1 + ((t + n) % 61) * 37);
        }
    }
    /* Time passes: idle handles and the connection time out. */
    svc_tick(&svc, 1000 + 10u * 60 * 1000);
    while (svc_process(&svc))
        ;
    drain_out();
    rig_stop(&rig);
    return 0;
}
