/* svc_conn.c - connections: their input and output queues, queueing a reply
 * (svc_int.h, docs/ARCHITECTURE.md "Service core"). Device-side code: no OS
 * calls, no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

size_t svc_conn_input(svc_conn_t *c, const void *bytes, size_t len)
{
    if (c->closing || c->abort || c->eof)
        return 0;
    return codec_parser_feed(&c->in, bytes, len);
}

uint32_t svc_conn_input_space(svc_conn_t *c, uint8_t **dst)
{
    if (c->closing || c->abort || c->eof) {
        *dst = NULL;
        return 0;
    }
    return codec_parser_space(&c->in, dst);
}

void svc_conn_input_commit(svc_conn_t *c, uint32_t n)
{
    codec_parser_commit(&c->in, n);
}

void svc_conn_input_eof(svc_conn_t *c)
{
    c->eof = 1;
}

uint32_t svc_out_free(const svc_conn_t *c)
{
    return SVC_OUT_BYTES - (c->out_end - c->out_start);
}

/* Make `need` contiguous bytes free at the end of the output queue. */
bool svc_out_room(svc_conn_t *c, uint32_t need)
{
#if SVC_REQ_IN_QUEUE
    CFS_ASSERT(!c->req_held); /* issue 14: the queue holds its request */
#endif
    if (SVC_OUT_BYTES - c->out_end >= need)
        return true;
    if (c->out_start) {
        memmove(c->out, c->out + c->out_start, c->out_end - c->out_start);
        c->out_end -= c->out_start;
        c->out_start = 0;
    }
    return SVC_OUT_BYTES - c->out_end >= need;
}

bool svc_conn_want_read(const svc_conn_t *c)
{
    if (c->closing || c->abort || c->eof || c->in.err)
        return false;
    if (c->in.len >= c->in.cap)
        return false;
    return svc_out_free(c) >= CODEC_BUF_MIN;
}

size_t svc_conn_output(svc_conn_t *c, const uint8_t **ptr, size_t *len)
{
    *ptr = c->out + c->out_start;
    *len = c->out_end - c->out_start;
    return *len;
}

void svc_conn_consumed(svc_conn_t *c, size_t n)
{
    size_t have = c->out_end - c->out_start;
    if (n > have)
        n = have;
    c->out_start += (uint32_t)n;
    if (c->out_start == c->out_end)
        c->out_start = c->out_end = 0;
}

bool svc_conn_done(svc_conn_t *c)
{
    if (c->abort)
        return true;
    bool drained = c->out_end == c->out_start;
    if (c->closing)
        return drained;
    if (c->eof && drained) {
        if (c->svc && c->svc->job.kind && c->svc->job.conn == c)
            return false; /* its long request is still running */
        const uint8_t *f;
        uint32_t n;
        return codec_parser_next(&c->in, &f, &n) == 0;
    }
    return false;
}

void svc_conn_shutdown(svc_conn_t *c, const char *why)
{
    if (!c->closing) {
        c->closing = 1;
        c->close_reason = why;
    }
}

cellar_Request *svc_req_take(svc_t *s, svc_conn_t *c)
{
    CFS_ASSERT(!c->req_held);
    c->req_held = 1;
#if SVC_REQ_IN_QUEUE
    (void)s;
    CFS_ASSERT(c->out_start == c->out_end); /* one frame: served when empty */
    c->out_start = c->out_end = 0;
    return &c->qreq;
#else
    return &s->req;
#endif
}

void svc_req_give(svc_conn_t *c)
{
    CFS_ASSERT(c->req_held);
    c->req_held = 0;
}

/* Queue the reply in s->resp. The caller made sure there is room. */
void svc_resp_send(svc_t *s, svc_conn_t *c)
{
#if SVC_REQ_IN_QUEUE
    CFS_ASSERT(!c->req_held); /* issue 14: not over its request */
#endif
    int n = codec_encode_response(&s->resp, c->out + c->out_end,
                                  SVC_OUT_BYTES - c->out_end);
    if (n < 0) {
        /* Cannot happen with the proto's caps; answer something anyway. */
        uint32_t id = s->resp.id;
        svc_resp_reset(s, id);
        (void)svc_fail(s, -(int)cellar_Code_EIO, "reply does not encode");
        n = codec_encode_response(&s->resp, c->out + c->out_end,
                                  SVC_OUT_BYTES - c->out_end);
        if (n < 0) {
            c->abort = 1;
            return;
        }
    }
    c->out_end += (uint32_t)n;
}

/* The reply of a request is done: count and log a failure, then queue it. */
void svc_resp_finish(svc_t *s, svc_conn_t *c)
{
    if (s->resp.has_error) {
        s->resp.which_body = 0;
        c->errors++;
        svc_log_failure(s, c);
    }
    svc_resp_send(s, c);
}

int svc_reject_conn(svc_t *s, uint8_t *out, size_t cap)
{
    svc_resp_reset(s, 0);
    s->resp.has_error = true;
    s->resp.error.code = cellar_Code_ENOMEM;
    strcpy(s->resp.error.message,
           "connect: too many connections to this device; try again later");
    return codec_encode_response(&s->resp, out, cap);
}
