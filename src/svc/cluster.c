/*
 * cluster: slot routing over per-node connections, with redirections and
 * transient refusals handled here; see the header.
 */
#include "parley/svc/cluster.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/base/buf.h"
#include "parley/base/log.h"

/* Records whose buffer grew past this give it back when they are released, so that one large
 * command does not pin its size for the router's life. */
#define KEEP_BUF_MAX (64 * 1024)

/* A command on its way: everything needed to send it again. Taken from the free list, returned
 * there once its callback ran. */
struct pl_cluster_cmd {
    pl_cluster_cmd_t *next; /* free list or retry list */
    pl_cluster_t *c;
    pl_redis_cb cb;
    void *privdata;
    pl_buf_t resp;     /* the command in RESP form */
    uint64_t deadline; /* uv_now after which it is not tried again, ms */
    uint16_t slot;
    int8_t ask_conn; /* >= 0: send to this connection after ASKING, not to the slot's owner */
};

static pl_cluster_cmd_t *cmd_get(pl_cluster_t *c)
{
    pl_cluster_cmd_t *m = c->free_cmds;
    if (m) {
        c->free_cmds = m->next;
        return m;
    }
    m = calloc(1, sizeof *m);
    if (m) m->c = c;
    return m;
}

static void cmd_put(pl_cluster_t *c, pl_cluster_cmd_t *m)
{
    if (m->resp.cap > KEEP_BUF_MAX) pl_buf_free(&m->resp);
    m->cb = NULL;
    m->privdata = NULL;
    m->next = c->free_cmds;
    c->free_cmds = m;
}

/* Answer the command's caller and release the record. */
static void cmd_done(pl_cluster_cmd_t *m, struct redisAsyncContext *ac, void *reply)
{
    pl_redis_cb cb = m->cb;
    void *pd = m->privdata;
    cmd_put(m->c, m);
    if (cb) cb(ac, reply, pd);
}

/* ---- connections ---- */

static void conn_up(pl_redis_t *r)
{
    pl_cluster_conn_t *n = r->data;
    pl_cluster_t *c = n->c;
    if (c->on_connect) c->on_connect(c, r);
    if (c->map.nnodes == 0) pl_cluster_refresh(c);
}

/* The connection to host:port, opened now if there is none; -1 if there is no room. */
static int conn_find(pl_cluster_t *c, const char *host, int port)
{
    for (int i = 0; i < c->nconns; i++)
        if (c->conns[i]->addr.port == port && strcmp(c->conns[i]->host, host) == 0) return i;
    if (c->nconns == PL_CLUSTER_CONNS_MAX || strlen(host) >= sizeof c->conns[0]->host) return -1;
    pl_cluster_conn_t *n = calloc(1, sizeof *n);
    if (!n) return -1;
    n->c = c;
    memcpy(n->host, host, strlen(host) + 1);
    n->addr = c->login;
    n->addr.host = n->host;
    n->addr.port = port;
    n->addr.db = 0;
    n->r.on_connect = conn_up;
    n->r.data = n;
    if (pl_redis_start(&n->r, c->loop, &n->addr) != 0) {
        free(n);
        return -1;
    }
    c->conns[c->nconns] = n;
    return c->nconns++;
}

/* The connection index of the slot's master, opened if needed; -1 if no master is known. */
static int conn_for_slot(pl_cluster_t *c, uint16_t slot)
{
    int node = c->map.owner[slot];
    if (node < 0 || node >= c->map.nnodes) return -1;
    if (c->conn_of[node] < 0)
        c->conn_of[node] = (int16_t)conn_find(c, c->map.nodes[node].host, c->map.nodes[node].port);
    return c->conn_of[node];
}

static int conn_ready(const pl_cluster_t *c, int i)
{
    return i >= 0 && atomic_load_explicit(&c->conns[i]->r.connected, memory_order_relaxed);
}

/* ---- the slot map ---- */

static void slots_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_cluster_t *c = privdata;
    c->refreshing = 0;
    if (c->stopping) return;
    redisReply *rep = reply;
    int owned = rep ? pl_slots_parse(c->scratch, rep) : -1;
    if (owned <= 0) {
        if (rep) pl_warn("redis cluster: CLUSTER SLOTS gave no usable map; asking again");
        c->refresh_wanted = 1;
    } else {
        if (owned < PL_SLOTS)
            pl_warn("redis cluster: %d of %d slots have no master", PL_SLOTS - owned, PL_SLOTS);
        int first = c->map.nnodes == 0;
        memcpy(&c->map, c->scratch, sizeof c->map);
        c->owned = owned;
        for (int i = 0; i < PL_SLOTS_NODES_MAX; i++)
            c->conn_of[i] = -1;
        /* Connect to every master now, not on its first command: that command would find the
         * connection still opening and be answered `unavailable`. */
        for (int i = 0; i < c->map.nnodes; i++)
            c->conn_of[i] = (int16_t)conn_find(c, c->map.nodes[i].host, c->map.nodes[i].port);
        pl_counter_add(&c->stats.refreshes, 1);
        if (first) pl_info("redis cluster: slot map read, %d masters", c->map.nnodes);
        atomic_store_explicit(&c->up, pl_cluster_up(c), memory_order_relaxed);
    }
    if (c->refresh_wanted) pl_cluster_refresh(c);
}

/* Send CLUSTER SLOTS to some connected node. */
static void refresh_now(pl_cluster_t *c)
{
    static const char *argv[2] = {"CLUSTER", "SLOTS"};
    static const size_t lens[2] = {7, 5};
    if (c->refreshing || c->stopping) return;
    c->refresh_wanted = 0;
    c->refreshed_at = uv_now(c->loop);
    for (int i = 0; i < c->nconns; i++) {
        if (!conn_ready(c, i)) continue;
        if (pl_redis_command(&c->conns[i]->r, slots_reply, c, 2, argv, lens) == 0) {
            c->refreshing = 1;
            pl_redis_flush(&c->conns[i]->r);
            return;
        }
    }
    /* Nobody is connected: ask again when the periodic timer next fires. */
    c->refresh_wanted = 1;
}

static void soon_cb(uv_timer_t *t)
{
    refresh_now(t->data);
}

void pl_cluster_refresh(pl_cluster_t *c)
{
    if (c->stopping) return;
    /* At most one read per PL_CLUSTER_REFRESH_MIN_MS: during a failover every command to the
     * lost master's slots asks for one. */
    uint64_t next = c->refreshed_at + PL_CLUSTER_REFRESH_MIN_MS, now = uv_now(c->loop);
    if (c->refreshing || now < next) {
        c->refresh_wanted = 1;
        if (!c->refreshing && !uv_is_active((uv_handle_t *)&c->soon_timer))
            uv_timer_start(&c->soon_timer, soon_cb, next - now, 0);
        return;
    }
    refresh_now(c);
}

/* ---- sending and redirections ---- */

static void reply_cb(struct redisAsyncContext *ac, void *reply, void *privdata);

/* Send the record to connection `i` (after ASKING if `ask`); 0, or -1 if that connection is
 * down. */
static int send_to(pl_cluster_t *c, pl_cluster_cmd_t *m, int i, int ask)
{
    if (!conn_ready(c, i)) return -1;
    pl_redis_t *r = &c->conns[i]->r;
    if (ask) {
        static const char asking[] = "*1\r\n$6\r\nASKING\r\n";
        if (pl_redis_command_raw(r, NULL, NULL, asking, sizeof asking - 1) != 0) return -1;
    }
    return pl_redis_command_raw(r, reply_cb, m, m->resp.data, m->resp.len);
}

static void retry_timer_cb(uv_timer_t *t);

static void retry_later(pl_cluster_t *c, pl_cluster_cmd_t *m)
{
    m->next = NULL;
    if (c->retry_tail)
        c->retry_tail->next = m;
    else
        c->retry_head = m;
    c->retry_tail = m;
    if (!uv_is_active((uv_handle_t *)&c->retry_timer))
        uv_timer_start(&c->retry_timer, retry_timer_cb, PL_CLUSTER_RETRY_MS, 0);
}

static int starts(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && memcmp(s, prefix, k) == 0 && (n == k || s[k] == ' ');
}

static void reply_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_cluster_cmd_t *m = privdata;
    pl_cluster_t *c = m->c;
    redisReply *rep = reply;
    if (!rep) {
        /* The node went: maybe a failover. The command may have run, so it is not sent again. */
        if (!c->stopping) pl_cluster_refresh(c);
        cmd_done(m, ac, NULL);
        return;
    }
    if (rep->type != REDIS_REPLY_ERROR || c->stopping) {
        cmd_done(m, ac, reply);
        return;
    }
    const char *e = rep->str;
    size_t n = rep->len;
    pl_slots_redirect_t to;
    if ((starts(e, n, "MOVED") || starts(e, n, "ASK")) && pl_slots_redirect(e, n, &to) == 0) {
        int i = conn_find(c, to.to.host, to.to.port);
        if (i < 0) {
            pl_warn("redis cluster: cannot connect to %s:%d (redirected there)", to.to.host,
                    to.to.port);
            cmd_done(m, ac, reply);
            return;
        }
        if (to.ask) {
            pl_counter_add(&c->stats.ask, 1);
            m->ask_conn = (int8_t)i;
        } else {
            /* Point the slot at its new master now; the refresh brings the rest of the map. */
            pl_counter_add(&c->stats.moved, 1);
            int node = -1;
            for (int k = 0; k < c->map.nnodes; k++)
                if (c->map.nodes[k].port == to.to.port && !strcmp(c->map.nodes[k].host, to.to.host))
                    node = k;
            if (node < 0 && c->map.nnodes < PL_SLOTS_NODES_MAX) {
                node = c->map.nnodes++;
                c->map.nodes[node] = to.to;
            }
            if (node >= 0) {
                if (c->map.owner[to.slot] < 0) c->owned++;
                c->map.owner[to.slot] = (int16_t)node;
                c->conn_of[node] = (int16_t)i;
            }
            pl_cluster_refresh(c);
        }
        if (send_to(c, m, i, to.ask) != 0) {
            pl_counter_add(&c->stats.retried, 1);
            retry_later(c, m);
        }
        return;
    }
    if (starts(e, n, "TRYAGAIN") || starts(e, n, "CLUSTERDOWN") || starts(e, n, "LOADING")) {
        if (starts(e, n, "CLUSTERDOWN")) pl_cluster_refresh(c);
        if (uv_now(c->loop) < m->deadline) {
            pl_counter_add(&c->stats.retried, 1);
            retry_later(c, m);
            return;
        }
        pl_counter_add(&c->stats.gave_up, 1);
    }
    cmd_done(m, ac, reply);
}

/* Every PL_CLUSTER_RETRY_MS while commands wait: send those whose node is up again; answer NULL
 * to those past their deadline. */
static void retry_timer_cb(uv_timer_t *t)
{
    pl_cluster_t *c = t->data;
    pl_cluster_cmd_t *m = c->retry_head;
    c->retry_head = c->retry_tail = NULL;
    uint64_t now = uv_now(c->loop);
    while (m) {
        pl_cluster_cmd_t *next = m->next;
        int ask = m->ask_conn >= 0;
        int i = ask ? m->ask_conn : conn_for_slot(c, m->slot);
        if (send_to(c, m, i, ask) != 0) {
            if (now < m->deadline) {
                retry_later(c, m);
            } else {
                pl_counter_add(&c->stats.gave_up, 1);
                cmd_done(m, NULL, NULL);
            }
        }
        m = next;
    }
    pl_cluster_flush(c);
}

int pl_cluster_command(pl_cluster_t *c, uint16_t slot, pl_redis_cb cb, void *privdata, int argc,
                       const char **argv, const size_t *lens)
{
    if (c->stopping) return -1;
    int i = conn_for_slot(c, slot);
    if (!conn_ready(c, i)) {
        if (c->map.nnodes) pl_cluster_refresh(c);
        return -1;
    }
    pl_cluster_cmd_t *m = cmd_get(c);
    if (!m) return -1;
    m->cb = cb;
    m->privdata = privdata;
    m->slot = slot;
    m->ask_conn = -1;
    m->deadline = uv_now(c->loop) + PL_CLUSTER_RETRY_FOR_MS;
    pl_redis_format(&m->resp, argc, argv, lens);
    if (send_to(c, m, i, 0) != 0) {
        cmd_put(c, m);
        return -1;
    }
    return 0;
}

pl_redis_t *pl_cluster_node(pl_cluster_t *c, uint16_t slot)
{
    int i = conn_for_slot(c, slot);
    return conn_ready(c, i) ? &c->conns[i]->r : NULL;
}

int pl_cluster_replicas(const pl_cluster_t *c, const pl_redis_t *node)
{
    for (int k = 0; k < c->map.nnodes; k++) {
        int i = c->conn_of[k];
        if (i >= 0 && &c->conns[i]->r == node) return c->map.nodes[k].replicas;
    }
    return -1;
}

int pl_cluster_up(const pl_cluster_t *c)
{
    if (c->map.nnodes == 0 || c->owned < PL_SLOTS) return 0;
    for (int k = 0; k < c->map.nnodes; k++)
        if (!conn_ready(c, c->conn_of[k])) return 0;
    return 1;
}

void pl_cluster_flush(pl_cluster_t *c)
{
    for (int i = 0; i < c->nconns; i++)
        pl_redis_flush(&c->conns[i]->r);
    atomic_store_explicit(&c->up, pl_cluster_up(c), memory_order_relaxed);
}

/* ---- life ---- */

static void periodic_cb(uv_timer_t *t)
{
    pl_cluster_t *c = t->data;
    if (!c->refreshing) refresh_now(c);
}

int pl_cluster_start(pl_cluster_t *c, uv_loop_t *loop, const pl_slots_node_t *seeds, int n,
                     const pl_redis_addr_t *login)
{
    if (n <= 0 || n > PL_SLOTS_NODES_MAX) return UV_EINVAL;
    c->loop = loop;
    c->login = *login;
    memcpy(c->seeds, seeds, (size_t)n * sizeof *seeds);
    c->nseeds = n;
    memset(&c->map, 0, sizeof c->map);
    for (int s = 0; s < PL_SLOTS; s++)
        c->map.owner[s] = -1;
    for (int i = 0; i < PL_SLOTS_NODES_MAX; i++)
        c->conn_of[i] = -1;
    c->nconns = 0;
    c->owned = 0;
    atomic_init(&c->up, 0);
    c->refreshing = c->refresh_wanted = c->stopping = 0;
    c->free_cmds = c->retry_head = c->retry_tail = NULL;
    if (!(c->scratch = malloc(sizeof *c->scratch))) return UV_ENOMEM;
    int rc;
    if ((rc = uv_timer_init(loop, &c->refresh_timer)) != 0) return rc;
    if ((rc = uv_timer_init(loop, &c->retry_timer)) != 0) return rc;
    if ((rc = uv_timer_init(loop, &c->soon_timer)) != 0) return rc;
    c->refresh_timer.data = c->retry_timer.data = c->soon_timer.data = c;
    c->refreshed_at = 0;
    /* The periodic read; a refresh asked for while another is in flight runs when it ends. */
    if ((rc = uv_timer_start(&c->refresh_timer, periodic_cb, PL_CLUSTER_REFRESH_MS,
                             PL_CLUSTER_REFRESH_MS)) != 0)
        return rc;
    for (int i = 0; i < n; i++)
        if (conn_find(c, seeds[i].host, seeds[i].port) < 0) return UV_ENOMEM;
    return 0;
}

void pl_cluster_stop(pl_cluster_t *c)
{
    if (c->stopping) return;
    c->stopping = 1;
    pl_cluster_cmd_t *m = c->retry_head;
    c->retry_head = c->retry_tail = NULL;
    while (m) {
        pl_cluster_cmd_t *next = m->next;
        cmd_done(m, NULL, NULL);
        m = next;
    }
    for (int i = 0; i < c->nconns; i++)
        pl_redis_stop(&c->conns[i]->r);
    uv_close((uv_handle_t *)&c->refresh_timer, NULL);
    uv_close((uv_handle_t *)&c->retry_timer, NULL);
    uv_close((uv_handle_t *)&c->soon_timer, NULL);
}

void pl_cluster_free(pl_cluster_t *c)
{
    for (int i = 0; i < c->nconns; i++)
        free(c->conns[i]);
    c->nconns = 0;
    while (c->free_cmds) {
        pl_cluster_cmd_t *m = c->free_cmds;
        c->free_cmds = m->next;
        pl_buf_free(&m->resp);
        free(m);
    }
    free(c->scratch);
    c->scratch = NULL;
}

struct redisContext *pl_cluster_connect_sync(const pl_slots_node_t *seeds, int n,
                                             const pl_redis_addr_t *login, const char *key,
                                             size_t key_len, int timeout_ms, char *err,
                                             size_t err_len)
{
    pl_slots_map_t *map = malloc(sizeof *map);
    if (!map) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    snprintf(err, err_len, "no redis cluster seed answered");
    redisContext *c = NULL;
    for (int i = 0; i < n && !c; i++) {
        pl_redis_addr_t a = *login;
        a.db = 0;
        a.host = seeds[i].host;
        a.port = seeds[i].port;
        redisContext *seed = pl_redis_connect_sync(&a, timeout_ms, err, err_len);
        if (!seed) continue;
        redisReply *r = redisCommand(seed, "CLUSTER SLOTS");
        const pl_slots_node_t *o =
            r && pl_slots_parse(map, r) > 0 ? pl_slots_node(map, pl_slots_key(key, key_len)) : NULL;
        if (r) freeReplyObject(r);
        if (!o) {
            snprintf(err, err_len, "%s:%d gave no master for the slot", a.host, a.port);
            redisFree(seed);
        } else if (o->port == a.port && strcmp(o->host, a.host) == 0) {
            c = seed;
        } else {
            redisFree(seed);
            a.host = o->host;
            a.port = o->port;
            c = pl_redis_connect_sync(&a, timeout_ms, err, err_len);
        }
    }
    free(map);
    return c;
}
