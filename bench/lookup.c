/* apisim_lookup_bench: replay's lookup of a recorded answer, alone, without the network. On
 * one thread it does what replay does for a request it has not cached: store_read_begin(),
 * store_index_first() (the match index and the first answer's row in one statement),
 * store_read_end(); for the keys of FILE.db's match index, picked at random (random) or the
 * same one each time (hot), and prints the time per lookup in each case: the clock read
 * around each lookup alone (CLOCK_MONOTONIC; one busy thread, so its time is CPU time on a
 * machine with nothing else running).
 *
 * With EVICT_KIB, each lookup is preceded by writing a buffer of that size (not timed), as a
 * server's other work between two lookups pushes SQLite's pages and nodes out of the CPU
 * caches.
 *
 * usage: apisim_lookup_bench FILE.db [N [EVICT_KIB]]   (FILE.db is opened read-only; its
 * match index must be current: replay it once first) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"
#include "util.h"

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* splitmix64: a fixed sequence of picks, the same in every run. */
static uint64_t next_pick(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The match index's keys, into *keys (malloc'd) and *n: 0, or -1 with a message printed. */
static int read_keys(struct store *st, struct match_ident **keys, size_t *n)
{
    sqlite3 *db = store_db(st);
    sqlite3_stmt *s = NULL;
    size_t len = 0, cap = 0;
    struct match_ident *v = NULL;
    if (sqlite3_prepare_v2(db, "SELECT key_hash, key_check FROM match_index", -1, &s, NULL) !=
        SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", store_path(st), sqlite3_errmsg(db));
        return -1;
    }
    while (sqlite3_step(s) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 1024;
            struct match_ident *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                fprintf(stderr, "out of memory\n");
                free(v);
                sqlite3_finalize(s);
                return -1;
            }
            v = nv;
        }
        v[len].hash = (uint64_t)sqlite3_column_int64(s, 0);
        v[len].check = (uint64_t)sqlite3_column_int64(s, 1);
        len++;
    }
    sqlite3_finalize(s);
    if (len == 0) {
        fprintf(stderr, "%s: the match index is empty (replay the file once to build it)\n",
                store_path(st));
        free(v);
        return -1;
    }
    *keys = v;
    *n = len;
    return 0;
}

/* Write evict bytes of buf (if any): what a server does between two lookups, in cache terms. */
static void evict(unsigned char *buf, size_t evict_len, long i)
{
    if (evict_len) {
        memset(buf, (int)(i & 0xff), evict_len);
        __asm__ __volatile__("" : : "r"(buf) : "memory"); /* the writes are not dead */
    }
}

/* n lookups of keys picked by hot (always the first) or at random, each after evict(): µs per
 * lookup, or a negative number when one failed (printed). */
static double run(struct store *st, const struct match_ident *keys, size_t nkeys, long n, int hot,
                  unsigned char *buf, size_t evict_len)
{
    char err[APISIM_ERR_LEN];
    uint64_t seed = 1;
    int64_t spent = 0;
    for (long i = 0; i < n; i++) {
        evict(buf, evict_len, i);
        int64_t t0 = mono_ns();
        const struct match_ident *k = &keys[hot ? 0 : next_pick(&seed) % nkeys];
        struct exchange *ex = NULL;
        int64_t id = 0;
        int more = 0;
        int rc = store_read_begin(st, err);
        if (rc == 0)
            rc = store_index_first(st, NULL, k, NULL, 64 * 1024, 0, &id, &more, &ex, err);
        store_read_end(st);
        spent += mono_ns() - t0;
        if (rc == 0 && !ex)
            snprintf(err, sizeof err, "key %zu: no exchange", (size_t)(k - keys));
        exchange_free(ex);
        if (rc != 0 || !id) {
            fprintf(stderr, "%s\n", err);
            return -1;
        }
    }
    return (double)spent / 1000.0 / (double)n;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s FILE.db [N [EVICT_KIB]]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? atol(argv[2]) : 200000;
    long evict_kib = argc > 3 ? atol(argv[3]) : 0;
    if (n < 1 || n > 100000000 || evict_kib < 0 || evict_kib > 1024 * 1024) {
        fprintf(stderr, "N must be 1..100000000 and EVICT_KIB 0..1048576\n");
        return 2;
    }
    size_t evict_len = (size_t)evict_kib * 1024;
    unsigned char *buf = evict_len ? malloc(evict_len) : NULL;
    if (evict_len && !buf) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    char err[APISIM_ERR_LEN];
    struct store *st = NULL;
    struct match_ident *keys = NULL;
    size_t nkeys = 0;
    if (store_open(&st, argv[1], STORE_READONLY, err) < 0) {
        fprintf(stderr, "%s\n", err);
        free(buf);
        return 1;
    }
    if (read_keys(st, &keys, &nkeys) < 0) {
        store_close(st);
        free(buf);
        return 1;
    }
    /* A first pass warms the reader's page cache as replay's warm-up does. */
    double warm = run(st, keys, nkeys, n / 4 + 1, 0, buf, evict_len);
    double hot = warm < 0 ? -1 : run(st, keys, nkeys, n, 1, buf, evict_len);
    double random = hot < 0 ? -1 : run(st, keys, nkeys, n, 0, buf, evict_len);
    free(keys);
    free(buf);
    store_close(st);
    if (random < 0)
        return 1;
    printf("keys=%zu lookups=%ld evict_kib=%ld hot_us_per_lookup=%.2f random_us_per_lookup=%.2f\n",
           nkeys, n, evict_kib, hot, random);
    return 0;
}
