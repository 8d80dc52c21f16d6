/*
 * slots: key hashing, CLUSTER SLOTS and redirections; see the header.
 */
#include "parley/svc/slots.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), as Redis Cluster's keyHashSlot. */
static uint16_t crc16(const char *p, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

uint16_t pl_slots_key(const char *key, size_t len)
{
    /* The tag: after the first '{', up to the next '}', if that is not empty. */
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1) return crc16(open + 1, (size_t)(close - open - 1)) & 16383;
    }
    return crc16(key, len) & 16383;
}

static void map_clear(pl_slots_map_t *m)
{
    for (int i = 0; i < PL_SLOTS; i++)
        m->owner[i] = -1;
    m->nnodes = 0;
}

/* The node's index in the map, added if new; -1 if the map is full or the entry is bad. */
static int node_index(pl_slots_map_t *m, const redisReply *n)
{
    if (n->type != REDIS_REPLY_ARRAY || n->elements < 2 ||
        n->element[0]->type != REDIS_REPLY_STRING || n->element[1]->type != REDIS_REPLY_INTEGER ||
        n->element[0]->len >= sizeof m->nodes[0].host || n->element[1]->integer <= 0 ||
        n->element[1]->integer > 65535)
        return -1;
    for (int i = 0; i < m->nnodes; i++)
        if (m->nodes[i].port == (int)n->element[1]->integer &&
            strcmp(m->nodes[i].host, n->element[0]->str) == 0)
            return i;
    if (m->nnodes == PL_SLOTS_NODES_MAX) return -1;
    pl_slots_node_t *node = &m->nodes[m->nnodes];
    memcpy(node->host, n->element[0]->str, n->element[0]->len + 1);
    node->port = (int)n->element[1]->integer;
    node->replicas = -1;
    return m->nnodes++;
}

int pl_slots_parse(pl_slots_map_t *m, const redisReply *r)
{
    map_clear(m);
    if (!r || r->type != REDIS_REPLY_ARRAY) return -1;
    int owned = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER)
            goto bad;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        if (lo < 0 || hi >= PL_SLOTS || lo > hi) goto bad;
        int idx = node_index(m, e->element[2]);
        if (idx < 0) goto bad;
        m->nodes[idx].replicas = (int)e->elements - 3;
        for (long long s = lo; s <= hi; s++) {
            if (m->owner[s] < 0) owned++;
            m->owner[s] = (int16_t)idx;
        }
    }
    return owned;
bad:
    map_clear(m);
    return -1;
}

const pl_slots_node_t *pl_slots_node(const pl_slots_map_t *m, uint16_t slot)
{
    if (slot >= PL_SLOTS || m->owner[slot] < 0) return NULL;
    return &m->nodes[m->owner[slot]];
}

int pl_slots_redirect(const char *err, size_t len, pl_slots_redirect_t *out)
{
    char buf[128];
    if (len >= sizeof buf) return -1;
    memcpy(buf, err, len);
    buf[len] = '\0';
    int ask;
    const char *p;
    if (strncmp(buf, "MOVED ", 6) == 0)
        ask = 0, p = buf + 6;
    else if (strncmp(buf, "ASK ", 4) == 0)
        ask = 1, p = buf + 4;
    else
        return -1;
    char *end;
    if (*p < '0' || *p > '9') return -1; /* strtoul would skip spaces and take a sign */
    unsigned long slot = strtoul(p, &end, 10);
    if (end == p || *end != ' ' || slot >= PL_SLOTS) return -1;
    const char *addr = end + 1;
    const char *colon = strrchr(addr, ':'); /* an IPv6 address has colons of its own */
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof out->to.host) return -1;
    if (colon[1] < '0' || colon[1] > '9') return -1;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || *end || port == 0 || port > 65535) return -1;
    out->ask = ask;
    out->slot = (uint16_t)slot;
    memcpy(out->to.host, addr, (size_t)(colon - addr));
    out->to.host[colon - addr] = '\0';
    out->to.port = (int)port;
    return 0;
}
