#include "upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define UPSTREAM_MAX_LOOPS 64
#define UPSTREAM_EVENTS 64
/* Idle kept-alive connections each loop's cache holds (nginx's `keepalive 64`). */
#define UPSTREAM_CACHE_CONNECTIONS 64L
/* How often running jobs are checked for a stall (only while some are running). */
#define UPSTREAM_STALL_CHECK_US 100000
/* Sockets numbered above this are handled without the table (registered per transfer). */
#define UPSTREAM_MAX_SOCK_TABLE (1u << 20)
/* Tags in the epoll set: a socket's is its number (bits 0-31) and the low 30 bits of its
 * generation (32-61), or its number and UPSTREAM_TAG_UNTRACKED when it has no table entry;
 * the eventfd's is all ones. */
#define UPSTREAM_TAG_UNTRACKED (1ull << 62)
#define UPSTREAM_GEN_MASK 0x3fffffffu
#define UPSTREAM_EVFD_TAG UINT64_MAX

enum {
    CMD_ADD = 1u << 0,
    CMD_UNPAUSE = 1u << 1,
    CMD_ABORT = 1u << 2,
};

/* What a loop knows of a socket curl gave it, indexed by the socket's number. */
struct upstream_sock {
    uint32_t gen;    /* changes when curl opens or closes a socket of this number: an event
                        tagged with another generation is for a socket that is gone */
    uint32_t events; /* what it is registered for in the epoll set (when registered) */
    uint8_t registered;
    uint8_t watched; /* curl wants events from it (until CURL_POLL_REMOVE) */
    uint8_t owned;   /* opened by open_socket() and not closed since: its end is known */
};

struct upstream_loop {
    struct upstream *u;
    pthread_t thread;
    int started;
    int epfd;
    int evfd;
    CURLM *multi;
    int64_t timer_due;           /* monotonic µs of curl's next timeout, -1 for none */
    struct upstream_sock *socks; /* by socket number (loop thread; curl_multi_cleanup after) */
    size_t nsocks;

    pthread_mutex_t mu; /* guards cmds, stopping and every job's cmd/queued/finished */
    struct upstream_job *cmds;
    int stopping;
    /* The loop is in, or about to enter, epoll_wait with nothing queued: the next command
     * must write the eventfd. Set under mu; cleared by that poster (under mu) or by the loop
     * when it wakes. A loop that is awake sees new commands before it sleeps again. */
    atomic_int sleeping;

    struct upstream_job *running; /* loop thread only */
    struct upstream_job *kicks;   /* loop thread only */
    int64_t next_stall_check;
};

struct upstream {
    struct upstream_loop *loops;
    unsigned nloops;
    atomic_uint next_loop;
    int stopped;
};

/* Which loop the calling thread uses: assigned once per thread, round robin. */
static _Thread_local int thread_loop = -1;

/* The eventfd is edge-triggered: every write is an event, and the loop never reads it
 * (one system call less per wake-up). Its counter would take 2^64 - 2 writes to fill. */
static void wake(struct upstream_loop *l)
{
    uint64_t one = 1;
    ssize_t n = write(l->evfd, &one, sizeof one);
    (void)n;
}

/* ---- curl's callbacks ---------------------------------------------------------------- */

/* Acknowledge what arrives at once. An upstream with Nagle on that writes a head and then
 * a body (or two events) sends the second only once the first is acknowledged, and a
 * reused connection is in Linux's delayed-ACK (pingpong) mode: 40 ms each time. Linux
 * leaves quick-ack mode again by itself, so it is re-armed when curl starts waiting for a
 * response (the request is sent: the head must be acknowledged at once) and after each
 * read (the next piece must be too). */
static void quickack(curl_socket_t s)
{
    int on = 1;
    setsockopt(s, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on);
}

/* The table entry of socket s, grown to hold it when grow is set. NULL when s is beyond
 * the table (or out of memory): then s is registered and removed per transfer. */
static struct upstream_sock *sock_entry(struct upstream_loop *l, curl_socket_t s, int grow)
{
    if (s < 0 || (size_t)s >= UPSTREAM_MAX_SOCK_TABLE)
        return NULL;
    if ((size_t)s >= l->nsocks) {
        if (!grow)
            return NULL;
        size_t n = l->nsocks ? l->nsocks : 64;
        while (n <= (size_t)s)
            n *= 2;
        struct upstream_sock *t = realloc(l->socks, n * sizeof *t);
        if (!t)
            return NULL;
        memset(t + l->nsocks, 0, (n - l->nsocks) * sizeof *t);
        l->socks = t;
        l->nsocks = n;
    }
    return &l->socks[s];
}

static uint64_t sock_tag(curl_socket_t s, const struct upstream_sock *k)
{
    uint64_t rest = k ? (uint64_t)(k->gen & UPSTREAM_GEN_MASK) << 32 : UPSTREAM_TAG_UNTRACKED;
    return (uint64_t)(uint32_t)s | rest;
}

/* Whether an event tagged tag is for the socket entry k describes now. */
static int sock_current(const struct upstream_sock *k, uint64_t tag)
{
    return (uint32_t)(tag >> 32) == (k->gen & UPSTREAM_GEN_MASK);
}

/* Register s for events, or change what it is registered for. */
static void sock_register(struct upstream_loop *l, curl_socket_t s, struct upstream_sock *k,
                          uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u64 = sock_tag(s, k)};
    if (k && k->registered) {
        if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev) < 0 && errno == ENOENT)
            epoll_ctl(l->epfd, EPOLL_CTL_ADD, s, &ev); /* closed and reused unseen */
    } else if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, s, &ev) < 0 && errno == EEXIST) {
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev);
    }
    if (k) {
        k->registered = 1;
        k->events = events;
    }
}

static void sock_unregister(struct upstream_loop *l, curl_socket_t s, struct upstream_sock *k)
{
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, s, NULL); /* may already be closed: fine */
    if (k)
        k->registered = 0;
}

/* curl's socket callback. A kept-alive connection's socket stays registered for EPOLLIN
 * while it waits in curl's cache (curl removes it at the end of every transfer and adds
 * it again at the start of the next: two epoll_ctl an exchange for nothing), and a mask
 * that does not change is not registered again. What makes that safe: the socket's
 * whole life is seen (open_socket, close_socket), so a closed socket is unregistered
 * before its number can come back; and an event on a socket curl is not watching (the
 * upstream closed an idle connection) unregisters it instead of waking the loop again
 * and again (loop_main). */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *cls, void *socketp)
{
    struct upstream_loop *l = cls;
    (void)easy;
    (void)socketp;
    struct upstream_sock *k = sock_entry(l, s, 1);
    if (what == CURL_POLL_REMOVE) {
        if (k)
            k->watched = 0;
        /* Idle in curl's cache: left registered (only sockets whose close is seen). */
        if (k && k->owned && k->registered && k->events == EPOLLIN)
            return 0;
        if (!k || k->registered)
            sock_unregister(l, s, k);
        return 0;
    }
    uint32_t events = 0;
    if (what & CURL_POLL_IN) {
        events |= EPOLLIN;
        quickack(s);
    }
    if (what & CURL_POLL_OUT)
        events |= EPOLLOUT;
    if (k)
        k->watched = 1;
    /* (Nagle is off by the jobs' CURLOPT_TCP_NODELAY, once per connection.) */
    if (!k || !k->registered || k->events != events)
        sock_register(l, s, k, events);
    return 0;
}

/* curl opens every connection's socket here, so that the loop knows its number is new
 * (close-on-exec: a child apisim starts has no business with upstream connections). */
static curl_socket_t open_socket(void *cls, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct upstream_loop *l = cls;
    (void)purpose;
    curl_socket_t s = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (s < 0)
        return CURL_SOCKET_BAD;
    struct upstream_sock *k = sock_entry(l, s, 1);
    if (k) /* a socket of this number closed unseen (it cannot be registered any more) */
        *k = (struct upstream_sock){.gen = k->gen + 1, .owned = 1};
    return s;
}

/* ... and closes them here: unregistered first (an idle one still is), then closed. */
static int close_socket(void *cls, curl_socket_t s)
{
    struct upstream_loop *l = cls;
    struct upstream_sock *k = sock_entry(l, s, 0);
    if (k) {
        if (k->registered)
            sock_unregister(l, s, k);
        *k = (struct upstream_sock){.gen = k->gen + 1};
    }
    return close(s);
}

static int on_timer(CURLM *multi, long timeout_ms, void *cls)
{
    struct upstream_loop *l = cls;
    (void)multi;
    l->timer_due = timeout_ms < 0 ? -1 : now_mono_us() + (int64_t)timeout_ms * 1000;
    return 0;
}

/* ---- jobs ------------------------------------------------------------------------------ */

static void running_add(struct upstream_loop *l, struct upstream_job *j)
{
    j->prev = NULL;
    j->next = l->running;
    if (l->running)
        l->running->prev = j;
    l->running = j;
}

static void running_remove(struct upstream_loop *l, struct upstream_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else if (l->running == j)
        l->running = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->prev = j->next = NULL;
}

/* End a job: out of the multi handle and of every list, then its done(). Loop thread. */
static void finish(struct upstream_loop *l, struct upstream_job *j, CURLcode result)
{
    if (j->in_multi) {
        curl_multi_remove_handle(l->multi, j->easy);
        j->in_multi = 0;
        running_remove(l, j);
    }
    pthread_mutex_lock(&l->mu);
    j->finished = 1;
    if (j->queued) {
        for (struct upstream_job **p = &l->cmds; *p; p = &(*p)->next_cmd) {
            if (*p == j) {
                *p = j->next_cmd;
                break;
            }
        }
        j->queued = 0;
    }
    pthread_mutex_unlock(&l->mu);
    if (j->kick_wanted) {
        for (struct upstream_job **p = &l->kicks; *p; p = &(*p)->next_kick) {
            if (*p == j) {
                *p = j->next_kick;
                break;
            }
        }
        j->kick_wanted = 0;
    }
    j->done(j, result);
}

void upstream_kick(struct upstream_job *job)
{
    if (job->kick_wanted)
        return;
    job->kick_wanted = 1;
    job->next_kick = job->loop->kicks;
    job->loop->kicks = job;
}

static void run_kicks(struct upstream_loop *l)
{
    while (l->kicks) {
        struct upstream_job *j = l->kicks;
        l->kicks = j->next_kick;
        j->kick_wanted = 0;
        j->kick(j);
    }
}

static void read_done(struct upstream_loop *l)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(l->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct upstream_job *j = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
        if (j)
            finish(l, j, msg->data.result);
    }
}

/* Work handed over by other threads. */
static void run_commands(struct upstream_loop *l)
{
    pthread_mutex_lock(&l->mu);
    struct upstream_job *list = l->cmds;
    l->cmds = NULL;
    /* Take each job's requests now: later ones requeue it. */
    for (struct upstream_job *j = list; j; j = j->next_cmd)
        j->queued = 0;
    pthread_mutex_unlock(&l->mu);
    while (list) {
        struct upstream_job *j = list;
        list = j->next_cmd;
        pthread_mutex_lock(&l->mu);
        unsigned cmd = j->cmd;
        j->cmd = 0;
        int finished = j->finished;
        pthread_mutex_unlock(&l->mu);
        if (finished)
            continue;
        if (cmd & CMD_ABORT) {
            finish(l, j, CURLE_ABORTED_BY_CALLBACK);
            continue;
        }
        if (cmd & CMD_ADD) {
            curl_easy_setopt(j->easy, CURLOPT_PRIVATE, (char *)j);
            /* The loop sees every socket's life (on_socket). A connection keeps the
             * callbacks of the transfer that opened it: always this loop's. */
            curl_easy_setopt(j->easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
            curl_easy_setopt(j->easy, CURLOPT_OPENSOCKETDATA, l);
            curl_easy_setopt(j->easy, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
            curl_easy_setopt(j->easy, CURLOPT_CLOSESOCKETDATA, l);
            if (curl_multi_add_handle(l->multi, j->easy) != CURLM_OK) {
                finish(l, j, CURLE_OUT_OF_MEMORY);
                continue;
            }
            j->in_multi = 1;
            running_add(l, j);
        }
        if ((cmd & CMD_UNPAUSE) && j->in_multi && j->paused) {
            j->paused = 0;
            j->last_active_us = now_mono_us();
            /* May call the write callback at once with what curl holds. */
            curl_easy_pause(j->easy, CURLPAUSE_CONT);
        }
    }
}

/* --upstream-timeout after the head: curl's own low-speed check averages over seconds,
 * so a stall after a burst would pass unnoticed that long. */
static void check_stalls(struct upstream_loop *l, int64_t now)
{
    struct upstream_job *j = l->running;
    while (j) {
        struct upstream_job *next = j->next;
        if (j->timeout_us > 0 && !j->paused && now - j->last_active_us > j->timeout_us) {
            if (j->errbuf)
                snprintf(j->errbuf, CURL_ERROR_SIZE,
                         "nothing received from the upstream for %lld ms (--upstream-timeout)",
                         (long long)((now - j->last_active_us) / 1000));
            finish(l, j, CURLE_OPERATION_TIMEDOUT);
        }
        j = next;
    }
}

/* A socket event: to curl when it watches the socket; an idle kept-alive socket that
 * became readable (the upstream closed it, or sent what nobody asked for) is unregistered
 * instead, and curl finds it dead when it next looks at it. */
static void socket_event(struct upstream_loop *l, uint64_t tag, uint32_t events, int *running)
{
    curl_socket_t s = (curl_socket_t)(uint32_t)tag;
    struct upstream_sock *k = tag & UPSTREAM_TAG_UNTRACKED ? NULL : sock_entry(l, s, 0);
    if (k) {
        if (!k->registered || !sock_current(k, tag))
            return; /* for a socket closed earlier in this round */
        if (!k->watched) {
            sock_unregister(l, s, k);
            return;
        }
    }
    int flags = 0;
    if (events & (EPOLLIN | EPOLLHUP))
        flags |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        flags |= CURL_CSELECT_OUT;
    if (events & EPOLLERR)
        flags |= CURL_CSELECT_ERR;
    curl_multi_socket_action(l->multi, s, flags, running);
    /* The transfer goes on reading: what comes next is acknowledged at once too. One that
     * ended in this call has let go of the socket (no more data is awaited on it). */
    if ((flags & CURL_CSELECT_IN) && (!k || (k->watched && sock_current(k, tag))))
        quickack(s);
}

/* How long the loop may sleep: curl's timer, or the next stall check while jobs run. */
static int wait_ms(const struct upstream_loop *l, int64_t now)
{
    int64_t due = l->timer_due;
    if (l->running && (due < 0 || due > l->next_stall_check))
        due = l->next_stall_check;
    if (due < 0)
        return -1;
    return due <= now ? 0 : (int)((due - now + 999) / 1000);
}

static void *loop_main(void *arg)
{
    struct upstream_loop *l = arg;
    struct epoll_event evs[UPSTREAM_EVENTS];
    int running = 0;
    prctl(PR_SET_NAME, "upstream-loop"); /* what top -H, perf --comm and /proc show */
    for (;;) {
        int ms = wait_ms(l, now_mono_us());
        pthread_mutex_lock(&l->mu);
        int stopping = l->stopping && !l->cmds;
        /* Posters write the eventfd only while this is set (post()). */
        if (ms != 0 && !l->cmds)
            atomic_store(&l->sleeping, 1);
        else
            ms = 0;
        pthread_mutex_unlock(&l->mu);
        if (stopping)
            break;
        int n = epoll_wait(l->epfd, evs, UPSTREAM_EVENTS, ms);
        atomic_store(&l->sleeping, 0);
        if (n < 0 && errno != EINTR) {
            log_msg(LOG_ERROR, "upstream event loop: epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == UPSTREAM_EVFD_TAG)
                continue; /* commands are run below in any case; nothing to read (wake) */
            socket_event(l, evs[i].data.u64, evs[i].events, &running);
        }
        /* Commands may be queued without a wake-up (the loop was awake): look every round. */
        run_commands(l);
        /* Handles just added are due at once (curl's timer says 0 ms): run them now, not
         * after another trip through epoll_wait. */
        int64_t now = now_mono_us();
        if (l->timer_due >= 0 && l->timer_due <= now) {
            l->timer_due = -1;
            curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        read_done(l);
        if (l->running && now >= l->next_stall_check) {
            check_stalls(l, now);
            l->next_stall_check = now + UPSTREAM_STALL_CHECK_US;
        }
        run_kicks(l);
    }
    /* Stopping: everything still running ends now. */
    while (l->running)
        finish(l, l->running, CURLE_ABORTED_BY_CALLBACK);
    run_commands(l); /* queued after the last round: aborted below */
    while (l->running)
        finish(l, l->running, CURLE_ABORTED_BY_CALLBACK);
    l->kicks = NULL;
    return NULL;
}

/* ---- the set of loops ------------------------------------------------------------------ */

static int loop_init(struct upstream_loop *l, struct upstream *u, char *err)
{
    l->u = u;
    l->epfd = l->evfd = -1;
    l->timer_due = -1;
    pthread_mutex_init(&l->mu, NULL);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = UPSTREAM_EVFD_TAG};
    if (l->epfd < 0 || l->evfd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &ev) < 0) {
        snprintf(err, APISIM_ERR_LEN, "cannot set up an upstream event loop: %s", strerror(errno));
        return -1;
    }
    if (!(l->multi = curl_multi_init())) {
        snprintf(err, APISIM_ERR_LEN, "cannot create a libcurl multi handle");
        return -1;
    }
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, UPSTREAM_CACHE_CONNECTIONS);
    curl_multi_setopt(l->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
        snprintf(err, APISIM_ERR_LEN, "cannot start an upstream event loop thread");
        return -1;
    }
    l->started = 1;
    return 0;
}

int upstream_new(struct upstream **out, unsigned nloops, char *err)
{
    if (nloops == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nloops = n > 0 ? (unsigned)n : 1;
    }
    if (nloops > UPSTREAM_MAX_LOOPS)
        nloops = UPSTREAM_MAX_LOOPS;
    struct upstream *u = calloc(1, sizeof *u);
    if (!u || !(u->loops = calloc(nloops, sizeof *u->loops))) {
        free(u);
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    u->nloops = nloops;
    for (unsigned i = 0; i < nloops; i++) {
        if (loop_init(&u->loops[i], u, err) < 0) {
            u->nloops = i + 1;
            upstream_free(u);
            return -1;
        }
    }
    *out = u;
    return 0;
}

void upstream_stop(struct upstream *u)
{
    if (!u || u->stopped)
        return;
    u->stopped = 1;
    for (unsigned i = 0; i < u->nloops; i++) {
        struct upstream_loop *l = &u->loops[i];
        if (!l->started)
            continue;
        pthread_mutex_lock(&l->mu);
        l->stopping = 1;
        pthread_mutex_unlock(&l->mu);
        wake(l);
    }
    for (unsigned i = 0; i < u->nloops; i++) {
        struct upstream_loop *l = &u->loops[i];
        if (l->started)
            pthread_join(l->thread, NULL);
        l->started = 0;
    }
}

void upstream_free(struct upstream *u)
{
    if (!u)
        return;
    upstream_stop(u);
    for (unsigned i = 0; i < u->nloops; i++) {
        struct upstream_loop *l = &u->loops[i];
        curl_multi_cleanup(l->multi); /* closes the cached connections (close_socket) */
        free(l->socks);
        if (l->epfd >= 0)
            close(l->epfd);
        if (l->evfd >= 0)
            close(l->evfd);
        pthread_mutex_destroy(&l->mu);
    }
    free(u->loops);
    free(u);
}

/* Queue cmd for job on its loop. Returns 0, or -1 when the loop is stopping (ADD only). */
static int post(struct upstream_loop *l, struct upstream_job *job, unsigned cmd)
{
    pthread_mutex_lock(&l->mu);
    if (job->finished || (cmd == CMD_ADD && l->stopping)) {
        pthread_mutex_unlock(&l->mu);
        return -1;
    }
    job->cmd |= cmd;
    if (!job->queued) {
        job->queued = 1;
        job->next_cmd = l->cmds;
        l->cmds = job;
    }
    /* A loop that is awake sees the command before it sleeps: only a sleeping one (or one
     * about to sleep, which set the flag under mu) needs the eventfd. */
    int sleeping = atomic_exchange(&l->sleeping, 0);
    pthread_mutex_unlock(&l->mu);
    if (sleeping)
        wake(l);
    return 0;
}

int upstream_start(struct upstream *u, struct upstream_job *job)
{
    if (thread_loop < 0)
        thread_loop = (int)(atomic_fetch_add(&u->next_loop, 1) % u->nloops);
    struct upstream_loop *l = &u->loops[(unsigned)thread_loop % u->nloops];
    job->loop = l;
    job->cmd = 0;
    job->queued = job->finished = job->in_multi = job->kick_wanted = 0;
    return post(l, job, CMD_ADD);
}

void upstream_unpause(struct upstream_job *job)
{
    post(job->loop, job, CMD_UNPAUSE);
}

void upstream_abort(struct upstream_job *job)
{
    post(job->loop, job, CMD_ABORT);
}
