/*
 * link.h - the serial link layer (issue 12): a reliable, ordered byte
 * stream over a lossy byte pipe (a UART), in portable C.
 *
 * No OS calls, no allocation, no stdio: the caller owns the link_t and one
 * buffer of LINK_MEM_SIZE(payload, window) bytes, feeds the bytes that came
 * off the wire (link_input), drains the bytes to put on the wire
 * (link_tx_peek / link_tx_consume), reads and writes the carried stream
 * (link_read / link_write), and calls link_poll with a millisecond clock
 * whenever link_deadline() has passed. Every call takes "now" (ms, any
 * monotonic origin) so the layer runs on emulated time in tests.
 *
 * Wire format, rules and the set-up handshake: docs/PROTOCOL.md, "Link
 * layer (UART)". In short: frames of a 12-byte header (sync C3 5A, type,
 * session tag, seq, ack, sack bitmap, credit, length, 16-bit header check),
 * the payload unescaped, and a CRC-32 of header and payload; a window of up
 * to LINK_MAX_WINDOW frames with selective retransmission; SYN / SYNACK to
 * set up or reset the link, FIN to close it.
 *
 * RAM: sizeof(link_t) (760 bytes on x86-64, 736 on a Cortex-M4) +
 * LINK_MEM_SIZE(p, w) = 2 * w * p bytes of frame slots: 1.3 KiB for the
 * smallest configuration (p = 256, w = 1), 2.8 KiB for the device default
 * (p = 512, w = 2); tests/test_link.c asserts both <= 4 KiB.
 */
#ifndef CELLAR_LINK_H
#define CELLAR_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LINK_VERSION 1
#define LINK_HDR_SIZE 12          /* bytes before the payload */
#define LINK_CRC_SIZE 4           /* CRC-32 after the payload */
#define LINK_OVERHEAD (LINK_HDR_SIZE + LINK_CRC_SIZE)
#define LINK_MAX_WINDOW 8         /* frames in flight (the sack bitmap's reach + 1) */
#define LINK_MIN_PAYLOAD 64
#define LINK_MAX_PAYLOAD 4096
#define LINK_SYNC0 0xC3
#define LINK_SYNC1 0x5A

/* Frame types (low 4 bits of header byte 2). */
enum {
    LINK_T_DATA = 0,   /* payload = stream bytes; seq numbered */
    LINK_T_ACK = 1,    /* no payload: ack / sack / credit only */
    LINK_T_SYN = 2,    /* set-up request: version, window, payload, nonce */
    LINK_T_SYNACK = 3, /* set-up answer: the same + the peer's nonce echoed */
    LINK_T_FIN = 4,    /* the sender closed its end */
};
#define LINK_F_POLL 0x10 /* flag in byte 2: answer with an ACK at once */

/* Errors (negative errno values, returned as is). */
#define LINK_ERR_RESET (-104) /* -ECONNRESET: the peer restarted the link */
#define LINK_ERR_INVAL (-22)  /* -EINVAL: bad configuration */

/* Bytes of the caller's buffer for a link of window w frames of at most p
 * payload bytes: w transmit slots and w receive slots of p bytes (rounded
 * up to 4). */
#define LINK_SLOT_SIZE(p) (((size_t)(p) + 3u) & ~(size_t)3u)
#define LINK_MEM_SIZE(p, w) (2u * (size_t)(w) * LINK_SLOT_SIZE(p))

typedef struct link_config {
    uint16_t max_payload;   /* largest payload this end sends or accepts
                               (LINK_MIN_PAYLOAD..LINK_MAX_PAYLOAD; 0 = 1024) */
    uint8_t window;         /* frame slots each way (1..LINK_MAX_WINDOW; 0 = 8) */
    uint32_t byte_time_us;  /* wire time of one byte (10e6 / baud); 0 = 87 (115200) */
    uint32_t nonce;         /* this end's session nonce: a new value at every
                               start (a random number, a boot counter); 0 is
                               replaced by 1 */
    uint32_t syn_interval_ms; /* SYN repetition while setting up; 0 = 200 */
    uint32_t min_rto_ms;    /* floor of the retransmission timeout; 0 = 20 */
    uint32_t ack_delay_ms;  /* longest wait before a standalone ACK; 0 = 1.5
                               full frame times + 2 ms */
    uint32_t rx_gap_ms;     /* a frame whose bytes stop for longer than this
                               is dropped (its sender restarted); 0 = off.
                               Only for a driver that feeds bytes as they
                               arrive (an ISR), not one that may read late */
} link_config_t;

typedef enum link_state {
    LINK_SETUP = 0,  /* sending SYN until both ends know each other */
    LINK_OPEN = 1,
    LINK_RESET = 2,  /* the peer restarted: the stream is gone (-ECONNRESET) */
} link_state_t;

/* Counters (for tests and the benchmark). */
typedef struct link_stats {
    uint32_t frames_tx, frames_rx;    /* all frames sent / accepted */
    uint32_t data_tx, retransmits;    /* data frames sent, of which again */
    uint32_t acks_tx;                 /* standalone ACK frames sent */
    uint32_t bad_hdr, bad_crc;        /* frames refused */
    uint32_t dup_rx;                  /* data frames received twice */
    uint32_t timeouts;                /* retransmission timer expiries */
    uint64_t wire_tx, wire_rx;        /* bytes to / from the wire */
    uint64_t stream_tx, stream_rx;    /* stream bytes written / read */
} link_stats_t;

typedef struct link_slot {
    uint16_t len;      /* payload bytes */
    uint16_t off;      /* rx: bytes already read by the application */
    uint8_t state;     /* tx: 0 free, 1 filling, 2 sent, 3 sacked; rx: 0/1 */
    uint8_t resend;    /* tx: queued for retransmission */
    uint8_t tries;     /* tx: times sent */
    uint32_t txn;      /* tx: transmission number of its last sending */
    uint64_t sent_ms;  /* tx: time of its last sending */
} link_slot_t;

typedef struct link {
    link_config_t cfg;
    uint8_t *mem;               /* slots: tx 0..w-1, then rx 0..w-1 */
    link_state_t state;
    /* set-up */
    uint32_t peer_nonce;        /* 0 = unknown */
    bool peer_knows_us;         /* it echoed our nonce */
    bool peer_fin;              /* it closed its end */
    uint8_t fin_seq;            /* its snd_nxt at FIN */
    bool synack_sent;           /* we echoed peer_nonce */
    uint8_t ctl_pending;        /* bit per control frame to send */
    uint64_t syn_due;
    /* negotiated */
    uint16_t payload;           /* min of both ends' max_payload */
    uint16_t cur_payload;       /* current frame size (shrinks on errors) */
    uint8_t win;                /* min of both windows */
    /* transmit */
    uint8_t snd_una, snd_nxt;   /* oldest unacked seq; next seq to fill */
    uint8_t peer_ack, peer_credit;
    uint32_t txn;               /* transmission counter */
    uint16_t good_run;          /* frames acked since the last loss */
    uint32_t shrink_txn;        /* unused */
    uint32_t loss_n;            /* frames lost, decayed with loss_bytes */
    uint32_t loss_bytes;        /* data frame bytes sent, decayed */
    bool probe;                 /* send an ACK with POLL (zero credit) */
    uint64_t probe_due;
    uint8_t tx_head, rx_head;   /* slot index of snd_una / rcv_read */
    uint8_t snd_fill;           /* seq after the last slot holding data */
    uint32_t srtt_ms, rttvar_ms, rto_ms;
    uint32_t rto_base;          /* rto before backoff */
    uint64_t wire_free_us;      /* when our last byte leaves the wire, by
                                   the baud rate (a port's buffer hides it) */
    uint64_t rto_due;           /* 0 = not armed */
    /* receive */
    uint8_t rcv_nxt;            /* next seq expected in order */
    uint8_t rcv_read;           /* oldest seq not fully read by the app */
    uint8_t unacked;            /* frames received since our last ack */
    bool ack_now;               /* send an ACK at the next chance */
    uint64_t ack_due;           /* 0 = no delayed ACK */
    uint8_t last_credit;        /* credit in our last header */
    /* input parser */
    uint8_t rx_phase;           /* 0 hunt, 1 header, 2 payload, 3 crc */
    uint8_t rx_hdr[LINK_HDR_SIZE];
    uint16_t rx_pos, rx_len;
    uint8_t rx_crcb[4];
    uint32_t rx_crc;
    uint8_t *rx_dst;            /* where the payload goes (NULL = skip) */
    uint64_t rx_last;           /* time of the last byte in */
    uint8_t rx_ctl[16];         /* a control frame's payload */
    /* output: the frame being put on the wire */
    uint16_t pad_left;          /* filler bytes still to send */
    bool padded;                /* the set-up filler went out */
    uint64_t hold_until;        /* output held (port buffer full) until */
    uint8_t tx_phase;           /* 0 idle, 1 header, 2 payload, 3 crc */
    uint8_t tx_hdr[LINK_HDR_SIZE];
    uint8_t tx_ctl[16];
    uint8_t tx_crcb[4];
    const uint8_t *tx_body;
    uint16_t tx_pos, tx_len;
    int8_t tx_slot;             /* data slot being sent, or -1 */
    link_stats_t st;
    link_slot_t tx[LINK_MAX_WINDOW], rx[LINK_MAX_WINDOW];
} link_t;

/* CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, init and final xor
 * 0xFFFFFFFF; "123456789" -> 0xCBF43926), chainable: crc = link_crc32(crc,
 * ...) starting from 0. Table-free (a 16-entry nibble table). */
uint32_t link_crc32(uint32_t crc, const void *buf, size_t len);

/* Set a link up on mem (memlen >= LINK_MEM_SIZE(max_payload, window)).
 * The link starts in LINK_SETUP and sends SYN at once. Returns 0 or
 * LINK_ERR_INVAL. */
int link_init(link_t *l, const link_config_t *cfg, void *mem, size_t memlen,
              uint64_t now);

/* Feed bytes that came off the wire (any split, garbage included). */
void link_input(link_t *l, const uint8_t *buf, size_t len, uint64_t now);

/* The next wire bytes to send: sets *p and returns how many (0 = nothing
 * now). They stay offered until link_tx_consume says how many went out. */
size_t link_tx_peek(link_t *l, const uint8_t **p, uint64_t now);
void link_tx_consume(link_t *l, size_t n, uint64_t now);

/* Queue stream bytes. Returns how many were taken (0: the window is full;
 * room comes with acks, i.e. with input), LINK_ERR_RESET after a reset,
 * or -EPIPE (-32) before set-up or after close. */
int link_write(link_t *l, const uint8_t *buf, size_t len, uint64_t now);

/* Read stream bytes in order. Returns > 0 bytes, 0 when nothing is there
 * (see link_eof for the end of the stream), LINK_ERR_RESET after a reset. */
int link_read(link_t *l, uint8_t *buf, size_t len, uint64_t now);
/* Stream bytes ready to read. */
size_t link_readable(const link_t *l);
/* The peer closed its end and everything it sent has been read. */
bool link_eof(const link_t *l);
/* Every byte written has been acknowledged. */
bool link_tx_idle(const link_t *l);

/* Timers: the earliest time link_poll has work (0 = none). */
uint64_t link_deadline(const link_t *l);
void link_poll(link_t *l, uint64_t now);

/* Close our end: queue a FIN (sent by the next link_tx_peek). */
void link_close(link_t *l);

static inline bool link_is_open(const link_t *l)
{
    return l->state == LINK_OPEN;
}

#endif /* CELLAR_LINK_H */
