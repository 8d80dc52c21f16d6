/*
 * loop: the event-loop thread; see the header for inbox, hooks and
 * extension area.
 */
#include "parley/net/loop.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "parley/base/log.h"

struct pl_loop {
    uv_loop_t uv;
    int index;
    uv_thread_t thread;
    int started;
    int wake_fd;    /**< eventfd; written by the producer that finds the inbox empty */
    uv_poll_t wake; /**< watches wake_fd */
    pl_mpsc_t inbox;
    uv_check_t check;
    uv_prepare_t prepare;
    pl_loop_receive_cb receivers[PL_LOOP_KINDS];
    pl_loop_hook_cb hooks[PL_LOOP_HOOKS];
    void *hook_args[PL_LOOP_HOOKS];
    int nhooks;
    pl_loop_exit_cb on_exit;
    char tag[16];
    _Alignas(16) unsigned char ext[];
};

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
    pl_loop_t *l = h->data;
    uint64_t count;
    if (status < 0)
        pl_warn("inbox eventfd: %s", uv_strerror(status));
    else if (read(l->wake_fd, &count, sizeof count) < 0 && errno != EAGAIN)
        pl_warn("inbox eventfd read: %s", strerror(errno));
    pl_mpsc_node_t *n = pl_mpsc_take_all(&l->inbox);
    while (n) {
        pl_mpsc_node_t *next = n->next; /* the receiver may free the event */
        pl_loop_event_t *ev = (pl_loop_event_t *)((char *)n - offsetof(pl_loop_event_t, node));
        l->receivers[ev->kind](l, ev);
        n = next;
    }
}

static void run_hooks(pl_loop_t *l)
{
    for (int i = 0; i < l->nhooks; i++)
        l->hooks[i](l, l->hook_args[i]);
}

static void check_cb(uv_check_t *h)
{
    run_hooks(h->data);
}

static void prepare_cb(uv_prepare_t *h)
{
    run_hooks(h->data);
}

pl_loop_t *pl_loop_new(int index, size_t ext_size)
{
    pl_loop_t *l = calloc(1, sizeof *l + ((ext_size + 15) & ~(size_t)15));
    if (!l) {
        pl_error("loop %d: out of memory", index);
        return NULL;
    }
    l->index = index;
    pl_mpsc_init(&l->inbox);
    int rc;
    if ((l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        pl_error("loop %d: eventfd: %s", index, strerror(errno));
        free(l);
        return NULL;
    }
    if ((rc = uv_loop_init(&l->uv)) != 0) {
        pl_error("loop %d: %s", index, uv_strerror(rc));
        close(l->wake_fd);
        free(l);
        return NULL;
    }
    /* Initialising these cannot fail on Linux (no allocation, no system call but the poll's
     * epoll registration at start); starting them is checked. */
    uv_poll_init(&l->uv, &l->wake, l->wake_fd);
    uv_check_init(&l->uv, &l->check);
    uv_prepare_init(&l->uv, &l->prepare);
    l->wake.data = l->check.data = l->prepare.data = l;
    if ((rc = uv_poll_start(&l->wake, UV_READABLE, wake_cb)) != 0 ||
        (rc = uv_check_start(&l->check, check_cb)) != 0 ||
        (rc = uv_prepare_start(&l->prepare, prepare_cb)) != 0) {
        pl_error("loop %d: %s", index, uv_strerror(rc));
        pl_loop_end(l);
        uv_run(&l->uv, UV_RUN_DEFAULT); /* the close callbacks */
        uv_loop_close(&l->uv);
        close(l->wake_fd);
        free(l);
        return NULL;
    }
    return l;
}

int pl_loop_on(pl_loop_t *l, unsigned kind, pl_loop_receive_cb cb)
{
    if (kind >= PL_LOOP_KINDS || l->started) return UV_EINVAL;
    l->receivers[kind] = cb;
    return 0;
}

int pl_loop_hook(pl_loop_t *l, pl_loop_hook_cb cb, void *arg)
{
    if (l->nhooks == PL_LOOP_HOOKS || l->started) return UV_ENOSPC;
    l->hook_args[l->nhooks] = arg;
    l->hooks[l->nhooks++] = cb;
    return 0;
}

static void loop_main(void *arg)
{
    pl_loop_t *l = arg;
    pl_log_set_thread(l->tag);
    uv_run(&l->uv, UV_RUN_DEFAULT);
    /* Only here, after the loop, is nothing in flight any more. */
    int rc = uv_loop_close(&l->uv);
    if (rc != 0) pl_warn("loop close: %s", uv_strerror(rc));
    if (l->on_exit) l->on_exit(l);
}

int pl_loop_start(pl_loop_t *l, const char *tag, pl_loop_exit_cb on_exit)
{
    snprintf(l->tag, sizeof l->tag, "%s", tag);
    l->on_exit = on_exit;
    l->started = 1;
    int rc = uv_thread_create(&l->thread, loop_main, l);
    if (rc != 0) l->started = 0;
    return rc;
}

int pl_loop_post_nowake(pl_loop_t *l, pl_loop_event_t *ev)
{
    return pl_mpsc_push(&l->inbox, &ev->node);
}

void pl_loop_wake(pl_loop_t *l)
{
    uint64_t one = 1;
    /* EAGAIN only if the counter were about to overflow: the loop is awake then anyway. */
    if (write(l->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        pl_error("loop %d: waking it failed: %s", l->index, strerror(errno));
}

void pl_loop_post(pl_loop_t *l, pl_loop_event_t *ev)
{
    if (pl_mpsc_push(&l->inbox, &ev->node)) pl_loop_wake(l);
}

void pl_loop_end(pl_loop_t *l)
{
    uv_handle_t *hs[3] = {(uv_handle_t *)&l->wake, (uv_handle_t *)&l->check,
                          (uv_handle_t *)&l->prepare};
    for (int i = 0; i < 3; i++)
        if (!uv_is_closing(hs[i])) uv_close(hs[i], NULL);
}

void pl_loop_join(pl_loop_t *l)
{
    if (l->started) uv_thread_join(&l->thread);
}

void pl_loop_free(pl_loop_t *l)
{
    if (!l) return;
    close(l->wake_fd); /* nothing posts any more: the owner stopped every producer first */
    free(l);
}

uv_loop_t *pl_loop_uv(pl_loop_t *l)
{
    return &l->uv;
}

int pl_loop_index(const pl_loop_t *l)
{
    return l->index;
}

void *pl_loop_ext(pl_loop_t *l)
{
    return l->ext;
}
