/*
 * parley-floor: the physical floor for Parley's benchmarks.
 *
 * A minimal single-threaded raw-epoll WebSocket broadcaster speaking the
 * subset of protocol v1 the load generator uses: upgrade on GET /ws?token=..
 * (the token is not verified; `sub` is read from its payload), then
 * `subscribe`, `unsubscribe`, `message`, `ping`. No Redis, no JSON library.
 *
 * A message builds ONE server frame, appended (memcpy) to each subscriber's
 * output buffer; every dirty connection is flushed once per epoll loop turn
 * with a single write(). That is the cheapest honest way to broadcast on this
 * kernel and what Parley's figures are divided by.
 *
 * With --redis HOST:PORT it is also the floor of Redis's cost per durable
 * message: each message is stored and announced with the least any durable
 * fan-out through Redis needs, `XADD fr:<r>:s MAXLEN ~ 1000 * m <frame>`
 * and `PUBLISH fr:<r> <frame>` (no script, no seq, no dedup record), the
 * commands of one loop turn written to Redis in one write; a second
 * connection PSUBSCRIBEs fr:* and reads what Redis sends it, as an
 * instance's subscriber does. Delivery stays local, so only Redis's side
 * changes (bench/run's "floor-redis").
 *
 * With --redis and --durable SCRIPT.lua it is the floor of a durable fan-out
 * that keeps Parley's guarantees ("floor-durable"): every message goes
 * through the given script (EVALSHA; bench/redis_cost/seq_from_stream.lua is
 * the cheapest known to keep a gap-free seq, the cid's dedup record, the
 * stream and the PUBLISH), the sender is acknowledged with the seq from the
 * script's reply, and every subscriber, the sender's room-mates here too,
 * gets the message from what the subscriber connection reads, with its seq,
 * as it would from another instance. Still one thread, one epoll loop, no
 * JSON library: what the guarantees cost with nothing of Parley's design
 * around them. It uses channels `fd:<room>` (and PSUBSCRIBEs `fd:*`), so
 * nothing else on the same Redis hears it or is heard by it.
 *
 * With --tls CERT KEY it serves wss instead ("floor-tls", make bench-tls):
 * mbedTLS with parleyd's TLS settings (TLS 1.2, the same cipher suites in
 * the same order, X25519 first). A dirty connection's queued plaintext is
 * encrypted in records of up to 16 KB, all of them written with one write()
 * per loop turn: the least TLS can add to the plain floor with the library
 * parleyd uses, so "TLS costs at most 1.3x plain" can be judged on it too.
 *
 *   parley-floor [--listen 127.0.0.1:9001] [--redis 127.0.0.1:6379 [--durable S.lua]]
 *                [--tls CERT KEY]
 *   (or PARLEY_LISTEN)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <mbedtls/base64.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/sha1.h>
#include <mbedtls/ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "benchlib.h"

#define MAX_HTTP 8192
#define MAX_FRAME (64 * 1024)
#define MAX_OUT (64u << 20)
#define MAX_ROOM 128

typedef struct room room;
typedef struct conn conn;
typedef struct tlsx tlsx;

struct room {
    room *next;
    conn **m;
    uint32_t n, cap;
    uint32_t hash;
    uint8_t nlen;
    char name[];
};

struct conn {
    int fd;
    uint8_t ws; /* upgraded */
    uint8_t dead;
    uint8_t dirty;
    uint8_t epout; /* EPOLLOUT armed */
    tlsx *tls;     /* --tls only; out of line, since the conn is reallocated at the upgrade */
    uint8_t *in;   /* leftover partial input */
    uint32_t in_len;
    uint8_t *out;
    uint32_t out_len, out_off, out_cap;
    conn *next_dirty;
    conn *next_dead;
    room **rooms;
    uint16_t nrooms, rooms_cap;
    uint32_t pending; /* --durable: script calls not yet answered; freed only at 0 */
    uint8_t ulen;
    char user[];
};

static int g_ep;
static int g_lfd;
static conn *g_dirty;
static conn *g_dead;
static room **g_tab;
static uint32_t g_tab_size = 1u << 16;
static uint64_t g_id;
static uint64_t g_session;
static uint8_t g_rbuf[1 << 18];
static volatile sig_atomic_t g_stop;
static int g_listener_tag;
static int g_tls; /* --tls: every connection is wss */
static uint64_t g_writes, g_wbytes, g_frames, g_turns;
/* --redis: the command connection, its unwritten commands, the subscriber connection. */
static int g_rfd = -1, g_sfd = -1;
static int g_redis_tag, g_rsub_tag;
static uint8_t *g_rout;
static size_t g_rout_len, g_rout_cap;
static uint64_t g_rcmds, g_rerrors;
static int g_rnl = 1; /* the last byte read from the command connection ended a line */
/* --durable: the script's SHA-1, the senders waiting for their script's reply (a ring, in
 * command order; a NULL conn is the SCRIPT LOAD), and what was read but not yet parsed. */
typedef struct {
    conn *c;
    uint64_t id;
    uint8_t cl;
    char cid[64];
} pend;
static int g_durable;
static char g_sha[41];
static pend *g_pend;
static size_t g_pend_head, g_pend_len, g_pend_cap;
typedef struct {
    uint8_t *p;
    size_t len, cap;
} inbuf;
static inbuf g_rin, g_sin;

static void on_sig(int s)
{
    (void)s;
    g_stop = 1;
}

static uint32_t fnv(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static room *room_get(const char *name, size_t n, int create)
{
    uint32_t h = fnv(name, n);
    room **slot = &g_tab[h & (g_tab_size - 1)];
    for (room *r = *slot; r; r = r->next)
        if (r->hash == h && r->nlen == n && memcmp(r->name, name, n) == 0) return r;
    if (!create) return NULL;
    room *r = calloc(1, sizeof *r + n + 1);
    if (!r) abort();
    r->hash = h;
    r->nlen = (uint8_t)n;
    memcpy(r->name, name, n);
    r->next = *slot;
    *slot = r;
    return r;
}

static int conn_in_room(conn *c, room *r)
{
    for (uint16_t i = 0; i < c->nrooms; i++)
        if (c->rooms[i] == r) return 1;
    return 0;
}

static void room_add(room *r, conn *c)
{
    if (conn_in_room(c, r)) return;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4;
        r->m = realloc(r->m, r->cap * sizeof *r->m);
        if (!r->m) abort();
    }
    r->m[r->n++] = c;
    if (c->nrooms == c->rooms_cap) {
        c->rooms_cap = c->rooms_cap ? (uint16_t)(c->rooms_cap * 2) : 1;
        c->rooms = realloc(c->rooms, c->rooms_cap * sizeof *c->rooms);
        if (!c->rooms) abort();
    }
    c->rooms[c->nrooms++] = r;
}

static void room_del(room *r, conn *c)
{
    for (uint32_t i = 0; i < r->n; i++)
        if (r->m[i] == c) {
            r->m[i] = r->m[--r->n];
            break;
        }
    for (uint16_t i = 0; i < c->nrooms; i++)
        if (c->rooms[i] == r) {
            c->rooms[i] = c->rooms[--c->nrooms];
            break;
        }
}

static void conn_kill(conn *c)
{
    if (c->dead) return;
    c->dead = 1;
    while (c->nrooms)
        room_del(c->rooms[0], c);
    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->next_dead = g_dead;
    g_dead = c;
}

static void mark_dirty(conn *c)
{
    if (c->dirty) return;
    c->dirty = 1;
    c->next_dirty = g_dirty;
    g_dirty = c;
}

static void out_append(conn *c, const void *p, size_t n)
{
    if (c->dead) return;
    if (c->out_len + n > c->out_cap) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            if (c->out_len + n > MAX_OUT) { /* slow consumer */
                conn_kill(c);
                return;
            }
            uint32_t cap = c->out_cap ? c->out_cap : 512;
            while (cap < c->out_len + n)
                cap *= 2;
            c->out = realloc(c->out, cap);
            if (!c->out) abort();
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += (uint32_t)n;
    mark_dirty(c);
}

static void send_text(conn *c, const char *p, size_t n)
{
    uint8_t h[14];
    size_t hl = bl_ws_header(h, BL_OP_TEXT, n, NULL);
    out_append(c, h, hl);
    out_append(c, p, n);
}

static void send_error(conn *c, const char *code, const char *msg)
{
    char b[256];
    int n =
        snprintf(b, sizeof b, "{\"type\":\"error\",\"code\":\"%s\",\"message\":\"%s\"}", code, msg);
    send_text(c, b, (size_t)n);
}

static void want_out(conn *c, int on)
{
    if (c->epout == on) return;
    struct epoll_event ev = {.events = on ? EPOLLIN | EPOLLOUT : EPOLLIN, .data.ptr = c};
    epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->epout = (uint8_t)on;
}

/* Write p[*off..len) to c: 1 when all is written, 0 when the socket is full (EPOLLOUT is
 * armed), -1 when the connection died. */
static int write_out(conn *c, const uint8_t *p, uint32_t len, uint32_t *off)
{
    while (*off < len) {
        ssize_t w = write(c->fd, p + *off, len - *off);
        g_writes++;
        if (w > 0) {
            g_wbytes += (uint64_t)w;
            *off += (uint32_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) {
            want_out(c, 1);
            return 0;
        }
        conn_kill(c);
        return -1;
    }
    return 1;
}

static void tls_flush(conn *c);

static void flush(conn *c)
{
    if (c->tls) {
        tls_flush(c);
        return;
    }
    if (write_out(c, c->out, c->out_len, &c->out_off) <= 0) return;
    /* fully flushed: give small buffers back, keep the connection lean */
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = c->out_cap = 0;
    want_out(c, 0);
}

/* ---- TLS (--tls) ---- */

static mbedtls_ssl_config g_tlsconf;
static mbedtls_x509_crt g_crt;
static mbedtls_pk_context g_pk;
static mbedtls_entropy_context g_entropy;
static mbedtls_ctr_drbg_context g_drbg;
static uint8_t g_cbuf[1 << 16]; /* ciphertext just read */

/* parleyd's (src/net/tls.c): the same suites, in the same order. A copy: the floor shares no
 * code with what it measures. */
static const int tls_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};
static const mbedtls_ecp_group_id tls_groups[] = {MBEDTLS_ECP_DP_CURVE25519,
                                                  MBEDTLS_ECP_DP_SECP256R1,
                                                  MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_NONE};

struct tlsx {
    mbedtls_ssl_context ssl;
    int hs_done;
    const uint8_t *in; /* ciphertext being fed (inside on_readable) */
    size_t in_len;
    uint8_t *out; /* records not yet written */
    uint32_t out_len, out_off, out_cap;
};

/* Records go to a buffer, written by tls_flush: one write for all of a turn's records. */
static int tls_send_cb(void *ctx, const unsigned char *p, size_t n)
{
    tlsx *t = ctx;
    if (t->out_len + n > t->out_cap) {
        uint32_t cap = t->out_cap ? t->out_cap : 4096;
        while (cap < t->out_len + n)
            cap *= 2;
        if (!(t->out = realloc(t->out, cap))) abort();
        t->out_cap = cap;
    }
    memcpy(t->out + t->out_len, p, n);
    t->out_len += (uint32_t)n;
    return (int)n;
}

static int tls_recv_cb(void *ctx, unsigned char *p, size_t n)
{
    tlsx *t = ctx;
    if (!t->in_len) return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > t->in_len) n = t->in_len;
    memcpy(p, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

static int tls_init(const char *cert, const char *key)
{
    static const unsigned char pers[] = "parley-floor";
    mbedtls_ssl_config_init(&g_tlsconf);
    mbedtls_x509_crt_init(&g_crt);
    mbedtls_pk_init(&g_pk);
    mbedtls_entropy_init(&g_entropy);
    mbedtls_ctr_drbg_init(&g_drbg);
    int rc;
    if ((rc = mbedtls_x509_crt_parse_file(&g_crt, cert)) != 0 ||
        (rc = mbedtls_pk_parse_keyfile(&g_pk, key, NULL)) != 0 ||
        (rc = mbedtls_ctr_drbg_seed(&g_drbg, mbedtls_entropy_func, &g_entropy, pers,
                                    sizeof pers - 1)) != 0 ||
        (rc = mbedtls_ssl_config_defaults(&g_tlsconf, MBEDTLS_SSL_IS_SERVER,
                                          MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT)) != 0 ||
        (rc = mbedtls_ssl_conf_own_cert(&g_tlsconf, &g_crt, &g_pk)) != 0) {
        char why[200];
        mbedtls_strerror(rc, why, sizeof why);
        fprintf(stderr, "parley-floor: TLS: %s\n", why);
        return -1;
    }
    mbedtls_ssl_conf_rng(&g_tlsconf, mbedtls_ctr_drbg_random, &g_drbg);
    mbedtls_ssl_conf_min_version(&g_tlsconf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(&g_tlsconf, tls_suites);
    mbedtls_ssl_conf_curves(&g_tlsconf, tls_groups);
    mbedtls_ssl_conf_renegotiation(&g_tlsconf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    return 0;
}

static int tls_new(conn *c)
{
    tlsx *t = calloc(1, sizeof *t);
    if (!t) return -1;
    mbedtls_ssl_init(&t->ssl);
    if (mbedtls_ssl_setup(&t->ssl, &g_tlsconf) != 0) {
        mbedtls_ssl_free(&t->ssl);
        free(t);
        return -1;
    }
    mbedtls_ssl_set_bio(&t->ssl, t, tls_send_cb, tls_recv_cb, NULL);
    c->tls = t;
    return 0;
}

static void tls_free(tlsx *t)
{
    if (!t) return;
    mbedtls_ssl_free(&t->ssl);
    free(t->out);
    free(t);
}

/* Encrypt what is queued (only once the records before are written: the socket's back
 * pressure reaches the plaintext, bounded by MAX_OUT), then write the records at once. */
static void tls_flush(conn *c)
{
    tlsx *t = c->tls;
    if (t->hs_done && t->out_off == t->out_len) {
        t->out_len = t->out_off = 0;
        while (c->out_off < c->out_len) {
            size_t n = c->out_len - c->out_off;
            int r = mbedtls_ssl_write(&t->ssl, c->out + c->out_off, n < 16384 ? n : 16384);
            if (r < 0) {
                conn_kill(c);
                return;
            }
            c->out_off += (uint32_t)r;
        }
        free(c->out);
        c->out = NULL;
        c->out_len = c->out_off = c->out_cap = 0;
    }
    if (write_out(c, t->out, t->out_len, &t->out_off) <= 0) return;
    if (t->out_cap > 65536) { /* a burst's buffer goes back; an idle one stays small */
        free(t->out);
        t->out = NULL;
        t->out_cap = 0;
    }
    t->out_len = t->out_off = 0;
    want_out(c, c->out_off < c->out_len);
}

static int valid_room(const char *p, size_t n)
{
    if (n < 1 || n > MAX_ROOM) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (!(isalnum((unsigned char)ch) || ch == '_' || ch == '.' || ch == ':' || ch == '-'))
            return 0;
    }
    return 1;
}

static void on_subscribe(conn *c, const char *p, size_t n, int sub)
{
    const char *e = p + n;
    const char *k = memmem(p, n, "\"rooms\"", 7);
    if (!k) {
        send_error(c, "bad_request", "rooms missing");
        return;
    }
    const char *s = memchr(k, '[', (size_t)(e - k));
    if (!s) {
        send_error(c, "bad_request", "rooms not an array");
        return;
    }
    s++;
    for (;;) {
        while (s < e && (*s == ' ' || *s == ',' || *s == '\n' || *s == '\t' || *s == '\r'))
            s++;
        if (s >= e || *s == ']') break;
        if (*s != '"') {
            send_error(c, "bad_request", "room not a string");
            return;
        }
        const char *v = ++s;
        while (s < e && *s != '"')
            s++;
        if (s >= e) return;
        size_t vl = (size_t)(s - v);
        s++;
        if (!valid_room(v, vl)) {
            send_error(c, "bad_request", "bad room id");
            continue;
        }
        room *r = room_get(v, vl, sub);
        if (sub)
            room_add(r, c);
        else if (r)
            room_del(r, c);
        char b[200];
        int bl = snprintf(b, sizeof b, "{\"type\":\"%s\",\"room\":\"%.*s\"}",
                          sub ? "subscribed" : "unsubscribed", (int)vl, v);
        send_text(c, b, (size_t)bl);
    }
}

/* ---- --redis ---- */

static void rout_add(const void *p, size_t n)
{
    if (g_rout_len + n > g_rout_cap) {
        size_t cap = g_rout_cap ? g_rout_cap : 64 * 1024;
        while (cap < g_rout_len + n)
            cap *= 2;
        if (!(g_rout = realloc(g_rout, cap))) abort();
        g_rout_cap = cap;
    }
    memcpy(g_rout + g_rout_len, p, n);
    g_rout_len += n;
}

/* One RESP bulk string; `a` and `b` are concatenated (b may be NULL). */
static void resp_arg(const char *a, size_t al, const char *b, size_t bl)
{
    char h[32];
    rout_add(h, (size_t)snprintf(h, sizeof h, "$%zu\r\n", al + bl));
    rout_add(a, al);
    if (bl) rout_add(b, bl);
    rout_add("\r\n", 2);
}

static void redis_store(const char *rname, size_t rl, const char *frame, size_t n)
{
    rout_add("*8\r\n", 4);
    resp_arg("XADD", 4, NULL, 0);
    char key[MAX_ROOM + 8];
    int kl = snprintf(key, sizeof key, "fr:%.*s:s", (int)rl, rname);
    resp_arg(key, (size_t)kl, NULL, 0);
    resp_arg("MAXLEN", 6, NULL, 0);
    resp_arg("~", 1, NULL, 0);
    resp_arg("1000", 4, NULL, 0);
    resp_arg("*", 1, NULL, 0);
    resp_arg("m", 1, NULL, 0);
    resp_arg(frame, n, NULL, 0);
    rout_add("*3\r\n", 4);
    resp_arg("PUBLISH", 7, NULL, 0);
    resp_arg("fr:", 3, rname, rl);
    resp_arg(frame, n, NULL, 0);
    g_rcmds += 2;
}

/* Write the loop turn's commands; what the socket does not take waits for EPOLLOUT. */
static void redis_flush(void)
{
    size_t off = 0;
    while (off < g_rout_len) {
        ssize_t w = write(g_rfd, g_rout + off, g_rout_len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            fprintf(stderr, "parley-floor: redis write: %s\n", strerror(errno));
            exit(1);
        }
        off += (size_t)w;
    }
    memmove(g_rout, g_rout + off, g_rout_len - off);
    g_rout_len -= off;
    struct epoll_event ev = {.events = EPOLLIN | (g_rout_len ? EPOLLOUT : 0),
                             .data.ptr = &g_redis_tag};
    epoll_ctl(g_ep, EPOLL_CTL_MOD, g_rfd, &ev);
}

static void durable_read(int fd, inbuf *b);

/* Replies are read and dropped; an error reply (a line starting with '-') is counted. */
static void redis_read(int fd)
{
    if (g_durable) {
        durable_read(fd, fd == g_rfd ? &g_rin : &g_sin);
        return;
    }
    for (;;) {
        ssize_t r = read(fd, g_rbuf, sizeof g_rbuf);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (r <= 0) {
            fprintf(stderr, "parley-floor: redis connection lost\n");
            exit(1);
        }
        if (fd != g_rfd) continue;
        for (ssize_t i = 0; i < r; i++) {
            if (g_rnl && g_rbuf[i] == '-') g_rerrors++;
            g_rnl = g_rbuf[i] == '\n';
        }
    }
}

static int redis_connect(const char *hostport, int *tag)
{
    char host[64];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host) return -1;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev);
    return fd;
}

/* ---- --durable ---- */

/* One RESP value that is not an array: its type byte, text (bulk, simple, error) or integer. */
typedef struct {
    char t;
    const char *p;
    size_t n;
    long long i;
} rval;

/* Parse one non-array value at p[0..n): its length, 0 when incomplete, -1 when malformed. */
static ssize_t resp_one(const char *p, size_t n, rval *v)
{
    const char *e = n ? memchr(p, '\r', n) : NULL;
    if (!e || e + 1 >= p + n) return 0;
    size_t hl = (size_t)(e - p) + 2;
    v->t = p[0];
    switch (p[0]) {
    case '+':
    case '-':
    case ':':
        v->p = p + 1;
        v->n = (size_t)(e - p - 1);
        v->i = strtoll(p + 1, NULL, 10);
        return (ssize_t)hl;
    case '$': {
        long long len = strtoll(p + 1, NULL, 10);
        v->p = NULL;
        v->n = 0;
        v->i = 0;
        if (len < 0) return (ssize_t)hl;
        if (hl + (size_t)len + 2 > n) return 0;
        v->p = p + hl;
        v->n = (size_t)len;
        v->i = strtoll(v->p, NULL, 10);
        return (ssize_t)(hl + (size_t)len + 2);
    }
    default:
        return -1;
    }
}

/* Parse one reply at p[0..n) into el[0..*nel): a non-array is one element, an array's
 * elements (not nested) the first `max` of them. Returns its length, 0, or -1 as resp_one. */
static ssize_t resp_parse(const char *p, size_t n, rval *el, int max, int *nel)
{
    *nel = 0;
    if (!n) return 0;
    if (p[0] != '*') {
        *nel = 1;
        return resp_one(p, n, el);
    }
    const char *e = memchr(p, '\r', n);
    if (!e || e + 1 >= p + n) return 0;
    long long cnt = strtoll(p + 1, NULL, 10);
    size_t off = (size_t)(e - p) + 2;
    for (long long k = 0; k < cnt; k++) {
        rval skip;
        ssize_t r = resp_one(p + off, n - off, k < max ? &el[k] : &skip);
        if (r <= 0) return r;
        off += (size_t)r;
    }
    *nel = cnt < max ? (int)cnt : max;
    return (ssize_t)off;
}

static void pend_push(conn *c, uint64_t id, const char *cid, size_t cl)
{
    if (g_pend_len == g_pend_cap) {
        size_t cap = g_pend_cap ? g_pend_cap * 2 : 1024;
        pend *np = malloc(cap * sizeof *np);
        if (!np) abort();
        for (size_t i = 0; i < g_pend_len; i++)
            np[i] = g_pend[(g_pend_head + i) % (g_pend_cap ? g_pend_cap : 1)];
        free(g_pend);
        g_pend = np;
        g_pend_cap = cap;
        g_pend_head = 0;
    }
    pend *e = &g_pend[(g_pend_head + g_pend_len++) % g_pend_cap];
    e->c = c;
    e->id = id;
    e->cl = (uint8_t)(cl < sizeof e->cid ? cl : sizeof e->cid);
    memcpy(e->cid, cid, e->cl);
    if (c) c->pending++;
}

/* The sender's message: one EVALSHA with the key and argument layout of
 * bench/redis_cost's scripts (KEYS seq, stream, ready, cid record; ARGV channel, tail, id, ts,
 * maxlen, cid ttl, publish command). The script adds {"type":"message","seq":N, in front. */
static void durable_send(conn *c, const char *rn, size_t rl, const char *t, size_t tl,
                         const char *cid, size_t cl, uint64_t ms)
{
    uint64_t id = ++g_id;
    char idb[24], tsb[24], tail[MAX_FRAME + 256], k[4][MAX_ROOM + 160], chan[MAX_ROOM + 8];
    char cidb[32];
    if (!cid) { /* never a duplicate: the message's own id */
        cl = (size_t)snprintf(cidb, sizeof cidb, "-%llu", (unsigned long long)id);
        cid = cidb;
    }
    int il = snprintf(idb, sizeof idb, "%llu", (unsigned long long)id);
    int tsl = snprintf(tsb, sizeof tsb, "%llu", (unsigned long long)ms);
    int tl2 = snprintf(tail, sizeof tail,
                       "\"room\":\"%.*s\",\"id\":\"%s\",\"from\":\"%.*s\",\"text\":\"%.*s\","
                       "\"ts\":%s,\"cid\":\"%.*s\"}",
                       (int)rl, rn, idb, (int)c->ulen, c->user, (int)tl, t, tsb, (int)cl, cid);
    int kl[4];
    kl[0] = snprintf(k[0], sizeof k[0], "fd:%.*s:seq", (int)rl, rn);
    kl[1] = snprintf(k[1], sizeof k[1], "fd:%.*s:s", (int)rl, rn);
    kl[2] = snprintf(k[2], sizeof k[2], "fd:ready");
    kl[3] = snprintf(k[3], sizeof k[3], "fd:cid:%.*s:%.*s", (int)c->ulen, c->user, (int)cl, cid);
    int chl = snprintf(chan, sizeof chan, "fd:%.*s", (int)rl, rn);
    if (tl2 < 0 || (size_t)tl2 >= sizeof tail) {
        send_error(c, "bad_request", "message too long");
        return;
    }
    rout_add("*14\r\n", 5);
    resp_arg("EVALSHA", 7, NULL, 0);
    resp_arg(g_sha, 40, NULL, 0);
    resp_arg("4", 1, NULL, 0);
    for (int i = 0; i < 4; i++)
        resp_arg(k[i], (size_t)kl[i], NULL, 0);
    resp_arg(chan, (size_t)chl, NULL, 0);
    resp_arg(tail, (size_t)tl2, NULL, 0);
    resp_arg(idb, (size_t)il, NULL, 0);
    resp_arg(tsb, (size_t)tsl, NULL, 0);
    resp_arg("1000", 4, NULL, 0);
    resp_arg("86400", 5, NULL, 0);
    resp_arg("PUBLISH", 7, NULL, 0);
    pend_push(c, id, cid, cl);
    g_rcmds++;
}

/* A script's reply: {1, seq} acknowledges the sender, {0, record} tells it the message was a
 * duplicate; an error reply is counted (and fails the run at exit). */
static void durable_reply(const rval *el, int nel)
{
    if (!g_pend_len) {
        g_rerrors++;
        return;
    }
    pend e = g_pend[g_pend_head];
    g_pend_head = (g_pend_head + 1) % g_pend_cap;
    g_pend_len--;
    if (nel < 1 || el[0].t == '-') {
        g_rerrors++;
        if (nel >= 1) fprintf(stderr, "parley-floor: redis: %.*s\n", (int)el[0].n, el[0].p);
    }
    if (!e.c) return;
    e.c->pending--;
    if (e.c->dead || nel < 2 || el[0].t == '-') return;
    char b[256];
    int n = el[0].i == 1
                ? snprintf(b, sizeof b,
                           "{\"type\":\"ack\",\"cid\":\"%.*s\",\"id\":\"%llu\",\"seq\":%lld}",
                           (int)e.cl, e.cid, (unsigned long long)e.id, el[1].i)
                : snprintf(b, sizeof b, "{\"type\":\"ack\",\"cid\":\"%.*s\",\"duplicate\":true}",
                           (int)e.cl, e.cid);
    send_text(e.c, b, (size_t)n);
}

/* A pmessage: the stored frame, with its seq, to the room's subscribers here. */
static void durable_deliver(const rval *el, int nel)
{
    if (nel < 4 || el[0].n != 8 || memcmp(el[0].p, "pmessage", 8) != 0) return;
    if (el[2].n < 4 || memcmp(el[2].p, "fd:", 3) != 0) return;
    room *r = room_get(el[2].p + 3, el[2].n - 3, 0);
    if (!r || !r->n) return;
    uint8_t h[14];
    size_t hl = bl_ws_header(h, BL_OP_TEXT, el[3].n, NULL);
    for (uint32_t i = 0; i < r->n; i++) {
        out_append(r->m[i], h, hl);
        out_append(r->m[i], el[3].p, el[3].n);
    }
    g_frames += r->n;
}

/* Read all that is there on a --durable connection and handle every complete reply. */
static void durable_read(int fd, inbuf *b)
{
    for (;;) {
        if (b->cap - b->len < 65536) {
            b->cap = b->cap ? b->cap * 2 : 1 << 18;
            if (!(b->p = realloc(b->p, b->cap))) abort();
        }
        ssize_t r = read(fd, b->p + b->len, b->cap - b->len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) break;
        if (r <= 0) {
            fprintf(stderr, "parley-floor: redis connection lost\n");
            exit(1);
        }
        b->len += (size_t)r;
    }
    size_t off = 0;
    for (;;) {
        rval el[4];
        int nel;
        ssize_t r = resp_parse((const char *)b->p + off, b->len - off, el, 4, &nel);
        if (r < 0) {
            fprintf(stderr, "parley-floor: redis: malformed reply\n");
            exit(1);
        }
        if (r == 0) break;
        if (fd == g_rfd)
            durable_reply(el, nel);
        else
            durable_deliver(el, nel);
        off += (size_t)r;
    }
    memmove(b->p, b->p + off, b->len - off);
    b->len -= off;
}

/* Queue SCRIPT LOAD of the file's script as the first command; its SHA-1 for EVALSHA. */
static int durable_load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "parley-floor: %s: %s\n", path, strerror(errno));
        return -1;
    }
    static char body[65536];
    size_t n = fread(body, 1, sizeof body, f);
    fclose(f);
    if (n == 0 || n == sizeof body) {
        fprintf(stderr, "parley-floor: %s: empty or too long\n", path);
        return -1;
    }
    unsigned char d[20];
    if (mbedtls_sha1_ret((const unsigned char *)body, n, d) != 0) return -1;
    for (int i = 0; i < 20; i++)
        sprintf(g_sha + 2 * i, "%02x", d[i]);
    rout_add("*3\r\n", 4);
    resp_arg("SCRIPT", 6, NULL, 0);
    resp_arg("LOAD", 4, NULL, 0);
    resp_arg(body, n, NULL, 0);
    pend_push(NULL, 0, "", 0);
    return 0;
}

static void on_message(conn *c, const char *p, size_t n)
{
    size_t rl, tl, cl = 0;
    const char *rn = bl_json_str(p, n, "room", &rl);
    const char *t = bl_json_str(p, n, "text", &tl);
    const char *cid = bl_json_str(p, n, "cid", &cl);
    if (!rn || !t || !valid_room(rn, rl) || tl == 0) {
        send_error(c, "bad_request", "room and text required");
        return;
    }
    room *r = room_get(rn, rl, 0);
    if (!r || !conn_in_room(c, r)) {
        send_error(c, "not_subscribed", "not subscribed");
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (g_durable) { /* delivered when the subscriber connection reads it back */
        durable_send(c, rn, rl, t, tl, cid, cl, ms);
        return;
    }
    size_t cap = 14 + 128 + rl + c->ulen + tl + cl;
    uint8_t stackbuf[1024];
    uint8_t *f = cap <= sizeof stackbuf ? stackbuf : malloc(cap);
    if (!f) abort();
    /* payload first at offset 14, header in front of it afterwards */
    char *pl = (char *)f + 14;
    int m;
    if (cid)
        m = sprintf(pl,
                    "{\"type\":\"message\",\"room\":\"%.*s\",\"id\":\"%llu\",\"from\":\"%.*s\","
                    "\"text\":\"%.*s\",\"ts\":%llu,\"cid\":\"%.*s\"}",
                    (int)rl, rn, (unsigned long long)++g_id, (int)c->ulen, c->user, (int)tl, t,
                    (unsigned long long)ms, (int)cl, cid);
    else
        m = sprintf(pl,
                    "{\"type\":\"message\",\"room\":\"%.*s\",\"id\":\"%llu\",\"from\":\"%.*s\","
                    "\"text\":\"%.*s\",\"ts\":%llu}",
                    (int)rl, rn, (unsigned long long)++g_id, (int)c->ulen, c->user, (int)tl, t,
                    (unsigned long long)ms);
    uint8_t h[14];
    size_t hl = bl_ws_header(h, BL_OP_TEXT, (uint64_t)m, NULL);
    uint8_t *frame = f + 14 - hl;
    memcpy(frame, h, hl);
    size_t fl = hl + (size_t)m;
    for (uint32_t i = 0; i < r->n; i++)
        out_append(r->m[i], frame, fl);
    g_frames += r->n;
    if (g_rfd >= 0) redis_store(rn, rl, pl, (size_t)m);
    if (f != stackbuf) free(f);
}

static void on_text(conn *c, char *p, size_t n)
{
    size_t tl;
    const char *t = bl_json_str(p, n, "type", &tl);
    if (!t) {
        send_error(c, "bad_json", "no type");
        return;
    }
#define T_IS(s) (tl == sizeof(s) - 1 && memcmp(t, s, tl) == 0)
    if (T_IS("message"))
        on_message(c, p, n);
    else if (T_IS("subscribe"))
        on_subscribe(c, p, n, 1);
    else if (T_IS("unsubscribe"))
        on_subscribe(c, p, n, 0);
    else if (T_IS("ping"))
        send_text(c, "{\"type\":\"pong\"}", 15);
    else
        send_error(c, "unknown_type", "unknown type");
#undef T_IS
}

/* Process complete frames in p[0..n); returns bytes consumed or -1 to close. */
static ssize_t ws_input(conn *c, uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n && !c->dead) {
        bl_frame f;
        int r = bl_ws_parse(p + off, n - off, &f);
        if (r < 0 || (r == 1 && !f.masked)) return -1;
        if (r == 0) {
            if (f.len > MAX_FRAME && n - off >= 10) return -1;
            break;
        }
        if (f.len > MAX_FRAME || !f.fin) return -1; /* the bench never fragments */
        uint8_t *pl = p + off + f.hdr_len;
        bl_ws_mask(pl, pl, f.len, f.mask);
        switch (f.opcode) {
        case BL_OP_TEXT:
            on_text(c, (char *)pl, f.len);
            break;
        case BL_OP_PING: {
            uint8_t h[14];
            size_t hl = bl_ws_header(h, BL_OP_PONG, f.len, NULL);
            out_append(c, h, hl);
            out_append(c, pl, f.len);
            break;
        }
        case BL_OP_CLOSE: {
            uint8_t h[4] = {0x88, 2, 0x03, 0xe8};
            out_append(c, h, 4);
            flush(c);
            return -1;
        }
        case BL_OP_BIN:
            send_error(c, "bad_request", "binary frame");
            break;
        default:
            break;
        }
        off += f.hdr_len + f.len;
    }
    return (ssize_t)off;
}

/* Base64url-decode the JWT payload and copy its "sub" into out. */
static size_t jwt_sub(const char *tok, size_t tl, char *out, size_t cap)
{
    const char *d1 = memchr(tok, '.', tl);
    if (!d1) return 0;
    const char *d2 = memchr(d1 + 1, '.', (size_t)(tok + tl - d1 - 1));
    if (!d2) return 0;
    size_t bl = (size_t)(d2 - d1 - 1);
    if (bl > 1024) return 0;
    unsigned char b64[1100], raw[800];
    size_t k = 0;
    for (size_t i = 0; i < bl; i++) {
        char ch = d1[1 + i];
        b64[k++] = (unsigned char)(ch == '-' ? '+' : ch == '_' ? '/' : ch);
    }
    while (k % 4)
        b64[k++] = '=';
    size_t rl;
    if (mbedtls_base64_decode(raw, sizeof raw, &rl, b64, k) != 0) return 0;
    size_t sl;
    const char *s = bl_json_str((const char *)raw, rl, "sub", &sl);
    if (!s || sl == 0 || sl >= cap) return 0;
    memcpy(out, s, sl);
    return sl;
}

static void http_reply(conn *c, const char *status, const char *body)
{
    char b[512];
    int n = snprintf(b, sizeof b,
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     status, strlen(body), body);
    out_append(c, b, (size_t)n);
    flush(c);
}

/* Returns bytes of the request consumed (0: need more), -1 to close. */
static ssize_t http_input(conn **cp, uint8_t *p, size_t n)
{
    conn *c = *cp;
    uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) return n > MAX_HTTP ? -1 : 0;
    size_t hlen = (size_t)(end - p) + 4;
    char *req = (char *)p;
    if (strncmp(req, "GET ", 4) != 0) {
        http_reply(c, "400 Bad Request", "{\"error\":\"bad_request\"}");
        return -1;
    }
    const char *path = req + 4;
    const char *sp = memchr(path, ' ', hlen - 4);
    if (!sp) return -1;
    size_t pathlen = (size_t)(sp - path);
    if (pathlen >= 7 && memcmp(path, "/health", 7) == 0) {
        http_reply(c, "200 OK", "{\"status\":\"healthy\",\"server_id\":\"floor\"}");
        return -1;
    }
    if (pathlen < 3 || memcmp(path, "/ws", 3) != 0 || (pathlen > 3 && path[3] != '?')) {
        http_reply(c, "404 Not Found", "{\"error\":\"not_found\"}");
        return -1;
    }
    /* Sec-WebSocket-Key and optional Authorization */
    const char *key = NULL;
    size_t keylen = 0;
    const char *tok = NULL;
    size_t toklen = 0;
    const char *q = memmem(path, pathlen, "token=", 6);
    if (q) {
        tok = q + 6;
        const char *te = tok;
        while (te < sp && *te != '&')
            te++;
        toklen = (size_t)(te - tok);
    }
    const char *line = memchr(req, '\n', hlen);
    while (line && line < (char *)end) {
        line++;
        const char *le = memchr(line, '\r', (size_t)((char *)end + 2 - line));
        if (!le) break;
        if (le - line > 18 && strncasecmp(line, "Sec-WebSocket-Key:", 18) == 0) {
            key = line + 18;
            while (*key == ' ')
                key++;
            keylen = (size_t)(le - key);
        } else if (!tok && le - line > 21 && strncasecmp(line, "Authorization: Bearer ", 22) == 0) {
            tok = line + 22;
            toklen = (size_t)(le - tok);
        }
        line = memchr(line, '\n', (size_t)((char *)end + 4 - line));
    }
    if (!key || keylen == 0 || keylen > 64) {
        http_reply(c, "400 Bad Request", "{\"error\":\"bad_request\"}");
        return -1;
    }
    char user[130];
    size_t ul = tok ? jwt_sub(tok, toklen, user, sizeof user) : 0;
    if (!ul) {
        http_reply(c, "401 Unauthorized", "{\"error\":\"unauthorized\"}");
        return -1;
    }
    unsigned char cat[128], dig[20], acc[64];
    memcpy(cat, key, keylen);
    memcpy(cat + keylen, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    mbedtls_sha1_ret(cat, keylen + 36, dig);
    size_t al;
    mbedtls_base64_encode(acc, sizeof acc, &al, dig, 20);
    /* the user name lives in the conn allocation: reallocate once */
    conn *nc = realloc(c, sizeof *c + ul + 1);
    if (!nc) abort();
    if (nc != c) {
        c = nc;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
        *cp = c;
    }
    memcpy(c->user, user, ul);
    c->user[ul] = 0;
    c->ulen = (uint8_t)ul;
    char b[512];
    int m = snprintf(b, sizeof b,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %.*s\r\n\r\n",
                     (int)al, acc);
    out_append(c, b, (size_t)m);
    m = snprintf(
        b, sizeof b,
        "{\"type\":\"authenticated\",\"user\":\"%s\",\"server\":\"floor\",\"session\":\"%llu\"}",
        c->user, (unsigned long long)++g_session);
    send_text(c, b, (size_t)m);
    c->ws = 1;
    return (ssize_t)hlen;
}

/* Read ciphertext, step the handshake or decrypt into `p`: plaintext bytes, or -1 to close.
 * Handshake records are written at the end of the turn (the connection is made dirty). */
static ssize_t tls_input(conn *c, uint8_t *p, size_t cap)
{
    tlsx *t = c->tls;
    ssize_t r = read(c->fd, g_cbuf, sizeof g_cbuf);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return -1;
    t->in = g_cbuf;
    t->in_len = r > 0 ? (size_t)r : 0;
    size_t have = 0;
    if (!t->hs_done) {
        int rc = mbedtls_ssl_handshake(&t->ssl);
        mark_dirty(c);
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) return 0;
        if (rc != 0) return -1;
        t->hs_done = 1;
    }
    /* A bench client's input is small: what does not fit `cap` (256 KB) is not expected. */
    while (have < cap) {
        int rc = mbedtls_ssl_read(&t->ssl, p + have, cap - have);
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) break;
        if (rc <= 0) return -1; /* close_notify, EOF or an error */
        have += (size_t)rc;
    }
    return (ssize_t)have;
}

static void on_readable(conn *c)
{
    uint8_t *buf = g_rbuf;
    size_t have = 0;
    if (c->in_len) {
        memcpy(buf, c->in, c->in_len);
        have = c->in_len;
        free(c->in);
        c->in = NULL;
        c->in_len = 0;
    }
    if (c->tls) {
        ssize_t got = tls_input(c, buf + have, sizeof g_rbuf - have);
        if (got < 0) {
            conn_kill(c);
            return;
        }
        have += (size_t)got;
    } else {
        ssize_t r = read(c->fd, buf + have, sizeof g_rbuf - have);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_kill(c);
            return;
        }
        if (r > 0) have += (size_t)r;
    }
    size_t off = 0;
    if (!c->ws) {
        ssize_t k = http_input(&c, buf, have);
        if (k < 0) {
            conn_kill(c);
            return;
        }
        off = (size_t)k;
    }
    if (c->ws && off < have) {
        ssize_t k = ws_input(c, buf + off, have - off);
        if (k < 0) {
            conn_kill(c);
            return;
        }
        off += (size_t)k;
    }
    if (off < have && !c->dead) {
        if (have - off > MAX_FRAME + MAX_HTTP) {
            conn_kill(c);
            return;
        }
        c->in = malloc(have - off);
        if (!c->in) abort();
        memcpy(c->in, buf + off, have - off);
        c->in_len = (uint32_t)(have - off);
    }
}

static void on_accept(void)
{
    for (;;) {
        int fd = accept4(g_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                fprintf(stderr, "floor: accept: %s\n", strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        if (!c) abort();
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if ((g_tls && tls_new(c) != 0) || epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            tls_free(c->tls);
            free(c);
        }
    }
}

int main(int argc, char **argv)
{
    /* Output buffers are freed when flushed (idle connections stay lean); without this glibc
     * gives the top of the heap back with brk() after such frees and takes it again for the
     * next message: thousands of brk calls and page faults a second, ~10 % of the floor's CPU
     * at maximum fan-out. A floor must not pay for that. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    const char *listen_s = getenv("PARLEY_LISTEN"), *redis_s = NULL, *cert_s = NULL, *key_s = NULL,
               *durable_s = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc)
            listen_s = argv[++i];
        else if (!strcmp(argv[i], "--redis") && i + 1 < argc)
            redis_s = argv[++i];
        else if (!strcmp(argv[i], "--durable") && i + 1 < argc)
            durable_s = argv[++i];
        else if (!strcmp(argv[i], "--tls") && i + 2 < argc)
            cert_s = argv[++i], key_s = argv[++i];
        else {
            fprintf(stderr, "usage: parley-floor [--listen host:port] [--redis host:port "
                            "[--durable script.lua]] [--tls cert.pem key.pem]  (or "
                            "PARLEY_LISTEN)\n");
            return 2;
        }
    }
    if (durable_s && !redis_s) {
        fprintf(stderr, "parley-floor: --durable needs --redis\n");
        return 2;
    }
    if (cert_s && tls_init(cert_s, key_s) != 0) return 1;
    g_tls = cert_s != NULL;
    if (!listen_s) listen_s = "127.0.0.1:9001";
    char host[64];
    int port;
    const char *colon = strrchr(listen_s, ':');
    if (!colon || (size_t)(colon - listen_s) >= sizeof host || (port = atoi(colon + 1)) <= 0) {
        fprintf(stderr, "parley-floor: bad listen address '%s'\n", listen_s);
        return 2;
    }
    memcpy(host, listen_s, (size_t)(colon - listen_s));
    host[colon - listen_s] = 0;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_sig);
    signal(SIGINT, on_sig);

    g_tab = calloc(g_tab_size, sizeof *g_tab);
    g_lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(g_lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "parley-floor: bad host '%s'\n", host);
        return 2;
    }
    if (bind(g_lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(g_lfd, 65535) < 0) {
        fprintf(stderr, "parley-floor: bind/listen %s: %s\n", listen_s, strerror(errno));
        return 1;
    }
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &g_listener_tag};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, g_lfd, &lev);
    if (redis_s) {
        if ((g_rfd = redis_connect(redis_s, &g_redis_tag)) < 0 ||
            (g_sfd = redis_connect(redis_s, &g_rsub_tag)) < 0) {
            fprintf(stderr, "parley-floor: cannot connect to redis at %s\n", redis_s);
            return 1;
        }
        /* Channels of their own (fr:, fd:), not parleyd's room:*: on a Redis shared with a
         * parleyd, each would otherwise make Redis write every message of the other to one
         * more subscriber, and charge it to the other's CPU per message. */
        static const char psub[] = "*2\r\n$10\r\nPSUBSCRIBE\r\n$4\r\nfr:*\r\n";
        static const char psub_fd[] = "*2\r\n$10\r\nPSUBSCRIBE\r\n$4\r\nfd:*\r\n";
        g_durable = durable_s != NULL;
        if (g_durable && durable_load(durable_s) != 0) return 1;
        const char *ps = g_durable ? psub_fd : psub;
        size_t psl = g_durable ? sizeof psub_fd - 1 : sizeof psub - 1;
        if (write(g_sfd, ps, psl) != (ssize_t)psl) {
            fprintf(stderr, "parley-floor: redis: PSUBSCRIBE not sent\n");
            return 1;
        }
    }
    fprintf(stderr, "parley-floor: listening on %s%s (fd limit %llu)%s%s\n", listen_s,
            g_tls ? " (TLS)" : "", (unsigned long long)rl.rlim_cur,
            redis_s ? ", storing to redis at " : "", redis_s ? redis_s : "");

    struct epoll_event evs[1024];
    while (!g_stop) {
        int n = epoll_wait(g_ep, evs, 1024, 1000);
        g_turns++;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &g_listener_tag) {
                on_accept();
                continue;
            }
            if (evs[i].data.ptr == &g_redis_tag || evs[i].data.ptr == &g_rsub_tag) {
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    redis_read(evs[i].data.ptr == &g_redis_tag ? g_rfd : g_sfd);
                continue; /* EPOLLOUT: the flush below */
            }
            conn *c = evs[i].data.ptr;
            if (c->dead) continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
            if (!c->dead && (evs[i].events & EPOLLOUT) && !c->dirty) flush(c);
        }
        /* one write per dirty connection per loop turn */
        conn *d = g_dirty;
        g_dirty = NULL;
        while (d) {
            conn *nx = d->next_dirty;
            d->dirty = 0;
            if (!d->dead) flush(d);
            d = nx;
        }
        if (g_rfd >= 0 && g_rout_len) redis_flush();
        conn *waiting = NULL; /* --durable: dead, but a script reply still names them */
        while (g_dead) {
            conn *x = g_dead;
            g_dead = x->next_dead;
            if (x->pending) {
                x->next_dead = waiting;
                waiting = x;
                continue;
            }
            free(x->in);
            free(x->out);
            free(x->rooms);
            tls_free(x->tls);
            free(x);
        }
        g_dead = waiting;
    }
    fprintf(stderr,
            "parley-floor: stopping; %llu loop turns, %llu message deliveries, %llu writes, "
            "%llu bytes written\n",
            (unsigned long long)g_turns, (unsigned long long)g_frames, (unsigned long long)g_writes,
            (unsigned long long)g_wbytes);
    if (g_rfd >= 0)
        fprintf(stderr, "parley-floor: %llu redis commands, %llu error replies\n",
                (unsigned long long)g_rcmds, (unsigned long long)g_rerrors);
    return g_rerrors ? 1 : 0;
}
