/*
 * shard: the gateway's state on one loop; see the header. This file wires it
 * to the loop: receivers of the inbox events, the end-of-turn hook, timers,
 * shutdown and the end of the loop.
 */
#include "parley/app/kv.h"
#include "parley/app/shard.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "parley/app/chat.h"
#include "parley/app/deliver.h"
#include "parley/app/publish.h"
#include "parley/app/restore.h"
#include "parley/app/server.h"
#include "parley/app/session.h"
#include "parley/app/roomsub.h"
#include "parley/app/split.h"
#include "parley/app/subscribe.h"
#include "parley/base/log.h"
#include "parley/net/tls.h"
#include "parley/svc/db.h"

/* ---- inbox receivers ---- */

static void db_receive(pl_loop_t *loop, pl_loop_event_t *ev)
{
    pl_db_job_t *j = (pl_db_job_t *)((char *)ev - offsetof(pl_db_job_t, ev));
    j->done(j);
}

/* Shutdown: stop accepting, tell every client, close them with 1001. */
static void shutdown_receive(pl_loop_t *loop, pl_loop_event_t *ev)
{
    pl_shard_t *s = pl_shard_of_loop(loop);
    if (s->stopping) return;
    s->stopping = 1;
    pl_sock_ctx_unlisten(s->conns->sock);
    pl_buf_t *b = pl_shard_scratch(s);
    pl_wire_notice(b, "shutdown", PL_DRAIN_NOTICE);
    pl_frame_t *notice = pl_frame_text(b->data, b->len);
    long n = 0;
    for (pl_sock_t *k = s->conns->sock->socks; k; k = k->next) {
        pl_conn_t *c = (pl_conn_t *)k;
        if (c->phase == PL_CONN_WS && notice) pl_conn_send(c, notice);
        pl_conn_close(c, 1001, "server shutting down");
        n++;
    }
    if (notice) pl_frame_unref(notice);
    pl_info("shutting down: closing %ld connections", n);
}

static void finish_receive(pl_loop_t *loop, pl_loop_event_t *ev)
{
    pl_shard_of_loop(loop)->finishing = 1;
}

static void resync_receive(pl_loop_t *loop, pl_loop_event_t *ev)
{
    pl_shard_t *s = pl_shard_of_loop(loop);
    atomic_store(&s->resync_queued, 0);
    if (!s->stopping) pl_chat_resync(s);
}

static void gap_receive(pl_loop_t *loop, pl_loop_event_t *ev)
{
    pl_shard_t *s = pl_shard_of_loop(loop);
    atomic_store(&s->gap_queued, 0);
    if (!s->stopping) pl_subscribe_gap(s);
}

void pl_shard_gap(pl_shard_t *s)
{
    if (atomic_exchange(&s->gap_queued, 1) == 0) pl_loop_post(s->loop, &s->gap_ev);
}

void pl_shard_resync(pl_shard_t *s)
{
    if (atomic_exchange(&s->resync_queued, 1) == 0) pl_loop_post(s->loop, &s->resync_ev);
}

/* ---- the end of a turn ---- */

/* After the connections' hook (closes, output): presence changes of this turn (closes add some)
 * as one script call, then the turn's Redis commands in one write. The last to go: clients,
 * then (FINISH) the database pool's answers, then the loop. */
static void turn_hook(pl_loop_t *loop, void *arg)
{
    pl_shard_t *s = arg;
    pl_chat_flush(s);
    pl_publish_flush(s);
    pl_kv_flush(s);
    if (s->finishing && !s->conns->sock->socks && !uv_is_closing((uv_handle_t *)&s->ready_timer)) {
        pl_subscribe_redis_ready(s, 0); /* catch-ups parked for a restore hold connections */
        pl_subscribe_room_live(s, NULL, NULL, 0, 0); /* so do those waiting for a room */
        pl_kv_stop(s);
        uv_close((uv_handle_t *)&s->ready_timer, NULL);
        uv_close((uv_handle_t *)&s->gap_timer, NULL);
        uv_close((uv_handle_t *)&s->reorder_timer, NULL);
        uv_close((uv_handle_t *)&s->split_timer, NULL);
        uv_close((uv_handle_t *)&s->presence_timer, NULL);
        pl_drain_close(s);
        pl_sock_ctx_close(s->conns->sock);
        pl_loop_end(loop);
    }
}

static void presence_timer_cb(uv_timer_t *t)
{
    pl_chat_presence_sweep(t->data);
}

/* A room appeared on or left this shard: the subscriber wakes this loop for it, or not; in
 * rooms mode it also subscribes to the room, or lets go of it. */
static void room_cb(void *ctx, pl_room_t *room, int present)
{
    pl_shard_t *s = ctx;
    pl_shardmask_update(s->srv->rooms_mask, s->mask_counts, s->index, room->node.hash, present);
    pl_roomsub_room(s, room, present);
    if (!present) pl_deliver_room_gone(s, room);
}

int pl_shard_init(pl_loop_t *loop, pl_server_t *srv, int fd, int tls_fd, void *tls, int64_t id_node)
{
    pl_shard_t *s = pl_loop_ext(loop);
    const pl_config_t *cfg = &srv->cfg;
    s->srv = srv;
    s->loop = loop;
    s->index = pl_loop_index(loop);
    pl_room_table_init(&s->rooms);
    memset(&s->users, 0, sizeof s->users);
    s->rooms.on_room = room_cb;
    s->rooms.on_room_ctx = s;
    if (!(s->mask_counts = calloc(1, sizeof *s->mask_counts))) return UV_ENOMEM;
    pl_idgen_init(&s->ids, id_node < 0 ? 0 : (uint32_t)id_node);
    s->ids_ready = id_node >= 0;
    atomic_init(&s->nrooms, 0);
    s->metrics_listener = -1;
    atomic_init(&s->resync_queued, 0);
    s->shutdown_ev.kind = PL_EV_SHUTDOWN;
    s->finish_ev.kind = PL_EV_FINISH;
    s->resync_ev.kind = PL_EV_RESYNC;
    s->drain_ev.kind = PL_EV_DRAIN;
    s->rebalance_ev.kind = PL_EV_REBALANCE;
    s->gap_ev.kind = PL_EV_GAP;
    atomic_init(&s->gap_queued, 0);
    atomic_init(&s->rebalance_queued, 0);

    pl_conn_limits_t lim = {cfg->max_frame,         cfg->ping_interval,        cfg->idle_timeout,
                            cfg->http_idle_timeout, cfg->http_request_timeout, cfg->http_max_header,
                            cfg->http_max_body};
    size_t half_soft = cfg->outbuf_soft / 2;
    pl_sock_limits_t slim = {cfg->max_outbuf,
                             cfg->outbuf_soft,
                             cfg->outbuf_soft_s,
                             half_soft < 256 * 1024 ? half_soft : 256 * 1024,
                             cfg->tls_handshake_timeout,
                             4008};
    int rc;
    if (!(s->conns = pl_conn_ctx_new(loop, &pl_session_app, s, &lim, &slim))) return UV_ENOMEM;
    if ((rc = pl_loop_on(loop, PL_EV_BCAST, pl_deliver_receive)) != 0 ||
        (rc = pl_loop_on(loop, PL_EV_DB, db_receive)) != 0 ||
        (rc = pl_loop_on(loop, PL_EV_SHUTDOWN, shutdown_receive)) != 0 ||
        (rc = pl_loop_on(loop, PL_EV_FINISH, finish_receive)) != 0 ||
        (rc = pl_loop_on(loop, PL_EV_RESYNC, resync_receive)) != 0 ||
        (rc = pl_loop_on(loop, PL_EV_DRAIN, pl_drain_receive)) != 0 ||
        (rc = pl_loop_on(loop, PL_EV_REBALANCE, pl_drain_rebalance_receive)) != 0 ||
        (rc = pl_loop_on(loop, PL_EV_GAP, gap_receive)) != 0 ||
        (rc = pl_loop_on(loop, PL_EV_ROOM_LIVE, pl_roomsub_receive)) != 0 ||
        (rc = pl_loop_hook(loop, turn_hook, s)) != 0)
        return rc;
    uv_loop_t *uv = pl_loop_uv(loop);
    if ((rc = uv_timer_init(uv, &s->ready_timer)) != 0 ||
        (rc = uv_timer_init(uv, &s->gap_timer)) != 0 ||
        (rc = uv_timer_init(uv, &s->reorder_timer)) != 0 ||
        (rc = uv_timer_init(uv, &s->split_timer)) != 0 ||
        (rc = uv_timer_init(uv, &s->presence_timer)) != 0)
        return rc;
    s->ready_timer.data = s->presence_timer.data = s->gap_timer.data = s->reorder_timer.data =
        s->split_timer.data = s;
    if ((rc = pl_drain_init(s)) != 0) return rc;
    /* One instance-wide heartbeat: shard 0 keeps it (the server registered the instance before
     * starting the shards, or the shards' resync does when Redis comes up). */
    if (s->index == 0 && (rc = uv_timer_start(&s->presence_timer, presence_timer_cb,
                                              PL_HEARTBEAT_EVERY_MS, PL_HEARTBEAT_EVERY_MS)) != 0)
        return rc;
    if (fd >= 0 && (rc = pl_sock_listen(s->conns->sock, fd, &pl_sock_tcp, NULL)) < 0) return rc;
    if (tls_fd >= 0 && (rc = pl_sock_listen(s->conns->sock, tls_fd, &pl_sock_tls, tls)) < 0)
        return rc;
    return pl_kv_start(s);
}

void pl_shard_exit(pl_loop_t *loop)
{
    pl_shard_t *s = pl_shard_of_loop(loop);
    pl_room_table_free(&s->rooms);
    pl_users_free(&s->users);
    free(s->mask_counts);
    pl_chat_free(s);
    pl_kv_free(s);
    pl_split_free(s);
    pl_restore_free(s);
    pl_buf_free(&s->scratch);
    pl_buf_free(&s->tail);
    for (int i = 0; i < 5; i++)
        pl_buf_free(&s->kbuf[i]);
    pl_conn_ctx_free(s->conns);
    s->conns = NULL;
    pl_server_shard_done(s->srv);
}
