/*
 * tls: the TLS socket type; see the header. mbedTLS talks to the socket
 * through two memory callbacks: bio_recv reads from the ciphertext the
 * socket just read, bio_send appends records to the connection's output
 * buffer, which tls_write writes to the socket as far as it takes; the
 * transport calls it again once the socket drains.
 */
#include "parley/net/tls.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/base/buf.h"
#include "parley/base/log.h"

/* Ciphertext a connection may hold unwritten before it stops encrypting (about four full
 * records): the socket is full then, and the rest of the queue waits as plaintext. */
#define OUT_CAP (64 * 1024)

struct pl_tls {
    char *cert_file, *key_file;
    pthread_mutex_t mu;
    pl_buf_t cert, key; /**< the current PEM files (NUL-terminated), guarded by mu */
    atomic_uint gen;    /**< bumped by each successful (re)load */
    /* Session tickets (ticket_lifetime > 0): the key is shared by every loop's configuration;
     * mbedTLS locks `ticket` around each use and draws new keys from `tdrbg` under that lock,
     * so the generator is this context's alone. */
    int ticket_lifetime;
    mbedtls_ssl_ticket_context ticket;
    mbedtls_entropy_context tentropy;
    mbedtls_ctr_drbg_context tdrbg;
};

/* One loop's mbedTLS configuration, built from one generation of the files. Referenced by the
 * loop (while current) and by each connection that handshook with it. */
typedef struct {
    unsigned refs, gen;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    /* Plaintext of one record being gathered from several frames (tls_write). The loop's
     * connections share it: it is only used inside one call, on the loop's thread. */
    unsigned char stage[16384];
} tls_conf_t;

/* A connection's TLS state (pl_sock_t.tstate). */
typedef struct {
    mbedtls_ssl_context ssl;
    tls_conf_t *conf;
    const unsigned char *in; /**< ciphertext being fed to mbedTLS (valid inside tls_read) */
    size_t in_len;
    pl_buf_t out;   /**< records not yet written */
    size_t out_off; /**< written bytes at its start */
} tls_conn_t;

static const int ciphersuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};
/* Key exchange groups, cheapest first: mbedTLS picks the first of its own list that the
 * client offers, and its default list starts at secp521r1, whose ECDHE costs three times
 * X25519's (docs/performance.md, "TLS"). */
static const mbedtls_ecp_group_id groups[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};
static const char *alpn[] = {"http/1.1", NULL};

static void errstr(int rc, char *out, size_t n)
{
    char msg[160];
    mbedtls_strerror(rc, msg, sizeof msg);
    snprintf(out, n, "%s (-0x%04x)", msg, (unsigned)-rc);
}

/* ---- the files ---- */

static int read_file(const char *path, pl_buf_t *b, char *err, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, n, "cannot read %s: %m", path);
        return -1;
    }
    char chunk[4096];
    size_t got;
    pl_buf_reset(b);
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        pl_buf_add(b, chunk, got);
    fclose(f);
    if (!b->data || b->len > (1 << 20)) {
        snprintf(err, n, "%s is empty or over 1 MiB", path);
        return -1;
    }
    return 0;
}

/* Parse a certificate chain and key (PEM, NUL-terminated) and check they belong together. */
static int parse_pair(const pl_buf_t *cert, const pl_buf_t *key, mbedtls_x509_crt *crt,
                      mbedtls_pk_context *pk, const char *cert_file, const char *key_file,
                      char *err, size_t n)
{
    char why[200];
    int rc = mbedtls_x509_crt_parse(crt, (const unsigned char *)cert->data, cert->len + 1);
    if (rc != 0) {
        errstr(rc, why, sizeof why);
        snprintf(err, n, "%s: not a PEM certificate chain: %s", cert_file, why);
        return -1;
    }
    rc = mbedtls_pk_parse_key(pk, (const unsigned char *)key->data, key->len + 1, NULL, 0);
    if (rc != 0) {
        errstr(rc, why, sizeof why);
        snprintf(err, n, "%s: not a PEM private key: %s", key_file, why);
        return -1;
    }
    if ((rc = mbedtls_pk_check_pair(&crt->pk, pk)) != 0) {
        snprintf(err, n, "%s does not hold the key of %s's certificate", key_file, cert_file);
        return -1;
    }
    return 0;
}

/* Read both files and check them; on success they become the current pair. */
static int load(pl_tls_t *t, char *err, size_t n)
{
    pl_buf_t cert = {0}, key = {0};
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    mbedtls_x509_crt_init(&crt);
    mbedtls_pk_init(&pk);
    int rc =
        read_file(t->cert_file, &cert, err, n) != 0 || read_file(t->key_file, &key, err, n) != 0
            ? -1
            : parse_pair(&cert, &key, &crt, &pk, t->cert_file, t->key_file, err, n);
    mbedtls_x509_crt_free(&crt);
    mbedtls_pk_free(&pk);
    if (rc != 0) {
        pl_buf_free(&cert);
        pl_buf_free(&key);
        return -1;
    }
    pthread_mutex_lock(&t->mu);
    pl_buf_free(&t->cert);
    pl_buf_free(&t->key);
    t->cert = cert;
    t->key = key;
    atomic_fetch_add(&t->gen, 1);
    pthread_mutex_unlock(&t->mu);
    return 0;
}

pl_tls_t *pl_tls_new(const char *cert_file, const char *key_file, int ticket_lifetime, char *err,
                     size_t n)
{
    pl_tls_t *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, n, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    atomic_init(&t->gen, 0);
    mbedtls_ssl_ticket_init(&t->ticket);
    mbedtls_entropy_init(&t->tentropy);
    mbedtls_ctr_drbg_init(&t->tdrbg);
    if (!(t->cert_file = strdup(cert_file)) || !(t->key_file = strdup(key_file))) {
        snprintf(err, n, "out of memory");
        pl_tls_free(t);
        return NULL;
    }
    if (load(t, err, n) != 0) {
        pl_tls_free(t);
        return NULL;
    }
    if (ticket_lifetime > 0) {
        static const unsigned char pers[] = "parley-tls-ticket";
        char why[200];
        int rc = mbedtls_ctr_drbg_seed(&t->tdrbg, mbedtls_entropy_func, &t->tentropy, pers,
                                       sizeof pers - 1);
        if (rc == 0)
            rc = mbedtls_ssl_ticket_setup(&t->ticket, mbedtls_ctr_drbg_random, &t->tdrbg,
                                          MBEDTLS_CIPHER_AES_256_GCM, (uint32_t)ticket_lifetime);
        if (rc != 0) {
            errstr(rc, why, sizeof why);
            snprintf(err, n, "session tickets: %s", why);
            pl_tls_free(t);
            return NULL;
        }
        t->ticket_lifetime = ticket_lifetime;
    }
    return t;
}

int pl_tls_reload(pl_tls_t *t, char *err, size_t n)
{
    return load(t, err, n);
}

void pl_tls_free(pl_tls_t *t)
{
    if (!t) return;
    pl_buf_free(&t->cert);
    pl_buf_free(&t->key);
    free(t->cert_file);
    free(t->key_file);
    pthread_mutex_destroy(&t->mu);
    mbedtls_ssl_ticket_free(&t->ticket);
    mbedtls_ctr_drbg_free(&t->tdrbg);
    mbedtls_entropy_free(&t->tentropy);
    free(t);
}

/* ---- a loop's configuration ---- */

static void conf_unref(tls_conf_t *c)
{
    if (!c || --c->refs) return;
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_x509_crt_free(&c->crt);
    mbedtls_pk_free(&c->pk);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    free(c);
}

/* A configuration from the current files, on the loop that asks. NULL (logged) on failure. */
static tls_conf_t *conf_new(pl_tls_t *t)
{
    tls_conf_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->refs = 1;
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_x509_crt_init(&c->crt);
    mbedtls_pk_init(&c->pk);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    char err[256] = "";
    pthread_mutex_lock(&t->mu);
    c->gen = atomic_load(&t->gen);
    int rc =
        parse_pair(&t->cert, &t->key, &c->crt, &c->pk, t->cert_file, t->key_file, err, sizeof err);
    pthread_mutex_unlock(&t->mu);
    static const unsigned char pers[] = "parley-tls";
    if (rc == 0 && ((rc = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy, pers,
                                                sizeof pers - 1)) != 0 ||
                    (rc = mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_SERVER,
                                                      MBEDTLS_SSL_TRANSPORT_STREAM,
                                                      MBEDTLS_SSL_PRESET_DEFAULT)) != 0 ||
                    (rc = mbedtls_ssl_conf_own_cert(&c->conf, &c->crt, &c->pk)) != 0 ||
                    (rc = mbedtls_ssl_conf_alpn_protocols(&c->conf, alpn)) != 0))
        errstr(rc, err, sizeof err);
    if (rc != 0) {
        pl_error("TLS: a loop could not build its configuration: %s", err);
        conf_unref(c);
        return NULL;
    }
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
    /* TLS 1.2 only: nothing older (1.0 and 1.1 are deprecated, RFC 8996). */
    mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(&c->conf, ciphersuites);
    mbedtls_ssl_conf_curves(&c->conf, groups);
    mbedtls_ssl_conf_renegotiation(&c->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    if (t->ticket_lifetime > 0)
        mbedtls_ssl_conf_session_tickets_cb(&c->conf, mbedtls_ssl_ticket_write,
                                            mbedtls_ssl_ticket_parse, &t->ticket);
    return c;
}

/* ---- mbedTLS' I/O ---- */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    tls_conn_t *t = ctx;
    pl_buf_add(&t->out, buf, len);
    return t->out.data ? (int)len : MBEDTLS_ERR_SSL_ALLOC_FAILED;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    tls_conn_t *t = ctx;
    if (!t->in_len) return MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = len < t->in_len ? len : t->in_len;
    memcpy(buf, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

/* ---- the socket type ---- */

static int tls_accept(pl_sock_t *s, void *arg, void **loop_state)
{
    pl_tls_t *cfg = arg;
    tls_conf_t *cur = *loop_state;
    if (!cur || cur->gen != atomic_load(&cfg->gen)) {
        /* First handshake on this loop, or the files were reloaded: a new configuration; the
         * old one lives on in the connections that use it. */
        tls_conf_t *c = conf_new(cfg);
        if (!c) return UV_EINVAL;
        conf_unref(cur);
        *loop_state = cur = c;
    }
    tls_conn_t *t = calloc(1, sizeof *t);
    if (!t) return UV_ENOMEM;
    mbedtls_ssl_init(&t->ssl);
    int rc = mbedtls_ssl_setup(&t->ssl, &cur->conf);
    if (rc != 0) {
        mbedtls_ssl_free(&t->ssl);
        free(t);
        return UV_ENOMEM;
    }
    mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
    t->conf = cur;
    cur->refs++;
    s->tstate = t;
    return 0;
}

static void tls_loop_free(void *loop_state)
{
    conf_unref(loop_state);
}

/* Not a TLS client, or not one we talk to: logged at debug (it costs nothing else). */
static void tls_fail(pl_sock_t *s, const char *when, int rc)
{
    if (pl_log_enabled(PL_LOG_DEBUG)) {
        char why[200], peer[64];
        errstr(rc, why, sizeof why);
        pl_debug("conn from %s: TLS %s failed: %s", pl_sock_peer_str(s, peer, sizeof peer), when,
                 why);
    }
    pl_sock_abort(s, "TLS error");
}

static void tls_read(pl_sock_t *s, char *p, size_t n)
{
    tls_conn_t *t = s->tstate;
    t->in = (const unsigned char *)p;
    t->in_len = n;
    if (!(s->flags & PL_SOCK_OPENED)) {
        int rc = mbedtls_ssl_handshake(&t->ssl);
        if (t->out.len > t->out_off) pl_sock__dirty(s); /* the handshake's records */
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) return;
        if (rc != 0) {
            tls_fail(s, "handshake", rc);
            return;
        }
        pl_sock__opened(s);
    }
    /* Every record the read completed, one at a time, into the loop's plaintext buffer. */
    while (pl_sock_open(s)) {
        int rc = mbedtls_ssl_read(&t->ssl, (unsigned char *)s->ctx->pbuf, sizeof s->ctx->pbuf);
        if (rc > 0) {
            pl_sock__deliver(s, s->ctx->pbuf, (size_t)rc);
            continue;
        }
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) break;
        if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
            pl_sock_close(s, 0, "peer closed");
        else
            tls_fail(s, "read", rc);
        break;
    }
    if (t->out.len > t->out_off) pl_sock__dirty(s); /* alerts */
}

/*
 * Encrypt queued plaintext. Frames are small (a chat message is a few hundred bytes) and a
 * fan-out burst queues several per connection: they are gathered into records of up to the
 * largest payload, so that the burst costs one record's framing, nonce, tag and cipher set-up
 * rather than one per frame. A frame at least a record long goes in without a copy.
 */
static ssize_t tls_write(pl_sock_t *s, const uv_buf_t *iov, unsigned n, int *full)
{
    tls_conn_t *t = s->tstate;
    size_t taken = 0, total = 0;
    for (unsigned i = 0; i < n; i++)
        total += iov[i].len;
    int most = mbedtls_ssl_get_max_out_record_payload(&t->ssl);
    size_t cap =
        most > 0 && (size_t)most < sizeof t->conf->stage ? (size_t)most : sizeof t->conf->stage;
    unsigned i = 0;
    size_t off = 0; /* into iov[i] */
    *full = 0;
    while (taken < total && t->out.len - t->out_off < OUT_CAP) {
        while (off == iov[i].len)
            i++, off = 0;
        const unsigned char *p = (const unsigned char *)iov[i].base + off;
        size_t len = iov[i].len - off;
        if (len < cap) { /* gather what fits behind it */
            unsigned char *st = t->conf->stage;
            size_t k = 0;
            for (unsigned j = i, o = (unsigned)off; j < n && k < cap; j++, o = 0) {
                size_t c = iov[j].len - o < cap - k ? iov[j].len - o : cap - k;
                memcpy(st + k, iov[j].base + o, c);
                k += c;
            }
            p = st;
            len = k;
        }
        int rc = mbedtls_ssl_write(&t->ssl, p, len);
        if (rc < 0) {
            if (rc == MBEDTLS_ERR_SSL_WANT_WRITE || rc == MBEDTLS_ERR_SSL_WANT_READ) break;
            tls_fail(s, "write", rc);
            return UV_EPROTO;
        }
        taken += (size_t)rc;
        for (size_t left = (size_t)rc; left;) { /* step over what the record took */
            size_t c = iov[i].len - off < left ? iov[i].len - off : left;
            off += c;
            left -= c;
            if (off == iov[i].len && left) i++, off = 0;
        }
    }
    /* What is encrypted goes to the socket now, as much as it takes. */
    if (t->out.len > t->out_off) {
        uv_buf_t b = uv_buf_init(t->out.data + t->out_off, (unsigned)(t->out.len - t->out_off));
        ssize_t r = pl_sock__write_fd(s, &b, 1);
        if (r < 0) return r;
        t->out_off += (size_t)r;
        if (t->out_off == t->out.len) {
            pl_buf_reset(&t->out);
            t->out_off = 0;
        }
    }
    *full = t->out.len > t->out_off || taken < total;
    return (ssize_t)taken;
}

static int tls_pending(const pl_sock_t *s)
{
    const tls_conn_t *t = s->tstate;
    return t && t->out.len > t->out_off;
}

static void tls_shutdown(pl_sock_t *s)
{
    tls_conn_t *t = s->tstate;
    if (s->flags & PL_SOCK_OPENED) mbedtls_ssl_close_notify(&t->ssl);
}

static void tls_free(pl_sock_t *s)
{
    tls_conn_t *t = s->tstate;
    if (!t) return;
    mbedtls_ssl_free(&t->ssl);
    conf_unref(t->conf);
    pl_buf_free(&t->out);
    free(t);
    s->tstate = NULL;
}

const pl_sock_type_t pl_sock_tls = {
    .name = "tls",
    .secure = 1,
    .accept = tls_accept,
    .loop_free = tls_loop_free,
    .read = tls_read,
    .write = tls_write,
    .pending = tls_pending,
    .shutdown = tls_shutdown,
    .free = tls_free,
};
