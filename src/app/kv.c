/*
 * kv: a shard's commands to one Redis or to a cluster's masters; see the
 * header.
 */
#include "parley/app/kv.h"

#include <stdlib.h>

#include "parley/app/publish.h"
#include "parley/app/server.h"
#include "parley/svc/cluster.h"
#include "parley/svc/script.h"

/* A cluster node connected: it gets the scripts before anything else it is sent (one
 * connection's commands run in order), then the shard does what it does on a new connection. */
static void node_up_cb(pl_cluster_t *c, pl_redis_t *node)
{
    pl_script_load_all(node);
    pl_publish_redis_up_cluster(c->data);
}

int pl_kv_start(pl_shard_t *s)
{
    pl_server_t *srv = s->srv;
    uv_loop_t *uv = pl_loop_uv(s->loop);
    if (!srv->cfg.redis_cluster) {
        s->redis.on_connect = pl_publish_redis_up;
        s->redis.data = s;
        return pl_redis_start(&s->redis, uv, &srv->redis_addr);
    }
    if (!(s->cluster = calloc(1, sizeof *s->cluster))) return UV_ENOMEM;
    s->cluster->on_connect = node_up_cb;
    s->cluster->data = s;
    return pl_cluster_start(s->cluster, uv, srv->redis_seeds, srv->redis_nseeds, &srv->redis_addr);
}

int pl_kv_command(pl_shard_t *s, const char *key, size_t key_len, pl_redis_cb cb, void *priv,
                  int argc, const char **argv, const size_t *lens)
{
    if (!s->cluster) return pl_redis_command(&s->redis, cb, priv, argc, argv, lens);
    if (!key) return -1;
    return pl_cluster_command(s->cluster, pl_slots_key(key, key_len), cb, priv, argc, argv, lens);
}

int pl_kv_up(const pl_shard_t *s)
{
    const atomic_int *up = s->cluster ? &s->cluster->up : &s->redis.connected;
    return atomic_load_explicit(up, memory_order_relaxed);
}

int pl_kv_cluster(const pl_shard_t *s)
{
    return s->cluster != NULL;
}

void pl_kv_flush(pl_shard_t *s)
{
    if (s->cluster)
        pl_cluster_flush(s->cluster);
    else
        pl_redis_flush(&s->redis);
}

void pl_kv_stop(pl_shard_t *s)
{
    if (s->cluster)
        pl_cluster_stop(s->cluster);
    else
        pl_redis_stop(&s->redis);
}

void pl_kv_free(pl_shard_t *s)
{
    if (!s->cluster) return;
    pl_cluster_free(s->cluster);
    free(s->cluster);
    s->cluster = NULL;
}
