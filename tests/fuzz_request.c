/* fuzz_request.c - libFuzzer target for request decoding and dispatch: the
 * whole service core on a small RAM flash.
 *
 * The input is a sequence of records [len_lo, len_hi, body...]: each body is
 * framed (4-byte length) and sent to one connection of a freshly mounted
 * service, in pieces of varying size; the service runs until idle, replies
 * are drained and checked to be well-formed frames that decode. Every input
 * starts from the same formatted image, so crashes reproduce. A few inputs
 * are raw streams (first byte 0xff) to reach the framing errors too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "flash_sim.h"
#include "svc_core.h"

#define BLOCKS 128u

static flash_sim_t *sim;
static uint8_t *pristine;
static svc_t svc;
static svc_conn_t conn;
static cellar_Response resp;
static uint8_t frame[CODEC_BUF_MIN];

static void init_once(void)
{
    if (sim)
        return;
    flash_sim_config_t fc = { .block_count = BLOCKS };
    sim = flash_sim_new(&fc);
    if (!sim)
        abort();
    svc_config_t cfg = { .dev = flash_sim_dev(sim), .provision = true };
    if (svc_setup(&svc, &cfg) != 0)
        abort();
    if (svc_free(&svc) != 0)
        abort();
    pristine = malloc(flash_sim_size(sim));
    memcpy(pristine, flash_sim_data(sim), flash_sim_size(sim));
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
    memcpy(flash_sim_data(sim), pristine, flash_sim_size(sim));
    svc_config_t cfg = { .dev = flash_sim_dev(sim) };
    if (svc_setup(&svc, &cfg) != 0)
        abort();
    svc_tick(&svc, 1000);
    svc_conn_open(&svc, &conn, "fuzz");

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
            if (n == 0)
                continue;
            codec_put_len(frame, (uint32_t)n);
            memcpy(frame + 4, data + off, n);
            off += n;
            feed(frame, n + 4, 1 + (n % 61) * 37);
        }
    }
    /* Time passes: idle handles and the connection time out. */
    svc_tick(&svc, 1000 + 10u * 60 * 1000);
    while (svc_process(&svc))
        ;
    drain_out();
    svc_conn_close(&svc, &conn, NULL);
    (void)svc_free(&svc);
    return 0;
}
