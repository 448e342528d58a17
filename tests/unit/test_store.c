/* Unit tests for store.c's writer, on a real file: a batch with one exchange that cannot be
 * stored (its rowid is taken) loses only that one, the exchanges held while another
 * connection had the database locked are stored once it is released, an exchange whose
 * source the schema's CHECK would refuse is refused by the writer, the writer's own counts
 * of exchanges and index entries match the rows after both, a trigger added to the file
 * runs for the exchanges stored after it, and many commits leave the WAL checkpointed by
 * the checkpointer thread rather than growing. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "check.h"
#include "exchange.h"
#include "store.h"
#include "util.h"

static struct exchange *make(const char *path, int64_t id)
{
    struct exchange *ex = exchange_new();
    if (!ex)
        return NULL;
    ex->session = strdup("s");
    ex->method = strdup("GET");
    ex->path = strdup(path);
    ex->query = strdup("");
    ex->status = 200;
    ex->id = id;
    return ex;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t scalar(const char *db_path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t n = -1;
    if (sqlite3_open(db_path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW)
            n = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    return n;
}

static int64_t count(const char *db_path, const char *where)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM exchanges WHERE %s", where);
    return scalar(db_path, sql);
}

/* The writer counts its exchanges and index entries in match_index_state itself (the
 * schema's triggers are off on its connection): the counts must be the real ones, or
 * replay would take the index for stale. */
static void check_index_counts(const char *db_path, int64_t exchanges)
{
    int64_t counted = scalar(db_path, "SELECT exchanges FROM match_index_state");
    int64_t indexed = scalar(db_path, "SELECT indexed FROM match_index_state");
    CHECK(counted == exchanges && counted == count(db_path, "1"),
          "match_index_state counts %lld exchanges, %lld are stored", (long long)counted,
          (long long)count(db_path, "1"));
    CHECK(indexed == exchanges &&
              indexed == scalar(db_path, "SELECT count(*) FROM match_index WHERE key_version = "
                                         "(SELECT key_version FROM match_index_state)"),
          "match_index_state counts %lld current entries", (long long)indexed);
}

static void test_bad_exchange_loses_only_itself(const char *dir)
{
    char path[512], err[APISIM_ERR_LEN];
    struct store *st = NULL;
    int64_t taken = 0;
    snprintf(path, sizeof path, "%s/batch.db", dir);
    CHECK(store_open(&st, path, STORE_CREATE, err) == 0, "open: %s", err);
    if (!st)
        return;
    CHECK(store_writer_start(st, err) == 0, "writer: %s", err);
    CHECK(store_submit(st, make("/first", 0), 1, &taken) == 0 && taken > 0, "first stored");

    /* Another connection takes the write lock: what is submitted now is held, and goes in
     * one batch when the lock is released. */
    sqlite3 *other;
    CHECK(sqlite3_open(path, &other) == SQLITE_OK, "open other");
    CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK, "lock");
    store_submit(st, make("/a", 0), 0, NULL);
    store_submit(st, make("/dup", taken), 0, NULL); /* its rowid is /first's */
    store_submit(st, make("/b", 0), 0, NULL);
    int64_t deadline = mono_ms() + 10000;
    while (store_held(st) < 3 && mono_ms() < deadline)
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL); /* a poll, not a wait */
    CHECK(store_held(st) == 3, "all three held together (%zu)", store_held(st));
    CHECK(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL) == SQLITE_OK, "unlock");
    sqlite3_close(other);

    store_writer_stop(st); /* stores what is held first */
    CHECK(store_write_failures(st) == 1, "one failure (%llu)",
          (unsigned long long)store_write_failures(st));
    store_close(st);
    CHECK(count(path, "path = '/a'") == 1, "/a stored beside the bad one");
    CHECK(count(path, "path = '/b'") == 1, "/b stored after the bad one");
    CHECK(count(path, "path = '/dup'") == 0, "the bad one is not stored");
    CHECK(count(path, "path = '/first'") == 1, "the row it collided with is intact");
    check_index_counts(path, 3);
}

/* The writer skips the schema's CHECKs (they cost it a sixth of its time): an exchange
 * whose source the CHECK would refuse is refused by the writer instead, alone. */
static void test_bad_source_is_refused(const char *dir)
{
    char path[512], err[APISIM_ERR_LEN];
    struct store *st = NULL;
    snprintf(path, sizeof path, "%s/source.db", dir);
    CHECK(store_open(&st, path, STORE_CREATE, err) == 0, "open: %s", err);
    if (!st)
        return;
    CHECK(store_writer_start(st, err) == 0, "writer: %s", err);
    struct exchange *bad = make("/bad", 0);
    free(bad->source);
    bad->source = strdup("hand");
    CHECK(store_submit(st, bad, 1, NULL) == -1, "a source that is not record, stub or import");
    CHECK(store_submit(st, make("/good", 0), 1, NULL) == 0, "the next one is stored");
    store_writer_stop(st);
    CHECK(store_write_failures(st) == 1, "one failure (%llu)",
          (unsigned long long)store_write_failures(st));
    store_close(st);
    CHECK(count(path, "path = '/bad'") == 0, "the bad one is not stored");
    CHECK(count(path, "path = '/good' AND source = 'record'") == 1, "the good one is");
    check_index_counts(path, 1);
}

/* Triggers are off on the writer's connection only while the file has none but the schema's
 * counting ones: one someone adds, even while apisim records, runs for every exchange
 * stored after it. */
static void test_added_trigger_runs(const char *dir)
{
    char path[512], err[APISIM_ERR_LEN];
    struct store *st = NULL;
    snprintf(path, sizeof path, "%s/trigger.db", dir);
    CHECK(store_open(&st, path, STORE_CREATE, err) == 0, "open: %s", err);
    if (!st)
        return;
    CHECK(store_writer_start(st, err) == 0, "writer: %s", err);
    CHECK(store_submit(st, make("/before", 0), 1, NULL) == 0, "stored before the trigger");
    sqlite3 *other;
    CHECK(sqlite3_open(path, &other) == SQLITE_OK, "open other");
    CHECK(sqlite3_exec(other,
                       "CREATE TABLE audit (exchange_id INTEGER); "
                       "CREATE TRIGGER audit_added AFTER INSERT ON exchanges "
                       "BEGIN INSERT INTO audit VALUES (NEW.id); END;",
                       NULL, NULL, NULL) == SQLITE_OK,
          "add a trigger: %s", sqlite3_errmsg(other));
    sqlite3_close(other);
    CHECK(store_submit(st, make("/after1", 0), 1, NULL) == 0, "stored after the trigger");
    CHECK(store_submit(st, make("/after2", 0), 1, NULL) == 0, "and another");
    store_close(st);
    CHECK(scalar(path, "SELECT count(*) FROM audit") == 2,
          "the added trigger ran for the two exchanges stored after it (%lld)",
          (long long)scalar(path, "SELECT count(*) FROM audit"));
    check_index_counts(path, 3);
}

static void test_wal_is_checkpointed(const char *dir)
{
    char path[512], wal[520], err[APISIM_ERR_LEN];
    struct store *st = NULL;
    snprintf(path, sizeof path, "%s/wal.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", path);
    CHECK(store_open(&st, path, STORE_CREATE, err) == 0, "open: %s", err);
    if (!st)
        return;
    CHECK(store_writer_start(st, err) == 0, "writer: %s", err);
    /* One exchange per commit, each adding about 8 frames of 4 KiB: without the WAL starting
     * again from its beginning, 10000 commits make it about 330 MB. The store keeps it
     * near 8000 frames (33 MB), with some more while a checkpoint is under way. */
    char p[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(p, sizeof p, "/e%d", i);
        store_submit(st, make(p, 0), 1, NULL);
    }
    struct stat sb;
    CHECK(stat(wal, &sb) == 0, "the WAL exists while the store is open");
    CHECK(sb.st_size < 120 * 1024 * 1024, "the WAL is reused, not grown (%lld bytes)",
          (long long)sb.st_size);
    CHECK(store_write_failures(st) == 0, "no failures");
    store_close(st);
    CHECK(count(path, "path LIKE '/e%'") == 10000, "every exchange stored");
    check_index_counts(path, 10000);
}

int main(void)
{
    char dir[] = "/tmp/apisim-test-store.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_bad_exchange_loses_only_itself(dir);
    test_bad_source_is_refused(dir);
    test_added_trigger_runs(dir);
    test_wal_is_checkpointed(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return failures ? 1 : 0;
}
