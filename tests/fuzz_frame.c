/* fuzz_frame.c - libFuzzer target for the frame parser (service/codec.h).
 *
 * The input is a byte stream. It is parsed twice - all at once and in
 * pieces whose sizes come from the input itself - and both runs must yield
 * the same frames and the same framing error. Every frame is also scanned
 * and decoded as a Request and as a Response (ASan/UBSan watch). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define MAX_FRAMES 512

typedef struct result {
    uint32_t n;
    uint32_t len[MAX_FRAMES];
    uint32_t sum[MAX_FRAMES];
    int err;
} result_t;

static uint8_t buf_a[CODEC_BUF_MIN], buf_b[CODEC_BUF_MIN + 7];
static cellar_Request req;
static cellar_Response resp;
static result_t ra, rb;

static uint32_t checksum(const uint8_t *p, uint32_t n)
{
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

/* Pull every available frame out of p into r. Returns false to stop. */
static bool drain(codec_parser_t *p, result_t *r, bool deep)
{
    const uint8_t *f;
    uint32_t len;
    int rc;
    while ((rc = codec_parser_next(p, &f, &len)) == 1) {
        if (len == 0 || len > CODEC_MAX_FRAME)
            abort();
        if (f < p->buf || f + len > p->buf + p->cap)
            abort();
        if (r->n < MAX_FRAMES) {
            r->len[r->n] = len;
            r->sum[r->n] = checksum(f, len);
        }
        r->n++;
        if (deep) {
            codec_scan_t sc;
            codec_scan(cellar_Request_fields, f, len, &sc);
            if (sc.prefix[CODEC_SCAN_PREFIX - 1] != 0)
                abort();
            (void)codec_decode_request(&req, f, len, NULL);
            (void)codec_decode_response(&resp, f, len, NULL);
        }
        codec_parser_pop(p);
    }
    if (rc < 0) {
        r->err = rc;
        return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    codec_parser_t p;

    /* A: feed everything, taking what fits each time. */
    memset(&ra, 0, sizeof(ra));
    codec_parser_init(&p, buf_a, sizeof(buf_a));
    size_t off = 0;
    while (off < size) {
        size_t k = codec_parser_feed(&p, data + off, size - off);
        off += k;
        if (!drain(&p, &ra, true))
            break;
        if (k == 0)
            abort(); /* full buffer without a frame: impossible */
    }

    /* B: pieces of 1..64 bytes, sizes taken from the data, via the
     * zero-copy interface and a slightly bigger buffer. */
    memset(&rb, 0, sizeof(rb));
    codec_parser_init(&p, buf_b, sizeof(buf_b));
    off = 0;
    size_t i = 0;
    while (off < size) {
        uint8_t *dst;
        uint32_t room = codec_parser_space(&p, &dst);
        size_t k = 1 + (data[i++ % size] & 63);
        if (k > size - off)
            k = size - off;
        if (k > room)
            k = room;
        if (k == 0)
            abort();
        memcpy(dst, data + off, k);
        codec_parser_commit(&p, (uint32_t)k);
        off += k;
        if (!drain(&p, &rb, false))
            break;
    }

    if (ra.n != rb.n || ra.err != rb.err)
        abort();
    for (uint32_t j = 0; j < ra.n && j < MAX_FRAMES; j++)
        if (ra.len[j] != rb.len[j] || ra.sum[j] != rb.sum[j])
            abort();
    return 0;
}
