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
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define UPSTREAM_MAX_LOOPS 64
#define UPSTREAM_EVENTS 64
/* Idle kept-alive connections each loop's cache holds (nginx's `keepalive 64`). */
#define UPSTREAM_CACHE_CONNECTIONS 64L
/* How often running jobs are checked for a stall (only while some are running). */
#define UPSTREAM_STALL_CHECK_US 100000

enum {
    CMD_ADD = 1u << 0,
    CMD_UNPAUSE = 1u << 1,
    CMD_ABORT = 1u << 2,
};

struct upstream_loop {
    struct upstream *u;
    pthread_t thread;
    int started;
    int epfd;
    int evfd;
    CURLM *multi;
    int64_t timer_due; /* monotonic µs of curl's next timeout, -1 for none */

    pthread_mutex_t mu; /* guards cmds, stopping and every job's cmd/queued/finished */
    struct upstream_job *cmds;
    int stopping;

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

static void wake(struct upstream_loop *l)
{
    uint64_t one = 1;
    ssize_t n = write(l->evfd, &one, sizeof one);
    (void)n; /* a full counter still wakes the loop */
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

static int on_socket(CURL *easy, curl_socket_t s, int what, void *cls, void *socketp)
{
    struct upstream_loop *l = cls;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, s, NULL); /* may already be closed: fine */
        curl_multi_assign(l->multi, s, NULL);
        return 0;
    }
    struct epoll_event ev = {.data.fd = s};
    if (what & CURL_POLL_IN) {
        ev.events |= EPOLLIN;
        quickack(s);
    }
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    if (socketp) {
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev);
    } else {
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, s, &ev) < 0 && errno == EEXIST)
            epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev);
        /* Any non-NULL: "registered". (A kept-alive connection is registered again for
         * each transfer: Nagle is off by the jobs' CURLOPT_TCP_NODELAY, once per
         * connection, not by a setsockopt here each time.) */
        curl_multi_assign(l->multi, s, l);
    }
    return 0;
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

static void *loop_main(void *arg)
{
    struct upstream_loop *l = arg;
    struct epoll_event evs[UPSTREAM_EVENTS];
    int running = 0;
    for (;;) {
        int64_t now = now_mono_us();
        int64_t due = l->timer_due;
        if (l->running && (due < 0 || due > l->next_stall_check))
            due = l->next_stall_check;
        int wait_ms = -1;
        if (due >= 0)
            wait_ms = due <= now ? 0 : (int)((due - now + 999) / 1000);
        int n = epoll_wait(l->epfd, evs, UPSTREAM_EVENTS, wait_ms);
        if (n < 0 && errno != EINTR) {
            log_msg(LOG_ERROR, "upstream event loop: epoll_wait: %s", strerror(errno));
            break;
        }
        int commands = 0;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l->evfd) {
                uint64_t v;
                ssize_t r = read(l->evfd, &v, sizeof v);
                (void)r;
                commands = 1;
                continue;
            }
            int flags = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP))
                flags |= CURL_CSELECT_IN;
            if (evs[i].events & EPOLLOUT)
                flags |= CURL_CSELECT_OUT;
            if (evs[i].events & EPOLLERR)
                flags |= CURL_CSELECT_ERR;
            curl_multi_socket_action(l->multi, fd, flags, &running);
            if (flags & CURL_CSELECT_IN)
                quickack(fd);
        }
        now = now_mono_us();
        if (l->timer_due >= 0 && l->timer_due <= now) {
            l->timer_due = -1;
            curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        read_done(l);
        if (commands) {
            run_commands(l);
            /* Handles just added need curl's first look (their timer says 0 ms). */
            read_done(l);
        }
        if (l->running && now >= l->next_stall_check) {
            check_stalls(l, now);
            l->next_stall_check = now + UPSTREAM_STALL_CHECK_US;
        }
        run_kicks(l);
        pthread_mutex_lock(&l->mu);
        int stopping = l->stopping && !l->cmds;
        pthread_mutex_unlock(&l->mu);
        if (stopping)
            break;
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
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = l->evfd;
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
        curl_multi_cleanup(l->multi);
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
    pthread_mutex_unlock(&l->mu);
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
