/* link.c - the serial link layer (see link.h; the wire rules are in
 * docs/PROTOCOL.md, "Link layer (UART)"). Portable: no OS calls, no
 * allocation, no stdio. Sequence numbers are 8-bit and compared modulo 256;
 * at most LINK_MAX_WINDOW frames are ever in flight, so a difference below
 * 128 means "at or after". */
#include "link.h"

#include <string.h>

#define CTL_SYN 1u
#define CTL_SYNACK 2u
#define CTL_FIN 4u
#define MAX_RTO_MS 2000u
#define SHRINK_FLOOR 128u

static const uint32_t crc_nib[16] = {
    0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4,
    0x4db26158, 0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
    0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
};

/* Raw register update (no pre/post inversion): the frame parser runs it a
 * byte at a time. */
static uint32_t crc_raw(uint32_t r, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        r ^= p[i];
        r = (r >> 4) ^ crc_nib[r & 15];
        r = (r >> 4) ^ crc_nib[r & 15];
    }
    return r;
}

uint32_t link_crc32(uint32_t crc, const void *buf, size_t len)
{
    return ~crc_raw(~crc, (const uint8_t *)buf, len);
}

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v);
    put16(p + 2, v >> 16);
}

static uint32_t get16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t get32(const uint8_t *p)
{
    return get16(p) | get16(p + 2) << 16;
}

static uint8_t seqd(uint8_t a, uint8_t b) /* a - b modulo 256 */
{
    return (uint8_t)(a - b);
}

static uint8_t *tx_mem(link_t *l, unsigned idx)
{
    return l->mem + (size_t)idx * LINK_SLOT_SIZE(l->cfg.max_payload);
}

static uint8_t *rx_mem(link_t *l, unsigned idx)
{
    return tx_mem(l, (unsigned)l->cfg.window + idx);
}

static unsigned tx_idx(const link_t *l, uint8_t seq)
{
    return (l->tx_head + seqd(seq, l->snd_una)) % l->cfg.window;
}

static unsigned rx_idx(const link_t *l, uint8_t seq)
{
    return (l->rx_head + seqd(seq, l->rcv_read)) % l->cfg.window;
}

/* Frames we can still take after rcv_nxt. */
static uint8_t our_credit(const link_t *l)
{
    return (uint8_t)(l->cfg.window - seqd(l->rcv_nxt, l->rcv_read));
}

static uint32_t initial_rto(const link_t *l)
{
    /* Two windows of full frames plus a kernel buffer, there and back. */
    uint64_t bytes = 4096u + (uint64_t)l->cfg.window *
                                 (l->cfg.max_payload + LINK_OVERHEAD);
    uint64_t ms = 2 * bytes * l->cfg.byte_time_us / 1000u + 100u;
    return ms > MAX_RTO_MS ? MAX_RTO_MS : (uint32_t)ms;
}

int link_init(link_t *l, const link_config_t *cfg, void *mem, size_t memlen,
              uint64_t now)
{
    memset(l, 0, sizeof(*l));
    if (cfg)
        l->cfg = *cfg;
    link_config_t *c = &l->cfg;
    if (!c->max_payload)
        c->max_payload = 1024;
    if (!c->window)
        c->window = LINK_MAX_WINDOW;
    if (!c->byte_time_us)
        c->byte_time_us = 87;
    if (!c->nonce)
        c->nonce = 1;
    if (!c->syn_interval_ms)
        c->syn_interval_ms = 200;
    if (!c->min_rto_ms)
        c->min_rto_ms = 20;
    if (!c->ack_delay_ms) /* time for the next frame to come: one ack for both */
        c->ack_delay_ms = 2u + (uint32_t)((c->max_payload + LINK_OVERHEAD) *
                                          (uint64_t)c->byte_time_us * 3 / 2000u);
    if (c->max_payload < LINK_MIN_PAYLOAD || c->max_payload > LINK_MAX_PAYLOAD ||
        c->window > LINK_MAX_WINDOW || !mem ||
        memlen < LINK_MEM_SIZE(c->max_payload, c->window))
        return LINK_ERR_INVAL;
    l->mem = mem;
    l->state = LINK_SETUP;
    l->ctl_pending = CTL_SYN;
    l->syn_due = now + c->syn_interval_ms;
    l->payload = l->cur_payload = c->max_payload;
    l->win = c->window;
    l->rto_base = l->rto_ms = initial_rto(l);
    l->tx_slot = -1;
    l->loss_bytes = 128u * 1024; /* a clean prior: one early loss is noise */

    return 0;
}

/* ---- acknowledgements received ------------------------------------------- */

/* Frame size from the loss rate: with q lost frames per wire byte, a
 * frame of L payload bytes arrives with odds about exp(-q (L + 16)), and
 * L / (L + 16) * exp(-q (L + 16)) is largest near L = sqrt(16 / q). Take
 * the power of two at or below that, at least SHRINK_FLOOR. */
static void pick_payload(link_t *l)
{
    uint32_t best = l->payload;
    if (l->loss_n) {
        /* L^2 <= 16 * bytes / losses */
        uint64_t lim = 16ull * l->loss_bytes / l->loss_n;
        best = SHRINK_FLOOR;
        while (best + 64 <= l->payload && (uint64_t)(best + 64) * (best + 64) <= lim)
            best += 64;
        if (best > l->payload)
            best = l->payload;
    }
    l->cur_payload = (uint16_t)best;
}

static void count_sent(link_t *l, unsigned len)
{
    l->loss_bytes += len + LINK_OVERHEAD;
    if (l->loss_bytes > 256u * 1024) { /* forget slowly */
        l->loss_bytes /= 2;
        l->loss_n /= 2;
    }
    pick_payload(l);
}

static void shrink(link_t *l, uint32_t lost_txn)
{
    (void)lost_txn;
    l->good_run = 0;
    l->loss_n++;
    pick_payload(l);
}

static void mark_resend(link_t *l, link_slot_t *s)
{
    if (s->state == 2 && !s->resend) {
        s->resend = 1;
        shrink(l, s->txn);
    }
}

static void rtt_sample(link_t *l, uint32_t ms)
{
    if (!l->srtt_ms) {
        l->srtt_ms = ms ? ms : 1;
        l->rttvar_ms = ms / 2;
    } else {
        uint32_t d = ms > l->srtt_ms ? ms - l->srtt_ms : l->srtt_ms - ms;
        l->rttvar_ms = (3 * l->rttvar_ms + d) / 4;
        l->srtt_ms = (7 * l->srtt_ms + ms) / 8;
        if (!l->srtt_ms)
            l->srtt_ms = 1;
    }
    /* A frame's ack may wait behind one full frame each way. */
    uint32_t frame = (uint32_t)((l->payload + LINK_OVERHEAD) *
                                (uint64_t)l->cfg.byte_time_us / 1000u);
    uint32_t rto = l->srtt_ms + 4 * l->rttvar_ms + 2 * frame +
                   l->cfg.ack_delay_ms + 10;
    if (rto < l->cfg.min_rto_ms)
        rto = l->cfg.min_rto_ms;
    l->rto_base = l->rto_ms = rto > MAX_RTO_MS ? MAX_RTO_MS : rto;
}

static void on_ack(link_t *l, uint8_t ack, uint8_t sack, uint8_t credit,
                   uint64_t now)
{
    uint8_t inflight = seqd(l->snd_nxt, l->snd_una);
    if (seqd(ack, l->snd_una) > inflight)
        return; /* stale or nonsense */
    if (l->snd_una != ack)
        l->rto_ms = l->rto_base; /* progress: no more backoff */
    while (l->snd_una != ack) {
        link_slot_t *s = &l->tx[l->tx_head];
        if (l->tx_phase && l->tx_slot == (int8_t)l->tx_head)
            break; /* a (needless) resend is on the wire: free it after */
        if (s->tries == 1 && s->state == 2)
            rtt_sample(l, now > s->sent_ms ? (uint32_t)(now - s->sent_ms) : 0);
        memset(s, 0, sizeof(*s));
        l->tx_head = (uint8_t)((l->tx_head + 1) % l->cfg.window);
        l->snd_una++;
    }
    /* The frame at ack is by definition missing at the receiver: if an
     * older header had it selectively acked, that no longer holds (safety
     * net: resend it rather than wait for ever). */
    if (l->snd_una == ack && l->snd_una != l->snd_nxt) {
        link_slot_t *u = &l->tx[l->tx_head];
        if (u->state == 3) {
            u->state = 2;
            mark_resend(l, u);
        }
    }
    l->peer_ack = ack;
    l->peer_credit = credit;
    if (credit)
        l->probe = false;
    /* Selective acks: frames after ack that arrived; a frame before the
     * newest of them that was sent earlier than it is lost. */
    uint32_t newest = 0;
    for (unsigned i = 0; i < 8; i++) {
        uint8_t seq = (uint8_t)(ack + 1 + i);
        if (!(sack >> i & 1) || seqd(seq, l->snd_una) >= seqd(l->snd_nxt, l->snd_una))
            continue;
        link_slot_t *s = &l->tx[tx_idx(l, seq)];
        if (s->state == 2 || s->state == 3) {
            s->state = 3;
            s->resend = 0;
            if (s->txn > newest)
                newest = s->txn;
        }
    }
    if (newest)
        for (uint8_t seq = l->snd_una; seq != l->snd_nxt; seq++) {
            link_slot_t *s = &l->tx[tx_idx(l, seq)];
            bool on_wire = l->tx_phase && l->tx_slot == (int8_t)tx_idx(l, seq);
            if (s->state == 2 && s->tries && !on_wire && s->txn < newest)
                mark_resend(l, s);
        }
}

/* ---- frames received ----------------------------------------------------- */

static void go_open(link_t *l)
{
    if (l->state != LINK_SETUP)
        return;
    l->state = LINK_OPEN;
    l->ctl_pending &= (uint8_t)~CTL_SYN;
    l->peer_credit = l->win; /* the peer's slots are all free at set-up */
    l->peer_ack = l->snd_una;
}

/* SYN / SYNACK payload: version, window, max payload, nonce [, echo]. */
static void on_setup(link_t *l, unsigned type, const uint8_t *p, unsigned n)
{
    if (n < 8 || p[0] < 1)
        return;
    uint32_t nonce = get32(p + 4);
    unsigned win = p[1], pay = get16(p + 2);
    if (!nonce || !win || pay < LINK_MIN_PAYLOAD)
        return;
    if (l->state == LINK_OPEN) {
        if (nonce != l->peer_nonce) {
            l->state = LINK_RESET; /* the peer restarted */
            return;
        }
        if (type == LINK_T_SYN)
            l->ctl_pending |= CTL_SYNACK; /* our SYNACK was lost */
        return;
    }
    if (l->state != LINK_SETUP)
        return;
    if (nonce != l->peer_nonce) {
        l->peer_nonce = nonce;
        l->synack_sent = false;
    }
    l->win = (uint8_t)(win < l->cfg.window ? win : l->cfg.window);
    l->payload = (uint16_t)(pay < l->cfg.max_payload ? pay : l->cfg.max_payload);
    l->cur_payload = l->payload;
    if (type == LINK_T_SYN) {
        l->ctl_pending |= CTL_SYNACK;
    } else if (n >= 12 && get32(p + 8) == l->cfg.nonce) {
        l->peer_knows_us = true;
        go_open(l);
        l->ctl_pending |= CTL_SYNACK; /* so the peer learns our echo too */
    }
}

static void frame_done(link_t *l, uint64_t now)
{
    const uint8_t *h = l->rx_hdr;
    unsigned type = h[2] & 15, len = l->rx_len;
    l->st.frames_rx++;
    if (type == LINK_T_SYN || type == LINK_T_SYNACK) {
        on_setup(l, type, l->rx_ctl, len);
        return;
    }
    if (!l->peer_nonce || h[3] != (uint8_t)l->peer_nonce)
        return; /* another session's frame */
    if (l->state == LINK_SETUP) {
        if (!l->synack_sent)
            return;
        go_open(l); /* the peer is open: it had our echo */
        l->peer_knows_us = true;
    }
    if (l->state != LINK_OPEN)
        return;
    on_ack(l, h[5], h[6], h[7], now);
    if (h[2] & LINK_F_POLL)
        l->ack_now = true;
    if (type == LINK_T_FIN) {
        l->peer_fin = true;
        l->fin_seq = h[4];
        return;
    }
    if (type != LINK_T_DATA)
        return;
    uint8_t seq = h[4];
    uint8_t ahead = seqd(seq, l->rcv_nxt);
    if (ahead >= 128) { /* before rcv_nxt: a duplicate */
        l->st.dup_rx++;
        l->ack_now = true;
        return;
    }
    if (!l->rx_dst) { /* beyond the window, or already held */
        if (ahead < our_credit(l))
            l->st.dup_rx++;
        l->ack_now = true;
        return;
    }
    link_slot_t *s = &l->rx[rx_idx(l, seq)];
    s->state = 1;
    s->len = (uint16_t)len;
    s->off = 0;
    if (ahead) {
        l->ack_now = true; /* out of order: tell the sender (sack) */
        return;
    }
    while (seqd(l->rcv_nxt, l->rcv_read) < l->cfg.window &&
           l->rx[rx_idx(l, l->rcv_nxt)].state == 1)
        l->rcv_nxt++;
    unsigned every = l->win / 2 ? l->win / 2 : 1;
    /* A short frame ends a message (a request, an answer): its sender
     * probably waits for more than a full frame; ack it now. */
    if (++l->unacked >= every || len < l->payload / 2u)
        l->ack_now = true;
    else if (!l->ack_due)
        l->ack_due = now + l->cfg.ack_delay_ms;
}

/* A header is complete: is it one? Where does the payload go? */
static bool header_ok(link_t *l)
{
    const uint8_t *h = l->rx_hdr;
    if (get16(h + 10) != (link_crc32(0, h, 10) & 0xffffu))
        return false;
    unsigned type = h[2] & 15, len = get16(h + 8);
    if (type > LINK_T_FIN || (h[2] & 0xe0))
        return false;
    if (type == LINK_T_DATA ? (len == 0 || len > l->cfg.max_payload)
                            : len > sizeof(l->rx_ctl))
        return false;
    l->rx_len = (uint16_t)len;
    l->rx_dst = NULL;
    if (type != LINK_T_DATA) {
        l->rx_dst = l->rx_ctl;
    } else if (l->state == LINK_OPEN && l->peer_nonce &&
               h[3] == (uint8_t)l->peer_nonce) {
        uint8_t ahead = seqd(h[4], l->rcv_nxt);
        if (ahead < our_credit(l) && l->rx[rx_idx(l, h[4])].state == 0)
            l->rx_dst = rx_mem(l, rx_idx(l, h[4]));
    }
    return true;
}

static void rx_byte(link_t *l, uint8_t b, uint64_t now);

static void rx_rescan(link_t *l, const uint8_t *p, unsigned n, uint64_t now)
{
    uint8_t tmp[LINK_HDR_SIZE];
    memcpy(tmp, p, n);
    l->rx_phase = 0;
    l->rx_pos = 0;
    for (unsigned i = 0; i < n; i++)
        rx_byte(l, tmp[i], now);
}

static void rx_byte(link_t *l, uint8_t b, uint64_t now)
{
    switch (l->rx_phase) {
    case 0: /* hunting for the sync marker */
        if (l->rx_pos == 0) {
            if (b == LINK_SYNC0)
                l->rx_hdr[l->rx_pos++] = b;
        } else if (b == LINK_SYNC1) {
            l->rx_hdr[l->rx_pos++] = b;
            l->rx_phase = 1;
        } else {
            l->rx_pos = b == LINK_SYNC0 ? 1 : 0;
        }
        return;
    case 1:
        l->rx_hdr[l->rx_pos++] = b;
        if (l->rx_pos < LINK_HDR_SIZE)
            return;
        if (!header_ok(l)) {
            l->st.bad_hdr++;
            rx_rescan(l, l->rx_hdr + 1, LINK_HDR_SIZE - 1, now);
            return;
        }
        l->rx_crc = crc_raw(0xffffffffu, l->rx_hdr, LINK_HDR_SIZE);
        l->rx_pos = 0;
        l->rx_phase = l->rx_len ? 2 : 3;
        return;
    case 2:
        if (l->rx_dst)
            l->rx_dst[l->rx_pos] = b;
        l->rx_crc = crc_raw(l->rx_crc, &b, 1);
        if (++l->rx_pos == l->rx_len) {
            l->rx_pos = 0;
            l->rx_phase = 3;
        }
        return;
    default:
        l->rx_crcb[l->rx_pos++] = b;
        if (l->rx_pos < 4)
            return;
        l->rx_phase = 0;
        l->rx_pos = 0;
        if (get32(l->rx_crcb) != ~l->rx_crc) {
            l->st.bad_crc++;
            return;
        }
        frame_done(l, now);
        return;
    }
}

void link_input(link_t *l, const uint8_t *buf, size_t len, uint64_t now)
{
    l->st.wire_rx += len;
    if (len && l->rx_phase && l->cfg.rx_gap_ms &&
        now > l->rx_last + l->cfg.rx_gap_ms) {
        l->st.bad_hdr++; /* a frame cut short: its sender went away */
        l->rx_phase = 0;
        l->rx_pos = 0;
    }
    if (len)
        l->rx_last = now;
    for (size_t i = 0; i < len; i++)
        rx_byte(l, buf[i], now);
}

/* ---- frames sent ------------------------------------------------------------ */

static void build(link_t *l, unsigned type, unsigned flags, uint8_t seq,
                  const uint8_t *body, unsigned len)
{
    uint8_t *h = l->tx_hdr;
    h[0] = LINK_SYNC0;
    h[1] = LINK_SYNC1;
    h[2] = (uint8_t)(type | flags);
    h[3] = (uint8_t)l->cfg.nonce;
    h[4] = seq;
    h[5] = l->rcv_nxt;
    uint8_t sack = 0;
    for (unsigned i = 0; i < 8; i++) {
        uint8_t s = (uint8_t)(l->rcv_nxt + 1 + i);
        if (seqd(s, l->rcv_read) < l->cfg.window &&
            l->rx[rx_idx(l, s)].state == 1)
            sack |= (uint8_t)(1u << i);
    }
    h[6] = sack;
    h[7] = l->last_credit = our_credit(l);
    put16(h + 8, len);
    put16(h + 10, link_crc32(0, h, 10));
    uint32_t crc = crc_raw(0xffffffffu, h, LINK_HDR_SIZE);
    put32(l->tx_crcb, ~crc_raw(crc, body, len));
    l->tx_body = body;
    l->tx_len = (uint16_t)len;
    l->tx_pos = 0;
    l->tx_phase = 1;
    l->ack_now = false;
    l->ack_due = 0;
    l->unacked = 0;
    l->st.frames_tx++;
}

static unsigned setup_body(link_t *l, bool echo)
{
    uint8_t *p = l->tx_ctl;
    p[0] = LINK_VERSION;
    p[1] = l->cfg.window;
    put16(p + 2, l->cfg.max_payload);
    put32(p + 4, l->cfg.nonce);
    if (!echo)
        return 8;
    put32(p + 8, l->peer_nonce);
    return 12;
}

/* Pick the next frame to put on the wire; false when there is none. */
static bool start_frame(link_t *l, uint64_t now)
{
    l->tx_slot = -1;
    if (l->state == LINK_RESET)
        return false;
    if (l->ctl_pending & CTL_SYNACK && l->peer_nonce) {
        l->ctl_pending &= (uint8_t)~CTL_SYNACK;
        l->synack_sent = true;
        build(l, LINK_T_SYNACK, 0, 0, l->tx_ctl, setup_body(l, true));
        return true;
    }
    if (l->ctl_pending & CTL_SYN) {
        l->ctl_pending &= (uint8_t)~CTL_SYN;
        if (l->state == LINK_SETUP) {
            build(l, LINK_T_SYN, 0, 0, l->tx_ctl, setup_body(l, false));
            return true;
        }
    }
    if (l->state != LINK_OPEN)
        return false;
    if (l->ctl_pending & CTL_FIN) {
        l->ctl_pending &= (uint8_t)~CTL_FIN;
        build(l, LINK_T_FIN, 0, l->snd_nxt, NULL, 0);
        return true;
    }
    /* A retransmission, oldest first. */
    for (uint8_t seq = l->snd_una; seq != l->snd_nxt; seq++) {
        unsigned i = tx_idx(l, seq);
        if (l->tx[i].state == 2 && l->tx[i].resend) {
            l->tx[i].resend = 0;
            l->st.retransmits++;
            l->tx_slot = (int8_t)i;
            build(l, LINK_T_DATA, 0, seq, tx_mem(l, i), l->tx[i].len);
            return true;
        }
    }
    /* New data, within the peer's credit. */
    if (l->snd_nxt != l->snd_fill &&
        seqd(l->snd_nxt, l->peer_ack) < l->peer_credit) {
        unsigned i = tx_idx(l, l->snd_nxt);
        l->tx[i].state = 2;
        l->tx_slot = (int8_t)i;
        build(l, LINK_T_DATA, 0, l->snd_nxt, tx_mem(l, i), l->tx[i].len);
        l->snd_nxt++;
        return true;
    }
    if (l->probe && now >= l->probe_due) {
        l->probe_due = now + l->rto_ms;
        build(l, LINK_T_ACK, LINK_F_POLL, 0, NULL, 0);
        l->st.acks_tx++;
        return true;
    }
    if (l->ack_now || (l->ack_due && now >= l->ack_due) ||
        (l->last_credit == 0 && our_credit(l) > 0)) {
        build(l, LINK_T_ACK, 0, 0, NULL, 0);
        l->st.acks_tx++;
        return true;
    }
    return false;
}

static const uint8_t zeros[64];

size_t link_tx_peek(link_t *l, const uint8_t **p, uint64_t now)
{
    /* Keep at most about one frame queued ahead of the wire (a port's
     * buffer would otherwise hold many): acks leave fresh, round trips
     * stay short. */
    uint64_t hold_us = (uint64_t)(l->payload + LINK_OVERHEAD) *
                           l->cfg.byte_time_us + 2000u;
    if (!l->tx_phase && l->wire_free_us > now * 1000u + hold_us) {
        l->hold_until = (l->wire_free_us - hold_us) / 1000u + 1;
        return 0;
    }
    l->hold_until = 0;
    if (l->pad_left && !l->tx_phase) {
        *p = zeros;
        return l->pad_left < sizeof(zeros) ? l->pad_left : sizeof(zeros);
    }
    for (;;) {
        switch (l->tx_phase) {
        case 0:
            if (!start_frame(l, now))
                return 0;
            continue;
        case 1:
            *p = l->tx_hdr + l->tx_pos;
            return LINK_HDR_SIZE - l->tx_pos;
        case 2:
            if (l->tx_pos == l->tx_len) {
                l->tx_phase = 3;
                l->tx_pos = 0;
                continue;
            }
            *p = l->tx_body + l->tx_pos;
            return (size_t)(l->tx_len - l->tx_pos);
        default:
            *p = l->tx_crcb + l->tx_pos;
            return 4u - l->tx_pos;
        }
    }
}

void link_tx_consume(link_t *l, size_t n, uint64_t now)
{
    l->st.wire_tx += n;
    if (l->pad_left && !l->tx_phase) {
        l->pad_left = (uint16_t)(n < l->pad_left ? l->pad_left - n : 0);
        n = 0;
    }
    /* The bytes queue in the port's buffer and leave at the baud rate: a
     * frame counts as sent when its last byte is on the wire. */
    if (l->wire_free_us < now * 1000u)
        l->wire_free_us = now * 1000u;
    l->wire_free_us += (uint64_t)n * l->cfg.byte_time_us;
    while (n && l->tx_phase) {
        size_t end = l->tx_phase == 1 ? (size_t)LINK_HDR_SIZE
                   : l->tx_phase == 2 ? (size_t)l->tx_len : (size_t)4;
        size_t left = end - l->tx_pos;
        size_t k = n < left ? n : left;
        l->tx_pos = (uint16_t)(l->tx_pos + k);
        n -= k;
        if (l->tx_pos < end)
            break;
        l->tx_pos = 0;
        if (l->tx_phase++ < 3)
            continue;
        l->tx_phase = 0; /* the frame is out */
        if (l->tx_slot >= 0) {
            link_slot_t *s = &l->tx[l->tx_slot];
            s->sent_ms = (l->wire_free_us + 999u) / 1000u;
            s->txn = ++l->txn;
            if (s->tries < 255)
                s->tries++;
            count_sent(l, s->len);
            l->st.data_tx++;
            l->tx_slot = -1;
        }
    }
}

/* ---- the stream ------------------------------------------------------------- */

int link_write(link_t *l, const uint8_t *buf, size_t len, uint64_t now)
{
    (void)now;
    if (l->state == LINK_RESET)
        return LINK_ERR_RESET;
    if (l->state != LINK_OPEN || l->ctl_pending & CTL_FIN)
        return -32;
    size_t done = 0;
    while (done < len) {
        uint8_t used = seqd(l->snd_fill, l->snd_una);
        link_slot_t *s = NULL;
        unsigned i = 0;
        if (l->snd_fill != l->snd_nxt) {
            uint8_t last = (uint8_t)(l->snd_fill - 1);
            i = tx_idx(l, last);
            if (l->tx[i].state == 1 && l->tx[i].len < l->cur_payload)
                s = &l->tx[i];
        }
        if (!s) {
            if (used >= l->win || used >= l->cfg.window)
                break;
            i = tx_idx(l, l->snd_fill);
            s = &l->tx[i];
            memset(s, 0, sizeof(*s));
            s->state = 1;
            l->snd_fill++;
        }
        size_t k = (size_t)(l->cur_payload - s->len);
        if (k > len - done)
            k = len - done;
        memcpy(tx_mem(l, i) + s->len, buf + done, k);
        s->len = (uint16_t)(s->len + k);
        done += k;
    }
    l->st.stream_tx += done;
    return (int)done;
}

size_t link_readable(const link_t *l)
{
    size_t n = 0;
    for (uint8_t seq = l->rcv_read; seq != l->rcv_nxt; seq++) {
        const link_slot_t *s = &l->rx[rx_idx(l, seq)];
        n += (size_t)(s->len - s->off);
    }
    return n;
}

int link_read(link_t *l, uint8_t *buf, size_t len, uint64_t now)
{
    (void)now;
    if (l->state == LINK_RESET)
        return LINK_ERR_RESET;
    size_t done = 0;
    while (done < len && l->rcv_read != l->rcv_nxt) {
        unsigned i = l->rx_head;
        link_slot_t *s = &l->rx[i];
        size_t k = (size_t)(s->len - s->off);
        if (k > len - done)
            k = len - done;
        memcpy(buf + done, rx_mem(l, i) + s->off, k);
        s->off = (uint16_t)(s->off + k);
        done += k;
        if (s->off == s->len) {
            memset(s, 0, sizeof(*s));
            l->rx_head = (uint8_t)((l->rx_head + 1) % l->cfg.window);
            l->rcv_read++;
        }
    }
    l->st.stream_rx += done;
    return (int)done;
}

bool link_eof(const link_t *l)
{
    return l->peer_fin && l->rcv_nxt == l->fin_seq &&
           l->rcv_read == l->rcv_nxt;
}

bool link_tx_idle(const link_t *l)
{
    return l->snd_una == l->snd_fill && l->tx_phase == 0;
}

void link_close(link_t *l)
{
    if (l->state == LINK_OPEN)
        l->ctl_pending |= CTL_FIN;
}

/* ---- timers ---------------------------------------------------------------- */

static uint64_t rto_due(const link_t *l)
{
    uint64_t due = 0;
    for (uint8_t seq = l->snd_una; seq != l->snd_nxt; seq++) {
        const link_slot_t *s = &l->tx[tx_idx(l, seq)];
        if (s->state != 2 || s->resend || !s->tries ||
            (l->tx_phase && l->tx_slot == (int8_t)tx_idx(l, seq)))
            continue;
        uint64_t d = (uint64_t)s->sent_ms + l->rto_ms;
        if (!due || d < due)
            due = d;
    }
    return due;
}

uint64_t link_deadline(const link_t *l)
{
    uint64_t d = 0;
#define TAKE(t) do { uint64_t t_ = (t); if (t_ && (!d || t_ < d)) d = t_; } while (0)
    TAKE(l->hold_until);
    if (l->state == LINK_SETUP)
        TAKE(l->syn_due);
    if (l->state != LINK_OPEN)
        return d;
    TAKE(l->ack_due);
    /* Zero credit with data waiting and nothing in flight: link_poll arms
     * the probe (the peer's window update may have been lost). */
    if (!l->probe && l->snd_nxt != l->snd_fill && l->snd_una == l->snd_nxt &&
        seqd(l->snd_nxt, l->peer_ack) >= l->peer_credit)
        TAKE(1);
    if (l->probe)
        TAKE(l->probe_due ? l->probe_due : 1);
    TAKE(rto_due(l));
#undef TAKE
    /* Output held for the wire: nothing to send before then. */
    if (l->hold_until && d && d < l->hold_until)
        d = l->hold_until;
    return d;
}

void link_poll(link_t *l, uint64_t now)
{
    if (l->state == LINK_SETUP && now >= l->syn_due) {
        /* The first SYN went unanswered: perhaps the peer is still inside
         * a frame from our previous life (we restarted mid-frame). Filler
         * (once) ends that frame for it; it fails its CRC and the peer
         * hunts for our next SYN. */
        if (!l->padded) {
            l->padded = true;
            l->pad_left = (uint16_t)(l->cfg.max_payload + LINK_OVERHEAD);
        }
        l->ctl_pending |= CTL_SYN;
        l->syn_due = now + l->cfg.syn_interval_ms;
    }
    if (l->state != LINK_OPEN)
        return;
    uint64_t r = rto_due(l);
    if (r && now >= r) {
        l->st.timeouts++;
        for (uint8_t seq = l->snd_una; seq != l->snd_nxt; seq++) {
            link_slot_t *s = &l->tx[tx_idx(l, seq)];
            if (s->state == 2 && s->tries &&
                !(l->tx_phase && l->tx_slot == (int8_t)tx_idx(l, seq)) &&
                (uint64_t)s->sent_ms + l->rto_ms <= now)
                mark_resend(l, s);
        }
        /* Back off at most to twice the base: a serial line has no
         * congestion to wait out, only noise (and a peer that is away). */
        uint32_t cap = l->rto_base * 2 < MAX_RTO_MS ? l->rto_base * 2 : MAX_RTO_MS;
        l->rto_ms = l->rto_ms * 2 > cap ? cap : l->rto_ms * 2;
    }
    /* Zero credit with data waiting and nothing in flight: probe. */
    bool blocked = l->snd_nxt != l->snd_fill && l->snd_una == l->snd_nxt &&
                   seqd(l->snd_nxt, l->peer_ack) >= l->peer_credit;
    if (blocked && !l->probe) {
        l->probe = true;
        l->probe_due = now + l->rto_ms;
    } else if (!blocked) {
        l->probe = false;
    }
}
