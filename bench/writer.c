/* apisim_writer_bench: the store's writer alone, without the network. Queues N exchanges
 * shaped like bench/run.sh's recorded GET /bench (wrk's request headers, the floor's answer:
 * a 1 KiB JSON body in one piece) in groups of BATCH (the last of each waits for its
 * commit, as a client waits for the end of its answer), and prints the CPU the writer and
 * the checkpointer spent per exchange: the process's CPU less this thread's.
 *
 * usage: apisim_writer_bench FILE.db [N [BATCH]]   (FILE.db is created; it must not exist) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exchange.h"
#include "store.h"
#include "util.h"

static int64_t cpu_us(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct exchange *make(int64_t seq, const unsigned char *body, size_t body_len)
{
    struct exchange *ex = exchange_new();
    if (!ex)
        return NULL;
    ex->session = strdup("default");
    ex->source = strdup("record");
    ex->seq = seq;
    ex->started_us = cpu_us(CLOCK_REALTIME);
    ex->method = strdup("GET");
    ex->path = strdup("/bench");
    ex->query = strdup("");
    ex->scheme = strdup("http");
    ex->authority = strdup("127.0.0.1:40000");
    ex->status = 200;
    ex->ttfb_us = 250;
    ex->duration_us = 260;
    ex->response_body = malloc(body_len);
    ex->chunks = malloc(sizeof *ex->chunks);
    if (!ex->session || !ex->source || !ex->method || !ex->path || !ex->query || !ex->scheme ||
        !ex->authority || !ex->response_body || !ex->chunks ||
        headers_add(&ex->request_headers, "Host", "127.0.0.1:40000") < 0 ||
        headers_add(&ex->response_headers, "Content-Length", "1024") < 0 ||
        headers_add(&ex->response_headers, "Content-Type", "application/json") < 0) {
        exchange_free(ex);
        return NULL;
    }
    memcpy(ex->response_body, body, body_len);
    ex->response_body_len = body_len;
    ex->chunks[0].offset_us = 250;
    ex->chunks[0].size = body_len;
    ex->nchunks = 1;
    return ex;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s FILE.db [N [BATCH]]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? atol(argv[2]) : 50000;
    long batch = argc > 3 ? atol(argv[3]) : 8;
    if (n < 1 || n > 10000000 || batch < 1 || batch > n) {
        fprintf(stderr, "N must be 1..10000000 and BATCH 1..N\n");
        return 2;
    }
    unsigned char body[1024];
    memset(body, 'x', sizeof body);
    body[0] = '"';
    body[sizeof body - 1] = '"';

    char err[APISIM_ERR_LEN];
    struct store *st = NULL;
    if (store_open(&st, argv[1], STORE_CREATE, err) < 0 || store_writer_start(st, err) < 0) {
        fprintf(stderr, "%s\n", err);
        store_close(st);
        return 1;
    }
    int64_t p0 = cpu_us(CLOCK_PROCESS_CPUTIME_ID), t0 = cpu_us(CLOCK_THREAD_CPUTIME_ID);
    int64_t w0 = cpu_us(CLOCK_MONOTONIC);
    for (long i = 0; i < n; i++) {
        struct exchange *ex = make(i + 1, body, sizeof body);
        int last = (i + 1) % batch == 0 || i + 1 == n;
        if (!ex || store_submit(st, ex, last, NULL) < 0) {
            fprintf(stderr, "exchange %ld: not stored\n", i + 1);
            store_close(st);
            return 1;
        }
    }
    int64_t w1 = cpu_us(CLOCK_MONOTONIC);
    int64_t p1 = cpu_us(CLOCK_PROCESS_CPUTIME_ID), t1 = cpu_us(CLOCK_THREAD_CPUTIME_ID);
    store_close(st);
    printf("exchanges=%ld batch=%ld writer_cpu_us_per_exchange=%.1f wall_us_per_exchange=%.1f\n", n,
           batch, (double)((p1 - p0) - (t1 - t0)) / (double)n, (double)(w1 - w0) / (double)n);
    return 0;
}
