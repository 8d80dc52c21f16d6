/*
 * shard: the event loop thread. See the header for the per-iteration
 * discipline; this file wires the handles and handles inbox events.
 */
#include "parley/app/shard.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "parley/app/conn.h"
#include "parley/svc/db.h"
#include "parley/app/chat.h"
#include "parley/base/log.h"
#include "parley/app/wire.h"
#include "parley/app/server.h"
#include "parley/app/session.h"

/* Sweep period: timeouts are coarse (seconds), so one timer per shard suffices. */
#define SWEEP_MS 1000
/* Output queue nodes kept for reuse after a burst; the rest go back to the heap. */
#define NODES_KEEP 65536

pl_outq_node_t *pl_shard_node_get(pl_shard_t *s)
{
    pl_outq_node_t *n = s->free_nodes;
    if (n) {
        s->free_nodes = n->next;
        s->nfree_nodes--;
        return n;
    }
    return malloc(sizeof *n);
}

void pl_shard_node_put(pl_shard_t *s, pl_outq_node_t *n)
{
    if (s->nfree_nodes >= NODES_KEEP) {
        free(n);
        return;
    }
    n->next = s->free_nodes;
    s->free_nodes = n;
    s->nfree_nodes++;
}

static void begin_shutdown(pl_shard_t *s)
{
    if (s->stopping) return;
    s->stopping = 1;
    if (!uv_is_closing((uv_handle_t *)&s->listener)) uv_close((uv_handle_t *)&s->listener, NULL);
    pl_buf_reset(&s->scratch);
    pl_proto_notice(&s->scratch, "shutdown", "server shutting down");
    pl_frame_t *notice = pl_frame_text(s->scratch.data, s->scratch.len);
    long n = 0;
    for (pl_conn_t *c = s->conns; c; c = c->next) {
        if (c->phase == PL_CONN_WS && notice) pl_conn_send(c, notice);
        pl_conn_close(c, 1001, "server shutting down");
        n++;
    }
    if (notice) pl_frame_unref(notice);
    pl_info("shutting down: closing %ld connections", n);
}

/*
 * The inbox's wake-up is a plain eventfd, not uv_async_t: libuv 1.44's async
 * handle makes the woken loop spin until the sender's write() has returned
 * (uv__async_spin), and on two vCPUs that spin was the largest user-space
 * symbol in parleyd's profile of the rooms scenario. Here nothing waits: the
 * counter is read (reset) before the inbox is taken, so a producer that finds
 * the inbox empty after the take writes again and the next turn sees it.
 */
static void wake_cb(uv_poll_t *h, int status, int events)
{
    pl_shard_t *s = h->data;
    uint64_t count;
    if (status < 0)
        pl_warn("inbox eventfd: %s", uv_strerror(status));
    else if (read(s->wake_fd, &count, sizeof count) < 0 && errno != EAGAIN)
        pl_warn("inbox eventfd read: %s", strerror(errno));
    pl_mpsc_node_t *n = pl_mpsc_take_all(&s->inbox);
    while (n) {
        pl_mpsc_node_t *next = n->next;
        pl_event_t *ev = (pl_event_t *)((char *)n - offsetof(pl_event_t, node));
        switch (ev->kind) {
        case PL_EV_BCAST: {
            pl_bcast_t *b = ev->bcast;
            if (!s->stopping) pl_session_deliver(s, b);
            if (atomic_fetch_sub_explicit(&b->pending, 1, memory_order_acq_rel) == 1)
                pl_frame_unref(b->frame); /* b lives in the frame's allocation: gone with it */
            break;
        }
        case PL_EV_DB:
            ev->job->done(ev->job);
            break;
        case PL_EV_SHUTDOWN:
            begin_shutdown(s);
            break;
        case PL_EV_FINISH:
            s->finishing = 1;
            break;
        case PL_EV_RESYNC:
            atomic_store(&s->resync_queued, 0);
            if (!s->stopping) pl_chat_resync(s);
            break;
        }
        n = next;
    }
    /* Output is written in the check phase, right after this iteration's I/O. */
}

static void finish(pl_shard_t *s)
{
    pl_redis_stop(&s->redis);
    uv_close((uv_handle_t *)&s->wake, NULL);
    uv_close((uv_handle_t *)&s->check, NULL);
    uv_close((uv_handle_t *)&s->prepare, NULL);
    uv_close((uv_handle_t *)&s->sweep, NULL);
    uv_close((uv_handle_t *)&s->ready_timer, NULL);
    uv_close((uv_handle_t *)&s->presence_timer, NULL);
}

static void presence_timer_cb(uv_timer_t *t)
{
    pl_chat_presence_sweep(t->data);
}

/* Everything the turn's callbacks queued: closes and output, then presence changes (closes add
 * some) as one script call, then the Redis commands (closes add some) in one write. */
static void flush_turn(pl_shard_t *s)
{
    pl_conn_process_pending(s);
    pl_chat_flush(s);
    pl_redis_flush(&s->redis);
}

/* After the I/O callbacks. */
static void check_cb(uv_check_t *h)
{
    pl_shard_t *s = h->data;
    flush_turn(s);
    /* The last to go: clients, then (FINISH) the database pool's answers. */
    if (s->finishing && !s->conns && !uv_is_closing((uv_handle_t *)&s->wake)) finish(s);
}

/* After timers and the callbacks of writes that completed at once, right before libuv computes
 * how long to block: what they queued goes out now, not at the next wake-up (a second away on
 * an idle shard, when only the sweep timer would wake it). */
static void prepare_cb(uv_prepare_t *h)
{
    flush_turn(h->data);
}

/* A room appeared on or left this shard: the subscriber thread wakes us for it, or not. */
static void room_cb(void *ctx, uint32_t hash, int present)
{
    pl_shard_t *s = ctx;
    pl_shardmask_update(s->srv->rooms_mask, s->mask_counts, s->index, hash, present);
}

static void sweep_cb(uv_timer_t *t)
{
    pl_shard_t *s = t->data;
    uint64_t now = uv_now(&s->loop);
    for (pl_conn_t *c = s->conns; c; c = c->next)
        pl_conn_sweep(c, now);
}

static void shard_main(void *arg)
{
    pl_shard_t *s = arg;
    char tag[16];
    snprintf(tag, sizeof tag, "shard-%d", s->index);
    pl_log_set_thread(tag);
    uv_run(&s->loop, UV_RUN_DEFAULT);

    /* Only here, after the loop, is nothing in flight any more. */
    int rc = uv_loop_close(&s->loop);
    if (rc != 0) pl_warn("loop close: %s", uv_strerror(rc));
    /* Nothing posts any more: FINISH was the last event (the server's shutdown order). */
    close(s->wake_fd);
    s->wake_fd = -1;
    pl_room_table_free(&s->rooms);
    pl_room_table_free(&s->users);
    free(s->mask_counts);
    pl_ws_pool_free(&s->ws);
    pl_buf_free(&s->scratch);
    pl_chat_thread_free();
    pl_session_thread_free();
    while (s->free_nodes) {
        pl_outq_node_t *n = s->free_nodes;
        s->free_nodes = n->next;
        free(n);
    }
    atomic_fetch_sub(&s->srv->shards_running, 1);
    uv_async_send(&s->srv->shard_done);
}

int pl_shard_start(pl_shard_t *s, struct pl_server *srv, int index, int listen_fd, int64_t id_node)
{
    s->srv = srv;
    s->index = index;
    s->listen_fd = listen_fd;
    pl_mpsc_init(&s->inbox);
    pl_room_table_init(&s->rooms);
    pl_room_table_init(&s->users);
    if (!(s->mask_counts = calloc(1, sizeof *s->mask_counts))) return UV_ENOMEM;
    s->rooms.on_room = room_cb;
    s->rooms.on_room_ctx = s;
    pl_ws_pool_init(&s->ws);
    pl_idgen_init(&s->ids, id_node < 0 ? 0 : (uint32_t)id_node);
    s->ids_ready = id_node >= 0;
    atomic_init(&s->nconns, 0);
    atomic_init(&s->nrooms, 0);
    atomic_init(&s->delivered, 0);
    s->shutdown_ev.kind = PL_EV_SHUTDOWN;
    s->finish_ev.kind = PL_EV_FINISH;
    s->resync_ev.kind = PL_EV_RESYNC;
    atomic_init(&s->resync_queued, 0);

    int rc;
    if ((s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) return -errno;
    if ((rc = uv_loop_init(&s->loop)) != 0) {
        close(s->wake_fd);
        return rc;
    }
    /* Everything is set up here, before the thread exists; after that only it touches the loop. */
    if ((rc = uv_poll_init(&s->loop, &s->wake, s->wake_fd)) != 0 ||
        (rc = uv_poll_start(&s->wake, UV_READABLE, wake_cb)) != 0 ||
        (rc = uv_check_init(&s->loop, &s->check)) != 0 ||
        (rc = uv_check_start(&s->check, check_cb)) != 0 ||
        (rc = uv_prepare_init(&s->loop, &s->prepare)) != 0 ||
        (rc = uv_prepare_start(&s->prepare, prepare_cb)) != 0 ||
        (rc = uv_timer_init(&s->loop, &s->sweep)) != 0 ||
        (rc = uv_timer_start(&s->sweep, sweep_cb, SWEEP_MS, SWEEP_MS)) != 0 ||
        (rc = uv_timer_init(&s->loop, &s->ready_timer)) != 0 ||
        (rc = uv_timer_init(&s->loop, &s->presence_timer)) != 0 ||
        (rc = uv_tcp_init(&s->loop, &s->listener)) != 0)
        return rc;
    s->wake.data = s->check.data = s->sweep.data = s->listener.data = s->ready_timer.data = s;
    s->prepare.data = s;
    s->presence_timer.data = s;
    /* One instance-wide heartbeat: shard 0 keeps it (the server registered the instance before
     * starting the shards, or the shards' resync does when Redis comes up). */
    if (index == 0 && (rc = uv_timer_start(&s->presence_timer, presence_timer_cb,
                                           PL_HEARTBEAT_EVERY_MS, PL_HEARTBEAT_EVERY_MS)) != 0)
        return rc;
    if ((rc = uv_tcp_open(&s->listener, listen_fd)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 4096, pl_conn_accept_cb)) != 0)
        return rc;
    s->redis.on_connect = pl_session_redis_up;
    s->redis.data = s;
    if ((rc = pl_redis_start(&s->redis, &s->loop, &srv->redis_addr)) != 0) return rc;
    return uv_thread_create(&s->thread, shard_main, s);
}

int pl_shard_post_nowake(pl_shard_t *s, pl_event_t *ev)
{
    return pl_mpsc_push(&s->inbox, &ev->node);
}

void pl_shard_wake(pl_shard_t *s)
{
    uint64_t one = 1;
    /* EAGAIN only if the counter were about to overflow: the shard is awake then anyway. */
    if (write(s->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        pl_error("shard %d: waking it failed: %s", s->index, strerror(errno));
}

void pl_shard_post(pl_shard_t *s, pl_event_t *ev)
{
    if (pl_mpsc_push(&s->inbox, &ev->node)) pl_shard_wake(s);
}

void pl_shard_resync(pl_shard_t *s)
{
    if (atomic_exchange(&s->resync_queued, 1) == 0) pl_shard_post(s, &s->resync_ev);
}

void pl_shard_join(pl_shard_t *s)
{
    uv_thread_join(&s->thread);
}
