/*
 * tls: TLS (mbedTLS) as a socket type under net/sock.h: a TLS socket
 * decrypts what it reads into the loop's plaintext buffer and encrypts the
 * gathered output queue into records, so nothing above the transport knows a
 * connection is encrypted. TLS 1.2 (what mbedTLS 2.28 as packaged offers;
 * its 1.3 is not built), ECDHE with AES-GCM or ChaCha20-Poly1305, ALPN
 * http/1.1.
 *
 * A pl_tls_t is the server's TLS configuration: the certificate chain and
 * key files, read at start and again on pl_tls_reload (SIGHUP). Each loop
 * builds its own mbedTLS configuration from the current files and rebuilds
 * it at its next handshake after a reload; connections keep the
 * configuration they started with until they close, so a reload drops
 * nobody.
 *
 * Session tickets (RFC 5077): a client that reconnects with the ticket it
 * was given resumes its session without the key exchange and the
 * signature, about a twentieth of a full handshake's CPU. The ticket key is
 * the only mbedTLS state the loops share (a reconnect rarely lands on the
 * shard that issued its ticket): it lives in the pl_tls_t, behind mbedTLS's
 * own lock, with its own random generator, and mbedTLS replaces it every
 * lifetime. A ticket that does not decrypt (forged, expired, another
 * instance's) costs the client a full handshake, nothing else. Tickets
 * survive a certificate reload; they are per instance, and `ip_hash` sends a
 * reconnecting client back to the instance that issued its ticket.
 *
 * Cost: mbedTLS 2.28 as packaged keeps a 16 KiB input and a 16 KiB output
 * record buffer per connection (MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH is off),
 * about 33 KiB per TLS connection before anything else (docs/performance.md).
 *
 * Ownership: the server owns the pl_tls_t (pl_tls_new, pl_tls_free after the
 * loops ended); each loop's configuration belongs to the loop's socket
 * context and is freed with it; a connection's TLS state is freed with it.
 */
#ifndef PARLEY_NET_TLS_H
#define PARLEY_NET_TLS_H

#include <stddef.h>

#include "parley/net/sock.h"

/** The server's TLS configuration. */
typedef struct pl_tls pl_tls_t;

/** Load `cert_file` (PEM chain) and `key_file` (PEM key); issue session tickets valid for
 *  `ticket_lifetime` seconds (0: none). NULL with why in err on failure. */
pl_tls_t *pl_tls_new(const char *cert_file, const char *key_file, int ticket_lifetime, char *err,
                     size_t err_size);

/** Read the files again; new handshakes use them. On failure (-1, why in err) the pair in use
 *  stays. Main thread. */
int pl_tls_reload(pl_tls_t *t, char *err, size_t err_size);

/** Free (NULL is fine), after every loop has ended. */
void pl_tls_free(pl_tls_t *t);

/** The TLS socket type; its listener's argument is the pl_tls_t. */
extern const pl_sock_type_t pl_sock_tls;

#endif
