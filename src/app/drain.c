/*
 * drain: gentle closes spread over time; see the header. One timer per shard ticks while a plan
 * runs; each tick asks as many more clients to leave as the elapsed share of the span calls
 * for, and closes those whose messages are all answered. Spreading matters: every client
 * closed reconnects at once (the JavaScript client skips its backoff after a shutdown notice),
 * and a whole instance's clients arriving in one instant at the others is the thundering herd
 * a rolling restart must not cause.
 */
#include "parley/app/drain.h"

#include "parley/app/server.h"
#include "parley/app/session.h"
#include "parley/app/shard.h"
#include "parley/base/log.h"

/* Ticks: fine enough that a few hundred closes a second are spread evenly. */
#define TICK_MS 50

/* One notice frame per tick, shared by every client closed in it. */
typedef struct {
    pl_frame_t *frame;
    const char *code, *message;
} notice_t;

static void finish_leaving(pl_shard_t *s, pl_conn_t *c, notice_t *n)
{
    if (!n->frame) {
        pl_buf_t *b = pl_shard_scratch(s);
        pl_wire_notice(b, n->code, n->message);
        n->frame = pl_frame_text(b->data, b->len);
    }
    if (n->frame) pl_conn_send(c, n->frame);
    pl_conn_close(c, 1001, s->leave.drain ? "server shutting down" : "rebalancing");
}

/* Clients asked to leave by now: the elapsed share of the span, rounded up. */
static long target(const pl_drain_plan_t *p, uint64_t now)
{
    if (!p->span || now - p->t0 >= p->span) return p->total;
    return (long)(((now - p->t0) * (uint64_t)p->total + p->span - 1) / p->span);
}

static void tick(pl_shard_t *s)
{
    pl_drain_plan_t *p = &s->leave;
    uint64_t now = uv_now(pl_loop_uv(s->loop));
    long want = target(p, now), left = 0, waiting = 0;
    notice_t n = {NULL, p->drain ? "shutdown" : "reconnect",
                  p->drain ? PL_DRAIN_NOTICE : "the load is being rebalanced: reconnect"};
    for (pl_sock_t *k = s->conns->sock->socks, *next; k; k = next) {
        next = k->next;
        pl_conn_t *c = (pl_conn_t *)k;
        if (!pl_conn_open(c) || c->phase != PL_CONN_WS) continue;
        pl_session_t *ss = pl_session_of(c);
        /* A rebalance asks only the clients it found: one that arrived since (perhaps one asked
         * a moment ago, back at the instance its address hashes to) is left alone. */
        if (!ss->leaving && !p->drain && (int32_t)(c->sock.created_ms - pl_sock_ms32(p->t0)) > 0)
            continue;
        if (!ss->leaving) {
            if (p->started >= want) {
                left++;
                continue;
            }
            /* Read nothing more from it: what it sent is answered, what it would send next
             * goes to the instance it reconnects to (its client resends un-acked messages). */
            p->started++;
            ss->leaving = 1;
            ss->leave_ms = (uint32_t)now;
            pl_sock_pause(&c->sock);
        }
        if (c->sock.holds == 0 || (uint32_t)now - ss->leave_ms >= PL_DRAIN_WAIT_MS) {
            finish_leaving(s, c, &n);
        } else {
            left++;
            waiting++;
        }
    }
    if (n.frame) pl_frame_unref(n.frame);
    if (p->drain && left == 0 && !p->reported) {
        p->reported = 1;
        pl_info("drained: every client of this shard closed");
        pl_server_shard_drained(s->srv);
    }
    int done = p->drain ? p->reported : p->started >= p->total && waiting == 0;
    if (done && p->active) {
        uv_timer_stop(&p->timer);
        p->active = 0;
    }
}

static void tick_cb(uv_timer_t *t)
{
    tick(t->data);
}

/* Count the WebSocket clients not already leaving. */
static long clients(pl_shard_t *s)
{
    long n = 0;
    for (pl_sock_t *k = s->conns->sock->socks; k; k = k->next) {
        pl_conn_t *c = (pl_conn_t *)k;
        if (pl_conn_open(c) && c->phase == PL_CONN_WS && !pl_session_of(c)->leaving) n++;
    }
    return n;
}

static void begin(pl_shard_t *s, long total, uint64_t span, int drain)
{
    pl_drain_plan_t *p = &s->leave;
    p->t0 = uv_now(pl_loop_uv(s->loop));
    p->span = span;
    p->total = total;
    p->started = 0;
    p->drain = (uint8_t)drain;
    if (!p->active && uv_timer_start(&p->timer, tick_cb, TICK_MS, TICK_MS) == 0) p->active = 1;
    tick(s);
}

int pl_drain_init(pl_shard_t *s)
{
    int rc = uv_timer_init(pl_loop_uv(s->loop), &s->leave.timer);
    if (rc == 0) s->leave.timer.data = s;
    return rc;
}

void pl_drain_close(pl_shard_t *s)
{
    if (!uv_is_closing((uv_handle_t *)&s->leave.timer))
        uv_close((uv_handle_t *)&s->leave.timer, NULL);
}

void pl_drain_receive(pl_loop_t *loop, pl_loop_event_t *ev)
{
    pl_shard_t *s = pl_shard_of_loop(loop);
    if (s->stopping || s->leave.drain) return;
    /* Accepting goes on until the shutdown: /health answers 503 "draining" to whoever asks
     * (load balancers with active checks), and upgrades are refused with 503, which nginx
     * (proxy_next_upstream http_503) turns into a connection to another instance. */
    long n = clients(s);
    pl_info("draining: closing %ld client(s) over %d s", n, s->srv->cfg.drain_seconds);
    begin(s, n, (uint64_t)s->srv->cfg.drain_seconds * 1000, 1);
}

void pl_drain_rebalance_receive(pl_loop_t *loop, pl_loop_event_t *ev)
{
    pl_shard_t *s = pl_shard_of_loop(loop);
    atomic_store(&s->rebalance_queued, 0);
    if (s->stopping || s->leave.drain) return;
    unsigned permille = atomic_load(&s->srv->rebalance_permille);
    unsigned ms = atomic_load(&s->srv->rebalance_ms);
    long n = clients(s), share = (long)(((uint64_t)n * permille + 500) / 1000);
    pl_info("rebalance: asking %ld of %ld client(s) to reconnect over %u ms", share, n, ms);
    begin(s, share, ms, 0);
}
