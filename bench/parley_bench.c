/*
 * parley-bench: a single-threaded epoll WebSocket load generator for
 * protocol v1 (docs/protocol.md). See bench/README and docs/performance.md.
 *
 *   parley-bench SCENARIO [options]        SCENARIO: idle | fanout | rooms | connect
 *
 * A wss:// URL runs the same scenarios over TLS (mbedTLS client, one context
 * per connection; --cacert verifies the server, otherwise it is not
 * verified: the server's work is the same either way).
 *
 * Every scenario is bounded and stops by itself. Each figure set is printed
 * as one machine-readable `RESULT key=value ...` line and as a readable table.
 * Exit status: 0 ok, 1 usage/setup error, 3 lost messages, errors or failed
 * connections.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "benchlib.h"
#include "parley/base/jwt.h"

#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define MAX_PIDS 16
#define MAX_URLS 16

enum { ST_NEW, ST_CONNECTING, ST_TLS, ST_HS, ST_OPEN, ST_CLOSED, ST_FAILED };

typedef struct conn {
    int fd;
    uint32_t idx; /* user bench-<idx> */
    int32_t room; /* room number to subscribe to, -1 none */
    uint8_t state;
    uint8_t authed;
    uint8_t ready;
    uint8_t *in;
    uint32_t in_len;
    uint8_t *out;
    uint32_t out_len, out_off;
    uint64_t last_seq;
    char *tok;                /* minted before the connection phase, freed once sent */
    mbedtls_ssl_context *ssl; /* wss:// only: allocated at connect, freed by conn_close */
    uint32_t tls_pend;        /* length of an mbedtls_ssl_write to repeat after WANT_WRITE */
} conn;

/* ------------------------------------------------------------- options */

static struct {
    const char *scenario;
    bl_url url;            /* the first of urls: what every URL shares (TLS, path) */
    bl_url urls[MAX_URLS]; /* --url a,b,...: connections spread over several servers */
    int nurls;
    const char *url_s;
    const char *secret;
    const char *label;
    int n;
    int n_set;
    int rooms;
    double rate;
    int rate_set;
    double duration;
    int dur_set;
    double max_duration;
    int window;
    double settle;
    double warmup;
    double timeout;
    int conc;
    int procs;
    int src_ips;
    int idx_base;
    pid_t pids[MAX_PIDS];
    int npids;
    pid_t rpids[MAX_PIDS];
    int nrpids;
    int verbose;
    int proto;          /* PROTO_*: what the server speaks */
    const char *cacert; /* wss://: verify the server against this CA (PEM) */
    const char *sni;    /* wss://: the name to verify and send (default: the URL's host) */
    int redis_port;     /* --redis-port: INFO commandstats of this Redis around each phase */
    int runs;           /* catchup: subscriptions measured */
    int acks;           /* catchup: wait for every ack (stored in PostgreSQL) before measuring */
    int resume;         /* connect over wss://: resume one session (a ticket) on every connection */
} o;

/* Protocol v1 is Parley's. The others let the same scenarios drive peers:
 * - nchan: nginx's Nchan with an nchan_pubsub location. A client joins a room
 *   by connecting to <url>/<room> and publishes by sending the message on its
 *   WebSocket; every subscriber (the publisher too) gets the text as sent.
 *   Nchan verifies no token: its connect figure has no authentication in it.
 * - socketio: Socket.IO v4 over its WebSocket transport (Engine.IO packets
 *   "0" open, "2"/"3" ping/pong, "40" connect, "42[event,data]"), with the
 *   events of bench/peers/socketio: "subscribe" [rooms] and "message"
 *   {room,text,cid} from the client, "m" {type:...} from the server, whose
 *   data is the v1 frame. */
enum { PROTO_V1, PROTO_NCHAN, PROTO_SOCKETIO };

/* --------------------------------------------------------------- state */

static struct {
    int ep;
    conn *c;
    int n;
    int next_start; /* next conn index to start */
    int pending;    /* started, not yet ready nor failed */
    int n_open;     /* upgraded and not closed */
    int n_ready;
    int n_authed;
    int n_failed;
    int n_closed;  /* closed by the server after upgrade */
    int errors;    /* error frames */
    int need_auth; /* ready = authenticated (connect) rather than subscribed */
    uint64_t t_last_ready;
    struct sockaddr_in dst[MAX_URLS];
    uint32_t rng;
    /* message accounting for the current phase */
    uint64_t seq;        /* last seq sent */
    uint64_t phase_seq0; /* first seq of this phase */
    uint64_t sent;
    uint64_t expected;
    uint64_t delivered;
    uint64_t late; /* deliveries of earlier phases */
    uint64_t ooo;  /* out of order or duplicate (single publisher) */
    uint64_t bad;  /* message frames without a parsable stamp */
    int check_order;
    conn *pub;
    int64_t inflight; /* fanout max: messages not yet delivered to every receiver */
    uint32_t *left;   /* fanout max: receivers still missing seq, at seq % WINDOW_RING */
    int *room_ready;  /* ready members per room */
    bl_hist hist;
    char first_err[4][256];
    int n_first_err;
    /* catchup: the room, the connection catching up and its times */
    char cu_room[64];
    conn *cu;
    uint64_t cu_got, cu_first, cu_sub_ns, cu_subd_ns, cu_done_ns, acks;
    long cu_recovered;
} g;

static uint8_t g_rbuf[1 << 18];

/* The fanout window counts, per message, the receivers still missing it; the
 * ring is indexed by seq and bounds --window. */
#define WINDOW_RING 4096

static void note_err(const char *fmt, ...)
{
    if (g.n_first_err >= 4) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g.first_err[g.n_first_err++], sizeof g.first_err[0], fmt, ap);
    va_end(ap);
    if (o.verbose) fprintf(stderr, "parley-bench: %s\n", g.first_err[g.n_first_err - 1]);
}

static uint32_t rnd(void)
{
    uint32_t x = g.rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return g.rng = x;
}

/* ------------------------------------------------------- /proc sampling */

static long long proc_rss_kib(const pid_t *pids, int n)
{
    long long tot = 0;
    for (int i = 0; i < n; i++) {
        char p[64], line[256];
        snprintf(p, sizeof p, "/proc/%d/status", (int)pids[i]);
        FILE *f = fopen(p, "r");
        if (!f) return -1;
        long long v = -1;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "VmRSS: %lld kB", &v) == 1) break;
        fclose(f);
        if (v < 0) return -1;
        tot += v;
    }
    return tot;
}

/* Busy and stolen CPU time of the whole machine (all CPUs, all processes), in
 * us. Steal is time the hypervisor gave our vCPUs to someone else: a thread
 * that was runnable and waited for it, which shows up in latency tails. */
static void machine_cpu_us(long long *busy_us, long long *steal_us)
{
    *busy_us = *steal_us = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    unsigned long long v[8] = {0};
    int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (k < 8) return;
    unsigned long long hz = (unsigned long long)sysconf(_SC_CLK_TCK);
    *busy_us = (long long)((v[0] + v[1] + v[2] + v[5] + v[6]) * 1000000ull / hz);
    *steal_us = (long long)(v[7] * 1000000ull / hz);
}

static long long self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
           (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
}

/* ------------------------------------------------------------- results */

#define MAX_KV 40
typedef struct {
    char k[MAX_KV][32];
    char v[MAX_KV][256]; /* redis_cmds is the longest */
    int n;
} result;

static void rs(result *r, const char *k, const char *fmt, ...)
{
    if (r->n >= MAX_KV) return;
    snprintf(r->k[r->n], sizeof r->k[0], "%s", k);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->v[r->n], sizeof r->v[0], fmt, ap);
    va_end(ap);
    r->n++;
}

static void result_print(const result *r)
{
    printf("RESULT");
    for (int i = 0; i < r->n; i++)
        printf(" %s=%s", r->k[i], r->v[i]);
    printf("\n");
    printf("  +--------------------------------+----------------------+\n");
    for (int i = 0; i < r->n; i++)
        printf("  | %-30s | %20s |\n", r->k[i], r->v[i]);
    printf("  +--------------------------------+----------------------+\n");
    fflush(stdout);
}

/* ------------------------------------------------------------------ TLS */

/* One client configuration for every wss:// connection (a single thread uses it). */
static struct {
    mbedtls_ssl_config conf;
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;
    /* --resume: the session of a priming handshake, offered by every measured connection; a
     * connection whose session ends up with the same master secret resumed it. */
    mbedtls_ssl_session sess;
    int have_sess;
    int resumed;
} t;

static void tls_err(int rc, char *out, size_t n)
{
    char m[128];
    mbedtls_strerror(rc, m, sizeof m);
    snprintf(out, n, "%s (-0x%04x)", m, (unsigned)-rc);
}

static int tls_init(void)
{
    mbedtls_ssl_config_init(&t.conf);
    mbedtls_entropy_init(&t.ent);
    mbedtls_ctr_drbg_init(&t.drbg);
    mbedtls_x509_crt_init(&t.ca);
    static const unsigned char pers[] = "parley-bench";
    int rc = mbedtls_ctr_drbg_seed(&t.drbg, mbedtls_entropy_func, &t.ent, pers, sizeof pers - 1);
    if (rc == 0)
        rc = mbedtls_ssl_config_defaults(&t.conf, MBEDTLS_SSL_IS_CLIENT,
                                         MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc == 0 && o.cacert) rc = mbedtls_x509_crt_parse_file(&t.ca, o.cacert);
    if (rc != 0) {
        char e[200];
        tls_err(rc, e, sizeof e);
        fprintf(stderr, "parley-bench: TLS set-up%s%s: %s\n", o.cacert ? " with " : "",
                o.cacert ? o.cacert : "", e);
        return -1;
    }
    mbedtls_ssl_conf_rng(&t.conf, mbedtls_ctr_drbg_random, &t.drbg);
    mbedtls_ssl_conf_min_version(&t.conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    /* What browsers offer, in their order. mbedTLS's default list starts at secp521r1, and a
     * server that follows the client's order (OpenSSL's default) would pay for it. */
    static const mbedtls_ecp_group_id groups[] = {MBEDTLS_ECP_DP_CURVE25519,
                                                  MBEDTLS_ECP_DP_SECP256R1,
                                                  MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_NONE};
    mbedtls_ssl_conf_curves(&t.conf, groups);
    if (o.cacert) {
        mbedtls_ssl_conf_ca_chain(&t.conf, &t.ca, NULL);
        mbedtls_ssl_conf_authmode(&t.conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    } else {
        mbedtls_ssl_conf_authmode(&t.conf, MBEDTLS_SSL_VERIFY_NONE);
    }
    return 0;
}

/* mbedTLS' I/O on the non-blocking socket: EAGAIN becomes WANT_READ/WANT_WRITE. */
static int tls_send_cb(void *ctx, const unsigned char *p, size_t n)
{
    conn *c = ctx;
    ssize_t w;
    do
        w = write(c->fd, p, n);
    while (w < 0 && errno == EINTR);
    if (w >= 0) return (int)w;
    return errno == EAGAIN ? MBEDTLS_ERR_SSL_WANT_WRITE : MBEDTLS_ERR_NET_SEND_FAILED;
}

static int tls_recv_cb(void *ctx, unsigned char *p, size_t n)
{
    conn *c = ctx;
    ssize_t r;
    do
        r = read(c->fd, p, n);
    while (r < 0 && errno == EINTR);
    if (r >= 0) return (int)r; /* 0: mbedTLS reports MBEDTLS_ERR_SSL_CONN_EOF */
    return errno == EAGAIN ? MBEDTLS_ERR_SSL_WANT_READ : MBEDTLS_ERR_NET_RECV_FAILED;
}

/* read(2) and write(2) for a connection, through TLS on wss://: the same
 * return values, with errno EAGAIN while TLS waits for the socket and EPROTO
 * (noted) on a TLS error. */
static ssize_t io_read(conn *c, void *p, size_t n)
{
    if (!c->ssl) return read(c->fd, p, n);
    int r = mbedtls_ssl_read(c->ssl, p, n);
    if (r >= 0) return r;
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || r == MBEDTLS_ERR_SSL_CONN_EOF) return 0;
    if (r == MBEDTLS_ERR_NET_RECV_FAILED) return -1; /* errno from read() */
    char e[200];
    tls_err(r, e, sizeof e);
    note_err("bench-%u: TLS read: %s", c->idx, e);
    errno = EPROTO;
    return -1;
}

static ssize_t io_write(conn *c, const void *p, size_t n)
{
    if (!c->ssl) return write(c->fd, p, n);
    /* After WANT_WRITE mbedTLS holds the record and must be called again with the same
     * length; it then reports that many bytes written. */
    if (c->tls_pend) n = c->tls_pend;
    int r = mbedtls_ssl_write(c->ssl, p, n);
    if (r >= 0) {
        c->tls_pend = 0;
        return r;
    }
    if (r == MBEDTLS_ERR_SSL_WANT_WRITE || r == MBEDTLS_ERR_SSL_WANT_READ) {
        c->tls_pend = (uint32_t)n;
        errno = EAGAIN;
        return -1;
    }
    if (r == MBEDTLS_ERR_NET_SEND_FAILED) return -1; /* errno from write() */
    char e[200];
    tls_err(r, e, sizeof e);
    note_err("bench-%u: TLS write: %s", c->idx, e);
    errno = EPROTO;
    return -1;
}

/* ---------------------------------------------------------- connections */

static void conn_close(conn *c, int st)
{
    if (c->ssl) {
        mbedtls_ssl_free(c->ssl);
        free(c->ssl);
        c->ssl = NULL;
        c->tls_pend = 0;
    }
    if (c->fd >= 0) {
        struct linger lg = {1, 0}; /* RST: no TIME_WAIT piles up across runs */
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->fd);
        c->fd = -1;
    }
    if (c->state == ST_OPEN) {
        g.n_open--;
        if (st == ST_CLOSED) g.n_closed++;
    }
    if (c->ready) {
        c->ready = 0;
        g.n_ready--;
        if (c->room >= 0 && g.room_ready) g.room_ready[c->room]--;
    } else if (c->state != ST_NEW && c->state != ST_CLOSED && c->state != ST_FAILED) {
        g.pending--;
    }
    if (st == ST_FAILED && !c->ready) g.n_failed++;
    c->state = (uint8_t)st;
    free(c->tok);
    c->tok = NULL;
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->out_len = c->out_off = 0;
}

static int conn_flush(conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = io_write(c, c->out + c->out_off, c->out_len - c->out_off);
        if (w > 0) {
            c->out_off += (uint32_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            return 0; /* edge-triggered EPOLLOUT calls again */
        } else {
            note_err("write: %s", strerror(errno));
            conn_close(c, c->state == ST_OPEN ? ST_CLOSED : ST_FAILED);
            return -1;
        }
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    return 0;
}

static void conn_send(conn *c, const void *p, size_t n)
{
    if (c->fd < 0) return;
    if (c->out_len == c->out_off) {
        ssize_t w;
        do
            w = io_write(c, p, n);
        while (w < 0 && errno == EINTR);
        if (w == (ssize_t)n) return;
        if (w < 0 && errno != EAGAIN) {
            note_err("write: %s", strerror(errno));
            conn_close(c, c->state == ST_OPEN ? ST_CLOSED : ST_FAILED);
            return;
        }
        if (w < 0) w = 0;
        p = (const uint8_t *)p + w;
        n -= (size_t)w;
    }
    uint8_t *nb = realloc(c->out, c->out_len + n);
    if (!nb) abort();
    c->out = nb;
    memcpy(c->out + c->out_len, p, n);
    c->out_len += (uint32_t)n;
}

static void send_text(conn *c, const char *p, size_t n)
{
    uint8_t buf[2048];
    uint32_t r = rnd();
    uint8_t mask[4];
    memcpy(mask, &r, 4);
    if (n + 14 > sizeof buf) return;
    size_t fl = bl_ws_client_text(buf, p, n, mask);
    conn_send(c, buf, fl);
}

/* Which of the --url servers connection c uses: spread by a hash of its index (over every
 * process of an idle run), so a room's members land on the servers at random, as a load
 * balancer hashing client addresses puts them. */
static int conn_url(const conn *c)
{
    return o.nurls > 1 ? (int)((c->idx * 2654435761u) >> 8) % o.nurls : 0;
}

static void conn_start(conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        note_err("socket: %s", strerror(errno));
        c->state = ST_FAILED;
        g.n_failed++;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (o.src_ips > 1) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (c->idx % (uint32_t)o.src_ips));
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            note_err("bind 127.0.0.x: %s", strerror(errno));
            close(fd);
            c->state = ST_FAILED;
            g.n_failed++;
            return;
        }
    }
    c->fd = fd;
    c->state = ST_CONNECTING;
    g.pending++;
    if (connect(fd, (struct sockaddr *)&g.dst[conn_url(c)], sizeof g.dst[0]) < 0 &&
        errno != EINPROGRESS) {
        note_err("connect: %s", strerror(errno));
        conn_close(c, ST_FAILED);
        return;
    }
    /* Edge-triggered, registered once: no EPOLL_CTL_MOD per connection or per blocked write
     * (the client's syscalls share the CPUs with the server it measures). */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev);
}

/* Mint the token for user bench-<idx> (HS256 via pl_jwt_sign, 1 day). */
static char *mint_token(uint32_t idx)
{
    char sub[64], tok[512];
    snprintf(sub, sizeof sub, "bench-%u", idx);
    int tl =
        pl_jwt_sign(o.secret, strlen(o.secret), sub, (int64_t)time(NULL) + 86400, tok, sizeof tok);
    if (tl < 0) {
        fprintf(stderr, "parley-bench: pl_jwt_sign failed: %d\n", tl);
        exit(1);
    }
    return strdup(tok);
}

/* The room a connection joins: r<k> (idle, rooms), "fanout", or "lobby" (connect). */
static const char *room_name(const conn *c, char out[32])
{
    if (c->room < 0) return "lobby";
    if (g.cu_room[0]) return g.cu_room;
    if (!g.room_ready) return "fanout";
    snprintf(out, 32, "r%d", c->room);
    return out;
}

static void send_upgrade(conn *c)
{
    char req[4096], path[2048], rn[32];
    const bl_url *u = &o.urls[conn_url(c)];
    if (!c->tok) c->tok = mint_token(c->idx);
    const char *q = strchr(o.url.path, '?') ? "&" : "?";
    if (o.proto == PROTO_NCHAN)
        snprintf(path, sizeof path, "%s%s%s", o.url.path,
                 o.url.path[strlen(o.url.path) - 1] == '/' ? "" : "/", room_name(c, rn));
    else if (o.proto == PROTO_SOCKETIO)
        snprintf(path, sizeof path, "%s%sEIO=4&transport=websocket&token=%s", o.url.path, q,
                 c->tok);
    else
        snprintf(path, sizeof path, "%s%stoken=%s", o.url.path, q, c->tok);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, u->host, u->port);
    free(c->tok);
    c->tok = NULL;
    c->state = ST_HS;
    conn_send(c, req, (size_t)n);
}

static void mark_ready(conn *c)
{
    if (c->ready) return;
    c->ready = 1;
    g.n_ready++;
    g.pending--;
    g.t_last_ready = bl_now_ns();
    if (c->room >= 0 && g.room_ready) g.room_ready[c->room]++;
}

static void socketio_connected(conn *c);

static void on_open(conn *c)
{
    g.n_open++;
    if (o.proto == PROTO_NCHAN) { /* subscribed by the URL; no authentication */
        if (g.need_auth && !c->authed) {
            c->authed = 1;
            g.n_authed++;
        }
        mark_ready(c);
        return;
    }
    if (o.proto == PROTO_SOCKETIO) return; /* waits for Engine.IO's open packet */
    if (c->room >= 0) {
        char b[128], rn[32];
        int n =
            snprintf(b, sizeof b, "{\"type\":\"subscribe\",\"rooms\":[\"%s\"]}", room_name(c, rn));
        send_text(c, b, (size_t)n);
    } else if (!g.need_auth) {
        mark_ready(c);
    }
}

/* Socket.IO connected ("40{...}"): the token was accepted; join the room. */
static void socketio_connected(conn *c)
{
    if (!c->authed) {
        c->authed = 1;
        g.n_authed++;
    }
    if (c->room >= 0) {
        char b[128], rn[32];
        int k = snprintf(b, sizeof b, "42[\"subscribe\",[\"%s\"]]", room_name(c, rn));
        send_text(c, b, (size_t)k);
    } else {
        mark_ready(c);
    }
}

/* Engine.IO/Socket.IO framing around the v1 frames; returns the frame inside an event, if any. */
static const char *socketio_unwrap(conn *c, const char *p, size_t *n)
{
    if (*n == 1 && p[0] == '2') { /* ping */
        send_text(c, "3", 1);
        return NULL;
    }
    if (*n >= 1 && p[0] == '0') { /* open: connect to the default namespace */
        send_text(c, "40", 2);
        return NULL;
    }
    if (*n >= 2 && p[0] == '4' && p[1] == '0') {
        socketio_connected(c);
        return NULL;
    }
    if (*n >= 2 && p[0] == '4' && p[1] == '4') {
        note_err("socket.io connect_error on bench-%u: %.*s", c->idx, (int)(*n > 200 ? 200 : *n),
                 p);
        g.errors++;
        return NULL;
    }
    if (*n < 4 || memcmp(p, "42[", 3) != 0) return NULL;
    const char *comma = memchr(p, ',', *n);
    if (!comma) return NULL;
    *n -= (size_t)(comma + 1 - p);
    return comma + 1; /* the event's data; the closing ']' is left at the end */
}

static void on_frame_text(conn *c, const char *p, size_t n, uint64_t now)
{
    if (o.proto == PROTO_SOCKETIO && !(p = socketio_unwrap(c, p, &n))) return;
    switch (bl_frame_type(p, n)) {
    case BL_T_MESSAGE: {
        uint64_t seq, ns;
        if (bl_parse_stamp(p, n, &seq, &ns) != 0) {
            g.bad++;
            return;
        }
        if (c == g.cu) { /* catchup: the recovered messages, in order, each once */
            if (seq != g.cu_first + g.cu_got) g.ooo++;
            if (++g.cu_got == (uint64_t)o.n) g.cu_done_ns = now;
            return;
        }
        if (seq < g.phase_seq0) {
            g.late++;
            return;
        }
        g.delivered++;
        bl_hist_add(&g.hist, now > ns ? now - ns : 0);
        if (g.check_order) {
            if (c->last_seq && seq <= c->last_seq) g.ooo++;
            c->last_seq = seq;
        }
        if (g.left && g.left[seq % WINDOW_RING] && --g.left[seq % WINDOW_RING] == 0) g.inflight--;
        break;
    }
    case BL_T_SUBSCRIBED:
        if (c == g.cu) {
            g.cu_subd_ns = now;
            const char *r = memmem(p, n, "\"recovered\":", 12);
            g.cu_recovered = r ? strtol(r + 12, NULL, 10) : -1;
        }
        mark_ready(c);
        break;
    case BL_T_ACK:
        g.acks++;
        break;
    case BL_T_AUTHENTICATED:
        if (!c->authed) {
            c->authed = 1;
            g.n_authed++;
            if (g.need_auth) mark_ready(c);
        }
        break;
    case BL_T_ERROR:
        g.errors++;
        note_err("error frame on bench-%u: %.*s", c->idx, (int)(n > 200 ? 200 : n), p);
        break;
    default:
        break;
    }
}

/* Parse frames in p[0..n); returns bytes consumed, or -1 if c got closed. */
static ssize_t ws_input(conn *c, uint8_t *p, size_t n, uint64_t now)
{
    size_t off = 0;
    while (off < n) {
        bl_frame f;
        int r = bl_ws_parse(p + off, n - off, &f);
        if (r < 0 || (r == 1 && f.masked)) {
            note_err("bad frame from server (bench-%u)", c->idx);
            conn_close(c, ST_CLOSED);
            return -1;
        }
        if (r == 0) break;
        uint8_t *pl = p + off + f.hdr_len;
        switch (f.opcode) {
        case BL_OP_TEXT:
            on_frame_text(c, (const char *)pl, f.len, now);
            break;
        case BL_OP_PING: {
            uint8_t b[140];
            uint8_t mask[4] = {1, 2, 3, 4};
            size_t h = bl_ws_header(b, BL_OP_PONG, f.len, mask);
            bl_ws_mask(b + h, pl, f.len, mask);
            conn_send(c, b, h + f.len);
            break;
        }
        case BL_OP_CLOSE: {
            unsigned code = f.len >= 2 ? (unsigned)(pl[0] << 8 | pl[1]) : 0;
            note_err("server closed bench-%u with %u %.*s", c->idx, code,
                     (int)(f.len > 2 ? f.len - 2 : 0), pl + 2);
            conn_close(c, ST_CLOSED);
            return -1;
        }
        default:
            break;
        }
        if (c->fd < 0) /* a write failed and closed it */
            return -1;
        off += f.hdr_len + f.len;
    }
    return (ssize_t)off;
}

/* Reads once; returns 1 if the read filled the buffer (more may be waiting), else 0. */
static int on_readable(conn *c)
{
    uint8_t *buf = g_rbuf;
    size_t have = c->in_len;
    if (have) {
        memcpy(buf, c->in, have);
        free(c->in);
        c->in = NULL;
        c->in_len = 0;
    }
    size_t room = sizeof g_rbuf - have;
    ssize_t r = io_read(c, buf + have, room);
    /* TLS hands out a record at a time and may hold more: read on until it waits */
    int more = r == (ssize_t)room || (r < 0 && errno == EINTR) || (c->ssl && r > 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        if (c->state != ST_OPEN)
            note_err("bench-%u: %s during %s", c->idx, r == 0 ? "EOF" : strerror(errno),
                     c->state == ST_HS    ? "upgrade"
                     : c->state == ST_TLS ? "TLS"
                                          : "connect");
        else if (o.verbose)
            note_err("bench-%u: server closed the connection", c->idx);
        conn_close(c, c->state == ST_OPEN ? ST_CLOSED : ST_FAILED);
        return 0;
    }
    if (r > 0) have += (size_t)r;
    size_t off = 0;
    if (c->state == ST_HS) {
        uint8_t *e = memmem(buf, have, "\r\n\r\n", 4);
        if (!e) {
            if (have > 4096) {
                note_err("bench-%u: oversized upgrade response", c->idx);
                conn_close(c, ST_FAILED);
                return 0;
            }
            goto keep;
        }
        size_t hl = (size_t)(e - buf) + 4;
        if (have < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0 ||
            !memmem(buf, hl, WS_ACCEPT, sizeof WS_ACCEPT - 1)) {
            char *eol = memchr(buf, '\r', hl);
            note_err("bench-%u: upgrade refused: %.*s", c->idx, (int)(eol ? eol - (char *)buf : 40),
                     (char *)buf);
            conn_close(c, ST_FAILED);
            return 0;
        }
        off = hl;
        c->state = ST_OPEN;
        on_open(c);
        if (c->fd < 0) return 0;
    }
    if (c->state == ST_OPEN && off < have) {
        ssize_t k = ws_input(c, buf + off, have - off, bl_now_ns());
        if (k < 0) return 0;
        off += (size_t)k;
    }
keep:
    if (off < have) {
        c->in = malloc(have - off);
        if (!c->in) abort();
        memcpy(c->in, buf + off, have - off);
        c->in_len = (uint32_t)(have - off);
    }
    return more;
}

/* One step of the TLS handshake; the upgrade request follows it. */
static void tls_step(conn *c)
{
    int r = mbedtls_ssl_handshake(c->ssl);
    if (r == 0) {
        if (t.have_sess) {
            mbedtls_ssl_session s;
            mbedtls_ssl_session_init(&s);
            if (mbedtls_ssl_get_session(c->ssl, &s) == 0 &&
                !memcmp(s.master, t.sess.master, sizeof s.master))
                t.resumed++;
            mbedtls_ssl_session_free(&s);
        }
        send_upgrade(c);
    } else if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE) {
        char e[200];
        if (r == MBEDTLS_ERR_NET_RECV_FAILED || r == MBEDTLS_ERR_NET_SEND_FAILED)
            snprintf(e, sizeof e, "%s", strerror(errno));
        else
            tls_err(r, e, sizeof e);
        uint32_t vf = mbedtls_ssl_get_verify_result(c->ssl);
        if (r == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && vf != (uint32_t)-1) {
            char v[160];
            mbedtls_x509_crt_verify_info(v, sizeof v, "", vf);
            v[strcspn(v, "\n")] = 0;
            snprintf(e, sizeof e, "certificate not verified: %s", v);
        }
        note_err("bench-%u: TLS handshake: %s", c->idx, e);
        conn_close(c, ST_FAILED);
    }
}

static void tls_begin(conn *c)
{
    c->ssl = malloc(sizeof *c->ssl);
    if (!c->ssl) abort();
    mbedtls_ssl_init(c->ssl);
    int r = mbedtls_ssl_setup(c->ssl, &t.conf);
    if (r == 0) r = mbedtls_ssl_set_hostname(c->ssl, o.sni ? o.sni : o.url.host);
    if (r == 0 && t.have_sess) r = mbedtls_ssl_set_session(c->ssl, &t.sess);
    if (r != 0) {
        char e[200];
        tls_err(r, e, sizeof e);
        note_err("bench-%u: TLS set-up: %s", c->idx, e);
        conn_close(c, ST_FAILED);
        return;
    }
    mbedtls_ssl_set_bio(c->ssl, c, tls_send_cb, tls_recv_cb, NULL);
    c->state = ST_TLS;
    tls_step(c);
}

static void on_event(conn *c, uint32_t ev)
{
    if (c->fd < 0) return;
    if (c->state == ST_CONNECTING) {
        if (ev & (EPOLLERR | EPOLLHUP)) { /* only then is SO_ERROR worth a syscall */
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            note_err("connect bench-%u: %s", c->idx, strerror(err ? err : ECONNRESET));
            conn_close(c, ST_FAILED);
            return;
        }
        if (!(ev & EPOLLOUT)) return;
        if (o.url.tls)
            tls_begin(c);
        else
            send_upgrade(c);
        return;
    }
    if (c->state == ST_TLS) {
        tls_step(c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) /* edge-triggered: until drained */
        while (on_readable(c) && c->fd >= 0)
            ;
    if (c->fd >= 0 && (ev & EPOLLOUT) && c->out_len > c->out_off) conn_flush(c);
}

static void start_more(void)
{
    while (g.next_start < g.n && g.pending < o.conc)
        conn_start(&g.c[g.next_start++]);
}

static struct epoll_event g_evs[4096];

static void loop_once(int timeout_ms)
{
    int k = epoll_wait(g.ep, g_evs, 4096, timeout_ms);
    for (int i = 0; i < k; i++) {
        if (!g_evs[i].data.ptr) continue;
        on_event(g_evs[i].data.ptr, g_evs[i].events);
    }
    start_more();
}

/* Open g.n connections (room per conn from room_of, -1 none) and wait until
 * every one is ready or failed, or until o.timeout. Returns seconds taken. */
static double open_all(int n, int32_t (*room_of)(int))
{
    g.c = calloc((size_t)n, sizeof *g.c);
    if (!g.c) abort();
    g.n = n;
    for (int i = 0; i < n; i++) {
        g.c[i].fd = -1;
        g.c[i].idx = (uint32_t)(o.idx_base + i);
        g.c[i].room = room_of ? room_of(i) : -1;
        g.c[i].tok = mint_token(g.c[i].idx); /* outside the timed connection phase */
    }
    uint64_t t0 = bl_now_ns();
    uint64_t deadline = t0 + (uint64_t)(o.timeout * 1e9);
    start_more();
    while (g.n_ready + g.n_failed + g.n_closed < n && bl_now_ns() < deadline)
        loop_once(10);
    if (g.n_ready < n)
        note_err("%d of %d connections ready after %.1f s (%d failed, %d closed by server)",
                 g.n_ready, n, (double)(bl_now_ns() - t0) / 1e9, g.n_failed, g.n_closed);
    return (double)(g.t_last_ready > t0 ? g.t_last_ready - t0 : 0) / 1e9;
}

static void close_all(void)
{
    for (int i = 0; i < g.n; i++)
        if (g.c[i].fd >= 0) conn_close(&g.c[i], ST_CLOSED);
}

/* run the loop for `s` seconds */
static void run_for(double s)
{
    uint64_t end = bl_now_ns() + (uint64_t)(s * 1e9);
    while (bl_now_ns() < end)
        loop_once(10);
}

static void base_result(result *r, const char *scenario)
{
    rs(r, "scenario", "%s", scenario);
    rs(r, "target", "%s", o.label);
}

static void print_errors(void)
{
    for (int i = 0; i < g.n_first_err; i++)
        fprintf(stderr, "parley-bench: %s\n", g.first_err[i]);
}

/* --------------------------------------------------- Redis command stats */

/* INFO commandstats of the Redis at --redis-port: where Redis's time goes, per command.
 * A script's usec include the commands it calls, which are counted under their own names too. */
#define MAX_CMDSTATS 128
typedef struct {
    char name[48];
    double calls, usec;
} cmdstat_t;
typedef struct {
    int n;
    cmdstat_t s[MAX_CMDSTATS];
} cmdstats_t;

static char g_info[1 << 16];

/* Fill cs from INFO commandstats; 0, or -1 (noted) if Redis did not answer in 2 s. */
static int cmdstats_read(cmdstats_t *cs)
{
    cs->n = 0;
    if (!o.redis_port) return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.redis_port)};
    a.sin_addr.s_addr = htonl(0x7f000001u);
    static const char req[] = "INFO commandstats\r\n";
    size_t got = 0, want = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
        for (;;) { /* a bulk reply: $<len>\r\n<len bytes>\r\n */
            ssize_t k = read(fd, g_info + got, sizeof g_info - 1 - got);
            if (k <= 0) break;
            got += (size_t)k;
            g_info[got] = '\0';
            char *crlf = strstr(g_info, "\r\n");
            if (!want && crlf && g_info[0] == '$')
                want = (size_t)strtoul(g_info + 1, NULL, 10) + (size_t)(crlf + 2 - g_info) + 2;
            if ((want && got >= want) || got == sizeof g_info - 1) break;
        }
    }
    close(fd);
    if (!want || got < want) {
        note_err("INFO commandstats from Redis port %d: no full answer", o.redis_port);
        return -1;
    }
    for (char *l = strstr(g_info, "cmdstat_"); l && cs->n < MAX_CMDSTATS;
         l = strstr(l + 1, "\ncmdstat_")) {
        if (*l == '\n') l++;
        char *colon = strchr(l, ':');
        const char *calls = colon ? strstr(colon, "calls=") : NULL;
        const char *usec = colon ? strstr(colon, "usec=") : NULL;
        if (!calls || !usec || colon - l - 8 >= (long)sizeof cs->s[0].name) continue;
        cmdstat_t *c = &cs->s[cs->n++];
        memcpy(c->name, l + 8, (size_t)(colon - l - 8));
        c->name[colon - l - 8] = '\0';
        c->calls = strtod(calls + 6, NULL);
        c->usec = strtod(usec + 5, NULL);
    }
    return 0;
}

/* The commands Redis ran between a and b, per `per` (messages or connections), the costliest
 * first: redis_cmds=name:calls_per:us_per_call,... (INFO itself left out). */
static void cmdstats_result(result *r, const cmdstats_t *a, const cmdstats_t *b, double per)
{
    if (!b->n || per <= 0) return;
    cmdstat_t d[MAX_CMDSTATS];
    int nd = 0;
    for (int i = 0; i < b->n; i++) {
        if (!strcmp(b->s[i].name, "info")) continue;
        cmdstat_t x = b->s[i];
        for (int j = 0; j < a->n; j++)
            if (!strcmp(a->s[j].name, x.name)) {
                x.calls -= a->s[j].calls;
                x.usec -= a->s[j].usec;
            }
        if (x.calls > 0) d[nd++] = x;
    }
    for (int i = 1; i < nd; i++) /* by usec, descending */
        for (int j = i; j > 0 && d[j - 1].usec < d[j].usec; j--) {
            cmdstat_t tmp = d[j];
            d[j] = d[j - 1];
            d[j - 1] = tmp;
        }
    char out[1024];
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < nd && i < 8 && len < sizeof out - 80; i++)
        len += (size_t)snprintf(out + len, sizeof out - len, "%s%s:%.2f:%.2f", i ? "," : "",
                                d[i].name, d[i].calls / per, d[i].usec / d[i].calls);
    rs(r, "redis_cmds", "%s", nd ? out : "-");
}

/* ------------------------------------------------------------ scenarios */

static int32_t room_mod1000(int i)
{
    return (int32_t)(i % 1000);
}
static int32_t room_mod_rooms(int i)
{
    return (int32_t)(i % o.rooms);
}
static int32_t room_zero(int i)
{
    return 0;
}

static void check_fit(int per_proc)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((unsigned long long)per_proc + 32 > (unsigned long long)rl.rlim_cur) {
        fprintf(stderr,
                "parley-bench: %d connections in one process need %d file descriptors, but "
                "RLIMIT_NOFILE is %llu (hard limit %llu, cannot be raised here).\n"
                "  Use --procs P (idle) or several client processes, each with at most %llu "
                "connections.\n",
                per_proc, per_proc + 32, (unsigned long long)rl.rlim_cur,
                (unsigned long long)rl.rlim_max, (unsigned long long)rl.rlim_cur - 32);
        exit(1);
    }
}

/* Child of --procs: open n connections, report, hold until the parent says. */
static int idle_child(int n, int wfd, int rfd)
{
    g.room_ready = calloc(1000, sizeof *g.room_ready);
    open_all(n, room_mod1000);
    char b[64];
    int k = snprintf(b, sizeof b, "%d %d %d\n", g.n_ready, g.n_failed, g.errors);
    if (write(wfd, b, (size_t)k) < 0) return 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(g.ep, EPOLL_CTL_ADD, rfd, &ev);
    uint64_t end = bl_now_ns() + (uint64_t)((o.settle + o.timeout + 60) * 1e9);
    while (bl_now_ns() < end) {
        struct pollfd pf = {.fd = rfd, .events = POLLIN};
        if (poll(&pf, 1, 0) > 0) break;
        loop_once(50);
    }
    k = snprintf(b, sizeof b, "%d\n", g.n_open);
    if (write(wfd, b, (size_t)k) < 0) return 1;
    print_errors();
    close_all();
    return 0;
}

static int scen_idle(void)
{
    long long rss0 = proc_rss_kib(o.pids, o.npids);
    long long cpu0 = bl_proc_cpu_us(o.pids, o.npids);
    int held = 0, ready = 0, failed = 0, errs = 0;
    double t_open = 0;
    if (o.procs <= 1) {
        check_fit(o.n);
        g.room_ready = calloc(1000, sizeof *g.room_ready);
        uint64_t t0 = bl_now_ns();
        open_all(o.n, room_mod1000);
        t_open = (double)(bl_now_ns() - t0) / 1e9;
        ready = g.n_ready;
        run_for(o.settle);
        held = g.n_open;
        failed = g.n_failed;
        errs = g.errors;
    } else {
        int per = (o.n + o.procs - 1) / o.procs;
        check_fit(per);
        pid_t kids[64];
        int up[64], down[64];
        int nk = 0;
        uint64_t t0 = bl_now_ns();
        for (int p = 0; p < o.procs && p < 64; p++) {
            int cnt = o.n - p * per < per ? o.n - p * per : per;
            if (cnt <= 0) break;
            int a[2], b[2];
            if (pipe(a) < 0 || pipe(b) < 0) {
                perror("pipe");
                return 1;
            }
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) {
                close(a[0]);
                close(b[1]);
                for (int j = 0; j < nk; j++) { /* earlier children's pipes */
                    close(up[j]);
                    close(down[j]);
                }
                o.idx_base += p * per;
                g.rng ^= (uint32_t)p * 2654435761u;
                if (o.url.tls) { /* the children must not share one random stream */
                    pid_t me = getpid();
                    mbedtls_ctr_drbg_reseed(&t.drbg, (const unsigned char *)&me, sizeof me);
                }
                close(g.ep);
                g.ep = epoll_create1(EPOLL_CLOEXEC);
                _exit(idle_child(cnt, a[1], b[0]));
            }
            close(a[1]);
            close(b[0]);
            kids[nk] = pid;
            up[nk] = a[0];
            down[nk] = b[1];
            nk++;
        }
        for (int k = 0; k < nk; k++) {
            struct pollfd pf = {.fd = up[k], .events = POLLIN};
            char b[64] = {0};
            int rr = 0, ff = 0, ee = 0;
            if (poll(&pf, 1, (int)((o.timeout + 10) * 1000)) > 0 &&
                read(up[k], b, sizeof b - 1) > 0)
                sscanf(b, "%d %d %d", &rr, &ff, &ee);
            ready += rr;
            failed += ff;
            errs += ee;
        }
        t_open = (double)(bl_now_ns() - t0) / 1e9;
        usleep((useconds_t)(o.settle * 1e6));
        long long rss1 = proc_rss_kib(o.pids, o.npids);
        for (int k = 0; k < nk; k++) {
            close(down[k]);
            struct pollfd pf = {.fd = up[k], .events = POLLIN};
            char b[64] = {0};
            int h = 0;
            if (poll(&pf, 1, 10000) > 0 && read(up[k], b, sizeof b - 1) > 0) sscanf(b, "%d", &h);
            held += h;
        }
        for (int k = 0; k < nk; k++)
            waitpid(kids[k], NULL, 0);
        long long cpu1 = bl_proc_cpu_us(o.pids, o.npids);
        result r = {0};
        base_result(&r, "idle");
        rs(&r, "conns", "%d", o.n);
        rs(&r, "procs", "%d", nk);
        rs(&r, "ready", "%d", ready);
        rs(&r, "held", "%d", held);
        rs(&r, "failed", "%d", failed);
        rs(&r, "errors", "%d", errs);
        rs(&r, "open_s", "%.2f", t_open);
        rs(&r, "rss_before_kib", "%lld", rss0);
        rs(&r, "rss_after_kib", "%lld", rss1);
        rs(&r, "kib_per_conn", "%.2f", held ? (double)(rss1 - rss0) / held : 0.0);
        rs(&r, "server_cpu_ms", "%.1f", (double)(cpu1 - cpu0) / 1000);
        result_print(&r);
        return (held < o.n || failed || errs) ? 3 : 0;
    }
    long long rss1 = proc_rss_kib(o.pids, o.npids);
    long long cpu1 = bl_proc_cpu_us(o.pids, o.npids);
    result r = {0};
    base_result(&r, "idle");
    rs(&r, "conns", "%d", o.n);
    rs(&r, "procs", "1");
    rs(&r, "ready", "%d", ready);
    rs(&r, "held", "%d", held);
    rs(&r, "failed", "%d", failed);
    rs(&r, "errors", "%d", errs);
    rs(&r, "open_s", "%.2f", t_open);
    rs(&r, "rss_before_kib", "%lld", rss0);
    rs(&r, "rss_after_kib", "%lld", rss1);
    rs(&r, "kib_per_conn", "%.2f", held ? (double)(rss1 - rss0) / held : 0.0);
    rs(&r, "server_cpu_ms", "%.1f", (double)(cpu1 - cpu0) / 1000);
    rs(&r, "client_cpu_ms", "%.1f", (double)self_cpu_us() / 1000);
    result_print(&r);
    print_errors();
    close_all();
    return (held < o.n || failed || errs) ? 3 : 0;
}

static void phase_begin(void)
{
    g.phase_seq0 = g.seq + 1;
    g.sent = g.expected = g.delivered = g.late = g.ooo = g.bad = 0;
    g.inflight = 0;
    bl_hist_reset(&g.hist);
    for (int i = 0; i < g.n; i++)
        g.c[i].last_seq = 0;
}

static void publish(conn *c, const char *room, int receivers)
{
    char b[256];
    uint64_t seq = ++g.seq;
    /* A cid is unique per sender for good (the server deduplicates resends by sender and
     * cid, for 24 h in Redis and for ever in PostgreSQL), so it carries this run's id. */
    static uint64_t run_id;
    if (!run_id) run_id = bl_now_ns() ^ ((uint64_t)getpid() << 40);
    /* Nchan passes the text through as it is: it is the frame every subscriber gets. */
    int n = snprintf(b, sizeof b,
                     o.proto == PROTO_SOCKETIO
                         ? "42[\"message\",{\"room\":\"%s\",\"text\":\"%" PRIu64 ":%" PRIu64
                           "\",\"cid\":\"c%" PRIx64 "-%" PRIu64 "\"}]"
                         : "{\"type\":\"message\",\"room\":\"%s\",\"text\":\"%" PRIu64 ":%" PRIu64
                           "\",\"cid\":\"c%" PRIx64 "-%" PRIu64 "\"}",
                     room, seq, bl_now_ns(), run_id, seq);
    send_text(c, b, (size_t)n);
    g.sent++;
    g.expected += (uint64_t)receivers;
    if (g.left) {
        g.left[seq % WINDOW_RING] = (uint32_t)receivers;
        g.inflight++;
    }
}

/* Wait until everything expected arrived, or 2 s pass without progress
 * (at most 10 s). */
static void drain(void)
{
    uint64_t start = bl_now_ns(), last_change = start, last = g.delivered;
    while (g.delivered < g.expected) {
        loop_once(5);
        uint64_t now = bl_now_ns();
        if (g.delivered != last) {
            last = g.delivered;
            last_change = now;
        }
        if (now - last_change > 2000000000ull || now - start > 10000000000ull) break;
    }
}

static long long g_mach0, g_steal0;

static void machine_mark(void)
{
    machine_cpu_us(&g_mach0, &g_steal0);
}

/* CPU used on the machine by processes other than the client, --pids and
 * --redis-pids since machine_mark(), in % of one CPU: non-zero means someone
 * else was competing for the CPUs and the figures are skewed. */
static double other_cpu_pct(double secs, long long cpu_us, long long rcpu_us, long long ccpu_us)
{
    long long busy, steal;
    machine_cpu_us(&busy, &steal);
    long long m = busy - g_mach0 - cpu_us - rcpu_us - ccpu_us;
    return secs > 0 && m > 0 ? (double)m / 1e4 / secs : 0.0;
}

/* CPU stolen by the hypervisor since machine_mark(), in % of one CPU. */
static double steal_pct(double secs)
{
    long long busy, steal;
    machine_cpu_us(&busy, &steal);
    return secs > 0 ? (double)(steal - g_steal0) / 1e4 / secs : 0.0;
}

static int report_msgs(const char *scenario, double secs, long long cpu_us, long long rcpu_us,
                       long long ccpu_us, const cmdstats_t *cs0, const cmdstats_t *cs1)
{
    result r = {0};
    base_result(&r, scenario);
    uint64_t lost = g.expected > g.delivered ? g.expected - g.delivered : 0;
    uint64_t extra = g.delivered > g.expected ? g.delivered - g.expected : 0;
    rs(&r, "conns", "%d", g.n_ready);
    rs(&r, "rate", "%.0f", g.sent / (secs > 0 ? secs : 1));
    rs(&r, "sent", "%" PRIu64, g.sent);
    rs(&r, "expected", "%" PRIu64, g.expected);
    rs(&r, "delivered", "%" PRIu64, g.delivered);
    rs(&r, "lost", "%" PRIu64, lost);
    rs(&r, "extra", "%" PRIu64, extra);
    rs(&r, "out_of_order", "%" PRIu64, g.ooo);
    rs(&r, "errors", "%d", g.errors);
    rs(&r, "closed", "%d", g.n_closed);
    rs(&r, "p50_us", "%" PRIu64, bl_hist_pct(&g.hist, 50));
    rs(&r, "p99_us", "%" PRIu64, bl_hist_pct(&g.hist, 99));
    rs(&r, "p999_us", "%" PRIu64, bl_hist_pct(&g.hist, 99.9));
    rs(&r, "max_us", "%" PRIu64, g.hist.max_ns / 1000);
    rs(&r, "secs", "%.2f", secs);
    rs(&r, "deliveries_per_s", "%.0f", g.delivered / (secs > 0 ? secs : 1));
    rs(&r, "server_cpu_us_per_delivery", "%.3f",
       g.delivered ? (double)cpu_us / (double)g.delivered : 0.0);
    if (o.nrpids) {
        rs(&r, "redis_cpu_us_per_delivery", "%.3f",
           g.delivered ? (double)rcpu_us / (double)g.delivered : 0.0);
        rs(&r, "redis_cpu_us_per_msg", "%.2f", g.sent ? (double)rcpu_us / (double)g.sent : 0.0);
    }
    cmdstats_result(&r, cs0, cs1, (double)g.sent);
    rs(&r, "server_cpu_pct", "%.0f", secs > 0 ? (double)cpu_us / 1e4 / secs : 0.0);
    rs(&r, "client_cpu_pct", "%.0f", secs > 0 ? (double)ccpu_us / 1e4 / secs : 0.0);
    rs(&r, "other_cpu_pct", "%.0f", other_cpu_pct(secs, cpu_us, rcpu_us, ccpu_us));
    rs(&r, "steal_pct", "%.0f", steal_pct(secs));
    result_print(&r);
    return (lost || extra || g.errors || g.n_closed || g.ooo || g.bad) ? 3 : 0;
}

/* Publish at `rate` msg/s for `secs` seconds, one message per pub_one() call. */
static void run_rate(double rate, double secs, void (*pub_one)(void))
{
    uint64_t t0 = bl_now_ns(), end = t0 + (uint64_t)(secs * 1e9), n = 0;
    for (;;) {
        uint64_t now = bl_now_ns();
        if (now >= end) break;
        uint64_t due = (uint64_t)((double)(now - t0) / 1e9 * rate) + 1;
        while (n < due) {
            pub_one();
            n++;
        }
        loop_once(1);
    }
}

static void fanout_one(void)
{
    publish(g.pub, "fanout", g.n_ready);
}

static void rooms_one(void)
{
    int per_room = (o.n + o.rooms - 1) / o.rooms;
    for (int tries = 0; tries < 100000; tries++) {
        int room = (int)(rnd() % (uint32_t)o.rooms);
        int idx = room + (int)(rnd() % (uint32_t)per_room) * o.rooms;
        if (idx >= o.n || !g.c[idx].ready) continue;
        char rn[32];
        snprintf(rn, sizeof rn, "r%d", room);
        publish(&g.c[idx], rn, g.room_ready[room]);
        return;
    }
}

/* Same traffic for --warmup seconds, not measured: the first second after
 * thousands of connections were opened is not what we measure. */
static void warmup(double rate, void (*pub_one)(void))
{
    if (o.warmup <= 0) return;
    phase_begin();
    run_rate(rate, o.warmup, pub_one);
    drain();
}

/* CPU and time of the server(s), Redis and this client over one measured phase. */
typedef struct {
    long long c0, r0, s0;
    uint64_t t0;
    cmdstats_t cs0;
} meter_t;

static meter_t meter_start(void)
{
    phase_begin();
    meter_t m = {
        bl_proc_cpu_us(o.pids, o.npids), bl_proc_cpu_us(o.rpids, o.nrpids), self_cpu_us(), 0, {0}};
    cmdstats_read(&m.cs0);
    machine_mark();
    m.t0 = bl_now_ns();
    return m;
}

/* Drain what is in flight, then report the phase as `name`. */
static int meter_report(const meter_t *m, const char *name)
{
    drain();
    double secs = (double)(bl_now_ns() - m->t0) / 1e9;
    long long c1 = bl_proc_cpu_us(o.pids, o.npids), r1 = bl_proc_cpu_us(o.rpids, o.nrpids),
              s1 = self_cpu_us();
    static cmdstats_t cs1;
    cmdstats_read(&cs1);
    return report_msgs(name, secs, c1 - m->c0, r1 - m->r0, s1 - m->s0, &m->cs0, &cs1);
}

static int scen_fanout(void)
{
    check_fit(o.n);
    open_all(o.n, room_zero);
    if (g.n_ready < o.n || !g.c[0].ready) {
        print_errors();
        fprintf(stderr, "parley-bench: fanout: only %d of %d receivers subscribed\n", g.n_ready,
                o.n);
        return 3;
    }
    g.pub = &g.c[0];
    g.check_order = 1;
    int rc = 0;
    /* fixed rate */
    if (o.duration > 0) {
        warmup(o.rate, fanout_one);
        meter_t m = meter_start();
        run_rate(o.rate, o.duration, fanout_one);
        rc |= meter_report(&m, "fanout-fixed");
    }
    /* Max rate, paced by a window of in-flight messages: a message is in flight
     * until every receiver has it, so the server sees up to --window messages
     * at once and is measured on how it coalesces them per subscriber. */
    if (o.max_duration > 0) {
        static uint32_t left[WINDOW_RING];
        g.left = left;
        meter_t m = meter_start();
        uint64_t end = m.t0 + (uint64_t)(o.max_duration * 1e9);
        while (bl_now_ns() < end && g.pub->fd >= 0) {
            while (g.inflight < o.window)
                publish(g.pub, "fanout", g.n_ready);
            loop_once(1);
        }
        rc |= meter_report(&m, "fanout-max");
        g.left = NULL;
    }
    print_errors();
    close_all();
    return rc;
}

static int scen_rooms(void)
{
    check_fit(o.n);
    if (o.rooms < 1 || o.rooms > o.n) {
        fprintf(stderr, "parley-bench: --rooms must be 1..N\n");
        return 1;
    }
    g.room_ready = calloc((size_t)o.rooms, sizeof *g.room_ready);
    open_all(o.n, room_mod_rooms);
    if (g.n_ready < o.n)
        fprintf(stderr, "parley-bench: rooms: only %d of %d connections subscribed\n", g.n_ready,
                o.n);
    warmup(o.rate, rooms_one);
    meter_t m = meter_start();
    run_rate(o.rate, o.duration, rooms_one);
    int rc = meter_report(&m, "rooms");
    int short_ready = g.n_ready < o.n;
    print_errors();
    close_all();
    return rc | (short_ready ? 3 : 0);
}

/* catchup: the publisher (connection 0) is in the room; the others catch up, one at a time. */
static int32_t room_first(int i)
{
    return i == 0 ? 0 : -1;
}

/* One connection subscribes to the room with since 0 and gets every message published before:
 * the time from `subscribed` (and from sending subscribe) to the last one. */
static int catchup_one(conn *c, int run)
{
    char b[256], rn[32];
    int n =
        snprintf(b, sizeof b, "{\"type\":\"subscribe\",\"rooms\":[\"%s\"],\"since\":{\"%s\":0}}",
                 room_name(&g.c[0], rn), g.cu_room);
    g.cu = c;
    g.cu_got = 0;
    g.cu_subd_ns = g.cu_done_ns = 0;
    g.cu_recovered = -1;
    g.ooo = 0;
    static cmdstats_t cs0, cs1;
    cmdstats_read(&cs0);
    long long c0 = bl_proc_cpu_us(o.pids, o.npids), r0 = bl_proc_cpu_us(o.rpids, o.nrpids);
    machine_mark();
    g.cu_sub_ns = bl_now_ns();
    send_text(c, b, (size_t)n);
    while (!g.cu_done_ns && c->fd >= 0 && bl_now_ns() - g.cu_sub_ns < 10000000000ull)
        loop_once(1);
    long long c1 = bl_proc_cpu_us(o.pids, o.npids), r1 = bl_proc_cpu_us(o.rpids, o.nrpids);
    double wall = (double)(bl_now_ns() - g.cu_sub_ns) / 1e9;
    run_for(0.2); /* anything more is a duplicate */
    result r = {0};
    base_result(&r, "catchup");
    rs(&r, "run", "%d", run);
    rs(&r, "msgs", "%d", o.n);
    rs(&r, "recovered", "%ld", g.cu_recovered);
    rs(&r, "got", "%" PRIu64, g.cu_got);
    rs(&r, "lost", "%" PRIu64, g.cu_got < (uint64_t)o.n ? (uint64_t)o.n - g.cu_got : 0);
    rs(&r, "extra", "%" PRIu64, g.cu_got > (uint64_t)o.n ? g.cu_got - (uint64_t)o.n : 0);
    rs(&r, "out_of_order", "%" PRIu64, g.ooo);
    rs(&r, "errors", "%d", g.errors);
    rs(&r, "ms_after_subscribed", "%.2f",
       g.cu_done_ns && g.cu_subd_ns ? (double)(g.cu_done_ns - g.cu_subd_ns) / 1e6 : -1.0);
    rs(&r, "ms_from_subscribe", "%.2f",
       g.cu_done_ns ? (double)(g.cu_done_ns - g.cu_sub_ns) / 1e6 : -1.0);
    rs(&r, "server_cpu_ms", "%.1f", (double)(c1 - c0) / 1000);
    if (o.nrpids) rs(&r, "redis_cpu_ms", "%.1f", (double)(r1 - r0) / 1000);
    if (cmdstats_read(&cs1) == 0) cmdstats_result(&r, &cs0, &cs1, 1.0); /* per catch-up */
    rs(&r, "steal_pct", "%.0f", steal_pct(wall));
    result_print(&r);
    g.cu = NULL;
    return (g.cu_got != (uint64_t)o.n || g.ooo || g.errors || g.cu_recovered != o.n) ? 3 : 0;
}

static int scen_catchup(void)
{
    /* A fresh room: its seqs start at 1 and since 0 means all of them. */
    snprintf(g.cu_room, sizeof g.cu_room, "cu-%d-%" PRIx64, (int)getpid(), bl_now_ns());
    int nconn = 1 + o.runs;
    open_all(nconn, room_first);
    if (g.n_ready < nconn) {
        print_errors();
        fprintf(stderr, "parley-bench: catchup: only %d of %d connections ready\n", g.n_ready,
                nconn);
        return 3;
    }
    /* Publish N, at most 200 in flight (the publisher's own copies pace it). */
    phase_begin();
    conn *pub = &g.c[0];
    uint64_t t0 = bl_now_ns();
    while (g.sent < (uint64_t)o.n && pub->fd >= 0 && bl_now_ns() - t0 < 120000000000ull) {
        while (g.sent < (uint64_t)o.n && g.sent - g.delivered < 200)
            publish(pub, g.cu_room, 1);
        loop_once(1);
    }
    drain();
    while (o.acks && g.acks < g.sent && pub->fd >= 0 && bl_now_ns() - t0 < 180000000000ull)
        loop_once(5);
    if (g.delivered != (uint64_t)o.n || (o.acks && g.acks < g.sent)) {
        print_errors();
        fprintf(stderr,
                "parley-bench: catchup: %" PRIu64 " of %d published came back, %" PRIu64 " acked\n",
                g.delivered, o.n, g.acks);
        return 3;
    }
    g.cu_first = g.phase_seq0;
    int rc = 0;
    for (int i = 1; i < nconn; i++)
        rc |= catchup_one(&g.c[i], i);
    print_errors();
    close_all();
    return rc;
}

/* --resume: one blocking handshake with the first URL, before anything is measured; its session
 * (with the server's ticket, if it issued one) is what the measured connections offer. */
static int tls_prime(void)
{
    conn c = {0};
    mbedtls_ssl_context ssl;
    mbedtls_ssl_init(&ssl);
    mbedtls_ssl_session_init(&t.sess);
    int r = -1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        struct timeval tv = {5, 0}; /* a server that stalls fails the priming, not the run */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        c.fd = fd;
        if (connect(fd, (struct sockaddr *)&g.dst[0], sizeof g.dst[0]) == 0 &&
            (r = mbedtls_ssl_setup(&ssl, &t.conf)) == 0 &&
            (r = mbedtls_ssl_set_hostname(&ssl, o.sni ? o.sni : o.url.host)) == 0) {
            mbedtls_ssl_set_bio(&ssl, &c, tls_send_cb, tls_recv_cb, NULL);
            r = mbedtls_ssl_handshake(&ssl); /* blocking: WANT_* only after a 5 s timeout */
            if (r == 0) r = mbedtls_ssl_get_session(&ssl, &t.sess);
            if (r == 0) mbedtls_ssl_close_notify(&ssl);
        }
        close(fd);
    }
    mbedtls_ssl_free(&ssl);
    if (r != 0) {
        char e[200];
        if (r == -1)
            snprintf(e, sizeof e, "%s", strerror(errno));
        else
            tls_err(r, e, sizeof e);
        fprintf(stderr, "parley-bench: --resume: the priming handshake failed: %s\n", e);
        return -1;
    }
    t.have_sess = 1;
    return 0;
}

static int scen_connect(void)
{
    check_fit(o.n);
    if (o.resume && tls_prime() != 0) return 1;
    g.need_auth = 1;
    static cmdstats_t cs0, cs1;
    cmdstats_read(&cs0);
    long long c0 = bl_proc_cpu_us(o.pids, o.npids), r0 = bl_proc_cpu_us(o.rpids, o.nrpids),
              s0 = self_cpu_us();
    machine_mark();
    uint64_t t0 = bl_now_ns();
    double secs = open_all(o.n, NULL);
    double wall = (double)(bl_now_ns() - t0) / 1e9;
    long long c1 = bl_proc_cpu_us(o.pids, o.npids), r1 = bl_proc_cpu_us(o.rpids, o.nrpids),
              s1 = self_cpu_us();
    result r = {0};
    base_result(&r, o.resume ? "connect-resumed" : "connect");
    rs(&r, "conns", "%d", o.n);
    rs(&r, "concurrency", "%d", o.conc);
    rs(&r, "authenticated", "%d", g.n_authed);
    if (o.resume) rs(&r, "resumed", "%d", t.resumed);
    rs(&r, "failed", "%d", g.n_failed);
    rs(&r, "closed", "%d", g.n_closed);
    rs(&r, "secs", "%.3f", secs);
    rs(&r, "conns_per_s", "%.0f", secs > 0 ? g.n_authed / secs : 0.0);
    rs(&r, "server_cpu_us_per_conn", "%.1f", g.n_authed ? (double)(c1 - c0) / g.n_authed : 0.0);
    if (o.nrpids)
        rs(&r, "redis_cpu_us_per_conn", "%.1f", g.n_authed ? (double)(r1 - r0) / g.n_authed : 0.0);
    rs(&r, "client_cpu_us_per_conn", "%.1f", g.n_authed ? (double)(s1 - s0) / g.n_authed : 0.0);
    if (cmdstats_read(&cs1) == 0) cmdstats_result(&r, &cs0, &cs1, (double)g.n_authed);
    rs(&r, "other_cpu_pct", "%.0f", other_cpu_pct(wall, c1 - c0, r1 - r0, s1 - s0));
    rs(&r, "steal_pct", "%.0f", steal_pct(wall));
    result_print(&r);
    print_errors();
    close_all();
    return (g.n_authed < o.n) ? 3 : 0;
}

/* ----------------------------------------------------------------- main */

static int parse_pids(const char *s, pid_t *out)
{
    int n = 0;
    while (*s && n < MAX_PIDS) {
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s || v <= 0) return -1;
        out[n++] = (pid_t)v;
        s = e;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

static void usage(FILE *f)
{
    fprintf(
        f, "usage: parley-bench SCENARIO [options]\n"
           "scenarios (all bounded):\n"
           "  idle     N connections, each subscribed to room i %% 1000; settle; held conns and\n"
           "           server RSS per connection (VmRSS of --pids before/after)\n"
           "  fanout   1 room, N receivers (default 1000), receiver 0 publishes: --rate msg/s for\n"
           "           --duration s, then --max-duration s paced by --window in-flight messages\n"
           "  rooms    N connections (default 10000) in --rooms rooms (default 1000), random\n"
           "           members publish to their room at --rate msg/s total (default 2000)\n"
           "  connect  connection storm: N (default 10000) connect+upgrade+authenticated, at most\n"
           "           --conc in progress; connections/s and server CPU per connection\n"
           "  catchup  N messages (default 1000) published into a fresh room, then --runs (3)\n"
           "           new connections one by one subscribe with since 0: time from `subscribed`\n"
           "           to the last recovered message (--acks: wait until all are stored first)\n"
           "options:\n"
           "  --url ws://host:port/ws   (env PARLEY_URL; default ws://127.0.0.1:8080/ws);\n"
           "            wss://host:port/ws speaks TLS (mbedTLS); several, comma-separated: each\n"
           "            connection goes to one of them, by a hash of its index (--pids: all)\n"
           "  --cacert FILE             wss://: verify the server's certificate (PEM CA)\n"
           "  --servername NAME         wss://: name sent and verified (default: URL host;\n"
           "            mbedTLS 2.28 matches DNS names only, not IP addresses)\n"
           "  --resume                  connect over wss://: one handshake first, then every\n"
           "            connection offers its session (ticket); RESULT scenario=connect-resumed,\n"
           "            resumed= how many the server resumed\n"
           "  --secret S                (env PARLEY_JWT_SECRET) tokens minted per user bench-<i>\n"
           "  -n, --conns N   --rooms K   -r, --rate R   -d, --duration S   -w, --window W\n"
           "  --max-duration S (fanout, default 5; 0 skips)  --window W (default 20)\n"
           "  --settle S (idle, default 2)   --timeout S (connection phase, default 60)\n"
           "  --warmup S (fanout fixed, rooms: unmeasured traffic first, default 1)\n"
           "  --conc C (connections being set up at once, default 500)\n"
           "  --procs P (idle: spread N over P client processes)\n"
           "  --src-ips K (bind sources over 127.0.0.1..K; default: auto when N > 25000)\n"
           "  --pids P1,P2 (server)     --redis-pids P (reported separately)\n"
           "  --redis-port P  INFO commandstats around each phase: redis_cmds=name:calls per\n"
           "            message:us per call,... (a script's time includes the calls it makes)\n"
           "  --label NAME (target= in RESULT lines, default parley)   -v, --verbose\n"
           "  --proto v1|nchan|socketio (default v1; the others drive the peers in bench/peers)\n");
}

int main(int argc, char **argv)
{
    static struct option lo[] = {
        {"url", 1, 0, 'u'},          {"secret", 1, 0, 's'},     {"conns", 1, 0, 'n'},
        {"rooms", 1, 0, 'R'},        {"rate", 1, 0, 'r'},       {"duration", 1, 0, 'd'},
        {"max-duration", 1, 0, 'M'}, {"window", 1, 0, 'w'},     {"proto", 1, 0, 'Y'},
        {"settle", 1, 0, 'S'},       {"timeout", 1, 0, 'T'},    {"warmup", 1, 0, 'W'},
        {"conc", 1, 0, 'c'},         {"procs", 1, 0, 'P'},      {"src-ips", 1, 0, 'I'},
        {"pids", 1, 0, 'p'},         {"redis-pids", 1, 0, 'x'}, {"label", 1, 0, 'l'},
        {"verbose", 0, 0, 'v'},      {"help", 0, 0, 'h'},       {"cacert", 1, 0, 'C'},
        {"servername", 1, 0, 'N'},   {"redis-port", 1, 0, 'X'}, {"runs", 1, 0, 'U'},
        {"acks", 0, 0, 'A'},         {"resume", 0, 0, 'E'},     {0, 0, 0, 0}};
    o.url_s = getenv("PARLEY_URL") ? getenv("PARLEY_URL") : "ws://127.0.0.1:8080/ws";
    o.secret = getenv("PARLEY_JWT_SECRET");
    o.label = "parley";
    o.rooms = 1000;
    o.max_duration = 5;
    o.window = 20;
    o.settle = 2;
    o.warmup = 1;
    o.timeout = 60;
    o.conc = 500;
    o.procs = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "n:d:r:w:vh", lo, NULL)) != -1) {
        switch (ch) {
        case 'u':
            o.url_s = optarg;
            break;
        case 's':
            o.secret = optarg;
            break;
        case 'n':
            o.n = atoi(optarg);
            o.n_set = 1;
            break;
        case 'R':
            o.rooms = atoi(optarg);
            break;
        case 'r':
            o.rate = atof(optarg);
            o.rate_set = 1;
            break;
        case 'd':
            o.duration = atof(optarg);
            o.dur_set = 1;
            break;
        case 'M':
            o.max_duration = atof(optarg);
            break;
        case 'Y':
            if (!strcmp(optarg, "v1"))
                o.proto = PROTO_V1;
            else if (!strcmp(optarg, "nchan"))
                o.proto = PROTO_NCHAN;
            else if (!strcmp(optarg, "socketio"))
                o.proto = PROTO_SOCKETIO;
            else {
                fprintf(stderr, "parley-bench: --proto is v1, nchan or socketio\n");
                return 1;
            }
            break;
        case 'w':
            o.window = atoi(optarg);
            break;
        case 'S':
            o.settle = atof(optarg);
            break;
        case 'T':
            o.timeout = atof(optarg);
            break;
        case 'W':
            o.warmup = atof(optarg);
            break;
        case 'c':
            o.conc = atoi(optarg);
            break;
        case 'P':
            o.procs = atoi(optarg);
            break;
        case 'I':
            o.src_ips = atoi(optarg);
            break;
        case 'p':
            if ((o.npids = parse_pids(optarg, o.pids)) < 0) {
                fprintf(stderr, "parley-bench: bad --pids\n");
                return 1;
            }
            break;
        case 'x':
            if ((o.nrpids = parse_pids(optarg, o.rpids)) < 0) {
                fprintf(stderr, "parley-bench: bad --redis-pids\n");
                return 1;
            }
            break;
        case 'l':
            o.label = optarg;
            break;
        case 'C':
            o.cacert = optarg;
            break;
        case 'X':
            o.redis_port = atoi(optarg);
            break;
        case 'U':
            o.runs = atoi(optarg);
            break;
        case 'A':
            o.acks = 1;
            break;
        case 'E':
            o.resume = 1;
            break;
        case 'N':
            o.sni = optarg;
            break;
        case 'v':
            o.verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 1;
    }
    o.scenario = argv[optind];
    for (const char *p = o.url_s; *p;) {
        char one[512];
        size_t len = strcspn(p, ",");
        if (len >= sizeof one || o.nurls == MAX_URLS) {
            fprintf(stderr, "parley-bench: at most %d URLs of under 512 bytes\n", MAX_URLS);
            return 1;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        if (bl_parse_url(one, &o.urls[o.nurls]) != 0) {
            fprintf(stderr, "parley-bench: bad URL '%s' (want ws:// or wss://host:port/path)\n",
                    one);
            return 1;
        }
        if (o.nurls && (o.urls[o.nurls].tls != o.urls[0].tls ||
                        strcmp(o.urls[o.nurls].path, o.urls[0].path) != 0)) {
            fprintf(stderr, "parley-bench: the URLs of --url must share scheme and path\n");
            return 1;
        }
        o.nurls++;
        p += len + (p[len] == ',');
    }
    if (!o.nurls) {
        fprintf(stderr, "parley-bench: no URL\n");
        return 1;
    }
    o.url = o.urls[0];
    if (o.url.tls && tls_init() != 0) return 1;
    if ((o.cacert || o.sni || o.resume) && !o.url.tls) {
        fprintf(stderr, "parley-bench: --cacert, --servername and --resume are for a wss:// URL\n");
        return 1;
    }
    if (!o.secret || !*o.secret) {
        fprintf(stderr, "parley-bench: set PARLEY_JWT_SECRET (or --secret) to mint tokens\n");
        return 1;
    }
    for (int i = 0; i < o.nurls; i++) {
        const bl_url *u = &o.urls[i];
        g.dst[i].sin_family = AF_INET;
        g.dst[i].sin_port = htons((uint16_t)u->port);
        if (inet_pton(AF_INET, strcmp(u->host, "localhost") ? u->host : "127.0.0.1",
                      &g.dst[i].sin_addr) != 1) {
            fprintf(stderr, "parley-bench: host must be an IPv4 address, got '%s'\n", u->host);
            return 1;
        }
    }
    for (int i = 0; i < o.npids; i++)
        if (bl_proc_cpu_us(&o.pids[i], 1) < 0) {
            fprintf(stderr, "parley-bench: cannot read /proc/%d/stat\n", (int)o.pids[i]);
            return 1;
        }
    for (int i = 0; i < o.nrpids; i++)
        if (bl_proc_cpu_us(&o.rpids[i], 1) < 0) {
            fprintf(stderr, "parley-bench: cannot read /proc/%d/stat\n", (int)o.rpids[i]);
            return 1;
        }
    int is_idle = !strcmp(o.scenario, "idle"), is_fan = !strcmp(o.scenario, "fanout"),
        is_rooms = !strcmp(o.scenario, "rooms"), is_conn = !strcmp(o.scenario, "connect"),
        is_cu = !strcmp(o.scenario, "catchup");
    if (!is_idle && !is_fan && !is_rooms && !is_conn && !is_cu) {
        fprintf(stderr, "parley-bench: unknown scenario '%s'\n", o.scenario);
        return 1;
    }
    if (!o.n_set) o.n = is_fan || is_cu ? 1000 : 10000;
    if (o.runs < 1) o.runs = 3;
    if (!o.rate_set) o.rate = is_rooms ? 2000 : 100;
    if (!o.dur_set) o.duration = 10;
    if (o.window > WINDOW_RING) {
        fprintf(stderr, "parley-bench: --window is at most %d\n", WINDOW_RING);
        return 1;
    }
    if (o.n < 1 || o.conc < 1 || o.window < 1 || o.procs < 1 || o.rate <= 0) {
        fprintf(stderr, "parley-bench: N, --conc, --window, --procs and --rate must be positive\n");
        return 1;
    }
    if (o.procs > 1 && !is_idle) {
        fprintf(stderr, "parley-bench: --procs is only for the idle scenario\n");
        return 1;
    }
    if (!o.src_ips && o.n > 25000 && !strncmp(o.url.host, "127.", 4))
        o.src_ips = (o.n + 24999) / 25000;
    signal(SIGPIPE, SIG_IGN);
    g.rng = (uint32_t)(bl_now_ns() | 1);
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    if (bl_hist_init(&g.hist) != 0) {
        fprintf(stderr, "parley-bench: out of memory\n");
        return 1;
    }
    if (is_idle) return scen_idle();
    if (is_fan) return scen_fanout();
    if (is_rooms) return scen_rooms();
    if (is_cu) return scen_catchup();
    return scen_connect();
}
