# bench/bench.mk: included by the top-level Makefile.
#   make bench      idle (10k), fanout, rooms, connect against parleyd and the floor
#   make bench-big  19,000 idle connections on one parleyd (and on the floor)
#   make bench-callgrind  instructions and allocations per message in parleyd (valgrind)
#   make bench-peers      the same scenarios as bench, parleyd against a Node ws + ioredis server
#   make bench-tls        idle, fanout, connect: plain, TLS in parleyd (mbedTLS), TLS in nginx,
#                   the floor plain and over TLS
#   make bench-redis-modes  Redis CPU and bytes per message, 2/4/6 instances, PARLEY_SUBSCRIBE
#                   pattern and rooms side by side (bench/redis_modes.mjs; docs/scaling.md)
#   make bench-cluster  6 instances on one Redis: 100,000 connections, fan-out and rooms over all six,
#                   pattern and rooms mode (bench/cluster; docs/scaling.md)
#   make bench-cluster-redis  a local Redis Cluster (3 masters, 3 replicas): Redis CPU, bytes and
#                   bus messages per published message, classic vs sharded Pub/Sub, Parley's own
#                   publish script and keys (bench/cluster_redis.sh; docs/scaling.md)
#   make bench-redis-cost  one private Redis: its CPU per durable room message with Parley's publish
#                   script, beside the same commands sent plain, each alone and an empty script
#                   (bench/redis_cost.c; docs/performance.md)
#   make soak       3 min (SOAK_SECONDS) of mixed traffic on two instances, Redis and PostgreSQL
#                   restarted in the middle; fails on growth or on a lost acked message (bench/soak.mjs)
# Results land in bench/results/<date>.md; see docs/performance.md.

BENCH_CFLAGS = $(CFLAGS) -Ibench
BENCH_EXTRA_OBJ ?=

all: $(BUILD)/parley-bench $(BUILD)/parley-floor $(BUILD)/parley-cluster-redis $(BUILD)/parley-redis-cost

$(BUILD)/parley-bench: bench/parley_bench.c bench/benchlib.h include/parley/base/jwt.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(BENCH_CFLAGS) -o $@ $< $(BENCH_EXTRA_OBJ) $(LIB) -lmbedtls -lmbedx509 -lmbedcrypto -lcjson -lm

$(BUILD)/parley-cluster-redis: bench/cluster_redis.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(BENCH_CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/parley-redis-cost: bench/redis_cost.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(BENCH_CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/parley-floor: bench/floor.c bench/benchlib.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(BENCH_CFLAGS) -o $@ $< -lmbedtls -lmbedx509 -lmbedcrypto

bench: $(BUILD)/parleyd $(BUILD)/parley-bench $(BUILD)/parley-floor
	@bench/run

bench-big: $(BUILD)/parleyd $(BUILD)/parley-bench $(BUILD)/parley-floor
	@bench/run big

bench-callgrind: $(BUILD)/parleyd $(BUILD)/parley-bench
	@bench/callgrind

bench-peers: $(BUILD)/parleyd $(BUILD)/parley-bench $(BUILD)/parley-floor
	@bench/run peers

bench-tls: $(BUILD)/parleyd $(BUILD)/parley-bench $(BUILD)/parley-floor
	@bench/run tls

# Not part of make test: minutes long. Its own Redis, PostgreSQL and two parleyd.
soak: deps
	@$(MAKE) --no-print-directory $(BUILD)/parleyd
	@node bench/soak.mjs

bench-cluster: $(BUILD)/parleyd $(BUILD)/parley-bench
	@bench/cluster

bench-cluster-redis: $(BUILD)/parley-cluster-redis
	@bench/cluster_redis.sh

bench-redis-cost: $(BUILD)/parley-redis-cost
	@bench/redis_cost.sh

bench-redis-modes: deps
	@$(MAKE) --no-print-directory $(BUILD)/parleyd
	@node bench/redis_modes.mjs

.PHONY: bench-callgrind bench-peers bench-tls soak bench-redis-modes bench-cluster bench-cluster-redis bench-redis-cost

-include $(BUILD)/parley-bench.d $(BUILD)/parley-floor.d $(BUILD)/parley-cluster-redis.d $(BUILD)/parley-redis-cost.d
