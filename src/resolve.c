#include "resolve.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct lookup {
    struct lookup *next;
    uint64_t tag;
    char *host;
    char service[8];
    int gai;
    struct addrinfo *res;
};

struct resolver {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct lookup *queue, *queue_tail; /* waiting for a thread */
    struct lookup *done, *done_tail;   /* finished, not taken yet */
    size_t waiting;                    /* in queue */
    size_t pending;                    /* waiting or running */
    unsigned threads, max_threads, idle;
    int notify_fd;
    int stopped;   /* resolver_free() was called: threads end, nothing is signalled */
    unsigned refs; /* the owner's, until resolver_free(), and one per thread */
};

static void lookup_free(struct lookup *l)
{
    if (l->res)
        freeaddrinfo(l->res);
    free(l->host);
    free(l);
}

static void list_free(struct lookup *l)
{
    while (l) {
        struct lookup *next = l->next;
        lookup_free(l);
        l = next;
    }
}

static void destroy(struct resolver *r)
{
    list_free(r->queue);
    list_free(r->done);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void *lookup_main(void *arg)
{
    struct resolver *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->queue && !r->stopped) {
            r->idle++;
            pthread_cond_wait(&r->cond, &r->mu);
            r->idle--;
        }
        if (r->stopped)
            break;
        struct lookup *l = r->queue;
        r->queue = l->next;
        if (!r->queue)
            r->queue_tail = NULL;
        r->waiting--;
        pthread_mutex_unlock(&r->mu);

        struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
        l->next = NULL;
        l->gai = getaddrinfo(l->host, l->service, &hints, &l->res);
        if (l->gai != 0)
            l->res = NULL;

        pthread_mutex_lock(&r->mu);
        r->pending--;
        if (r->stopped) {
            lookup_free(l);
            break;
        }
        if (r->done_tail)
            r->done_tail->next = l;
        else
            r->done = l;
        r->done_tail = l;
        /* Under the lock: the owner closes notify_fd only after resolver_free(), which
         * sets stopped under it. */
        uint64_t one = 1;
        ssize_t w = write(r->notify_fd, &one, sizeof one);
        (void)w; /* a full counter still wakes the owner */
    }
    r->threads--;
    int last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last)
        destroy(r);
    return NULL;
}

int resolver_new(struct resolver **out, unsigned nthreads, int notify_fd, char *err)
{
    struct resolver *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->max_threads = nthreads ? nthreads : 1;
    r->notify_fd = notify_fd;
    r->refs = 1;
    *out = r;
    return 0;
}

int resolver_lookup(struct resolver *r, const char *host, const char *service, uint64_t tag)
{
    struct lookup *l = calloc(1, sizeof *l);
    if (!l || !(l->host = strdup(host))) {
        free(l);
        return -1;
    }
    snprintf(l->service, sizeof l->service, "%s", service);
    l->tag = tag;
    pthread_mutex_lock(&r->mu);
    if (r->pending >= RESOLVE_MAX_PENDING) {
        pthread_mutex_unlock(&r->mu);
        lookup_free(l);
        return -1;
    }
    if (r->queue_tail)
        r->queue_tail->next = l;
    else
        r->queue = l;
    r->queue_tail = l;
    r->waiting++;
    r->pending++;
    /* A thread more when every idle one already has a lookup to take. */
    if (r->waiting > r->idle && r->threads < r->max_threads) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, lookup_main, r) == 0) {
            r->threads++;
            r->refs++;
        }
        pthread_attr_destroy(&attr);
    }
    if (r->threads == 0) { /* no thread could be started: nobody would ever take it */
        r->queue = r->queue_tail = NULL;
        r->waiting = r->pending = 0;
        pthread_mutex_unlock(&r->mu);
        lookup_free(l);
        return -1;
    }
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int resolver_take(struct resolver *r, uint64_t *tag, int *gai, struct addrinfo **res)
{
    pthread_mutex_lock(&r->mu);
    struct lookup *l = r->done;
    if (l) {
        r->done = l->next;
        if (!r->done)
            r->done_tail = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    if (!l)
        return 0;
    *tag = l->tag;
    *gai = l->gai;
    *res = l->res;
    l->res = NULL;
    lookup_free(l);
    return 1;
}

void resolver_free(struct resolver *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopped = 1;
    struct lookup *queued = r->queue, *done = r->done;
    r->pending -= r->waiting;
    r->queue = r->queue_tail = r->done = r->done_tail = NULL;
    r->waiting = 0;
    pthread_cond_broadcast(&r->cond);
    int last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    list_free(queued);
    list_free(done);
    if (last)
        destroy(r);
}
