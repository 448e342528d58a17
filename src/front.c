/* accept4(): the accepted socket is nonblocking in one call, not three. */
#define _GNU_SOURCE
#include "front.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"
#include "resolve.h"

#define FRONT_HEAD_MAX 8192    /* a CONNECT request head beyond this is refused (431) */
#define FRONT_BUF (32 * 1024)  /* relay buffer, each way */
#define FRONT_EVENTS 128       /* epoll events taken per wait */
#define FRONT_SWEEP_MS 1000    /* how often idle connections are looked for */
#define FRONT_MAX_PENDING 4096 /* tunnels the daemons hold at once */
/* Hosts whose leaf GnuTLS holds: what the certificate callback returns must outlive every
 * session using it, and GnuTLS never says when that ends, so these are kept for the run. */
#define FRONT_TLS_HOSTS 4096
#define FRONT_CONNECT_PREFIX "CONNECT "
/* Threads looking up --no-intercept hosts at once (a lookup the DNS server leaves
 * unanswered holds one until the system gives up on it). */
#define FRONT_LOOKUP_THREADS 4

/* A leaf in GnuTLS's form, for the daemon that terminates TLS itself. GnuTLS does not take
 * what the certificate callback returns: it lives until the front is freed. */
struct tls_cred {
    char *host;
    gnutls_pcert_st pcert;
};

/* The one front of this process, for the GnuTLS certificate callback (it has no closure). */
static struct front *the_front;

enum conn_state {
    CS_PEEK,      /* waiting for the first bytes: CONNECT or not */
    CS_HEAD,      /* reading the CONNECT request head */
    CS_RESOLVE,   /* no-intercept: the host is being looked up (off this thread) */
    CS_DIAL,      /* no-intercept: connecting to the host */
    CS_TLSWAIT,   /* 200 sent: waiting for the client's first TLS bytes */
    CS_HANDSHAKE, /* TLS handshake with the client (the relay) */
    CS_RELAY,     /* relaying both ways */
};

/* One side of a connection as epoll sees it. */
struct side {
    struct conn *c;
    int fd;
    unsigned interest; /* the events registered now */
    int eof;           /* read side ended */
    int shut;          /* write side shut down */
    int rd_ok;         /* may have something to read (epoll said so, or not known) */
    int wr_blocked;    /* the last write would block: wait for EPOLLOUT */
    int need_in;       /* TLS: a write needs to read first */
    int need_out;      /* TLS: a read needs to write first */
};

struct relay_buf {
    char *p;
    size_t len;
};

struct conn {
    enum conn_state state;
    struct side a; /* the client */
    struct side b; /* the daemon's socketpair end, or the host (no-intercept) */
    SSL *ssl;      /* on a, when intercepting */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int64_t deadline_us; /* monotonic; 0 once relaying */
    uint64_t serial;     /* this front's number for it: a lookup's answer names it */
    char authority[262];
    char host[256];
    char dial_host[256]; /* no-intercept: where it goes (--connect-to applied) */
    unsigned dial_port;
    int cert_chosen; /* the ClientHello was parsed: a later failure is the client's refusal */
    struct relay_buf up, down; /* a -> b, b -> a */
    int dead;
    struct conn *prev, *next;
};

struct front {
    struct front_config cfg;
    struct ca *ca; /* opened at the first CONNECT that needs it */
    int ca_failed; /* opening it failed (logged once) */
    int listen_fd, epfd, wake_fd;
    struct side listen_side, wake_side;
    struct MHD_Daemon *daemon;
    atomic_int *draining;
    SSL_CTX *ctx;
    pthread_t thread;
    int running;
    atomic_int stop;
    struct conn *conns;        /* every live connection */
    struct conn *graveyard;    /* closed during this batch of events, freed after it */
    struct resolver *resolver; /* --no-intercept hosts' lookups; made at the first */
    uint64_t next_serial;
    struct MHD_Daemon *tls_daemon;                /* terminates TLS itself (GnuTLS); NULL: relay */
    pthread_mutex_t mu;                           /* the registry and the TLS credentials */
    struct front_origin *live[FRONT_MAX_PENDING]; /* tunnels the daemons hold */
    size_t nlive;
    struct tls_cred tls[FRONT_TLS_HOSTS]; /* GnuTLS forms of the leaves, kept for the run */
    size_t ntls;
    gnutls_privkey_t tls_key; /* the leaves' key (the CA's leaf key), GnuTLS form */
};

/* ---- parsing ---------------------------------------------------------------------------- */

int front_parse_authority(const char *authority, char *host, size_t host_len, unsigned *port)
{
    const char *colon;
    const char *h = authority;
    size_t hl;
    if (authority[0] == '[') {
        const char *close = strchr(authority, ']');
        if (!close || close[1] != ':')
            return -1;
        h = authority + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(authority, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - authority);
        if (memchr(authority, ':', hl))
            return -1; /* an IPv6 address needs brackets */
    }
    if (hl == 0 || hl >= host_len)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end || errno || p < 1 || p > 65535)
        return -1;
    if (!ca_host_valid(host) || strchr(host, '*'))
        return -1;
    *port = (unsigned)p;
    return 0;
}

/* Split "HOST:PORT:HOST2:PORT2" (hosts maybe in brackets, maybe empty). Returns 0 or -1. */
static int split_rule(const char *rule, char parts[4][256])
{
    const char *p = rule;
    for (int i = 0; i < 4; i++) {
        size_t n;
        int is_host = i % 2 == 0;
        if (is_host && *p == '[') {
            const char *close = strchr(p, ']');
            if (!close)
                return -1;
            n = (size_t)(close - p - 1);
            if (n >= 256)
                return -1;
            memcpy(parts[i], p + 1, n);
            parts[i][n] = '\0';
            p = close + 1;
        } else {
            n = strcspn(p, ":");
            if (n >= 256)
                return -1;
            memcpy(parts[i], p, n);
            parts[i][n] = '\0';
            p += n;
        }
        if (i < 3) {
            if (*p != ':')
                return -1;
            p++;
        } else if (*p) {
            return -1;
        }
    }
    return 0;
}

static int port_ok(const char *s, int empty_ok)
{
    if (!*s)
        return empty_ok;
    char *end;
    long p = strtol(s, &end, 10);
    return s[0] >= '0' && s[0] <= '9' && !*end && p >= 1 && p <= 65535;
}

int front_connect_to_check(const char *rule, char *err)
{
    char parts[4][256];
    if (split_rule(rule, parts) < 0 || (parts[0][0] && !ca_host_valid(parts[0])) ||
        !port_ok(parts[1], 1) || (parts[2][0] && !ca_host_valid(parts[2])) ||
        !port_ok(parts[3], 1)) {
        snprintf(err, APISIM_ERR_LEN,
                 "--connect-to \"%.200s\": expected HOST:PORT:CONNECT_HOST:CONNECT_PORT, e.g. "
                 "api.example.test:443:127.0.0.1:8443 (as curl's --connect-to)",
                 rule);
        return -1;
    }
    return 0;
}

/* Where a tunnel to host:port really goes under the --connect-to rules. */
static void connect_target(const struct front *f, const char *host, unsigned port, char *out_host,
                           size_t n, unsigned *out_port)
{
    snprintf(out_host, n, "%s", host);
    *out_port = port;
    for (const char *const *r = f->cfg.connect_to; r && *r; r++) {
        char parts[4][256];
        if (split_rule(*r, parts) < 0)
            continue;
        if ((parts[0][0] && strcasecmp(parts[0], host) != 0) ||
            (parts[1][0] && (unsigned)atol(parts[1]) != port))
            continue;
        if (parts[2][0])
            snprintf(out_host, n, "%s", parts[2]);
        if (parts[3][0])
            *out_port = (unsigned)atol(parts[3]);
        return;
    }
}

static int no_intercept(const struct front *f, const char *host)
{
    for (const char *const *h = f->cfg.no_intercept; h && *h; h++)
        if (strcasecmp(*h, host) == 0)
            return 1;
    return 0;
}

/* ---- connections ------------------------------------------------------------------------ */

static int ep_set(struct front *f, struct side *s, unsigned events)
{
    if (s->fd < 0 || s->interest == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = s};
    int op = s->interest == (unsigned)-1 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(f->epfd, op, s->fd, &ev) < 0)
        return -1;
    s->interest = events;
    return 0;
}

static void conn_close(struct front *f, struct conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    if (c->prev)
        c->prev->next = c->next;
    else
        f->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->ssl && c->state == CS_RELAY) {
        SSL_set_quiet_shutdown(c->ssl, 0);
        SSL_shutdown(c->ssl); /* best effort close_notify */
    }
    SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->a.fd >= 0)
        close(c->a.fd); /* closing drops it from the epoll set */
    if (c->b.fd >= 0)
        close(c->b.fd);
    c->a.fd = c->b.fd = -1;
    c->next = f->graveyard;
    f->graveyard = c;
}

static void conn_free(struct conn *c)
{
    free(c->up.p);
    free(c->down.p);
    free(c);
}

/* Answer the client with a small HTTP error and close. */
static void answer_close(struct front *f, struct conn *c, int status, const char *reason,
                         const char *msg)
{
    char body[600], head[256];
    struct buf esc = {.max = 512};
    for (const char *p = msg; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(&esc, "\\%c", *p);
        else if ((unsigned char)*p >= 0x20)
            buf_append(&esc, p, 1);
    }
    int bl = snprintf(body, sizeof body, "{\"error\":\"%s\"}", esc.p ? esc.p : "");
    buf_free(&esc);
    if (bl < 0 || bl >= (int)sizeof body)
        bl = (int)strlen(body);
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: "
                      "%d\r\nConnection: close\r\n\r\n",
                      status, reason, bl);
    /* A fresh socket takes a few hundred bytes without blocking. */
    ssize_t w = send(c->a.fd, head, (size_t)hl, MSG_NOSIGNAL);
    if (w == hl)
        w = send(c->a.fd, body, (size_t)bl, MSG_NOSIGNAL);
    (void)w;
    shutdown(c->a.fd, SHUT_WR);
    conn_close(f, c);
}

static int relay_bufs(struct conn *c)
{
    if (!c->up.p && !(c->up.p = malloc(FRONT_BUF)))
        return -1;
    if (!c->down.p && !(c->down.p = malloc(FRONT_BUF)))
        return -1;
    return 0;
}

/* Remember that socket fd, about to be given to a daemon, carries c's host. Returns the
 * registered origin, or NULL (no memory, or too many tunnels). */
static struct front_origin *register_origin(struct front *f, struct conn *c, int fd)
{
    struct front_origin *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    snprintf(o->scheme, sizeof o->scheme, "https");
    snprintf(o->authority, sizeof o->authority, "%s", c->authority);
    snprintf(o->host, sizeof o->host, "%s", c->host);
    o->fd = fd;
    pthread_mutex_lock(&f->mu);
    int full = f->nlive == FRONT_MAX_PENDING;
    if (!full)
        f->live[f->nlive++] = o;
    pthread_mutex_unlock(&f->mu);
    if (full) {
        free(o);
        return NULL;
    }
    return o;
}

/* Forget o (without a word: the daemon never had it). */
static void drop_origin(struct front *f, struct front_origin *o)
{
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->nlive; i++)
        if (f->live[i] == o) {
            f->live[i] = f->live[--f->nlive];
            break;
        }
    pthread_mutex_unlock(&f->mu);
    free(o);
}

/* The plaintext end of a tunnel goes to the daemon, remembered as carrying c's host. */
static int give_to_daemon(struct front *f, struct conn *c)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    struct front_origin *o = register_origin(f, c, sv[1]);
    if (!o) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    o->tls_started = 1; /* the relay did the handshake */
    atomic_store(&o->requests, 1);
    if (MHD_add_connection(f->daemon, sv[1], (struct sockaddr *)&c->addr, c->addrlen) != MHD_YES) {
        drop_origin(f, o); /* MHD closed sv[1] */
        close(sv[0]);
        return -1;
    }
    c->b.fd = sv[0];
    c->b.interest = (unsigned)-1;
    return 0;
}

/* The client's TLS goes straight to the daemon that terminates it (GnuTLS, in the daemon's
 * threads): no relay, no copy, no extra thread per request. */
static void give_to_tls_daemon(struct front *f, struct conn *c)
{
    int fd = c->a.fd;
    struct front_origin *o = register_origin(f, c, fd);
    if (!o) {
        conn_close(f, c);
        return;
    }
    if (c->a.interest != (unsigned)-1)
        epoll_ctl(f->epfd, EPOLL_CTL_DEL, fd, NULL);
    c->a.fd = -1;
    if (MHD_add_connection(f->tls_daemon, fd, (struct sockaddr *)&c->addr, c->addrlen) != MHD_YES) {
        log_msg(LOG_WARN, "CONNECT %s: the server refused the tunnel: %s", c->authority,
                strerror(errno));
        drop_origin(f, o);
    }
    conn_close(f, c);
}

struct front_origin *front_claim(struct front *f, int fd)
{
    struct front_origin *o = NULL;
    if (!f)
        return NULL;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->nlive; i++)
        if (f->live[i]->fd == fd && !f->live[i]->claimed)
            o = f->live[i];
    if (o)
        o->claimed = 1;
    pthread_mutex_unlock(&f->mu);
    return o;
}

void front_release(struct front *f, struct front_origin *o)
{
    if (!f || !o)
        return;
    if (o->tls_started && atomic_load(&o->requests) == 0)
        log_msg(LOG_WARN,
                "CONNECT %s: the client closed the tunnel during or right after the TLS "
                "handshake, without a request: it does not trust apisim's CA or pins the "
                "certificate of %s; trust the CA (`apisim ca` prints it) or add "
                "--no-intercept %s to tunnel it untouched",
                o->authority, o->host, o->host);
    drop_origin(f, o);
}

/* The GnuTLS form of host's leaf, made once. Returns it (owned by the front), or NULL. */
static gnutls_pcert_st *tls_cred_for(struct front *f, const char *host)
{
    gnutls_pcert_st *out = NULL;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    unsigned char *der = NULL;
    char err[APISIM_ERR_LEN];
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->ntls; i++)
        if (strcasecmp(f->tls[i].host, host) == 0) {
            out = &f->tls[i].pcert;
            goto out;
        }
    if (f->ntls == FRONT_TLS_HOSTS) {
        log_msg(LOG_ERROR, "CONNECT to %s: more than %d hosts in one run; restart apisim", host,
                FRONT_TLS_HOSTS);
        goto out;
    }
    if (ca_leaf(f->ca, host, &x, &k, err) < 0) {
        log_msg(LOG_ERROR, "CONNECT to %s: %s", host, err);
        goto out;
    }
    if (!f->tls_key) {
        /* One key for every leaf: GnuTLS reads it once, as PKCS#8 PEM. */
        BIO *b = BIO_new(BIO_s_mem());
        char *pem = NULL;
        long n = b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1
                     ? BIO_get_mem_data(b, &pem)
                     : 0;
        gnutls_datum_t d = {(unsigned char *)pem, (unsigned)n};
        if (n <= 0 || gnutls_privkey_init(&f->tls_key) < 0 ||
            gnutls_privkey_import_x509_raw(f->tls_key, &d, GNUTLS_X509_FMT_PEM, NULL, 0) < 0) {
            log_msg(LOG_ERROR, "CONNECT to %s: GnuTLS cannot read the leaf key", host);
            if (f->tls_key)
                gnutls_privkey_deinit(f->tls_key);
            f->tls_key = NULL;
            BIO_free(b);
            goto out;
        }
        BIO_free(b);
    }
    int n = i2d_X509(x, &der);
    gnutls_datum_t d = {der, n > 0 ? (unsigned)n : 0};
    struct tls_cred *c = &f->tls[f->ntls];
    if (n <= 0 || !(c->host = strdup(host)) ||
        gnutls_pcert_import_x509_raw(&c->pcert, &d, GNUTLS_X509_FMT_DER, 0) < 0) {
        log_msg(LOG_ERROR, "CONNECT to %s: GnuTLS cannot read the leaf certificate", host);
        free(c->host);
        c->host = NULL;
        goto out;
    }
    f->ntls++;
    out = &c->pcert;
out:
    pthread_mutex_unlock(&f->mu);
    OPENSSL_free(der);
    X509_free(x);
    EVP_PKEY_free(k);
    return out;
}

int front_tls_certificate(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                          const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                          gnutls_pcert_st **pcert, unsigned int *pcert_length,
                          gnutls_privkey_t *pkey)
{
    (void)req_ca_dn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    struct front *f = the_front;
    char sni[256], host[256] = "";
    size_t len = sizeof sni - 1;
    unsigned type = 0;
    if (!f)
        return -1;
    if (gnutls_server_name_get(session, sni, &len, &type, 0) == 0 && type == GNUTLS_NAME_DNS &&
        len < sizeof sni) {
        sni[len] = '\0';
        if (ca_host_valid(sni))
            snprintf(host, sizeof host, "%s", sni);
    }
    /* The tunnel it came through: its CONNECT host, when there is no usable SNI. */
    int fd = gnutls_transport_get_int(session);
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->nlive; i++)
        if (f->live[i]->fd == fd) {
            f->live[i]->tls_started = 1;
            if (!host[0])
                snprintf(host, sizeof host, "%s", f->live[i]->host);
        }
    pthread_mutex_unlock(&f->mu);
    gnutls_pcert_st *c = host[0] ? tls_cred_for(f, host) : NULL;
    if (!c || !f->tls_key)
        return -1;
    *pcert = c;
    *pcert_length = 1;
    *pkey = f->tls_key;
    return 0;
}

/* ---- the TLS daemon's writes --------------------------------------------------------------
 * libmicrohttpd writes a response's head and body with two gnutls_record_send() calls (its
 * TLS path has no writev), so GnuTLS makes two records and two send()s where plain HTTP
 * makes one sendmsg(). The push function below holds the head's record, when armed, and
 * sends it with the next record in one sendmsg(). */

#define FRONT_PUSH_IOV 16 /* iovecs per sendmsg(): the held record and GnuTLS's */

/* Send the held bytes, then as much of iov as the socket takes. Returns the bytes of iov
 * sent, or -1 with errno (EAGAIN while held bytes are still waiting: they go first). */
static ssize_t push_held_then(struct front_origin *o, const giovec_t *iov, int iovcnt)
{
    struct iovec v[FRONT_PUSH_IOV];
    int n = 0;
    if (o->tls_nheld)
        v[n++] = (struct iovec){o->tls_held, o->tls_nheld};
    for (int i = 0; i < iovcnt && n < FRONT_PUSH_IOV; i++)
        v[n++] = (struct iovec){iov[i].iov_base, iov[i].iov_len};
    struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)n};
    ssize_t r = sendmsg(o->fd, &m, MSG_NOSIGNAL);
    if (r < 0)
        return -1;
    size_t held = o->tls_nheld;
    if ((size_t)r < held) {
        memmove(o->tls_held, o->tls_held + r, held - (size_t)r);
        o->tls_nheld = held - (size_t)r;
        errno = EAGAIN;
        return -1;
    }
    o->tls_nheld = 0;
    r -= (ssize_t)held;
    if (r == 0 && iovcnt > 0) {
        errno = EAGAIN; /* only the held bytes went: GnuTLS tries its own again */
        return -1;
    }
    return r;
}

/* GnuTLS's vectored push function for an attached connection (transport pointer: o). */
static ssize_t tls_push(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
    struct front_origin *o = ptr;
    if (o->tls_hold) {
        o->tls_hold = 0;
        size_t total = 0;
        for (int i = 0; i < iovcnt; i++)
            total += iov[i].iov_len;
        if (o->tls_nheld == 0 && total <= sizeof o->tls_held) {
            for (int i = 0; i < iovcnt; i++) {
                memcpy(o->tls_held + o->tls_nheld, iov[i].iov_base, iov[i].iov_len);
                o->tls_nheld += iov[i].iov_len;
            }
            return (ssize_t)total;
        }
    }
    return push_held_then(o, iov, iovcnt);
}

void front_tls_attach(struct front_origin *o, gnutls_session_t session)
{
    if (!o || !session)
        return;
    /* Reads keep the socket (GnuTLS's own recv(); front_tls_certificate() finds the tunnel
     * by it); writes go through tls_push() with o. */
    gnutls_transport_set_ptr2(session, (gnutls_transport_ptr_t)(intptr_t)o->fd, o);
    gnutls_transport_set_vec_push_function(session, tls_push);
    o->tls_attached = 1;
}

void front_tls_coalesce(struct front_origin *o)
{
    if (o && o->tls_attached)
        o->tls_hold = 1;
}

void front_tls_flush(struct front_origin *o)
{
    if (!o || !o->tls_attached)
        return;
    o->tls_hold = 0;
    if (o->tls_nheld)
        push_held_then(o, NULL, 0);
}

/* ---- relaying --------------------------------------------------------------------------- */

enum { IO_AGAIN_READ = -1, IO_AGAIN_WRITE = -2, IO_ERROR = -3 };

/* What an SSL_read_ex or SSL_write_ex that returned r (not 1) means: wait for the socket to
 * be readable or writable, a failure, or the peer's close_notify (closed: 0 for a read, the
 * end; IO_ERROR for a write, nothing more can go). */
static ssize_t ssl_failed(SSL *ssl, int r, ssize_t closed)
{
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return IO_AGAIN_READ;
    case SSL_ERROR_WANT_WRITE:
        return IO_AGAIN_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return closed;
    default:
        return IO_ERROR;
    }
}

static ssize_t io_read(struct conn *c, struct side *s, char *p, size_t n)
{
    if (s == &c->a && c->ssl) {
        size_t got = 0;
        ERR_clear_error();
        int r = SSL_read_ex(c->ssl, p, n, &got);
        return r == 1 ? (ssize_t)got : ssl_failed(c->ssl, r, 0);
    }
    ssize_t r = recv(s->fd, p, n, 0);
    if (r >= 0)
        return r;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? IO_AGAIN_READ : IO_ERROR;
}

static ssize_t io_write(struct conn *c, struct side *s, const char *p, size_t n)
{
    if (s == &c->a && c->ssl) {
        size_t put = 0;
        ERR_clear_error();
        int r = SSL_write_ex(c->ssl, p, n, &put);
        return r == 1 ? (ssize_t)put : ssl_failed(c->ssl, r, IO_ERROR);
    }
    ssize_t r = send(s->fd, p, n, MSG_NOSIGNAL);
    if (r >= 0)
        return r;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? IO_AGAIN_WRITE : IO_ERROR;
}

/* Move bytes from one side to the other, trying only what can progress: a side is read
 * when epoll said it is readable (or nothing said it is not), written unless a write
 * blocked. Every failed attempt is a system call, and a request through a tunnel should
 * cost few of them. Returns 1 on progress, 0 on none, -1 on error. */
static int move(struct conn *c, struct side *from, struct side *to, struct relay_buf *b)
{
    int progress = 0;
    if (!from->eof && from->rd_ok && b->len < FRONT_BUF) {
        size_t room = FRONT_BUF - b->len;
        ssize_t r = io_read(c, from, b->p + b->len, room);
        if (r > 0) {
            b->len += (size_t)r;
            progress = 1;
            /* Short read: drained (epoll says when more comes); TLS: one record at a time,
             * more may wait inside the library. */
            if (from == &c->a && c->ssl)
                from->rd_ok = SSL_has_pending(c->ssl);
            else if ((size_t)r < room)
                from->rd_ok = 0;
        } else if (r == 0) {
            from->eof = 1;
            progress = 1;
        } else if (r == IO_ERROR) {
            return -1;
        } else {
            from->rd_ok = 0;
            if (r == IO_AGAIN_WRITE)
                from->need_out = 1; /* TLS wants to write before it can read */
        }
    }
    if (b->len > 0 && !to->wr_blocked) {
        ssize_t w = io_write(c, to, b->p, b->len);
        if (w > 0) {
            if ((size_t)w < b->len)
                to->wr_blocked = 1;
            memmove(b->p, b->p + w, b->len - (size_t)w);
            b->len -= (size_t)w;
            progress = 1;
        } else if (w == IO_ERROR) {
            return -1;
        } else {
            to->wr_blocked = 1;
            if (w == IO_AGAIN_READ)
                to->need_in = 1; /* TLS wants to read before it can write */
        }
    }
    if (from->eof && b->len == 0 && !to->shut) {
        if (!(to == &c->a && c->ssl))
            shutdown(to->fd, SHUT_WR);
        to->shut = 1;
        progress = 1;
    }
    return progress;
}

/* The events side s waits for: readable while its outgoing buffer has room, writable while
 * a write is blocked. Stable in the common case, so epoll_ctl is rarely called. */
static unsigned interest_of(const struct side *s, const struct relay_buf *out)
{
    unsigned ev = 0;
    if ((!s->eof && out->len < FRONT_BUF) || s->need_in)
        ev |= EPOLLIN;
    if (s->wr_blocked || s->need_out)
        ev |= EPOLLOUT;
    return ev;
}

static void pump(struct front *f, struct conn *c)
{
    for (;;) {
        int p1 = move(c, &c->a, &c->b, &c->up);
        int p2 = p1 < 0 ? -1 : move(c, &c->b, &c->a, &c->down);
        if (p1 < 0 || p2 < 0) {
            conn_close(f, c);
            return;
        }
        /* The daemon is done with an intercepted tunnel: nothing more will come. */
        if ((c->b.eof && c->down.len == 0 && (c->ssl || c->a.eof)) ||
            (c->a.eof && c->b.eof && c->up.len == 0 && c->down.len == 0)) {
            conn_close(f, c);
            return;
        }
        if (!p1 && !p2)
            break;
    }
    if (ep_set(f, &c->a, interest_of(&c->a, &c->up)) < 0 ||
        ep_set(f, &c->b, interest_of(&c->b, &c->down)) < 0)
        conn_close(f, c);
}

/* What epoll reported for one side of a relaying connection. A TLS side may need to read
 * to write and the reverse: any event lets it try both again. */
static void note_event(struct conn *c, struct side *s, unsigned events)
{
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))
        s->rd_ok = 1;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        s->wr_blocked = 0;
    if (s == &c->a && c->ssl) {
        s->rd_ok = 1;
        s->wr_blocked = 0;
        s->need_in = s->need_out = 0;
    }
}

/* ---- TLS -------------------------------------------------------------------------------- */

static int cert_cb(SSL *ssl, void *arg)
{
    struct front *f = arg;
    struct conn *c = SSL_get_app_data(ssl);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const char *host = sni && ca_host_valid(sni) ? sni : c->host;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    char err[APISIM_ERR_LEN];
    c->cert_chosen = 1;
    if (ca_leaf(f->ca, host, &x, &k, err) < 0) {
        log_msg(LOG_ERROR, "CONNECT %s: %s", c->authority, err);
        return 0;
    }
    int ok = SSL_use_certificate(ssl, x) == 1 && SSL_use_PrivateKey(ssl, k) == 1;
    X509_free(x);
    EVP_PKEY_free(k);
    return ok ? 1 : 0;
}

/* Only HTTP/1.1 is spoken inside the tunnel (the daemon's protocol). */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char h11[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, h11, sizeof h11 - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static void handshake(struct front *f, struct conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        if (relay_bufs(c) < 0 || give_to_daemon(f, c) < 0) {
            log_msg(LOG_ERROR, "CONNECT %s: cannot hand the tunnel to the server: %s", c->authority,
                    strerror(errno));
            conn_close(f, c);
            return;
        }
        c->state = CS_RELAY;
        c->a.rd_ok = c->b.rd_ok = 1;
        c->deadline_us = 0;
        pump(f, c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (ep_set(f, &c->a, e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT) < 0)
            conn_close(f, c);
        return;
    }
    unsigned long code = ERR_peek_error();
    char reason[200] = "connection closed";
    if (code)
        ERR_error_string_n(code, reason, sizeof reason);
    ERR_clear_error();
    if (c->cert_chosen)
        log_msg(LOG_WARN,
                "CONNECT %s: the client aborted the TLS handshake (%s): it does not trust "
                "apisim's CA or pins the certificate of %s; trust the CA (`apisim ca` prints "
                "it) or add --no-intercept %s to tunnel it untouched",
                c->authority, reason, c->host, c->host);
    else
        log_msg(LOG_WARN,
                "CONNECT %s: what the client sent inside the tunnel is not TLS (%s); "
                "connection closed",
                c->authority, reason);
    conn_close(f, c);
}

/* ---- CONNECT ---------------------------------------------------------------------------- */

/* Connect to the host a lookup found. */
static void dial_resolved(struct front *f, struct conn *c, int gai, struct addrinfo *res)
{
    if (gai != 0 || !res) {
        char msg[1024];
        snprintf(msg, sizeof msg, "CONNECT %s: cannot resolve %s: %s", c->authority, c->dial_host,
                 gai ? gai_strerror(gai) : "no address");
        log_msg(LOG_WARN, "%s", msg);
        answer_close(f, c, 502, "Bad Gateway", msg);
        if (res)
            freeaddrinfo(res);
        return;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int r = fd < 0 ? -1 : connect(fd, res->ai_addr, res->ai_addrlen);
    int e = errno;
    freeaddrinfo(res);
    if (fd < 0 || (r < 0 && e != EINPROGRESS)) {
        char msg[1024];
        snprintf(msg, sizeof msg, "CONNECT %s: cannot connect to %s:%u: %s", c->authority,
                 c->dial_host, c->dial_port, strerror(e));
        if (fd >= 0)
            close(fd);
        log_msg(LOG_WARN, "%s", msg);
        answer_close(f, c, 502, "Bad Gateway", msg);
        return;
    }
    c->b.fd = fd;
    c->b.interest = (unsigned)-1;
    c->state = CS_DIAL;
    if (ep_set(f, &c->a, 0) < 0 || ep_set(f, &c->b, EPOLLOUT) < 0)
        conn_close(f, c);
}

/* Look the host up off this thread (a slow DNS answer must not hold every other new
 * connection); front_main takes the answer and goes on in dial_resolved(). Meanwhile only
 * the client's hanging up is watched for. */
static void dial(struct front *f, struct conn *c, unsigned port)
{
    connect_target(f, c->host, port, c->dial_host, sizeof c->dial_host, &c->dial_port);
    char service[8], err[APISIM_ERR_LEN];
    snprintf(service, sizeof service, "%u", c->dial_port);
    if (!f->resolver && resolver_new(&f->resolver, FRONT_LOOKUP_THREADS, f->wake_fd, err) < 0) {
        log_msg(LOG_ERROR, "CONNECT %s: %s", c->authority, err);
        answer_close(f, c, 503, "Service Unavailable", "apisim cannot look hosts up now");
        return;
    }
    if (resolver_lookup(f->resolver, c->dial_host, service, c->serial) < 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "CONNECT %s: too many host lookups in progress (%d); try again",
                 c->authority, RESOLVE_MAX_PENDING);
        log_msg(LOG_WARN, "%s", msg);
        answer_close(f, c, 503, "Service Unavailable", msg);
        return;
    }
    c->state = CS_RESOLVE;
    if (ep_set(f, &c->a, EPOLLRDHUP) < 0)
        conn_close(f, c);
}

/* The lookups that finished: each goes on with its connection, if that is still there. */
static void take_lookups(struct front *f)
{
    uint64_t tag;
    int gai;
    struct addrinfo *res;
    while (f->resolver && resolver_take(f->resolver, &tag, &gai, &res) == 1) {
        struct conn *c = f->conns;
        while (c && c->serial != tag)
            c = c->next;
        if (c && c->state == CS_RESOLVE)
            dial_resolved(f, c, gai, res);
        else if (res)
            freeaddrinfo(res); /* the client went away meanwhile */
    }
}

static void dialled(struct front *f, struct conn *c)
{
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(c->b.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) {
        char msg[1024];
        snprintf(msg, sizeof msg, "CONNECT %s: cannot connect: %s", c->authority, strerror(soerr));
        log_msg(LOG_WARN, "%s", msg);
        answer_close(f, c, 502, "Bad Gateway", msg);
        return;
    }
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    if (send(c->a.fd, ok, sizeof ok - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof ok - 1) ||
        relay_bufs(c) < 0) {
        conn_close(f, c);
        return;
    }
    log_msg(LOG_DEBUG, "CONNECT %s: tunnelled untouched (--no-intercept)", c->authority);
    c->state = CS_RELAY;
    c->a.rd_ok = c->b.rd_ok = 1;
    c->deadline_us = 0;
    pump(f, c);
}

static void on_tls_first_byte(struct front *f, struct conn *c);
static void start_relay_tls(struct front *f, struct conn *c);

static void on_connect_head(struct front *f, struct conn *c, const char *head)
{
    /* "CONNECT host:port HTTP/1.1" */
    const char *t = head + sizeof FRONT_CONNECT_PREFIX - 1;
    size_t tl = strcspn(t, " \r\n");
    const char *v = t + tl;
    char target[300];
    snprintf(target, sizeof target, "%.*s", (int)(tl < 290 ? tl : 290), t);
    unsigned port = 0;
    if (tl == 0 || tl >= sizeof c->authority || strncmp(v, " HTTP/1.", 8) != 0 ||
        front_parse_authority(target, c->host, sizeof c->host, &port) < 0) {
        char msg[1024];
        snprintf(msg, sizeof msg,
                 "CONNECT target \"%.200s\" is not host:port (a host name or IP address and a "
                 "port 1-65535)",
                 target);
        log_msg(LOG_WARN, "%s", msg);
        answer_close(f, c, 400, "Bad Request", msg);
        return;
    }
    /* The canonical authority, as a URL names it: https's own port left out. */
    int v6 = strchr(c->host, ':') != NULL;
    if (port == 443)
        snprintf(c->authority, sizeof c->authority, "%s%.255s%s", v6 ? "[" : "", c->host,
                 v6 ? "]" : "");
    else
        snprintf(c->authority, sizeof c->authority, "%s%.255s%s:%u", v6 ? "[" : "", c->host,
                 v6 ? "]" : "", port);
    for (char *p = c->authority; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    if (no_intercept(f, c->host)) {
        if (f->cfg.passthrough) {
            dial(f, c, port);
        } else {
            char msg[1024];
            snprintf(msg, sizeof msg,
                     "%s is in --no-intercept: replay has no network and nothing recorded for "
                     "it",
                     c->host);
            log_msg(LOG_WARN, "CONNECT %s: %s", c->authority, msg);
            answer_close(f, c, 502, "Bad Gateway", msg);
        }
        return;
    }
    if (!f->ca) {
        char err[APISIM_ERR_LEN];
        int created = 0;
        if (f->ca_failed || ca_open(&f->ca, f->cfg.ca_dir, &created, err) < 0) {
            if (!f->ca_failed)
                log_msg(LOG_ERROR, "cannot intercept HTTPS: %s", err);
            f->ca_failed = 1;
            answer_close(f, c, 502, "Bad Gateway",
                         "apisim cannot intercept HTTPS: its CA is unusable (see its stderr)");
            return;
        }
        if (created)
            log_msg(LOG_INFO, "made a new CA for HTTPS interception: %s (clients must trust it)",
                    ca_cert_path(f->ca));
    }
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    if (send(c->a.fd, ok, sizeof ok - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof ok - 1)) {
        conn_close(f, c);
        return;
    }
    int one = 1;
    setsockopt(c->a.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (f->tls_daemon) {
        /* The first byte says whether TLS follows, before the daemon takes the socket. */
        c->state = CS_TLSWAIT;
        on_tls_first_byte(f, c);
        return;
    }
    start_relay_tls(f, c);
}

/* The OpenSSL relay: the front terminates TLS and relays plaintext to the daemon. */
static void start_relay_tls(struct front *f, struct conn *c)
{
    if (!(c->ssl = SSL_new(f->ctx))) {
        conn_close(f, c);
        return;
    }
    SSL_set_app_data(c->ssl, c);
    SSL_set_fd(c->ssl, c->a.fd);
    SSL_set_accept_state(c->ssl);
    c->state = CS_HANDSHAKE;
    handshake(f, c);
}

/* After the 200: a TLS ClientHello starts with a handshake record (0x16). Anything else in
 * the tunnel closes it, with a word in the log. */
static void on_tls_first_byte(struct front *f, struct conn *c)
{
    unsigned char b;
    ssize_t n = recv(c->a.fd, &b, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        if (ep_set(f, &c->a, EPOLLIN) < 0)
            conn_close(f, c);
        return;
    }
    if (n <= 0) {
        conn_close(f, c);
        return;
    }
    if (b != 0x16) {
        log_msg(LOG_WARN,
                "CONNECT %s: what the client sent inside the tunnel is not TLS (first byte "
                "0x%02x); connection closed",
                c->authority, b);
        conn_close(f, c);
        return;
    }
    give_to_tls_daemon(f, c);
}

/* Peek at what a new connection sends first. */
/* Nothing (more) to peek at yet: wait for it in epoll. */
static void wait_more(struct front *f, struct conn *c)
{
    if (ep_set(f, &c->a, EPOLLIN) < 0)
        conn_close(f, c);
}

static void on_peek(struct front *f, struct conn *c)
{
    char p[FRONT_HEAD_MAX + 1];
    size_t want_n = c->state == CS_PEEK ? sizeof FRONT_CONNECT_PREFIX - 1 : FRONT_HEAD_MAX;
    ssize_t n = recv(c->a.fd, p, want_n, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        wait_more(f, c);
        return;
    }
    if (n <= 0) {
        conn_close(f, c);
        return;
    }
    if (c->state == CS_PEEK) {
        size_t m = (size_t)n;
        if (memcmp(p, FRONT_CONNECT_PREFIX, m) != 0) {
            /* Plain HTTP: the daemon takes the socket with its bytes still unread. */
            int fd = c->a.fd;
            if (c->a.interest != (unsigned)-1)
                epoll_ctl(f->epfd, EPOLL_CTL_DEL, fd, NULL);
            c->a.fd = -1;
            if (MHD_add_connection(f->daemon, fd, (struct sockaddr *)&c->addr, c->addrlen) !=
                MHD_YES)
                log_msg(LOG_DEBUG, "the server refused a connection: %s", strerror(errno));
            conn_close(f, c);
            return;
        }
        if (m < sizeof FRONT_CONNECT_PREFIX - 1) {
            wait_more(f, c); /* "CONN" so far: wait for the rest */
            return;
        }
        c->state = CS_HEAD;
        n = recv(c->a.fd, p, FRONT_HEAD_MAX, MSG_PEEK);
        if (n <= 0) {
            wait_more(f, c);
            return;
        }
    }
    p[n] = '\0';
    char *end = strstr(p, "\r\n\r\n");
    if (!end) {
        if (n >= FRONT_HEAD_MAX)
            answer_close(f, c, 431, "Request Header Fields Too Large",
                         "CONNECT request head larger than 8 KiB");
        else
            wait_more(f, c);
        return;
    }
    size_t head_len = (size_t)(end - p) + 4;
    char sink[FRONT_HEAD_MAX];
    if (recv(c->a.fd, sink, head_len, 0) != (ssize_t)head_len) {
        conn_close(f, c);
        return;
    }
    end[2] = '\0';
    on_connect_head(f, c, p);
}

static void on_accept(struct front *f)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage addr;
        socklen_t alen = sizeof addr;
        int fd =
            accept4(f->listen_fd, (struct sockaddr *)&addr, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                log_msg(LOG_WARN, "accept: %s", strerror(errno));
            return;
        }
        if (atomic_load(f->draining)) {
            close(fd); /* stopping: as the accept policy does for the daemon */
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->state = CS_PEEK;
        c->a.c = c->b.c = c;
        c->a.fd = fd;
        c->b.fd = -1;
        c->a.interest = c->b.interest = (unsigned)-1;
        c->addr = addr;
        c->addrlen = alen;
        c->deadline_us = now_mono_us() + f->cfg.idle_timeout_us;
        c->serial = ++f->next_serial;
        c->next = f->conns;
        if (f->conns)
            f->conns->prev = c;
        f->conns = c;
        /* The request often came with the handshake's last ACK: look before waiting. */
        on_peek(f, c);
    }
}

static void on_event(struct front *f, struct side *s, unsigned events)
{
    struct conn *c = s->c;
    if (c->dead)
        return;
    switch (c->state) {
    case CS_PEEK:
    case CS_HEAD:
        on_peek(f, c);
        break;
    case CS_RESOLVE:
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            log_msg(LOG_DEBUG, "CONNECT %s: the client left during the lookup", c->authority);
            conn_close(f, c);
        }
        break;
    case CS_DIAL:
        if (s == &c->b)
            dialled(f, c);
        break;
    case CS_TLSWAIT:
        on_tls_first_byte(f, c);
        break;
    case CS_HANDSHAKE:
        handshake(f, c);
        break;
    case CS_RELAY:
        note_event(c, s, events);
        pump(f, c);
        break;
    }
}

static void sweep(struct front *f)
{
    int64_t now = now_mono_us();
    for (struct conn *c = f->conns, *next; c; c = next) {
        next = c->next;
        if (c->deadline_us && now > c->deadline_us) {
            if (c->state == CS_RESOLVE)
                log_msg(LOG_WARN, "CONNECT %s: looking %s up took over %lld s; closed",
                        c->authority, c->dial_host, (long long)(f->cfg.idle_timeout_us / 1000000));
            else if (c->state != CS_PEEK)
                log_msg(LOG_WARN, "CONNECT %s: nothing from the client for %lld s; closed",
                        c->authority[0] ? c->authority : "(no target yet)",
                        (long long)(f->cfg.idle_timeout_us / 1000000));
            conn_close(f, c);
        }
    }
}

static void *front_main(void *arg)
{
    struct front *f = arg;
    struct epoll_event evs[FRONT_EVENTS];
    int64_t next_sweep = now_mono_us() + FRONT_SWEEP_MS * 1000;
    while (!atomic_load(&f->stop)) {
        int n = epoll_wait(f->epfd, evs, FRONT_EVENTS, FRONT_SWEEP_MS);
        for (int i = 0; i < n; i++) {
            struct side *s = evs[i].data.ptr;
            if (s == &f->listen_side) {
                on_accept(f);
            } else if (s == &f->wake_side) {
                uint64_t v;
                ssize_t r = read(f->wake_fd, &v, sizeof v);
                (void)r;
                take_lookups(f);
            } else {
                on_event(f, s, evs[i].events);
            }
        }
        while (f->graveyard) {
            struct conn *c = f->graveyard;
            f->graveyard = c->next;
            conn_free(c);
        }
        if (now_mono_us() >= next_sweep) {
            sweep(f);
            next_sweep = now_mono_us() + FRONT_SWEEP_MS * 1000;
        }
    }
    return NULL;
}

int front_start(struct front **out, const struct front_config *cfg, int listen_fd,
                struct MHD_Daemon *daemon, struct MHD_Daemon *tls_daemon, atomic_int *draining,
                char *err)
{
    struct front *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        close(listen_fd);
        return -1;
    }
    f->cfg = *cfg;
    if (f->cfg.idle_timeout_us <= 0)
        f->cfg.idle_timeout_us = 30 * 1000000LL;
    f->listen_fd = listen_fd;
    f->daemon = daemon;
    f->tls_daemon = tls_daemon;
    f->draining = draining;
    f->epfd = epoll_create1(EPOLL_CLOEXEC);
    f->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&f->mu, NULL);
    f->listen_side.fd = listen_fd;
    f->listen_side.interest = (unsigned)-1;
    f->wake_side.fd = f->wake_fd;
    f->wake_side.interest = (unsigned)-1;
    if (f->epfd < 0 || f->wake_fd < 0 || ep_set(f, &f->listen_side, EPOLLIN) < 0 ||
        ep_set(f, &f->wake_side, EPOLLIN) < 0) {
        snprintf(err, APISIM_ERR_LEN, "cannot start the listener: %s", strerror(errno));
        goto fail;
    }
    if (!(f->ctx = SSL_CTX_new(TLS_server_method()))) {
        snprintf(err, APISIM_ERR_LEN, "cannot make a TLS context");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(f->ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(f->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_cert_cb(f->ctx, cert_cb, f);
    SSL_CTX_set_read_ahead(f->ctx, 1); /* one read per burst of records, not two per record */
    SSL_CTX_set_alpn_select_cb(f->ctx, alpn_cb, f);
    /* Resumed sessions skip the signature: a client reconnecting pays less. */
    SSL_CTX_set_session_id_context(f->ctx, (const unsigned char *)"apisim", 6);
    if (pthread_create(&f->thread, NULL, front_main, f) != 0) {
        snprintf(err, APISIM_ERR_LEN, "cannot start the listener thread");
        goto fail;
    }
    f->running = 1;
    the_front = f;
    *out = f;
    return 0;
fail:
    front_free(f);
    return -1;
}

void front_stop(struct front *f)
{
    if (!f)
        return;
    if (f->running) {
        atomic_store(&f->stop, 1);
        uint64_t one = 1;
        ssize_t w = write(f->wake_fd, &one, sizeof one);
        (void)w;
        pthread_join(f->thread, NULL);
        f->running = 0;
    }
    resolver_free(f->resolver); /* lookups still waiting on DNS end on their own */
    f->resolver = NULL;
    while (f->conns)
        conn_close(f, f->conns);
    while (f->graveyard) {
        struct conn *c = f->graveyard;
        f->graveyard = c->next;
        conn_free(c);
    }
    if (f->listen_fd >= 0)
        close(f->listen_fd);
    f->listen_fd = -1;
}

void front_free(struct front *f)
{
    if (!f)
        return;
    front_stop(f);
    if (the_front == f)
        the_front = NULL;
    for (size_t i = 0; i < f->nlive; i++)
        free(f->live[i]);
    for (size_t i = 0; i < f->ntls; i++) {
        free(f->tls[i].host);
        gnutls_pcert_deinit(&f->tls[i].pcert);
    }
    if (f->tls_key)
        gnutls_privkey_deinit(f->tls_key);
    SSL_CTX_free(f->ctx);
    ca_free(f->ca);
    if (f->epfd >= 0)
        close(f->epfd);
    if (f->wake_fd >= 0)
        close(f->wake_fd);
    pthread_mutex_destroy(&f->mu);
    free(f);
}
