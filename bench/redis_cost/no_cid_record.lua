-- Trial publish script for make bench-redis-cost (RC_SCRIPT=bench/redis_cost/no_cid_record.lua):
-- seq from the stream entry's ID and no per-message cid record: two calls per message, the
-- least the publish path can make. Not Parley's: it does not deduplicate.
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '0-*', 'm', ARGV[2])
local seq = string.sub(id, 3)
redis.call(ARGV[7], ARGV[1], '{"type":"message","seq":' .. seq .. ',' .. ARGV[2])
return {1, seq}
