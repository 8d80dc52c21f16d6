/* script: Lua sources, their SHA-1s and key names; see the header. */
#include "parley/script.h"

#include <mbedtls/sha1.h>
#include <stdio.h>
#include <string.h>

/* KEYS: seq, stream, cid ('' for none), ready. ARGV: channel, tail, id, ts, stream maxlen, cid ttl.
 * Returns {1, seq}; {0, "id:seq:ts"} for a duplicate; {-1} if Redis is not ready (it lost its
 * data and the seqs are being restored from PostgreSQL). */
static const char publish_lua[] =
    "if redis.call('EXISTS', KEYS[4]) == 0 then return {-1} end\n"
    "local dedup = KEYS[3] ~= ''\n"
    "if dedup then\n"
    "  local d = redis.call('GET', KEYS[3])\n"
    "  if d then return {0, d} end\n"
    "end\n"
    "local seq = redis.call('INCR', KEYS[1])\n"
    "local s = string.format('%d', seq)\n"
    "local msg = '{\"type\":\"message\",\"seq\":' .. s .. ',' .. ARGV[2]\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], s .. '-0', 'm', msg)\n"
    "redis.call('PUBLISH', ARGV[1], msg)\n"
    "if dedup then redis.call('SET', KEYS[3], ARGV[3] .. ':' .. s .. ':' .. ARGV[4], 'EX', ARGV[6]) end\n"
    "return {1, seq}\n";

/* KEYS: seq, stream, ready. ARGV: since (-1: none), most entries.
 * Returns {-1} if Redis is not ready (see above), else {cur, truncated, since, entries after
 * since...}: when more than `most` are missing, since moves up to cur - most (truncated = 1). */
static const char sync_lua[] =
    "if redis.call('EXISTS', KEYS[3]) == 0 then return {-1} end\n"
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local since = tonumber(ARGV[1])\n"
    "local most = tonumber(ARGV[2])\n"
    "if since < 0 or since >= cur then return {cur, 0, since} end\n"
    "local trunc = 0\n"
    "if cur - since > most then since = cur - most; trunc = 1 end\n"
    "local out = {cur, trunc, since}\n"
    "local e = redis.call('XRANGE', KEYS[2], string.format('%d', since + 1) .. '-0', '+', 'COUNT', most)\n"
    "for i = 1, #e do out[#out + 1] = e[i][2][2] end\n"
    "return out\n";

static const char *const sources[PL_SCRIPT_COUNT] = {publish_lua, sync_lua};
static char shas[PL_SCRIPT_COUNT][41];

int pl_script_init(void)
{
    for (int i = 0; i < PL_SCRIPT_COUNT; i++) {
        unsigned char d[20];
        if (mbedtls_sha1_ret((const unsigned char *)sources[i], strlen(sources[i]), d) != 0)
            return -1;
        for (int k = 0; k < 20; k++) snprintf(shas[i] + 2 * k, 3, "%02x", d[k]);
    }
    return 0;
}

const char *pl_script_source(pl_script_t s)
{
    return sources[s];
}

const char *pl_script_sha(pl_script_t s)
{
    return shas[s];
}

void pl_script_load_all(pl_redis_t *r)
{
    for (int i = 0; i < PL_SCRIPT_COUNT; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", sources[i]};
        size_t lens[3] = {6, 4, strlen(sources[i])};
        pl_redis_command(r, NULL, NULL, 3, argv, lens);
    }
}

void pl_key_seq(pl_buf_t *b, const char *room, size_t room_len)
{
    pl_buf_reset(b);
    pl_buf_adds(b, "parley:seq:");
    pl_buf_add(b, room, room_len);
}

void pl_key_stream(pl_buf_t *b, const char *room, size_t room_len)
{
    pl_buf_reset(b);
    pl_buf_adds(b, "parley:stream:");
    pl_buf_add(b, room, room_len);
}

void pl_key_cid(pl_buf_t *b, const char *user, const char *cid, size_t cid_len)
{
    /* The user's length keeps ("a:b", "c") and ("a", "b:c") apart. */
    pl_buf_reset(b);
    pl_buf_printf(b, "parley:cid:%zu:%s:", strlen(user), user);
    pl_buf_add(b, cid, cid_len);
}
