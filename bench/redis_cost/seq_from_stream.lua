-- Trial publish script for make bench-redis-cost (RC_SCRIPT=bench/redis_cost/seq_from_stream.lua):
-- the seq is the stream entry's ID (XADD 0-* gives gap-free 0-N), so no INCR; the cid record
-- stays. Not Parley's: the stored entry lacks the seq, and a duplicate's record has no seq.
-- Also floor-durable's script (bench/floor.c --durable, make bench): the cheapest known to keep
-- a gap-free seq, the cid's dedup record, the stream and the publish in one atomic call.
local d = redis.call('SET', KEYS[4], ARGV[3] .. ':' .. ARGV[4], 'NX', 'GET', 'EX', ARGV[6])
if d then return {0, d} end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '0-*', 'm', ARGV[2])
local seq = string.sub(id, 3)
redis.call(ARGV[7], ARGV[1], '{"type":"message","seq":' .. seq .. ',' .. ARGV[2])
return {1, seq}
