/*
 * limits: token buckets and the per-address WebSocket count; see the header.
 *
 * The per-address count is a count-min sketch: each address adds 1 to one
 * counter in each of two rows, at columns given by two secretly keyed hashes,
 * and its count is the smaller of the two. It never under-counts, so the
 * limit always holds; it over-counts an address only when both of its
 * counters are shared with busy addresses, which with 8,192 columns per row
 * and secret keys takes many busy neighbours (an attacker cannot aim at a
 * victim's columns without the keys). Fixed size (64 KiB), no allocation per
 * connection, no lock, no removal problem: a close subtracts what was added.
 */
#include "parley/app/limits.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/random.h>

uint32_t pl_limits_take(pl_limits_bucket_t *b, const pl_limits_rate_t *r, uint32_t n,
                        uint64_t now_ms)
{
    int64_t cap = (int64_t)r->burst * 1000;
    uint32_t now = (uint32_t)now_ms;
    if (b->debt > 0) { /* refill for the time since the last take (unsigned: wraps right) */
        int64_t paid = (int64_t)(uint32_t)(now - b->at) * r->rate;
        b->debt = paid >= b->debt ? 0 : b->debt - (int32_t)paid;
    }
    b->at = now;
    /* More than a bucket costs a whole bucket: it passes once the bucket is full. */
    int64_t want = (int64_t)(n < r->burst ? n : r->burst) * 1000;
    int64_t have = cap - b->debt;
    if (have >= want) {
        b->debt += (int32_t)want;
        return 0;
    }
    if (!r->rate) return UINT32_MAX;
    int64_t ms = (want - have + r->rate - 1) / r->rate; /* ceil: the tokens are there then */
    return ms < 1 ? 1 : ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

/* splitmix64's finalizer: every input bit reaches every output bit. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The address as one word: IPv4's 32 bits, or an IPv6 address's /64; the family in the top. */
static int addr_word(const struct sockaddr *a, uint64_t *w)
{
    if (a->sa_family == AF_INET) {
        uint32_t v;
        memcpy(&v, &((const struct sockaddr_in *)a)->sin_addr, 4);
        *w = v;
        return 0;
    }
    if (a->sa_family == AF_INET6) {
        const uint8_t *p = ((const struct sockaddr_in6 *)a)->sin6_addr.s6_addr;
        /* An IPv4-mapped address is its IPv4 address. */
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        uint32_t v4;
        if (memcmp(p, mapped, 12) == 0) {
            memcpy(&v4, p + 12, 4);
            *w = v4;
            return 0;
        }
        memcpy(w, p, 8);
        *w ^= 1ull << 63;
        return 0;
    }
    return -1;
}

static void columns(const pl_limits_conns_t *t, uint64_t w, uint16_t col[PL_LIMITS_ROWS])
{
    for (int r = 0; r < PL_LIMITS_ROWS; r++)
        col[r] = (uint16_t)(mix(mix(w ^ t->key[r]) + t->key[r]) % PL_LIMITS_COLS);
}

void pl_limits_conns_init(pl_limits_conns_t *t, uint32_t per_addr, uint32_t total_max)
{
    t->per_addr = per_addr;
    t->total_max = total_max;
    if (getrandom(t->key, sizeof t->key, 0) != (ssize_t)sizeof t->key) {
        /* No entropy: any keys still count correctly; only aiming at a victim gets easier. */
        t->key[0] = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)t;
        t->key[1] = mix(t->key[0]);
    }
}

pl_limits_reason_t pl_limits_conn_acquire(pl_limits_conns_t *t, const struct sockaddr *addr,
                                          pl_limits_slot_t *slot)
{
    memset(slot, 0, sizeof *slot);
    /* Add first, then check, then undo: two shards racing for the last place cannot both
     * get it (at worst both are refused). */
    unsigned n = atomic_fetch_add_explicit(&t->total, 1, memory_order_relaxed) + 1;
    if (t->total_max && n > t->total_max) {
        atomic_fetch_sub_explicit(&t->total, 1, memory_order_relaxed);
        return PL_LIMITS_INSTANCE;
    }
    uint64_t w;
    if (t->per_addr && addr_word(addr, &w) == 0) {
        columns(t, w, slot->col);
        unsigned least = UINT32_MAX;
        for (int r = 0; r < PL_LIMITS_ROWS; r++) {
            unsigned v =
                atomic_fetch_add_explicit(&t->count[r][slot->col[r]], 1, memory_order_relaxed) + 1;
            if (v < least) least = v;
        }
        if (least > t->per_addr) {
            for (int r = 0; r < PL_LIMITS_ROWS; r++)
                atomic_fetch_sub_explicit(&t->count[r][slot->col[r]], 1, memory_order_relaxed);
            atomic_fetch_sub_explicit(&t->total, 1, memory_order_relaxed);
            return PL_LIMITS_PER_ADDR;
        }
        slot->counted = 2; /* the total and the address */
    } else {
        slot->counted = 1; /* the total only */
    }
    return PL_LIMITS_OK;
}

void pl_limits_conn_release(pl_limits_conns_t *t, pl_limits_slot_t *slot)
{
    if (!slot->counted) return;
    if (slot->counted == 2)
        for (int r = 0; r < PL_LIMITS_ROWS; r++)
            atomic_fetch_sub_explicit(&t->count[r][slot->col[r]], 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&t->total, 1, memory_order_relaxed);
    slot->counted = 0;
}

uint32_t pl_limits_conn_count(pl_limits_conns_t *t, const struct sockaddr *addr)
{
    uint64_t w;
    uint16_t col[PL_LIMITS_ROWS];
    if (addr_word(addr, &w) != 0) return 0;
    columns(t, w, col);
    unsigned least = UINT32_MAX;
    for (int r = 0; r < PL_LIMITS_ROWS; r++) {
        unsigned v = atomic_load_explicit(&t->count[r][col[r]], memory_order_relaxed);
        if (v < least) least = v;
    }
    return least;
}
