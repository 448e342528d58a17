/* upstream — libcurl transfers driven by event loops, one per core.
 *
 * Owns: N threads, each an epoll loop owning one curl multi handle (and so one cache of
 * kept-alive upstream connections, reused by every transfer that loop runs, whichever
 * client connection it came from), an eventfd through which other threads hand it work,
 * and libcurl's socket and timer callbacks (curl_multi_socket_action). A thread that
 * starts transfers always uses the same loop, so a server worker's transfers share one
 * connection cache.
 *
 * Sockets: TCP_NODELAY (the caller's CURLOPT_TCP_NODELAY, libcurl's default), and
 * TCP_QUICKACK re-armed after every read, so an upstream that writes a response's head and
 * body in two writes with Nagle on is not held up by a delayed ACK on a reused connection.
 * A kept-alive connection's socket stays registered with the loop while it waits in the
 * cache (no epoll_ctl per exchange); the loop opens and closes curl's sockets itself
 * (CURLOPT_OPENSOCKETFUNCTION, CURLOPT_CLOSESOCKETFUNCTION) so that a closed socket's
 * number coming back is never mistaken for the old one, and it unregisters an idle socket
 * the upstream closed as soon as it turns readable.
 *
 * Wake-ups: a job handed over writes the loop's eventfd only when the loop sleeps (or is
 * about to); a loop that is awake takes it before it sleeps again.
 *
 * Needs: curl_global_init() before upstream_new().
 *
 * Threads: upstream_start, upstream_unpause and upstream_abort may be called from any
 * thread; a job's easy handle and callbacks belong to its loop's thread from
 * upstream_start() until its done() returns.
 */
#ifndef APISIM_UPSTREAM_H
#define APISIM_UPSTREAM_H

#include <curl/curl.h>
#include <stdint.h>

#include "util.h"

struct upstream;
struct upstream_loop;

/* One transfer, embedded in the caller's own struct, which must stay alive until done()
 * has returned. */
struct upstream_job {
    CURL *easy; /* prepared by the caller; the loop adds it to its multi handle */
    /* Called on the loop's thread once the transfer is over (result CURLE_OK, a transport
     * failure, CURLE_OPERATION_TIMEDOUT for a stall, CURLE_ABORTED_BY_CALLBACK after
     * upstream_abort() or when the loops stop). The easy handle is out of the multi handle
     * by then: the caller may clean it up. The loop never touches the job afterwards. */
    void (*done)(struct upstream_job *job, CURLcode result);
    /* Called on the loop's thread after a round of socket events, for a job that asked
     * with upstream_kick() during it: lets the caller wake its client once per round
     * instead of once per callback. */
    void (*kick)(struct upstream_job *job);
    int64_t timeout_us;     /* longest silence from the upstream before giving up (0: none) */
    int64_t last_active_us; /* monotonic µs of the last thing received; the caller's curl
                               callbacks keep it current (loop thread) */
    int paused;             /* the caller's write callback paused the transfer (loop thread);
                               a paused job is not timed */
    char *errbuf;           /* CURL_ERROR_SIZE bytes: gets the stall's sentence */

    /* The rest belongs to upstream.c. */
    struct upstream_loop *loop;
    unsigned cmd; /* requests from other threads, under the loop's mutex */
    int queued;   /* on the loop's command list */
    int finished; /* done() has been or is being called */
    int in_multi; /* added to the multi handle (loop thread) */
    int kick_wanted;
    struct upstream_job *next_cmd, *next_kick;
    struct upstream_job *prev, *next; /* the loop's running jobs */
};

/* Start nloops loops (0: one per online core). Returns 0 and *out, or -1 with err. */
int upstream_new(struct upstream **out, unsigned nloops, char *err);

/* Stop the loops: every job still running or queued ends with CURLE_ABORTED_BY_CALLBACK
 * (its done() is called), then the threads are joined. Later upstream_start() calls fail.
 * NULL, or a second call, does nothing. */
void upstream_stop(struct upstream *u);

/* upstream_stop(), then free everything. NULL does nothing. */
void upstream_free(struct upstream *u);

/* Hand job to the calling thread's loop. Returns 0, or -1 when the loops are stopping
 * (done() is then never called). */
int upstream_start(struct upstream *u, struct upstream_job *job);

/* Resume a job paused by its write callback. Any thread; nothing once done() was called,
 * but the caller must know the job is still alive. */
void upstream_unpause(struct upstream_job *job);

/* End a job early (its client went away): done() follows with CURLE_ABORTED_BY_CALLBACK.
 * Any thread; same rule as upstream_unpause(). */
void upstream_abort(struct upstream_job *job);

/* Ask for job->kick() at the end of this round of events. Loop thread only (from the
 * job's curl callbacks). */
void upstream_kick(struct upstream_job *job);

#endif
