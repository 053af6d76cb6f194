/* test_codec.c - frames and the nanopb helpers (service/codec.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codec.h"

static uint8_t pbuf[CODEC_BUF_MIN + 64];

/* A stream of three frames: a Ping, a Write with a big chunk, a Stat. */
static size_t make_stream(uint8_t *out, size_t cap, uint32_t *lens)
{
    static cellar_Request r;
    size_t n = 0;
    int k;

    memset(&r, 0, sizeof(r));
    r.id = 1;
    r.which_body = cellar_Request_ping_tag;
    r.body.ping.payload.size = 5;
    memcpy(r.body.ping.payload.bytes, "hello", 5);
    k = codec_encode_request(&r, out + n, cap - n);
    CHECK(k > 0);
    lens[0] = (uint32_t)k - CODEC_HDR;
    n += (size_t)k;

    memset(&r, 0, sizeof(r));
    r.id = 2;
    r.which_body = cellar_Request_write_tag;
    r.body.write.handle = 17;
    r.body.write.offset = 1u << 20;
    r.body.write.data.size = CODEC_MAX_CHUNK;
    for (uint32_t i = 0; i < CODEC_MAX_CHUNK; i++)
        r.body.write.data.bytes[i] = (uint8_t)(i * 7);
    k = codec_encode_request(&r, out + n, cap - n);
    CHECK(k > 0);
    lens[1] = (uint32_t)k - CODEC_HDR;
    n += (size_t)k;

    memset(&r, 0, sizeof(r));
    r.id = 3;
    r.which_body = cellar_Request_stat_tag;
    strcpy(r.body.stat.path, "/usr/a/b.txt");
    k = codec_encode_request(&r, out + n, cap - n);
    CHECK(k > 0);
    lens[2] = (uint32_t)k - CODEC_HDR;
    n += (size_t)k;
    return n;
}

/* Feed `stream` in pieces of the given sizes (cycled) and check the frames
 * come out whole and in order. */
static int run_split(const uint8_t *stream, size_t n, const uint32_t *lens,
                     const size_t *pieces, size_t npieces)
{
    codec_parser_t p;
    size_t off = 0, pi = 0;
    int frames = 0;
    size_t pos = 0; /* stream offset of the next frame */
    CHECK_EQ(codec_parser_init(&p, pbuf, sizeof(pbuf)), 0);
    while (off < n || codec_parser_buffered(&p)) {
        size_t want = pieces[pi++ % npieces];
        if (want > n - off)
            want = n - off;
        size_t took = codec_parser_feed(&p, stream + off, want);
        off += took;
        const uint8_t *f;
        uint32_t fl;
        int r;
        while ((r = codec_parser_next(&p, &f, &fl)) == 1) {
            if (frames >= 3 || fl != lens[frames] ||
                memcmp(f, stream + pos + CODEC_HDR, fl) != 0)
                return -1;
            pos += CODEC_HDR + fl;
            frames++;
            codec_parser_pop(&p);
        }
        if (r < 0)
            return -2;
        if (took == 0 && want > 0)
            return -3; /* stuck: full buffer and no frame */
        if (off == n && r == 0 && codec_parser_buffered(&p))
            return -4; /* leftover partial frame */
    }
    return frames;
}

static void test_splits(void)
{
    static uint8_t stream[3 * CODEC_BUF_MIN];
    uint32_t lens[3];
    size_t n = make_stream(stream, sizeof(stream), lens);
    CHECK(n > CODEC_MAX_CHUNK);
    CHECK(lens[1] <= CODEC_MAX_FRAME);

    /* All at once (the parser takes what fits and asks for the rest). */
    size_t whole[1] = { n };
    CHECK_EQ(run_split(stream, n, lens, whole, 1), 3);
    /* One byte at a time. */
    size_t one[1] = { 1 };
    CHECK_EQ(run_split(stream, n, lens, one, 1), 3);
    /* Two pieces split at every byte position. */
    int bad = 0;
    for (size_t cut = 1; cut < n; cut++) {
        size_t two[2] = { cut, n };
        if (run_split(stream, n, lens, two, 2) != 3)
            bad++;
    }
    CHECK_EQ(bad, 0);
    /* Odd piece sizes. */
    size_t odd[4] = { 3, 4097, 1, 77 };
    CHECK_EQ(run_split(stream, n, lens, odd, 4), 3);
}

static void test_zero_copy(void)
{
    codec_parser_t p;
    uint8_t *dst;
    const uint8_t *f;
    uint32_t fl;
    static uint8_t stream[3 * CODEC_BUF_MIN];
    uint32_t lens[3];
    size_t n = make_stream(stream, sizeof(stream), lens), off = 0;
    int frames = 0;
    CHECK_EQ(codec_parser_init(&p, pbuf, sizeof(pbuf)), 0);
    while (frames < 3) {
        uint32_t room = codec_parser_space(&p, &dst);
        uint32_t k = room < 1000 ? room : 1000;
        if (k > n - off)
            k = (uint32_t)(n - off);
        memcpy(dst, stream + off, k);
        codec_parser_commit(&p, k);
        off += k;
        while (codec_parser_next(&p, &f, &fl) == 1) {
            CHECK_EQ(fl, lens[frames]);
            frames++;
            codec_parser_pop(&p);
        }
        if (k == 0 && off == n)
            break;
    }
    CHECK_EQ(frames, 3);
    CHECK_EQ(codec_parser_buffered(&p), 0);
}

static void test_lengths(void)
{
    codec_parser_t p;
    const uint8_t *f;
    uint32_t fl;
    uint8_t *dst;
    uint8_t hdr[4];

    /* length 0: EPROTO as soon as the prefix is in, sticky */
    CHECK_EQ(codec_parser_init(&p, pbuf, sizeof(pbuf)), 0);
    codec_put_len(hdr, 0);
    CHECK_EQ(codec_parser_feed(&p, hdr, 3), 3);
    CHECK_EQ(codec_parser_next(&p, &f, &fl), 0);
    CHECK_EQ(codec_parser_feed(&p, hdr + 3, 1), 1);
    CHECK_EQ(codec_parser_next(&p, &f, &fl), CODEC_ERR_PROTO);
    CHECK_EQ(codec_parser_next(&p, &f, &fl), CODEC_ERR_PROTO);
    CHECK_EQ(codec_parser_space(&p, &dst), 0);
    CHECK_EQ(codec_parser_feed(&p, "x", 1), 0);

    /* 4 GiB - 1: EMSGSIZE without waiting for (or buffering) the body */
    CHECK_EQ(codec_parser_init(&p, pbuf, sizeof(pbuf)), 0);
    codec_put_len(hdr, 0xffffffffu);
    CHECK_EQ(codec_parser_feed(&p, hdr, 4), 4);
    CHECK_EQ(codec_parser_next(&p, &f, &fl), CODEC_ERR_MSGSIZE);

    /* max + 1 */
    CHECK_EQ(codec_parser_init(&p, pbuf, sizeof(pbuf)), 0);
    codec_put_len(hdr, CODEC_MAX_FRAME + 1);
    CHECK_EQ(codec_parser_feed(&p, hdr, 4), 4);
    CHECK_EQ(codec_parser_next(&p, &f, &fl), CODEC_ERR_MSGSIZE);

    /* exactly max: accepted, needs the whole body */
    static uint8_t big[CODEC_HDR + CODEC_MAX_FRAME + 10];
    memset(big, 0xab, sizeof(big));
    codec_put_len(big, CODEC_MAX_FRAME);
    CHECK_EQ(codec_parser_init(&p, pbuf, sizeof(pbuf)), 0);
    CHECK_EQ(codec_parser_feed(&p, big, CODEC_HDR + CODEC_MAX_FRAME - 1),
             CODEC_HDR + CODEC_MAX_FRAME - 1);
    CHECK_EQ(codec_parser_next(&p, &f, &fl), 0);
    CHECK_EQ(codec_parser_feed(&p, big + CODEC_HDR + CODEC_MAX_FRAME - 1, 1),
             1);
    CHECK_EQ(codec_parser_next(&p, &f, &fl), 1);
    CHECK_EQ(fl, CODEC_MAX_FRAME);
    CHECK(f == pbuf + CODEC_HDR);
    codec_parser_pop(&p);
    CHECK_EQ(codec_parser_buffered(&p), 0);

    /* The length prefix is little-endian. */
    codec_put_len(hdr, 0x01020304u);
    CHECK_EQ(hdr[0], 4);
    CHECK_EQ(hdr[3], 1);
    CHECK_EQ(codec_get_len(hdr), 0x01020304u);

    /* A buffer smaller than one frame is refused. */
    uint8_t small[64];
    CHECK_EQ(codec_parser_init(&p, small, sizeof(small)), CODEC_ERR_INVAL);
    CHECK_EQ(codec_parser_feed(&p, "abc", 3), 0);
    CHECK_EQ(codec_parser_next(&p, &f, &fl), CODEC_ERR_INVAL);
}

static void test_full_buffer_backpressure(void)
{
    /* Many small frames: the parser takes only what its buffer holds and
     * every frame still comes out once the consumer pops. */
    static uint8_t stream[200000];
    static cellar_Request r;
    size_t n = 0;
    uint32_t count = 0;
    while (n + 64 < sizeof(stream)) {
        memset(&r, 0, sizeof(r));
        r.id = ++count;
        r.which_body = cellar_Request_ping_tag;
        int k = codec_encode_request(&r, stream + n, sizeof(stream) - n);
        CHECK(k > 0);
        n += (size_t)k;
    }
    codec_parser_t p;
    CHECK_EQ(codec_parser_init(&p, pbuf, sizeof(pbuf)), 0);
    size_t off = 0;
    uint32_t seen = 0;
    int bad = 0;
    while (off < n || codec_parser_buffered(&p)) {
        off += codec_parser_feed(&p, stream + off, n - off);
        CHECK(codec_parser_buffered(&p) <= sizeof(pbuf));
        const uint8_t *f;
        uint32_t fl;
        int rounds = 0;
        while (codec_parser_next(&p, &f, &fl) == 1 && rounds++ < 10) {
            cellar_Request *d = &r;
            if (codec_decode_request(d, f, fl, NULL) != 0 ||
                d->id != seen + 1)
                bad++;
            seen++;
            codec_parser_pop(&p);
        }
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(seen, count);
}

static void test_garbage(void)
{
    /* Random bytes: the parser never overruns and always ends in a frame,
     * a need for more bytes, or a framing error. Decoding random frames
     * never crashes (ASan watches). */
    codec_parser_t p;
    static cellar_Request r;
    uint32_t seed = 12345;
    int frames = 0, errors = 0;
    for (int round = 0; round < 2000; round++) {
        uint8_t junk[600];
        for (size_t i = 0; i < sizeof(junk); i++) {
            seed = seed * 1103515245u + 12345u;
            junk[i] = (uint8_t)(seed >> 16);
        }
        /* Make the length plausible half the time. */
        if (round & 1)
            codec_put_len(junk, 1 + (seed >> 8) % 590);
        CHECK_EQ(codec_parser_init(&p, pbuf, sizeof(pbuf)), 0);
        (void)codec_parser_feed(&p, junk, sizeof(junk));
        const uint8_t *f;
        uint32_t fl;
        int rc = codec_parser_next(&p, &f, &fl);
        if (rc == 1) {
            frames++;
            codec_scan_t sc;
            codec_scan(cellar_Request_fields, f, fl, &sc);
            (void)codec_decode_request(&r, f, fl, NULL);
        } else if (rc < 0) {
            errors++;
        }
    }
    CHECK(frames > 500);
    CHECK(errors > 100);
}

static void test_encode_decode(void)
{
    static cellar_Response a, b;
    static uint8_t out[CODEC_BUF_MIN];
    const char *why = "x";

    memset(&a, 0, sizeof(a));
    a.id = 99;
    a.which_body = cellar_Response_read_tag;
    a.body.read.offset = 12345;
    a.body.read.data.size = CODEC_MAX_CHUNK;
    memset(a.body.read.data.bytes, 0x5a, CODEC_MAX_CHUNK);
    a.body.read.eof = true;
    int n = codec_encode_response(&a, out, sizeof(out));
    CHECK(n > (int)CODEC_MAX_CHUNK);
    CHECK(n <= (int)CODEC_BUF_MIN);
    CHECK_EQ(codec_get_len(out), (uint32_t)n - CODEC_HDR);
    CHECK_EQ(codec_decode_response(&b, out + CODEC_HDR, (size_t)n - CODEC_HDR,
                                   &why), 0);
    CHECK(why == NULL);
    CHECK_EQ(b.id, 99);
    CHECK_EQ(b.which_body, cellar_Response_read_tag);
    CHECK_EQ(b.body.read.data.size, CODEC_MAX_CHUNK);
    CHECK(b.body.read.eof);
    CHECK(memcmp(a.body.read.data.bytes, b.body.read.data.bytes,
                 CODEC_MAX_CHUNK) == 0);

    /* Too small an output buffer: EMSGSIZE, nothing claimed. */
    CHECK_EQ(codec_encode_response(&a, out, 100), CODEC_ERR_MSGSIZE);
    CHECK_EQ(codec_encode_response(&a, out, 3), CODEC_ERR_MSGSIZE);

    /* bytes_left bounds the decode: a truncated message fails cleanly. */
    CHECK_EQ(codec_decode_response(&b, out + CODEC_HDR, 100, &why),
             CODEC_ERR_PROTO);
    CHECK(why != NULL);

    /* A wrong wire type (path sent as a varint) is a protocol error. */
    uint8_t wrong[] = { 0x08, 0x05, 0x62, 0x02, 0x08, 0x07 };
    /* id=5, stat (field 12, LEN 2) { path (field 1) as varint 7 } */
    static cellar_Request rq;
    CHECK_EQ(codec_decode_request(&rq, wrong, sizeof(wrong), &why),
             CODEC_ERR_PROTO);

    /* An empty message cannot be framed. */
    static cellar_Request empty;
    memset(&empty, 0, sizeof(empty));
    CHECK_EQ(codec_encode_request(&empty, out, sizeof(out)), CODEC_ERR_PROTO);
}

static void test_scan(void)
{
    codec_scan_t sc;
    /* id=7, stat { path = "/usr/a\0b" } */
    uint8_t nul[] = { 0x08, 0x07, 0x62, 0x0a, 0x0a, 0x08,
                      '/', 'u', 's', 'r', '/', 'a', 0, 'b' };
    codec_scan(cellar_Request_fields, nul, sizeof(nul), &sc);
    CHECK(sc.has_id);
    CHECK_EQ(sc.id, 7);
    CHECK_EQ(sc.body_tag, cellar_Request_stat_tag);
    CHECK_EQ(sc.problem, CODEC_SCAN_NUL);
    CHECK(strcmp(sc.prefix, "/usr/a") == 0);

    /* a 300-byte path: LONG, with the length and a prefix */
    static uint8_t longp[400];
    size_t n = 0;
    longp[n++] = 0x08; longp[n++] = 0x09;          /* id 9 */
    longp[n++] = 0x62; longp[n++] = 0xaf; longp[n++] = 0x02; /* stat, 303 */
    longp[n++] = 0x0a; longp[n++] = 0xac; longp[n++] = 0x02; /* path, 300 */
    for (int i = 0; i < 300; i++)
        longp[n++] = 'x';
    codec_scan(cellar_Request_fields, longp, n, &sc);
    CHECK_EQ(sc.problem, CODEC_SCAN_LONG);
    CHECK_EQ(sc.problem_len, 300);
    CHECK_EQ(sc.id, 9);
    CHECK_EQ(strlen(sc.prefix), CODEC_SCAN_PREFIX - 1);

    /* an unknown body field (33) */
    uint8_t unk[] = { 0x08, 0x03, 0x8a, 0x02, 0x00 };
    codec_scan(cellar_Request_fields, unk, sizeof(unk), &sc);
    CHECK_EQ(sc.unknown_tag, 33);
    CHECK_EQ(sc.problem, CODEC_SCAN_OK);
    CHECK_EQ(sc.body_tag, 0);

    /* a clean request */
    static cellar_Request r;
    static uint8_t out[CODEC_BUF_MIN];
    memset(&r, 0, sizeof(r));
    r.id = 4;
    r.which_body = cellar_Request_rename_tag;
    strcpy(r.body.rename.from, "a");
    strcpy(r.body.rename.to, "/usr/b");
    int k = codec_encode_request(&r, out, sizeof(out));
    CHECK(k > 0);
    codec_scan(cellar_Request_fields, out + CODEC_HDR, (size_t)k - CODEC_HDR,
               &sc);
    CHECK_EQ(sc.problem, CODEC_SCAN_OK);
    CHECK_EQ(sc.unknown_tag, 0);
    CHECK_EQ(sc.id, 4);
    CHECK_EQ(sc.body_tag, cellar_Request_rename_tag);
}

int main(void)
{
    test_lengths();
    test_splits();
    test_zero_copy();
    test_full_buffer_backpressure();
    test_garbage();
    test_encode_decode();
    test_scan();
    return check_summary("codec");
}
