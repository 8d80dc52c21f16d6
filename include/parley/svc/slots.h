/*
 * slots: Redis Cluster's map from keys to hash slots to nodes, the part of
 * cluster routing hiredis 0.14 lacks (it has no cluster support).
 *
 * A key's slot is CRC16 (XMODEM) of the key, or of its hash tag (the bytes
 * between the first `{` and the next `}`, when there are any), modulo 16384:
 * keys sharing a tag share a slot, so one script may touch them all. The map
 * says which master serves each slot, read from a CLUSTER SLOTS reply; a
 * MOVED or ASK error names the slot and the node to ask instead.
 *
 * Pure functions and a plain struct: no I/O, no threads. The caller owns the
 * map (pl_slots_map_t, about 33 KiB) and refreshes it when Redis says MOVED.
 */
#ifndef PARLEY_SVC_SLOTS_H
#define PARLEY_SVC_SLOTS_H

#include <stddef.h>
#include <stdint.h>

struct redisReply;

/** Hash slots in a Redis Cluster. */
#define PL_SLOTS 16384
/** Most masters a map holds. */
#define PL_SLOTS_NODES_MAX 64

/** The slot of `key[0..len)`, hash tags honoured as Redis does. */
uint16_t pl_slots_key(const char *key, size_t len);

/** A master: where to send commands for its slots. */
typedef struct {
    char host[64];
    int port;
    int replicas; /**< replicas CLUSTER SLOTS lists for it (failed ones are not); -1: unknown */
} pl_slots_node_t;

/** Which master serves each slot. Zero-initialised: no slot served (node index -1 below). */
typedef struct {
    int16_t owner[PL_SLOTS]; /**< index into nodes, -1 if no master serves the slot */
    pl_slots_node_t nodes[PL_SLOTS_NODES_MAX];
    int nnodes;
} pl_slots_map_t;

/**
 * Fill `m` from a CLUSTER SLOTS reply: an array of [start, end, [host, port, id...],
 * replicas...]. Slots no range names are left without an owner. Returns how many slots have
 * an owner, or -1 if the reply is not a CLUSTER SLOTS reply or names more than
 * PL_SLOTS_NODES_MAX masters (`m` is then cleared).
 */
int pl_slots_parse(pl_slots_map_t *m, const struct redisReply *r);

/** The master serving `slot`, or NULL. */
const pl_slots_node_t *pl_slots_node(const pl_slots_map_t *m, uint16_t slot);

/** A redirection from an error reply. */
typedef struct {
    int ask; /**< 1: ASK (this command only, after ASKING); 0: MOVED (the map is stale) */
    uint16_t slot;
    pl_slots_node_t to;
} pl_slots_redirect_t;

/** Parse an error reply's text, "MOVED <slot> <host>:<port>" or "ASK ...". Returns 0, or -1
 *  if it is neither. */
int pl_slots_redirect(const char *err, size_t len, pl_slots_redirect_t *out);

#endif
