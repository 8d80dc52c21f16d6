/* script: Lua sources, their SHA-1s and key names; see the header. */
#include "parley/svc/script.h"

#include "parley/svc/slots.h"

#include <mbedtls/sha1.h>
#include <stdio.h>
#include <string.h>

/* KEYS: seq, stream, ready, and the cid's record if the message has a cid (a cluster refuses
 * an empty key name: it has a slot, 0, rarely the room's). ARGV: channel, tail, id, ts, stream
 * maxlen, cid ttl, PUBLISH (one Redis) or SPUBLISH (a cluster: the channel is in the room's slot)
 * or '' to publish nothing (a cluster that waits for a replica: the application publishes after
 * WAIT). Returns {1, seq}; {0, "id:seq:ts"} for a duplicate; {-1} if Redis is not ready (it lost
 * its data and the seqs are being restored from PostgreSQL). */
/* Shared by publish and dm: not ready, a duplicate, or the next seq and the stored frame.
 * Four Redis calls on the common path (this script runs for every message):
 * - readiness is checked only when INCR created the seq key: after a data loss every seq key
 *   is gone, and a restore puts back cids before seqs, so an existing seq key implies the
 *   room's dedup records are back too;
 * - one SET NX GET both claims the cid and returns an earlier claim; a duplicate then gives
 *   its seq back (the script is atomic, nobody saw it). */
#define LUA_SEQ_AND_STREAM(TAIL, ID, TS, MAXLEN, TTL)                                              \
    "local seq = redis.call('INCR', KEYS[1])\n"                                                    \
    "if seq == 1 and redis.call('EXISTS', KEYS[3]) == 0 then\n"                                    \
    "  redis.call('DEL', KEYS[1])\n"                                                               \
    "  return {-1}\n"                                                                              \
    "end\n"                                                                                        \
    "local s = string.format('%d', seq)\n"                                                         \
    "if KEYS[4] then\n"                                                                            \
    "  local d = redis.call('SET', KEYS[4], " ID " .. ':' .. s .. ':' .. " TS                      \
    ", 'NX', 'GET', 'EX', " TTL ")\n"                                                              \
    "  if d then\n"                                                                                \
    "    redis.call('DECR', KEYS[1])\n"                                                            \
    "    return {0, d}\n"                                                                          \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local msg = '{\"type\":\"message\",\"seq\":' .. s .. ',' .. " TAIL "\n"                       \
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', " MAXLEN ", s .. '-0', 'm', msg)\n"

static const char publish_lua[] =
    LUA_SEQ_AND_STREAM("ARGV[2]", "ARGV[3]", "ARGV[4]", "ARGV[5]",
                       "ARGV[6]") "if ARGV[7] ~= '' then redis.call(ARGV[7], ARGV[1], msg) end\n"
                                  "return {1, seq}\n";

/* KEYS: seq, stream (unused: the stream is read with plain XRANGEs after this, app/subscribe.c),
 * ready, read hash. ARGV: since (-1: none), most entries, user.
 * Returns {-1} if Redis is not ready (see above), else {cur, truncated, since, read position
 * (-1 if none)}: when more than `most` are missing, since moves up to cur - most (truncated =
 * 1); the catch-up then reads the stream entries after since up to cur. */
static const char sync_lua[] = "if redis.call('EXISTS', KEYS[3]) == 0 then return {-1} end\n"
                               "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
                               "local since = tonumber(ARGV[1])\n"
                               "local most = tonumber(ARGV[2])\n"
                               "local rd = tonumber(redis.call('HGET', KEYS[4], ARGV[3]) or '-1')\n"
                               "if since < 0 or since >= cur then return {cur, 0, since, rd} end\n"
                               "if cur - since > most then return {cur, 1, cur - most, rd} end\n"
                               "return {cur, 0, since, rd}\n";

/*
 * Chat state. ARGV[1] is always the key prefix (PARLEY_REDIS_PREFIX, "ws:").
 * These scripts name keys built from user and room ids, which is fine on one
 * Redis; on a Redis Cluster the same work is split into single-slot steps
 * (the c* scripts below; docs/redis.md gives their order).
 *
 * A user's connections are counted per shard of each instance: field
 * "conn:<server>#<shard>" of ws:user:<id>. Each shard writes only its own
 * fields, so after Redis restarts (or lost its data) a shard can say how many
 * connections it holds, absolutely (resync), without asking other threads.
 * (Versions before it counted per instance, "conn:<server>": such a field is
 * still recognised, so what an older instance left behind is cleaned up.)
 */
#define LUA_SCAN                                                                                   \
    "local function scan(u, srv)\n"                                                                \
    "  local n, here, pre = 0, {}, 'conn:' .. srv .. '#'\n"                                        \
    "  for _, f in ipairs(redis.call('HKEYS', P .. 'user:' .. u)) do\n"                            \
    "    if string.sub(f, 1, 5) == 'conn:' then\n"                                                 \
    "      n = n + 1\n"                                                                            \
    "      if string.sub(f, 1, #pre) == pre or f == 'conn:' .. srv then here[#here + 1] = f end\n" \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  return n, here\n"                                                                           \
    "end\n"
#define LUA_PRESENCE                                                                               \
    "local function presence(u, status)\n"                                                         \
    "  local rooms = redis.call('SMEMBERS', P .. 'user_rooms:' .. u)\n"                            \
    "  if #rooms == 0 then return end\n"                                                           \
    "  local msg = '{\"type\":\"presence\",\"user\":' .. cjson.encode(u) .. ',\"status\":\"' .. "  \
    "status .. '\"}'\n"                                                                            \
    "  for _, r in ipairs(rooms) do redis.call('PUBLISH', 'room:' .. r, msg) end\n"                \
    "end\n"
/* After fields of `srv` went from `u`: fix server_users and report the user offline if that
 * was the last connection anywhere (1 if so). */
#define LUA_LEFT                                                                                   \
    "local function left(srv, u)\n"                                                                \
    "  local n, here = scan(u, srv)\n"                                                             \
    "  if #here == 0 then redis.call('SREM', P .. 'server_users:' .. srv, u) end\n"                \
    "  if n == 0 and redis.call('SREM', P .. 'online_users', u) == 1 then\n"                       \
    "    presence(u, 'offline')\n"                                                                 \
    "    return 1\n"                                                                               \
    "  end\n"                                                                                      \
    "  return 0\n"                                                                                 \
    "end\n"                                                                                        \
    "local function gone(srv, u)\n"                                                                \
    "  local _, here = scan(u, srv)\n"                                                             \
    "  if #here > 0 then redis.call('HDEL', P .. 'user:' .. u, unpack(here)) end\n"                \
    "  return left(srv, u)\n"                                                                      \
    "end\n"
#define LUA_CHAT LUA_SCAN LUA_PRESENCE LUA_LEFT

/* ARGV: prefix, server, shard, now, heartbeat ttl, then (op, user) pairs in the order they
 * happened on this shard: op "u<iat>" a connection opened with a token issued at iat (unix
 * seconds, "" if unknown; the user's first anywhere publishes "online"), "d" one closed (the
 * user's last anywhere publishes "offline"). One call carries a
 * shard's changes of one loop turn, so a connection storm costs one script call per batch, not
 * per connection. An instance that counts a connection is registered (heartbeat if it has
 * none yet, ws:servers) in the same step, so no sweep can miss its users. Returns one element
 * per pair: for "u", {online now (1/0), DMs that waited for the user}, or {-1, {}} if the token
 * was revoked (nothing counted: its connection sends no "d"); for "d", 1 if the user went
 * offline, else 0. */
static const char presence_lua[] =
    "local P, srv, now = ARGV[1], ARGV[2], ARGV[4]\n"
    "local mine = 'conn:' .. srv .. '#' .. ARGV[3]\n" LUA_CHAT
    /* DMs are queued only for a user with no connection anywhere (dm script), so only the
     * user's first connection can find any waiting. */
    "local function up(u)\n"
    "  local uk = P .. 'user:' .. u\n"
    "  redis.call('HINCRBY', uk, mine, 1)\n"
    "  redis.call('SADD', P .. 'server_users:' .. srv, u)\n"
    "  if redis.call('SADD', P .. 'online_users', u) == 0 then\n"
    "    redis.call('HSET', uk, 'last_seen', now)\n"
    "    return {0, {}}\n"
    "  end\n"
    "  redis.call('HSET', uk, 'last_seen', now, 'connected_at', now)\n"
    "  local ok = P .. 'offline:' .. u\n"
    "  local waiting = redis.call('LRANGE', ok, 0, -1)\n"
    "  if #waiting > 0 then redis.call('DEL', ok) end\n"
    "  presence(u, 'online')\n"
    "  return {1, waiting}\n"
    "end\n"
    "local function down(u)\n"
    "  local uk = P .. 'user:' .. u\n"
    "  redis.call('HSET', uk, 'last_seen', now)\n"
    "  if redis.call('HINCRBY', uk, mine, -1) > 0 then return 0 end\n"
    "  redis.call('HDEL', uk, mine)\n"
    "  return left(srv, u)\n"
    "end\n"
    "local out, registered = {}, false\n"
    "for i = 6, #ARGV - 1, 2 do\n"
    "  local op = ARGV[i]\n"
    "  if string.sub(op, 1, 1) == 'u' then\n"
    /* A token issued before the second of the user's last disconnect (kick script) is revoked
     * (one issued in that second is not: the application's new token right after a password
     * change must work): the connection is not counted and is told so ({-1}). */
    "    local rv = redis.call('GET', P .. 'revoked:' .. ARGV[i + 1])\n"
    "    if rv and (tonumber(string.sub(op, 2)) or 0) < tonumber(rv) then\n"
    "      out[#out + 1] = {-1, {}}\n"
    "    else\n"
    "      if not registered then\n"
    "        redis.call('SET', P .. 'server:' .. srv, now, 'EX', ARGV[5], 'NX')\n"
    "        redis.call('SADD', P .. 'servers', srv)\n"
    "        registered = true\n"
    "      end\n"
    "      out[#out + 1] = up(ARGV[i + 1])\n"
    "    end\n"
    "  else\n"
    "    out[#out + 1] = down(ARGV[i + 1])\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ARGV: prefix, server, shard, now, heartbeat ttl, then (user, connections) pairs: every user
 * this shard holds connections of, with how many. Run when the shard's Redis connection comes
 * back, and when Redis is found to have lost its data: the shard's counts become exactly these
 * (nothing is published for users who never left), the instance is registered again, and users
 * whose connections here all closed while Redis could not be told go offline (if they have no
 * connection elsewhere; an event is published for them, since they did leave). Returns how many
 * went offline. */
static const char resync_lua[] =
    "local P, srv, now = ARGV[1], ARGV[2], ARGV[4]\n"
    "local mine = 'conn:' .. srv .. '#' .. ARGV[3]\n" LUA_CHAT
    "redis.call('SET', P .. 'server:' .. srv, now, 'EX', ARGV[5])\n"
    "redis.call('SADD', P .. 'servers', srv)\n"
    "local want = {}\n"
    "for i = 6, #ARGV - 1, 2 do want[ARGV[i]] = ARGV[i + 1] end\n"
    "local off = 0\n"
    "for _, u in ipairs(redis.call('SMEMBERS', P .. 'server_users:' .. srv)) do\n"
    "  if not want[u] and redis.call('HDEL', P .. 'user:' .. u, mine) == 1 then\n"
    "    off = off + left(srv, u)\n"
    "  end\n"
    "end\n"
    "for u, n in pairs(want) do\n"
    "  local uk = P .. 'user:' .. u\n"
    "  redis.call('HSET', uk, mine, n)\n"
    "  redis.call('SADD', P .. 'server_users:' .. srv, u)\n"
    "  if redis.call('SADD', P .. 'online_users', u) == 1 then\n"
    "    redis.call('HSET', uk, 'last_seen', now, 'connected_at', now)\n"
    "  end\n"
    "end\n"
    "return off\n";

/* ARGV: prefix, server, now, heartbeat ttl. Every few seconds per instance: refresh this
 * instance's heartbeat; clean up after instances whose heartbeat expired (they died without
 * closing their connections), and stop typing states whose instance did not (died). Returns
 * {users reported offline, 1 if this instance's own heartbeat was missing}: Redis lost its
 * data (or this instance was cut off longer than the heartbeat lives), so its shards resync. */
static const char sweep_lua[] =
    "local P, me, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n" LUA_CHAT
    "local was = redis.call('SET', P .. 'server:' .. me, now, 'EX', ttl, 'GET')\n"
    "redis.call('SADD', P .. 'servers', me)\n"
    "local off = 0\n"
    "for _, srv in ipairs(redis.call('SMEMBERS', P .. 'servers')) do\n"
    "  if srv ~= me and redis.call('EXISTS', P .. 'server:' .. srv) == 0 then\n"
    "    for _, u in ipairs(redis.call('SMEMBERS', P .. 'server_users:' .. srv)) do off = off + "
    "gone(srv, u) end\n"
    "    redis.call('DEL', P .. 'server_users:' .. srv)\n"
    "    redis.call('SREM', P .. 'servers', srv)\n"
    "  end\n"
    "end\n"
    "local td = P .. 'typing_deadlines'\n"
    "for _, m in ipairs(redis.call('ZRANGEBYSCORE', td, '-inf', tonumber(now) - 1000)) do\n"
    "  if redis.call('ZREM', td, m) == 1 then\n"
    "    local nl = string.find(m, '\\n', 1, true)\n"
    "    local room, u = string.sub(m, 1, nl - 1), string.sub(m, nl + 1)\n"
    "    redis.call('PUBLISH', 'room:' .. room, '{\"type\":\"typing_stop\",\"room\":' .. "
    "cjson.encode(room) .. ',\"user\":' .. cjson.encode(u) .. '}')\n"
    "  end\n"
    "end\n"
    "return {off, was and 0 or 1}\n";

/* ARGV: prefix, server, now, heartbeat ttl. At start-up, before accepting connections: an
 * instance that restarts under the same id forgets the connections its previous life left
 * behind (users left with none go offline), then registers (heartbeat, ws:servers), so an
 * instance killed in its first second is still cleaned up by the others' sweep. Returns users
 * reported offline. */
static const char reset_lua[] =
    "local P, me, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n" LUA_CHAT "local off = 0\n"
    "for _, u in ipairs(redis.call('SMEMBERS', P .. 'server_users:' .. me)) do off = off + "
    "gone(me, u) end\n"
    "redis.call('DEL', P .. 'server_users:' .. me)\n"
    "redis.call('SET', P .. 'server:' .. me, now, 'EX', ttl)\n"
    "redis.call('SADD', P .. 'servers', me)\n"
    "return off\n";

/* ARGV: prefix, server. At a clean exit, after every connection was closed: the heartbeat goes
 * (a restart under this id need not wait for it to expire); the instance leaves ws:servers
 * unless users are still recorded for it (a shard could not tell Redis), which the others'
 * sweep then cleans up. */
static const char unregister_lua[] =
    "local P, me = ARGV[1], ARGV[2]\n"
    "redis.call('DEL', P .. 'server:' .. me)\n"
    "if redis.call('SCARD', P .. 'server_users:' .. me) == 0 then\n"
    "  redis.call('SREM', P .. 'servers', me)\n"
    "end\n"
    "return 0\n";

#define STR_(x) #x
#define STR(x) STR_(x)
/* Publish `msg` (a JSON object) on server:{srv}, first appending it to that instance's log, the
 * capped stream {P}srvlog:{srv}, and giving the entry's id as the last member `_lid`: an instance
 * whose subscriber was away reads what it missed back from there (app/srvlog.h). */
#define LUA_TO_SERVER                                                                              \
    "local function to_server(P, srv, msg)\n"                                                      \
    "  local k = P .. 'srvlog:' .. srv\n"                                                          \
    "  local id = redis.call('XADD', k, 'MAXLEN', '~', '" STR(                                     \
        PL_SRVLOG_MAX) "', '*', 'm', msg)\n"                                                       \
                       "  redis.call('EXPIRE', k, " STR(                                           \
                           PL_SRVLOG_TTL_S) ")\n"                                                  \
                                            "  return redis.call('PUBLISH', 'server:' .. srv, "    \
                                            "string.sub(msg, 1, -2) .. ',\"_lid\":\"' "            \
                                            ".. id .. '\"}')\n"                                    \
                                            "end\n"

/* KEYS: seq, stream, cid, ready. ARGV: tail, id, ts, stream maxlen, cid ttl, prefix, to, from,
 * offline max. A direct message: like publish, but sent to the server:{id} channel of every
 * instance where the recipient or the sender has a connection, and queued for a recipient
 * with none. */
static const char dm_lua[] = LUA_TO_SERVER LUA_SEQ_AND_STREAM(
    "ARGV[1]", "ARGV[2]", "ARGV[3]", "ARGV[4]",
    "ARGV[5]") "local P, to, from = ARGV[6], ARGV[7], ARGV[8]\n"
               "local servers, online = {}, false\n"
               "for _, u in ipairs({to, from}) do\n"
               "  for _, f in ipairs(redis.call('HKEYS', P .. 'user:' .. u)) do\n"
               "    local srv = string.match(f, '^conn:(.+)#%d+$') or string.match(f, "
               "'^conn:(.+)$')\n"
               "    if srv then\n"
               "      servers[srv] = true\n"
               "      if u == to then online = true end\n"
               "    end\n"
               "  end\n"
               "end\n"
               "for srv in pairs(servers) do to_server(P, srv, msg) end\n"
               "if not online then\n"
               "  redis.call('RPUSH', P .. 'offline:' .. to, msg)\n"
               "  redis.call('LTRIM', P .. 'offline:' .. to, -tonumber(ARGV[9]), -1)\n"
               "end\n"
               "return {1, seq}\n";

/* KEYS: the typing state, its rate limit, the deadlines set (none in a cluster: it is global).
 * ARGV: prefix, room, user, op: start (1), stop (0), now (ms), the room's channel, PUBLISH or
 * SPUBLISH. Typing state (10 s; the key lives 12 s, see below), also kept in the sorted set
 * ws:typing_deadlines (member "room\nuser", score the deadline in ms) so that a state whose
 * instance died still gets its typing_stop from another instance's sweep. At most one start per
 * user and room per second is forwarded. A stop is published only by whoever removes the state
 * (ZREM), so exactly once; in a cluster, whoever deletes the state (an expired one
 * is then not announced: clients drop the indicator after 10 s). The state lives 12 s, so that
 * the typist's instance, whose own timer stops it after 10 s, still finds it. Returns 1 if
 * published. */
static const char typing_lua[] =
    "local room, u, op, now = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])\n"
    "local m = room .. '\\n' .. u\n"
    "local what = 'typing_stop'\n"
    "if op == '1' then\n"
    "  if not redis.call('SET', KEYS[2], '1', 'PX', 1000, 'NX') then return 0 end\n"
    "  redis.call('SET', KEYS[1], '1', 'EX', 12)\n"
    "  if KEYS[3] then redis.call('ZADD', KEYS[3], now + 10000, m) end\n"
    "  what = 'typing_start'\n"
    "elseif KEYS[3] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  if redis.call('ZREM', KEYS[3], m) == 0 then return 0 end\n"
    "elseif redis.call('DEL', KEYS[1]) == 0 then\n"
    "  return 0\n"
    "end\n"
    "redis.call(ARGV[7], ARGV[6], '{\"type\":\"' .. what .. '\",\"room\":' .. "
    "cjson.encode(room) .. ',\"user\":' .. cjson.encode(u) .. '}')\n"
    "return 1\n";

/* KEYS: seq, the room's read positions. ARGV: prefix, room, user, seq, the room's channel,
 * PUBLISH or SPUBLISH. A read position: only
 * forward, never past the room's seq (-1). Returns 1 if it moved (and the receipt was
 * published), 0 if not. */
static const char read_lua[] =
    "local room, u, seq = ARGV[2], ARGV[3], tonumber(ARGV[4])\n"
    "if seq > tonumber(redis.call('GET', KEYS[1]) or '0') then return -1 end\n"
    "if seq <= tonumber(redis.call('HGET', KEYS[2], u) or '-1') then return 0 end\n"
    "redis.call('HSET', KEYS[2], u, ARGV[4])\n"
    "redis.call(ARGV[6], ARGV[5], '{\"type\":\"read_receipt\",\"room\":' .. "
    "cjson.encode(room) .. ',\"user\":' .. cjson.encode(u) .. ',\"seq\":' .. ARGV[4] .. '}')\n"
    "return 1\n";

/* No KEYS. ARGV: prefix, room, user, '1' (a member now) or '0' (no longer), and for a removal
 * the reason ("removed", "left"). Mirrors a membership (presence goes to the user's rooms, the
 * members list reads the room's). A user who is online when they become a member is announced
 * to the room: its subscribers would otherwise learn it only at the user's next connection. A
 * removal is announced on the room's channel as {"type":"unsubscribed",...,"user":..}: every
 * instance's shards that hold the room end that user's subscriptions to it (app/deliver.c),
 * in the same step as the mirror changes. Returns 1 if something was published for an add. */
static const char member_lua[] =
    "local P, room, u = ARGV[1], ARGV[2], ARGV[3]\n"
    "if ARGV[4] ~= '1' then\n"
    "  redis.call('SREM', P .. 'user_rooms:' .. u, room)\n"
    "  redis.call('SREM', P .. 'room_participants:' .. room, u)\n"
    "  redis.call('PUBLISH', 'room:' .. room, '{\"type\":\"unsubscribed\",\"room\":' .. "
    "cjson.encode(room) .. ',\"user\":' .. cjson.encode(u) .. ',\"reason\":' .. "
    "cjson.encode(ARGV[5] or 'removed') .. '}')\n"
    "  return 0\n"
    "end\n"
    "local new = redis.call('SADD', P .. 'user_rooms:' .. u, room)\n"
    "redis.call('SADD', P .. 'room_participants:' .. room, u)\n"
    "if new == 1 and redis.call('SISMEMBER', P .. 'online_users', u) == 1 then\n"
    "  redis.call('PUBLISH', 'room:' .. room, '{\"type\":\"presence\",\"user\":' .. "
    "cjson.encode(u) .. ',\"status\":\"online\"}')\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

/* No KEYS. ARGV: prefix, room, asking user ('' for a server-side caller), limit. The room's
 * members, sorted, at most `limit`, each with 1 if online: {count, user1, online1, ...}; -1 if
 * the asking user is not a member. */
static const char members_lua[] =
    "local P, room, asker, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])\n"
    "local k = P .. 'room_participants:' .. room\n"
    "if asker ~= '' and redis.call('SISMEMBER', k, asker) == 0 then return -1 end\n"
    "local all = redis.call('SMEMBERS', k)\n"
    "table.sort(all)\n"
    "local out = {#all}\n"
    "local online = P .. 'online_users'\n"
    "for i = 1, math.min(#all, limit) do\n"
    "  out[#out + 1] = all[i]\n"
    "  out[#out + 1] = redis.call('SISMEMBER', online, all[i])\n"
    "end\n"
    "return out\n";

/* No KEYS. ARGV: prefix, user, the frame (a server_notice naming the user), now (unix seconds),
 * how long to remember, revoke ("1": tokens of the user issued before now are refused from now
 * on, by the presence script, for that long). Closes every
 * connection of the user on every instance: the frame goes to the server:{id} channel of every
 * registered instance and of every instance the user's presence names (a connection whose
 * presence is not counted yet is still found), and each instance closes the user's connections
 * there (app/deliver.c). Returns how many instances received it. */
static const char kick_lua[] = LUA_TO_SERVER
    "local P, u, msg = ARGV[1], ARGV[2], ARGV[3]\n"
    "if ARGV[6] == '1' then redis.call('SET', P .. 'revoked:' .. u, ARGV[4], 'EX', ARGV[5]) end\n"
    "local servers = {}\n"
    "for _, srv in ipairs(redis.call('SMEMBERS', P .. 'servers')) do servers[srv] = true end\n"
    "for _, f in ipairs(redis.call('HKEYS', P .. 'user:' .. u)) do\n"
    "  local srv = string.match(f, '^conn:(.+)#%d+$') or string.match(f, '^conn:(.+)$')\n"
    "  if srv then servers[srv] = true end\n"
    "end\n"
    "local n = 0\n"
    "for srv in pairs(servers) do n = n + to_server(P, srv, msg) end\n"
    "return n\n";

/*
 * Cluster mode (docs/redis.md, "Work that spans slots"): a presence change's
 * step in the user's slot. KEYS: the user's hash, rooms set, offline queue,
 * revocation ({u:<user>} each). ARGV: this shard's field
 * ("conn:<server>@<run>#<shard>"), now, op. op "u<iat>": a
 * connection opened; "d": one closed; "=<n>": this shard holds exactly n (a
 * resync). Returns {went, here, waiting DMs, rooms}: went 1 if the user came
 * online anywhere, 2 if the user went offline everywhere, 0 if neither, -1 if
 * the token was revoked (nothing counted); here 1 if this shard still holds
 * a connection of the user; rooms only when went is 1 or 2. The user's hash
 * is the count; the online buckets, the instance's user set and the presence
 * events follow from this answer, in the caller's next steps.
 */
static const char cuser_lua[] =
    "local uk, mine, now, op = KEYS[1], ARGV[1], ARGV[2], ARGV[3]\n"
    "local function count()\n"
    "  local n, here = 0, 0\n"
    "  for _, f in ipairs(redis.call('HKEYS', uk)) do\n"
    "    if string.sub(f, 1, 5) == 'conn:' then\n"
    "      n = n + 1\n"
    "      if f == mine then here = 1 end\n"
    "    end\n"
    "  end\n"
    "  return n, here\n"
    "end\n"
    "local k = string.sub(op, 1, 1)\n"
    "if k == 'u' then\n"
    "  local rv = redis.call('GET', KEYS[4])\n"
    "  if rv and (tonumber(string.sub(op, 2)) or 0) < tonumber(rv) then return {-1, 0, {}, {}} "
    "end\n"
    "end\n"
    "local before = count()\n"
    "redis.call('HSET', uk, 'last_seen', now)\n"
    "if k == 'u' then\n"
    "  redis.call('HINCRBY', uk, mine, 1)\n"
    "elseif k == 'd' then\n"
    "  if redis.call('HINCRBY', uk, mine, -1) <= 0 then redis.call('HDEL', uk, mine) end\n"
    "else\n"
    "  local n = tonumber(string.sub(op, 2)) or 0\n"
    "  if n > 0 then redis.call('HSET', uk, mine, n) else redis.call('HDEL', uk, mine) end\n"
    "end\n"
    "local after, here = count()\n"
    "if before == 0 and after > 0 then\n"
    "  redis.call('HSET', uk, 'connected_at', now)\n"
    "  local waiting = {}\n"
    "  if k == 'u' then\n"
    "    waiting = redis.call('LRANGE', KEYS[3], 0, -1)\n"
    "    if #waiting > 0 then redis.call('DEL', KEYS[3]) end\n"
    "  end\n"
    "  return {1, here, waiting, redis.call('SMEMBERS', KEYS[2])}\n"
    "end\n"
    "if before > 0 and after == 0 then return {2, here, {}, redis.call('SMEMBERS', KEYS[2])} end\n"
    "return {0, here, {}, {}}\n";

/* Cluster mode: a membership's step in the user's slot. KEYS: the user's hash and rooms set.
 * ARGV: room, "1" to add or "0" to remove. Returns {changed (1/0), online (1/0)}. */
static const char cmember_lua[] =
    "local ch\n"
    "if ARGV[2] == '1' then ch = redis.call('SADD', KEYS[2], ARGV[1])\n"
    "else ch = redis.call('SREM', KEYS[2], ARGV[1]) end\n"
    "local on = 0\n"
    "for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do\n"
    "  if string.sub(f, 1, 5) == 'conn:' then on = 1 break end\n"
    "end\n"
    "return {ch, on}\n";

/* Cluster mode: the sweep's step in a user's slot. KEYS: the user's hash and rooms set. ARGV:
 * the field prefix to drop ("conn:<server>@"), the prefix to keep among those
 * ("conn:<server>@<run>#", the sweeping instance's own run; '' for none), now. Returns {went, here,
 * {}, rooms} as the presence step does: went 2 if that was the user's last connection anywhere. */
static const char cgone_lua[] = "local uk, dead, keep = KEYS[1], ARGV[1], ARGV[2]\n"
                                "local before, after, here, drop = 0, 0, 0, {}\n"
                                "for _, f in ipairs(redis.call('HKEYS', uk)) do\n"
                                "  if string.sub(f, 1, 5) == 'conn:' then\n"
                                "    before = before + 1\n"
                                "    local mine = keep ~= '' and string.sub(f, 1, #keep) == keep\n"
                                "    if string.sub(f, 1, #dead) == dead and not mine then\n"
                                "      drop[#drop + 1] = f\n"
                                "    else\n"
                                "      after = after + 1\n"
                                "      if mine then here = 1 end\n"
                                "    end\n"
                                "  end\n"
                                "end\n"
                                "if #drop > 0 then redis.call('HDEL', uk, unpack(drop)) end\n"
                                "if before > 0 and after == 0 then\n"
                                "  redis.call('HSET', uk, 'last_seen', ARGV[3])\n"
                                "  return {2, 0, {}, redis.call('SMEMBERS', KEYS[2])}\n"
                                "end\n"
                                "return {0, here, {}, {}}\n";

/* Cluster mode: a user's instances, for a direct message or a disconnect (docs/redis.md, "Work
 * that spans slots"). KEYS: the user's hash, and the offline queue (op "q") or the revocation
 * (op "r"). ARGV: op, then "q": the frame and the queue's length limit (queued only if the user
 * has no connection anywhere, in this same step, so a connection counted meanwhile takes it);
 * "r": now (unix seconds) and how long to remember; "" nothing more. Returns the instances
 * named by the user's connection counts (conn:<server>@<run>#<shard>), each once. */
static const char cservers_lua[] =
    "local op, out, seen = ARGV[1], {}, {}\n"
    "if op == 'r' then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) end\n"
    "for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do\n"
    "  local srv = string.match(f, '^conn:(.+)@')\n"
    "  if srv and not seen[srv] then seen[srv] = true out[#out + 1] = srv end\n"
    "end\n"
    "if op == 'q' and #out == 0 then\n"
    "  redis.call('RPUSH', KEYS[2], ARGV[2])\n"
    "  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)\n"
    "end\n"
    "return out\n";

/* Cluster mode: LUA_TO_SERVER as one step in the instance's slot. KEYS: its log. ARGV: its
 * channel (pl_key_server_chan: the same slot), the frame. Returns how many subscribers got it. */
static const char ctoserver_lua[] = "local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', '" STR(
    PL_SRVLOG_MAX) "', '*', 'm', "
                   "ARGV[2])\n"
                   "redis.call('EXPIRE', KEYS[1], " STR(
                       PL_SRVLOG_TTL_S) ")\n"
                                        "return redis.call('SPUBLISH', ARGV[1], "
                                        "string.sub(ARGV[2], 1, -2) .. ',\"_lid\":\"' .. id "
                                        ".. '\"}')\n";

/* Cluster mode: members_lua's step in the room's slot. KEYS: the room's participants. ARGV:
 * asking user ('' for a server-side caller), limit. Returns {count, user1, ...} sorted, at most
 * `limit`, or -1 if the asking user is not a member; who is online is the next steps'. */
static const char cmembers_lua[] =
    "local asker, limit = ARGV[1], tonumber(ARGV[2])\n"
    "if asker ~= '' and redis.call('SISMEMBER', KEYS[1], asker) == 0 then return -1 end\n"
    "local all = redis.call('SMEMBERS', KEYS[1])\n"
    "table.sort(all)\n"
    "local out = {#all}\n"
    "for i = 1, math.min(#all, limit) do out[#out + 1] = all[i] end\n"
    "return out\n";

static const char *const sources[PL_SCRIPT_COUNT] = {
    publish_lua, sync_lua,   presence_lua,   sweep_lua,     dm_lua,       typing_lua, read_lua,
    reset_lua,   resync_lua, unregister_lua, member_lua,    members_lua,  kick_lua,   cuser_lua,
    cmember_lua, cgone_lua,  cservers_lua,   ctoserver_lua, cmembers_lua,
};
static char shas[PL_SCRIPT_COUNT][41];

int pl_script_init(void)
{
    for (int i = 0; i < PL_SCRIPT_COUNT; i++) {
        unsigned char d[20];
        if (mbedtls_sha1_ret((const unsigned char *)sources[i], strlen(sources[i]), d) != 0)
            return -1;
        for (int k = 0; k < 20; k++)
            snprintf(shas[i] + 2 * k, 3, "%02x", d[k]);
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

/* Set once at start-up, before any shard runs; read by every thread after. */
static int cluster_keys;

void pl_key_set_cluster(int on)
{
    cluster_keys = on;
}

int pl_key_cluster(void)
{
    return cluster_keys;
}

/* <pfx><what><room> on one Redis; <pfx>{r:<room>}:<what> in a cluster, so that every key of a
 * room shares its hash slot (`what` ends with ':' for the first form, which the second drops). */
static void room_key(pl_buf_t *b, const char *pfx, const char *what, const char *room,
                     size_t room_len)
{
    pl_buf_reset(b);
    pl_buf_adds(b, pfx);
    if (cluster_keys) {
        pl_buf_adds(b, "{r:");
        pl_buf_add(b, room, room_len);
        pl_buf_adds(b, "}:");
        pl_buf_add(b, what, strlen(what) - 1);
    } else {
        pl_buf_adds(b, what);
        pl_buf_add(b, room, room_len);
    }
}

void pl_key_seq(pl_buf_t *b, const char *room, size_t room_len)
{
    room_key(b, "parley:", "seq:", room, room_len);
}

void pl_key_stream(pl_buf_t *b, const char *room, size_t room_len)
{
    room_key(b, "parley:", "stream:", room, room_len);
}

void pl_key_ready(pl_buf_t *b, const char *room, size_t room_len)
{
    if (cluster_keys) {
        room_key(b, "parley:", "ready:", room, room_len);
    } else {
        pl_buf_reset(b);
        pl_buf_adds(b, PL_KEY_READY);
    }
}

void pl_key_room_chan(pl_buf_t *b, const char *room, size_t room_len)
{
    pl_buf_reset(b);
    pl_buf_adds(b, cluster_keys ? "room:{r:" : "room:");
    pl_buf_add(b, room, room_len);
    if (cluster_keys) pl_buf_add(b, "}", 1);
}

int pl_key_room_of_chan(const char *chan, size_t len, const char **room, size_t *room_len)
{
    if (cluster_keys) {
        if (len <= 9 || memcmp(chan, "room:{r:", 8) != 0 || chan[len - 1] != '}') return -1;
        *room = chan + 8;
        *room_len = len - 9;
    } else {
        if (len <= 5 || memcmp(chan, "room:", 5) != 0) return -1;
        *room = chan + 5;
        *room_len = len - 5;
    }
    return 0;
}

const char *pl_key_publish_cmd(void)
{
    return cluster_keys ? "SPUBLISH" : "PUBLISH";
}

void pl_key_read(pl_buf_t *b, const char *pfx, const char *room, size_t room_len)
{
    room_key(b, pfx, "read:", room, room_len);
}

void pl_key_typing(pl_buf_t *b, const char *pfx, const char *what, const char *room,
                   size_t room_len, const char *user)
{
    room_key(b, pfx, what, room, room_len);
    pl_buf_add(b, ":", 1);
    pl_buf_adds(b, user);
}

void pl_key_cid(pl_buf_t *b, const char *room, size_t room_len, const char *user, const char *cid,
                size_t cid_len)
{
    /* The user's length keeps ("a:b", "c") and ("a", "b:c") apart. In a cluster the record
     * lives with the room it was sent to (docs/redis.md). */
    size_t user_len = strlen(user);
    if (cluster_keys) {
        room_key(b, "parley:", "cid:", room, room_len);
        pl_buf_add(b, ":", 1);
    } else {
        pl_buf_reset(b);
        pl_buf_adds(b, "parley:cid:");
    }
    pl_buf_uint(b, user_len);
    pl_buf_add(b, ":", 1);
    pl_buf_add(b, user, user_len);
    pl_buf_add(b, ":", 1);
    pl_buf_add(b, cid, cid_len);
}

/* <pfx>{<tag>:<id>}:<what>: a key of a user's, an instance's or a bucket's slot (cluster). */
static void tagged_key(pl_buf_t *b, const char *pfx, const char *tag, const char *id, size_t id_len,
                       const char *what)
{
    pl_buf_reset(b);
    pl_buf_adds(b, pfx);
    pl_buf_adds(b, "{");
    pl_buf_adds(b, tag);
    pl_buf_add(b, ":", 1);
    pl_buf_add(b, id, id_len);
    pl_buf_adds(b, "}:");
    pl_buf_adds(b, what);
}

void pl_key_user(pl_buf_t *b, const char *pfx, const char *user, const char *what)
{
    tagged_key(b, pfx, "u", user, strlen(user), what);
}

void pl_key_server(pl_buf_t *b, const char *pfx, const char *server, const char *what)
{
    tagged_key(b, pfx, "s", server, strlen(server), what);
}

void pl_key_server_chan(pl_buf_t *b, const char *server)
{
    pl_buf_reset(b);
    pl_buf_adds(b, cluster_keys ? "server:{s:" : "server:");
    pl_buf_adds(b, server);
    if (cluster_keys) pl_buf_add(b, "}", 1);
}

void pl_key_online(pl_buf_t *b, const char *pfx, const char *user)
{
    char k[8];
    int n = snprintf(k, sizeof k, "%u",
                     (unsigned)(pl_slots_key(user, strlen(user)) % PL_KEY_ONLINE_BUCKETS));
    tagged_key(b, pfx, "o", k, (size_t)n, "online");
}

void pl_key_participants(pl_buf_t *b, const char *pfx, const char *room, size_t room_len)
{
    room_key(b, pfx, cluster_keys ? "participants:" : "room_participants:", room, room_len);
}
