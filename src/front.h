/* front — the listening socket of record and replay, in front of libmicrohttpd, so that
 * they also serve as an HTTPS forward proxy.
 *
 * libmicrohttpd 0.9.75 cannot answer CONNECT with 200 (its upgrade API demands 101), so
 * the front owns the listening socket instead. One thread runs an epoll loop (no thread
 * per connection): it accepts, peeks at the first bytes of each new connection and
 *   - hands anything that is not CONNECT to the daemon untouched (MHD_add_connection),
 *     so plain HTTP costs one peek per connection and nothing per request;
 *   - answers `CONNECT host:port` with 200 and, once the client's first byte shows TLS,
 *     gives its socket as it is to a second daemon that terminates TLS (libmicrohttpd's
 *     GnuTLS) with a leaf certificate from the CA, chosen by SNI, else the CONNECT host
 *     (front_tls_certificate()); the front remembers which host each socket carries
 *     (front_claim()), so decrypted requests take the same path as any other, and that
 *     daemon's writes go through the front's push function, which sends a response's head
 *     and body records in one send() (front_tls_attach(), front_tls_coalesce()). Without that
 *     daemon (a libmicrohttpd without TLS, or APISIM_TLS_RELAY=1) the front terminates TLS
 *     itself with OpenSSL and relays the plaintext to the daemon through a socketpair;
 *   - for a host in no_intercept: tunnels the bytes untouched to the host (record), or
 *     answers 502 (replay: no network);
 *   - answers a malformed CONNECT target 400, and closes only the connection whose tunnel
 *     carries something that is not TLS; a client that aborts the handshake (a pinned
 *     certificate, or a CA it does not trust) is logged with the host and the
 *     --no-intercept hint.
 *
 * Threads: front_claim(), front_release() and front_tls_certificate() are called from the
 * daemons' threads (a mutex guards what they share); front_tls_attach(),
 * front_tls_coalesce() and front_tls_flush() from the thread that serves that connection,
 * which alone touches its tls_ fields; everything else runs on the front's own thread
 * between front_start() and front_free().
 */
#ifndef APISIM_FRONT_H
#define APISIM_FRONT_H

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <stdatomic.h>

#include "ca.h"
#include "util.h"

struct front;

/* The largest TLS record front_tls_coalesce() holds back: a response head. */
#define FRONT_HELD_MAX 4096

/* What a connection handed to a daemon through a tunnel was for (its socket context,
 * from front_claim() to front_release()). */
struct front_origin {
    char scheme[8];         /* "https" */
    char authority[262];    /* from the CONNECT line: host, or host:port when not 443 */
    char host[256];         /* the host alone (no brackets) */
    int fd;                 /* the daemon's socket */
    int claimed;            /* a daemon connection took it */
    atomic_int tls_started; /* the TLS handshake reached the certificate */
    atomic_int requests;    /* requests the server read from it (set by server.c) */
    /* The TLS daemon's writes (front_tls_attach(); only its connection's thread uses these):
     * a record held back to go out with the next one, in one send. */
    int tls_attached;                       /* GnuTLS writes through front's push function */
    int tls_hold;                           /* hold the next record (front_tls_coalesce()) */
    size_t tls_nheld;                       /* bytes held */
    unsigned char tls_held[FRONT_HELD_MAX]; /* ciphertext waiting for the next record */
};

struct front_config {
    const char *ca_dir;              /* the CA's directory, opened (made) at the first CONNECT */
    const char *const *no_intercept; /* hosts tunnelled untouched, "" ends; may be NULL */
    int passthrough;                 /* 1: tunnel no_intercept hosts (record); 0: answer 502 */
    const char *const *connect_to;   /* "HOST:PORT:HOST2:PORT2" rules for those tunnels */
    int64_t idle_timeout_us;         /* a connection silent this long before its first
                                        request (or handshake) is closed */
};

/* Check one --connect-to rule: HOST:PORT:HOST2:PORT2, as curl's (HOST or PORT may be empty
 * for any; an IPv6 host in brackets). Returns 0 or -1 with err. */
int front_connect_to_check(const char *rule, char *err);

/* Check a CONNECT target: host:port with a valid host (or [IPv6]) and a port 1..65535.
 * Returns 0 with host (without brackets, at most host_len - 1 bytes) and *port, or -1. */
int front_parse_authority(const char *authority, char *host, size_t host_len, unsigned *port);

/* Start the loop on listen_fd (bound and listening; the front closes it at the end), for
 * daemon (started with MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC), and tls_daemon: the same
 * with MHD_USE_TLS and front_tls_certificate() as its certificate callback, which is given
 * the tunnels' sockets as they are (the daemon's threads terminate TLS). With tls_daemon
 * NULL (a libmicrohttpd without TLS) the front terminates TLS itself with OpenSSL and relays
 * plaintext through a socketpair. New connections are closed at once while *draining is
 * set. cfg is copied; the strings it points to must outlive the front. One front per
 * process (the certificate callback has no closure). Returns 0 and *out, or -1 with err. */
int front_start(struct front **out, const struct front_config *cfg, int listen_fd,
                struct MHD_Daemon *daemon, struct MHD_Daemon *tls_daemon, atomic_int *draining,
                char *err);

/* For a daemon's connection-start notification: the origin of the socket fd if the front
 * gave it from a tunnel, else NULL. Owned by the front until front_release(). */
struct front_origin *front_claim(struct front *f, int fd);

/* For the connection-closed notification: forget o, logging the --no-intercept hint when
 * its client left during the TLS handshake without a request. NULL does nothing. */
void front_release(struct front *f, struct front_origin *o);

/* The tls_daemon's certificate callback (gnutls_certificate_retrieve_function2): the leaf
 * for the SNI name, else for the tunnel's CONNECT host. */
int front_tls_certificate(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                          const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                          gnutls_pcert_st **pcert, unsigned int *pcert_length,
                          gnutls_privkey_t *pkey);

/* For the TLS daemon's connection-start notification: make session (the connection's,
 * before any I/O) write through o, so that front_tls_coalesce() can join two records in
 * one send. Reads are GnuTLS's own. */
void front_tls_attach(struct front_origin *o, gnutls_session_t session);

/* Just before a response is queued whose head libmicrohttpd sends and then, in the same
 * call, its body (a body from a buffer, not empty, on a request that is not HEAD, a status
 * that has a body): hold the head's TLS record back and send it with the body's first in
 * one send(), as plain HTTP sends head and body in one sendmsg(). Only that guarantee that
 * another record follows at once makes holding safe; front_tls_flush() is the backstop.
 * Does nothing for NULL or a connection not attached. */
void front_tls_coalesce(struct front_origin *o);

/* Send whatever is still held (the response was complete without another record, or the
 * connection ends); a record held is never lost or reordered. NULL does nothing. */
void front_tls_flush(struct front_origin *o);

/* Stop the loop and close the listening socket and every connection the front still holds
 * (tunnels the daemons serve stay theirs). front_claim() and front_release() keep working
 * until front_free(), so the daemons are stopped between the two. NULL does nothing. */
void front_stop(struct front *f);

/* front_stop() if not done, then free everything. Call it after the daemons have stopped
 * (their connection notifications call front_release()). NULL does nothing. */
void front_free(struct front *f);

#endif
