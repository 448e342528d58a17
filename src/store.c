#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "schema.h"

/* Text dumps bigger than this are refused: they are loaded into memory whole. */
#define STORE_MAX_DUMP (1024u * 1024 * 1024)
#define STORE_MAX_READERS 256
/* Exchanges kept in memory while another process holds the write lock. */
#define STORE_MAX_HELD 10000
/* How long the writer waits for a lock before holding a batch (and between retries). */
#define STORE_WRITER_BUSY_MS 200
#define STORE_RETRY_MS 500
/* Checkpoints (SQLite's own, every 1000 frames, ran inside a commit: a response waited for
 * it). Once the WAL holds STORE_CHECKPOINT_FRAMES frames, the checkpointer thread copies
 * it back into the database, and again every STORE_CHECKPOINT_STEP frames, on its own
 * connection: the writer goes on committing meanwhile. The WAL starts again from its
 * beginning only at a commit that finds all of it copied, which never happens while the
 * writer keeps committing; so past STORE_WAL_RESTART_FRAMES the writer copies what is left
 * itself, after answering its batch (the pause is that remainder and one fsync, once per
 * that many frames, instead of the whole WAL every STORE_CHECKPOINT_FRAMES). */
#define STORE_CHECKPOINT_FRAMES 4000
#define STORE_CHECKPOINT_STEP 1000
#define STORE_WAL_RESTART_FRAMES 8000

/* Page cache of each reader connection (one per serving thread), in KiB (SQLite's default is
 * 2000). A lookup of a random exchange walks two B-trees, the match index and the exchanges
 * table; the interior pages of both (about 4.5 MiB for a million exchanges) are touched by
 * every lookup and mostly stay cached at this size: 2.4 page reads from the file per random
 * lookup out of a million instead of 3.2 (each a pread and a 4 KiB copy; bench/README.md).
 * The cache fills only as pages are read: start-up memory does not change. */
#define STORE_READER_CACHE_KIB 8192

#define STORE_STR_(x) #x
#define STORE_STR(x) STORE_STR_(x)

/* The writer's transaction statements (struct store's wtx). */
enum { WTX_BEGIN, WTX_COMMIT, WTX_SAVEPOINT, WTX_RELEASE, WTX_VERSION, WTX_COUNT, WTX_N };
static const char *const wtx_sql[WTX_N] = {
    "BEGIN IMMEDIATE", "COMMIT", "SAVEPOINT one", "RELEASE one", "PRAGMA data_version",
    /* what the triggers match_index_exchange_added and match_index_entry_added count, for
     * ?1 exchanges each with an entry of this apisim's key version (writer_check_triggers) */
    ("UPDATE match_index_state SET exchanges = exchanges + ?1, indexed = indexed + "
     "CASE WHEN key_version = " STORE_STR(MATCH_INDEX_VERSION) " THEN ?1 ELSE 0 END")};

/* One exchange waiting for the writer. */
struct write_item {
    struct exchange *ex;
    int wait; /* a thread blocks in store_submit until done */
    /* Called by the writer once the item is done (store_submit_notify), outside the
     * store's mutex; the item is then freed by the writer. */
    void (*notify)(void *cls, int rc, int64_t id);
    void *notify_cls;
    int done;   /* set by the writer under the store's mutex */
    int rc;     /* 0 stored, -1 failed */
    int64_t id; /* rowid given to the exchange */
    struct write_item *next;
};

struct reader {
    pthread_t thread;
    sqlite3 *db;
    sqlite3_stmt *body;           /* SELECT response_body ... WHERE id = ?, prepared once */
    sqlite3_stmt *lookup;         /* the match index lookup (store_index_lookup) */
    sqlite3_stmt *response;       /* what replay serves of an exchange (store_get_response) */
    sqlite3_stmt *chunks;         /* its chunks */
    sqlite3_stmt *first;          /* a key's first exchange and its response */
    sqlite3_stmt *begin, *commit; /* a read transaction kept across requests */
    int in_txn;
    int64_t txn_us;   /* when it began (monotonic) */
    uint64_t txn_gen; /* the writer's commit count then */
};

/* A reader keeps its read transaction (one snapshot, the database's locks taken once) for
 * at most this long, and never past a commit of this process's writer. */
#define STORE_SNAPSHOT_US 50000

/* Statements an inserting connection keeps prepared: sessions, exchanges, chunks,
 * match_index, match_redacted. */
#define STORE_NCACHE 5

struct store {
    char *path; /* as given */
    char *uri;  /* what connections open: the file, or a shared in-memory database */
    int open_flags;
    int is_dump; /* a FILE.sql loaded into a shared-cache in-memory database */
    sqlite3 *db; /* store_open()'s connection; keeps an in-memory database alive */

    pthread_mutex_t mu;
    pthread_cond_t cond_work; /* the writer waits for items */
    pthread_cond_t cond_done; /* submitters wait for their item */
    struct write_item *head, *tail;
    int writer_running;
    int writer_stop;
    pthread_t writer;
    sqlite3 *wdb; /* the writer's connection */
    /* Exchanges waiting for another process to release the database (wait 0 items, owned
     * by the writer), retried every STORE_RETRY_MS, and whether the last try found it
     * locked. */
    struct write_item *held, *held_tail;
    size_t nheld;
    int locked_out;
    sqlite3_stmt *wcache[STORE_NCACHE];  /* the writer's prepared INSERTs, for the whole run */
    sqlite3_stmt *dbcache[STORE_NCACHE]; /* store_put_exchange()'s, on db */
    sqlite3_stmt *wtx[WTX_N]; /* its transaction statements, prepared once (not parsed per
                                 batch and per exchange as sqlite3_exec would) */
    /* The session whose row the writer last committed, skipping its upsert while no other
     * connection has written (PRAGMA data_version unchanged since wversion). */
    char *wsession;
    int64_t wversion;
    int wcounts;   /* triggers are off on the writer's connection: it counts (WTX_COUNT) */
    int wframes;   /* frames in the WAL after the writer's last commit */
    int ckpt_next; /* the checkpointer is asked to run when wframes reaches it */
    /* The checkpointer: its own thread and connection, so that copying the WAL into the
     * database (and its fsync) never holds up the writer's next commit. */
    pthread_t ckpt;
    int ckpt_running, ckpt_wanted, ckpt_stop, ckpt_active; /* under mu */
    pthread_cond_t cond_ckpt;      /* the checkpointer waits for ckpt_wanted */
    pthread_cond_t cond_ckpt_done; /* the writer waits for a run under way to end */
    sqlite3 *cdb;
    atomic_uint_least64_t failures;
    atomic_uint_least64_t commits; /* transactions the writer committed */

    pthread_key_t reader_key;
    struct reader readers[STORE_MAX_READERS];
    size_t nreaders;
};

static atomic_uint memdb_counter;

static void adopt_empty_index(struct store *st);

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Apply connection settings every connection needs. */
static int configure_connection(sqlite3 *db, int is_file, char *err, const char *path)
{
    if (!is_file)
        return 0;
    /* WAL lets replay readers and the recorder's writer work side by side, and a killed
     * process leaves a valid database. NORMAL sync is durable across process crashes. */
    char *msg = NULL;
    /* Turning a new file to WAL takes an exclusive lock, and two processes doing it at once
     * can get SQLITE_BUSY at once (SQLite calls no busy handler where waiting could
     * deadlock): the one that lost tries again, within the busy timeout's 5 s. */
    int rc;
    int64_t deadline = now_mono_us() + 5000000;
    while ((rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
                              &msg)) == SQLITE_BUSY &&
           now_mono_us() < deadline) {
        sqlite3_free(msg);
        msg = NULL;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", path, msg ? msg : "cannot configure");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int read_user_version(sqlite3 *db, int *out, char *err, const char *path)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        snprintf(err, APISIM_ERR_LEN,
                 "database %s: cannot be read (%s); is it an apisim recording (a SQLite file)?",
                 path, sqlite3_errmsg(db));
        goto out;
    }
    *out = sqlite3_column_int(st, 0);
    rc = 0;
out:
    sqlite3_finalize(st);
    return rc;
}

/* Bring the schema up to date with the embedded schema files. Other processes may open
 * the same file at the same moment (two recorders started together on a new --db): the
 * version read first only says whether there is work; the migrations run in one
 * transaction that holds the write lock (waiting the busy timeout for it) and starts from
 * the version read again inside it, so what another process applied meanwhile is not
 * applied twice. */
static int migrate(sqlite3 *db, const char *path, int readonly, char *err)
{
    int version;
    if (read_user_version(db, &version, err, path) < 0)
        return -1;
    if (version > schema_file_count) {
        snprintf(err, APISIM_ERR_LEN,
                 "database %s has schema version %d, newer than this apisim knows (%d): use a "
                 "newer apisim to read it",
                 path, version, schema_file_count);
        return -1;
    }
    if (version == schema_file_count)
        return 0;
    if (readonly) {
        snprintf(err, APISIM_ERR_LEN,
                 "database %s has schema version %d and needs upgrading to %d, but it is "
                 "read-only: make it writable once or open it with a matching apisim",
                 path, version, schema_file_count);
        return -1;
    }
    char *msg = NULL, what[128] = "locking it to apply the schema";
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    if (read_user_version(db, &version, err, path) < 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (version > schema_file_count) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        snprintf(err, APISIM_ERR_LEN,
                 "database %s was just upgraded to schema version %d by a newer apisim (this "
                 "one knows %d): use a newer apisim to read it",
                 path, version, schema_file_count);
        return -1;
    }
    for (int i = version; i < schema_file_count; i++) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d;", i + 1);
        snprintf(what, sizeof what, "applying schema %s", schema_files[i].name);
        if (sqlite3_exec(db, schema_files[i].sql, NULL, NULL, &msg) != SQLITE_OK ||
            sqlite3_exec(db, pragma, NULL, NULL, &msg) != SQLITE_OK)
            goto fail;
    }
    snprintf(what, sizeof what, "committing the schema");
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    return 0;
fail:
    snprintf(err, APISIM_ERR_LEN, "database %s: %s failed: %s", path, what,
             msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* A text dump is SQL from a file: it may fill the in-memory database, never reach another
 * file (ATTACH and VACUUM INTO would create or overwrite any path). */
static int dump_authorizer(void *cls, int action, const char *a, const char *b, const char *c,
                           const char *d)
{
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    if (action == SQLITE_ATTACH || action == SQLITE_DETACH) {
        *(int *)cls = 1;
        return SQLITE_DENY;
    }
    return SQLITE_OK;
}

/* Read a whole text dump into memory (capped). */
static char *read_dump(const char *path, char *err)
{
    char *text = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, APISIM_ERR_LEN, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct buf b = {.max = STORE_MAX_DUMP};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (buf_append(&b, chunk, n) < 0) {
            snprintf(err, APISIM_ERR_LEN,
                     "%s: text dump larger than 1 GiB; convert it with "
                     "`sqlite3 rec.db < FILE.sql` and use the .db file",
                     path);
            goto out;
        }
    }
    if (ferror(f)) {
        snprintf(err, APISIM_ERR_LEN, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    text = buf_steal(&b, NULL);
out:
    buf_free(&b);
    fclose(f);
    return text;
}

static int open_connection_raw(struct store *st, sqlite3 **out, char *err)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(st->uri, &db, st->open_flags, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "cannot open database %s: %s", st->path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, 5000);
    *out = db;
    return 0;
}

static int open_connection(struct store *st, sqlite3 **out, char *err)
{
    if (open_connection_raw(st, out, err) < 0)
        return -1;
    if (configure_connection(*out, !ends_with(st->path, ".sql"), err, st->path) < 0) {
        sqlite3_close(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int store_open(struct store **out, const char *path, int flags, char *err)
{
    struct store *st = calloc(1, sizeof *st);
    char *dump = NULL;
    int rc = -1;
    if (!st) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cond_work, NULL);
    pthread_cond_init(&st->cond_done, NULL);
    pthread_cond_init(&st->cond_ckpt, NULL);
    pthread_cond_init(&st->cond_ckpt_done, NULL);
    pthread_key_create(&st->reader_key, NULL);
    st->path = strdup(path);
    int is_dump = ends_with(path, ".sql");
    st->is_dump = is_dump;
    if (is_dump) {
        /* A shared-cache in-memory database, so reader threads can open it too. */
        char uri[128];
        snprintf(uri, sizeof uri, "file:apisim-%ld-%u?mode=memory&cache=shared", (long)getpid(),
                 atomic_fetch_add(&memdb_counter, 1));
        st->uri = strdup(uri);
        st->open_flags =
            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX;
    } else {
        struct stat sb;
        if (!(flags & STORE_CREATE) && stat(path, &sb) != 0) {
            snprintf(err, APISIM_ERR_LEN,
                     "database %s does not exist: record one first (apisim record --db %s ...)",
                     path, path);
            goto out;
        }
        st->uri = strdup(path);
        st->open_flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
        if (flags & STORE_CREATE)
            st->open_flags |= SQLITE_OPEN_CREATE;
        /* A read-only file can still be replayed. */
        if ((flags & STORE_READONLY) && access(path, W_OK) != 0)
            st->open_flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX;
    }
    if (!st->path || !st->uri) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        goto out;
    }
    /* The version is checked before anything (WAL included) changes the file. */
    if (open_connection_raw(st, &st->db, err) < 0)
        goto out;
    /* SQLite opens a write-protected file read-only without a word: say so now, not at
     * the first exchange. */
    if ((flags & STORE_CREATE) && !is_dump && sqlite3_db_readonly(st->db, "main") == 1) {
        snprintf(err, APISIM_ERR_LEN,
                 "database %s is read-only (file permissions or a read-only file system), "
                 "and recording writes to it: make it writable or choose another --db",
                 path);
        goto out;
    }
    int version;
    if (read_user_version(st->db, &version, err, path) < 0)
        goto out;
    if (version > schema_file_count) {
        snprintf(err, APISIM_ERR_LEN,
                 "database %s has schema version %d, newer than this apisim knows (%d): use a "
                 "newer apisim to read it",
                 path, version, schema_file_count);
        goto out;
    }
    if (configure_connection(st->db, !is_dump, err, path) < 0)
        goto out;
    if (is_dump) {
        if (!(dump = read_dump(path, err)))
            goto out;
        char *msg = NULL;
        int attach = 0;
        int limit = sqlite3_limit(st->db, SQLITE_LIMIT_ATTACHED, 0); /* VACUUM INTO too */
        sqlite3_set_authorizer(st->db, dump_authorizer, &attach);
        int erc = sqlite3_exec(st->db, dump, NULL, NULL, &msg);
        sqlite3_set_authorizer(st->db, NULL, NULL);
        sqlite3_limit(st->db, SQLITE_LIMIT_ATTACHED, limit);
        if (erc != SQLITE_OK) {
            snprintf(err, APISIM_ERR_LEN, "%s: not a valid apisim text dump: %s%s", path,
                     msg ? msg : sqlite3_errmsg(st->db),
                     attach ? " (a dump may not ATTACH other database files)" : "");
            sqlite3_free(msg);
            goto out;
        }
    }
    if (migrate(st->db, path, (st->open_flags & SQLITE_OPEN_READONLY) != 0, err) < 0)
        goto out;
    adopt_empty_index(st);
    *out = st;
    rc = 0;
out:
    free(dump);
    if (rc < 0)
        store_close(st);
    return rc;
}

sqlite3 *store_db(struct store *st)
{
    return st->db;
}

const char *store_path(const struct store *st)
{
    return st->path;
}

/* The calling thread's reader, opened on first use. */
static struct reader *thread_reader(struct store *st, char *err)
{
    struct reader *r = pthread_getspecific(st->reader_key);
    if (r)
        return r;
    sqlite3 *db = NULL;
    if (open_connection(st, &db, err) < 0)
        return NULL;
    if (!st->is_dump) { /* a text dump's pages are in memory already, shared by every reader */
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA cache_size = -%d", STORE_READER_CACHE_KIB);
        sqlite3_exec(db, pragma, NULL, NULL, NULL);
    }
    pthread_mutex_lock(&st->mu);
    if (st->nreaders == STORE_MAX_READERS) {
        pthread_mutex_unlock(&st->mu);
        sqlite3_close(db);
        snprintf(err, APISIM_ERR_LEN, "database %s: too many reader threads", st->path);
        return NULL;
    }
    r = &st->readers[st->nreaders++];
    r->thread = pthread_self();
    r->db = db;
    pthread_mutex_unlock(&st->mu);
    pthread_setspecific(st->reader_key, r);
    return r;
}

sqlite3 *store_reader(struct store *st, char *err)
{
    struct reader *r = thread_reader(st, err);
    return r ? r->db : NULL;
}

int store_read_body(struct store *st, int64_t id, unsigned char **out, size_t *len, char *err)
{
    struct reader *r = thread_reader(st, err);
    int rc = -1;
    if (!r)
        return -1;
    if (!r->body &&
        sqlite3_prepare_v3(r->db, "SELECT response_body FROM exchanges WHERE id = ?", -1,
                           SQLITE_PREPARE_PERSISTENT, &r->body, NULL) != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(r->db));
        return -1;
    }
    sqlite3_bind_int64(r->body, 1, id);
    int step = sqlite3_step(r->body);
    if (step != SQLITE_ROW) {
        snprintf(err, APISIM_ERR_LEN, "database %s: exchange %lld: %s", st->path, (long long)id,
                 step == SQLITE_DONE ? "no longer there" : sqlite3_errmsg(r->db));
        goto out;
    }
    size_t n = (size_t)sqlite3_column_bytes(r->body, 0);
    unsigned char *p = malloc(n ? n : 1);
    if (!p) {
        snprintf(err, APISIM_ERR_LEN, "out of memory reading exchange %lld", (long long)id);
        goto out;
    }
    if (n)
        memcpy(p, sqlite3_column_blob(r->body, 0), n);
    *out = p;
    *len = n;
    rc = 0;
out:
    sqlite3_reset(r->body);
    return rc;
}

int store_ensure_session(struct store *st, const char *name, const char *upstream, char *err)
{
    sqlite3_stmt *s = NULL;
    int rc = -1;
    char now[40];
    format_iso8601_ms(now_wall_us(), now, sizeof now);
    if (sqlite3_prepare_v2(st->db,
                           "INSERT INTO sessions (name, created_at, upstream) VALUES (?, ?, ?) "
                           "ON CONFLICT (name) DO NOTHING",
                           -1, &s, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, now, -1, SQLITE_STATIC);
    if (upstream)
        sqlite3_bind_text(s, 3, upstream, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto fail;
    rc = 0;
    goto out;
fail:
    snprintf(err, APISIM_ERR_LEN, "database %s: cannot write session %s: %s", st->path, name,
             sqlite3_errmsg(st->db));
out:
    sqlite3_finalize(s);
    return rc;
}

int store_max_seq(struct store *st, const char *session, int64_t *out, char *err)
{
    sqlite3_stmt *s = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(st->db, "SELECT coalesce(max(seq), 0) FROM exchanges WHERE session = ?",
                           -1, &s, NULL) != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(st->db));
        goto out;
    }
    sqlite3_bind_text(s, 1, session, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_ROW) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(st->db));
        goto out;
    }
    *out = sqlite3_column_int64(s, 0);
    rc = 0;
out:
    sqlite3_finalize(s);
    return rc;
}

/* Bind a body: TEXT when it is UTF-8 (readable in sqlite3), BLOB otherwise, NULL if empty. */
static void bind_body(sqlite3_stmt *s, int i, const unsigned char *p, size_t n)
{
    if (!p || n == 0)
        sqlite3_bind_null(s, i);
    else if (is_utf8_text(p, n))
        sqlite3_bind_text64(s, i, (const char *)p, n, SQLITE_STATIC, SQLITE_UTF8);
    else
        sqlite3_bind_blob64(s, i, p, n, SQLITE_STATIC);
}

static void bind_opt_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

/* Prepare sql into *slot unless a statement is already there; reset it for reuse. */
static int cached_stmt(sqlite3 *db, sqlite3_stmt **slot, const char *sql)
{
    if (*slot) {
        sqlite3_reset(*slot);
        sqlite3_clear_bindings(*slot);
        return SQLITE_OK;
    }
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL);
}

/* Compute ex->index when it is not there yet. Returns 0, or -1 when out of memory. */
static int compute_index(struct exchange *ex)
{
    if (ex->index)
        return 0;
    struct exchange_index *ix = calloc(1, sizeof *ix);
    if (!ix)
        return -1;
    /* The request as it is stored (insert_exchange's defaults). */
    struct match_request mr = {.method = ex->method ? ex->method : "GET",
                               .path = ex->path ? ex->path : "/",
                               .query = ex->query ? ex->query : "",
                               .headers = &ex->request_headers,
                               .body = ex->request_body,
                               .body_len = ex->request_body_len};
    if (match_index_ident(&mr, &ix->learnt, &ix->ident) < 0) {
        redact_rules_free(&ix->learnt);
        free(ix);
        return -1;
    }
    ex->index = ix;
    return 0;
}

static int insert_redacted(sqlite3 *db, sqlite3_stmt **slot, const char *kind, char **names,
                           size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (cached_stmt(db, slot,
                        "INSERT INTO match_redacted (kind, name) VALUES (?, ?) "
                        "ON CONFLICT DO NOTHING") != SQLITE_OK)
            return -1;
        sqlite3_bind_text(*slot, 1, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(*slot, 2, names[i], -1, SQLITE_STATIC);
        if (sqlite3_step(*slot) != SQLITE_DONE)
            return -1;
    }
    return 0;
}

/* Write the match index entry of exchange id, for scheme and authority (either NULL when
 * unknown), and the names it holds as REDACTED, with cache[3] and cache[4]. The origin is
 * made here as store_origin() makes it. Returns SQLite's code: SQLITE_OK, or the failure. */
static int insert_index(sqlite3 *db, sqlite3_stmt **cache, sqlite3_int64 id, const char *session,
                        sqlite3_int64 seq, const char *scheme, const char *authority,
                        const struct exchange_index *ix)
{
    int rc = cached_stmt(db, &cache[3],
                         "INSERT INTO match_index (exchange_id, session, seq, key_hash, "
                         "key_check, key_version, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
                         "CASE WHEN ?8 IS NOT NULL THEN coalesce(?7, 'http') || '://' || ?8 END)");
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_stmt *s = cache[3];
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_text(s, 2, session, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, seq);
    /* SQLite integers are signed: the 64 bits are stored as they are. */
    sqlite3_bind_int64(s, 4, (sqlite3_int64)ix->ident.hash);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)ix->ident.check);
    sqlite3_bind_int(s, 6, MATCH_INDEX_VERSION);
    bind_opt_text(s, 7, scheme);
    bind_opt_text(s, 8, authority);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return rc;
    const struct redact_rules *l = &ix->learnt;
    if (insert_redacted(db, &cache[4], "query", l->query, l->nquery) < 0 ||
        insert_redacted(db, &cache[4], "json", l->json, l->njson) < 0 ||
        insert_redacted(db, &cache[4], "header", l->headers, l->nheaders) < 0) {
        rc = sqlite3_errcode(db);
        if (cache[4])
            sqlite3_reset(cache[4]);
        return rc == SQLITE_OK ? SQLITE_ERROR : rc;
    }
    if (cache[4])
        sqlite3_reset(cache[4]);
    return SQLITE_OK;
}

/* Insert with statements cached in cache[STORE_NCACHE] (the writer keeps its own for the
 * whole run; one-off callers pass a fresh cache and finalize it). Writes the exchange's
 * match index entry too. session_known: the session's row is known to be committed (the
 * writer's upsert is skipped); one-off callers pass 0. */
static int insert_exchange(sqlite3 *db, sqlite3_stmt **cache, struct exchange *ex,
                           int session_known, char *err)
{
    static const char sql[] =
        "INSERT INTO exchanges (session, seq, source, started_at, method, path, query, "
        "request_headers, request_body, match_key, status, response_headers, response_body, "
        "response_encoding, ttfb_us, duration_us, error, complete, delay_ms, id, response_size, "
        "scheme, authority) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    sqlite3_stmt *s, *c;
    char *reqh = NULL, *resph = NULL;
    int rc = -1;
    char started[40];
    const char *source = ex->source ? ex->source : "record";
    if (strcmp(source, "record") != 0 && strcmp(source, "stub") != 0 &&
        strcmp(source, "import") != 0) {
        snprintf(err, APISIM_ERR_LEN,
                 "cannot store exchange %s %s: source \"%.32s\" is not "
                 "record, stub or import",
                 ex->method ? ex->method : "", ex->path ? ex->path : "", source);
        return -1;
    }
    format_iso8601_ms(ex->started_us, started, sizeof started);
    reqh = exchange_headers_to_json(&ex->request_headers);
    resph = exchange_headers_to_json(&ex->response_headers);
    if (!reqh || !resph || compute_index(ex) < 0) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        goto out;
    }
    /* Sessions are created on demand so every insert path keeps the foreign key true
     * (unless the caller knows the row is there). */
    if (!session_known) {
        if (cached_stmt(db, &cache[0],
                        "INSERT INTO sessions (name, created_at) VALUES (?, ?) "
                        "ON CONFLICT (name) DO NOTHING") != SQLITE_OK)
            goto fail;
        c = cache[0];
        sqlite3_bind_text(c, 1, ex->session ? ex->session : "default", -1, SQLITE_STATIC);
        sqlite3_bind_text(c, 2, started, -1, SQLITE_STATIC);
        if (sqlite3_step(c) != SQLITE_DONE)
            goto fail;
        sqlite3_reset(c);
    }

    if (cached_stmt(db, &cache[1], sql) != SQLITE_OK)
        goto fail;
    s = cache[1];
    sqlite3_bind_text(s, 1, ex->session ? ex->session : "default", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, ex->seq);
    sqlite3_bind_text(s, 3, source, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, started, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, ex->method ? ex->method : "GET", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, ex->path ? ex->path : "/", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, ex->query ? ex->query : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 8, reqh, -1, SQLITE_STATIC);
    bind_body(s, 9, ex->request_body, ex->request_body_len);
    bind_opt_text(s, 10, ex->match_key);
    sqlite3_bind_int(s, 11, ex->status);
    sqlite3_bind_text(s, 12, resph, -1, SQLITE_STATIC);
    bind_body(s, 13, ex->response_body, ex->response_body_len);
    bind_opt_text(s, 14, ex->response_encoding);
    sqlite3_bind_int64(s, 15, ex->ttfb_us);
    sqlite3_bind_int64(s, 16, ex->duration_us);
    bind_opt_text(s, 17, ex->error);
    sqlite3_bind_int(s, 18, ex->complete);
    sqlite3_bind_int64(s, 19, ex->delay_ms);
    if (ex->id > 0)
        sqlite3_bind_int64(s, 20, ex->id); /* else NULL: SQLite picks the next rowid */
    sqlite3_bind_int64(s, 21, (int64_t)ex->response_body_len);
    bind_opt_text(s, 22, ex->scheme);
    bind_opt_text(s, 23, ex->authority);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto fail;
    ex->id = sqlite3_last_insert_rowid(db);
    sqlite3_reset(s);
    if (insert_index(db, cache, ex->id, ex->session ? ex->session : "default", ex->seq, ex->scheme,
                     ex->authority, ex->index) != SQLITE_OK)
        goto fail;

    if (ex->nchunks) {
        if (cached_stmt(db, &cache[2],
                        "INSERT INTO chunks (exchange_id, idx, offset_us, size) "
                        "VALUES (?, ?, ?, ?)") != SQLITE_OK)
            goto fail;
        c = cache[2];
        for (size_t i = 0; i < ex->nchunks; i++) {
            sqlite3_reset(c);
            sqlite3_bind_int64(c, 1, ex->id);
            sqlite3_bind_int64(c, 2, (int64_t)i);
            sqlite3_bind_int64(c, 3, ex->chunks[i].offset_us);
            sqlite3_bind_int64(c, 4, (int64_t)ex->chunks[i].size);
            if (sqlite3_step(c) != SQLITE_DONE)
                goto fail;
        }
        sqlite3_reset(c);
    }
    rc = 0;
    goto out;
fail:
    snprintf(err, APISIM_ERR_LEN, "cannot store exchange %s %s: %s", ex->method ? ex->method : "",
             ex->path ? ex->path : "", sqlite3_errmsg(db));
    for (int i = 0; i < STORE_NCACHE; i++)
        if (cache[i])
            sqlite3_reset(cache[i]);
out:
    free(reqh);
    free(resph);
    return rc;
}

int store_insert_exchange(sqlite3 *db, struct exchange *ex, char *err)
{
    sqlite3_stmt *cache[STORE_NCACHE] = {NULL};
    int rc = insert_exchange(db, cache, ex, 0, err);
    for (int i = 0; i < STORE_NCACHE; i++)
        sqlite3_finalize(cache[i]);
    return rc;
}

int store_put_exchange(struct store *st, struct exchange *ex, char *err)
{
    return insert_exchange(st->db, st->dbcache, ex, 0, err);
}

static char *column_dup(sqlite3_stmt *s, int i)
{
    if (sqlite3_column_type(s, i) == SQLITE_NULL)
        return NULL;
    const unsigned char *t = sqlite3_column_text(s, i);
    return xstrndup((const char *)t, (size_t)sqlite3_column_bytes(s, i));
}

static unsigned char *column_bytes_dup(sqlite3_stmt *s, int i, size_t *len)
{
    *len = 0;
    if (sqlite3_column_type(s, i) == SQLITE_NULL)
        return NULL;
    const void *p = sqlite3_column_blob(s, i);
    size_t n = (size_t)sqlite3_column_bytes(s, i);
    unsigned char *out = malloc(n + 1);
    if (!out)
        return NULL;
    if (n)
        memcpy(out, p, n);
    out[n] = 0;
    *len = n;
    return out;
}

/* Read ex's chunks with c ("SELECT offset_us, size FROM chunks WHERE exchange_id = ? ORDER
 * BY idx", prepared by the caller, reset here). Returns SQLITE_DONE, SQLITE_NOMEM or the
 * failing step's code. */
static int read_chunks(sqlite3_stmt *c, struct exchange *ex)
{
    size_t cap = 0;
    int step;
    sqlite3_reset(c);
    sqlite3_bind_int64(c, 1, ex->id);
    while ((step = sqlite3_step(c)) == SQLITE_ROW) {
        if (ex->nchunks == cap) {
            cap = cap ? cap * 2 : 8;
            struct chunk *v = realloc(ex->chunks, cap * sizeof *v);
            if (!v)
                return SQLITE_NOMEM;
            ex->chunks = v;
        }
        ex->chunks[ex->nchunks].offset_us = sqlite3_column_int64(c, 0);
        ex->chunks[ex->nchunks].size = (size_t)sqlite3_column_int64(c, 1);
        ex->nchunks++;
    }
    return step;
}

int store_get_exchange(sqlite3 *db, int64_t id, struct exchange **out, char *err)
{
    static const char sql[] =
        "SELECT id, session, seq, source, CAST(round((julianday(started_at) - 2440587.5) * "
        "86400000) AS INTEGER) * 1000, method, path, query, request_headers, request_body, "
        "match_key, status, response_headers, response_body, response_encoding, ttfb_us, "
        "duration_us, error, complete, delay_ms, scheme, authority FROM exchanges WHERE id = ?";
    sqlite3_stmt *s = NULL;
    struct exchange *ex = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, sql, sizeof sql - 1, &s, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(s, 1, id);
    int step = sqlite3_step(s);
    if (step == SQLITE_DONE) {
        rc = 1;
        goto out;
    }
    if (step != SQLITE_ROW)
        goto fail;
    if (!(ex = exchange_new()))
        goto oom;
    ex->id = sqlite3_column_int64(s, 0);
    ex->session = column_dup(s, 1);
    ex->seq = sqlite3_column_int64(s, 2);
    ex->source = column_dup(s, 3);
    ex->started_us = sqlite3_column_int64(s, 4);
    ex->method = column_dup(s, 5);
    ex->path = column_dup(s, 6);
    ex->query = column_dup(s, 7);
    if (exchange_headers_from_json((const char *)sqlite3_column_text(s, 8),
                                   (size_t)sqlite3_column_bytes(s, 8), &ex->request_headers) < 0)
        goto corrupt;
    ex->request_body = column_bytes_dup(s, 9, &ex->request_body_len);
    ex->match_key = column_dup(s, 10);
    ex->status = sqlite3_column_int(s, 11);
    if (exchange_headers_from_json((const char *)sqlite3_column_text(s, 12),
                                   (size_t)sqlite3_column_bytes(s, 12), &ex->response_headers) < 0)
        goto corrupt;
    ex->response_body = column_bytes_dup(s, 13, &ex->response_body_len);
    ex->response_encoding = column_dup(s, 14);
    ex->ttfb_us = sqlite3_column_int64(s, 15);
    ex->duration_us = sqlite3_column_int64(s, 16);
    ex->error = column_dup(s, 17);
    ex->complete = sqlite3_column_int(s, 18);
    ex->delay_ms = sqlite3_column_int64(s, 19);
    ex->scheme = column_dup(s, 20);
    ex->authority = column_dup(s, 21);
    if (!ex->session || !ex->method || !ex->path || !ex->query)
        goto oom;
    sqlite3_finalize(s);
    s = NULL;

    if (sqlite3_prepare_v2(db,
                           "SELECT offset_us, size FROM chunks WHERE exchange_id = ? ORDER BY idx",
                           -1, &s, NULL) != SQLITE_OK)
        goto fail;
    step = read_chunks(s, ex);
    if (step == SQLITE_NOMEM)
        goto oom;
    if (step != SQLITE_DONE)
        goto fail;
    *out = ex;
    ex = NULL;
    rc = 0;
    goto out;
corrupt:
    snprintf(err, APISIM_ERR_LEN, "exchange %lld: headers are not a JSON array of [name, value]",
             (long long)id);
    goto out;
oom:
    snprintf(err, APISIM_ERR_LEN, "out of memory reading exchange %lld", (long long)id);
    goto out;
fail:
    snprintf(err, APISIM_ERR_LEN, "cannot read exchange %lld: %s", (long long)id,
             sqlite3_errmsg(db));
out:
    sqlite3_finalize(s);
    exchange_free(ex);
    return rc;
}

/* What the last failure on db means for a recorder, to follow SQLite's own message:
 * e.g. " (the disk is full: No space left on device)". Empty when there is nothing to add. */
static void failure_hint(sqlite3 *db, char *out, size_t n)
{
    int code = sqlite3_extended_errcode(db) & 0xff;
    int sys = sqlite3_system_errno(db);
    const char *hint = code == SQLITE_BUSY || code == SQLITE_LOCKED
                           ? "another process holds a write lock on it"
                       : code == SQLITE_FULL     ? "the disk is full"
                       : code == SQLITE_READONLY ? "it cannot be written"
                                                 : NULL;
    int io = (code == SQLITE_IOERR || code == SQLITE_FULL) && sys;
    if (hint && io)
        snprintf(out, n, " (%s: %s)", hint, strerror(sys));
    else if (hint || io)
        snprintf(out, n, " (%s)", hint ? hint : strerror(sys));
    else
        out[0] = '\0';
}

/* Another process holds the write lock: keep the batch for a later try, and let the clients
 * waiting for it have their answers now (store_submit returns 1). Returns with st->mu held. */
static void hold_batch(struct store *st, struct write_item *batch, size_t nbatch,
                       struct write_item **notified)
{
    if (!st->locked_out)
        log_msg(LOG_ERROR,
                "database %s is locked by another process: exchanges are held in "
                "memory (up to %d) and stored once it is released (still forwarding)",
                st->path, STORE_MAX_HELD);
    st->locked_out = 1;
    pthread_mutex_lock(&st->mu);
    size_t dropped = 0;
    struct write_item *it = batch;
    while (it) {
        struct write_item *next = it->next, *keep = it;
        it->next = NULL;
        if (st->nheld >= STORE_MAX_HELD) {
            atomic_fetch_add(&st->failures, 1);
            exchange_free(it->ex);
            it->ex = NULL;
            it->rc = -1;
            keep = NULL;
            dropped++;
        } else if (it->wait || it->notify) {
            /* The submitter's item is done now: the exchange moves to one of the writer's. */
            keep = calloc(1, sizeof *keep);
            if (keep) {
                keep->ex = it->ex;
                it->rc = 1;
            } else {
                atomic_fetch_add(&st->failures, 1);
                exchange_free(it->ex);
                it->rc = -1;
                dropped++;
            }
            it->ex = NULL;
        }
        if (keep) {
            if (st->held_tail)
                st->held_tail->next = keep;
            else
                st->held = keep;
            st->held_tail = keep;
            st->nheld++;
        }
        if (it->wait) {
            it->done = 1;
        } else if (it->notify) {
            it->next = *notified; /* told after the mutex is released */
            *notified = it;
        } else if (!keep) {
            free(it);
        }
        it = next;
    }
    if (dropped)
        log_msg(LOG_ERROR,
                "database %s: still locked with %d exchanges held: %zu of %zu "
                "newer one(s) not stored",
                st->path, STORE_MAX_HELD, dropped, nbatch);
    pthread_cond_broadcast(&st->cond_done);
}

/* Tell asynchronous submitters their items are done, and free the items. */
static void notify_all(struct write_item *list)
{
    while (list) {
        struct write_item *next = list->next;
        list->notify(list->notify_cls, list->rc, list->id);
        free(list);
        list = next;
    }
}

/* Run the writer's statement wtx[which], preparing it the first time, with arg as its ?1
 * when it has one. Returns an SQLite result code (SQLITE_OK for a statement done); *row,
 * when not NULL, gets the first column of a row (WTX_VERSION). */
static int writer_run(struct store *st, int which, int64_t arg, int64_t *row)
{
    sqlite3_stmt **s = &st->wtx[which];
    if (!*s) {
        int rc =
            sqlite3_prepare_v3(st->wdb, wtx_sql[which], -1, SQLITE_PREPARE_PERSISTENT, s, NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (sqlite3_bind_parameter_count(*s) > 0)
        sqlite3_bind_int64(*s, 1, arg);
    int rc = sqlite3_step(*s);
    if (rc == SQLITE_ROW && row)
        *row = sqlite3_column_int64(*s, 0);
    sqlite3_reset(*s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* Turn triggers off on the writer's connection when the file has no trigger but the
 * schema's counting ones (007_match_index), whose work the writer then does itself
 * (WTX_COUNT): they cost it about a quarter of its time per exchange, two statements per
 * row. A trigger someone added to the file keeps them all on. Run at the start and whenever
 * another connection wrote. */
static void writer_check_triggers(struct store *st)
{
    static const char sql[] =
        "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name NOT IN ("
        "'match_index_exchange_added', 'match_index_exchange_removed', "
        "'match_index_exchange_changed', 'match_index_entry_added', "
        "'match_index_entry_removed', 'match_index_entry_changed')";
    sqlite3_stmt *s = NULL;
    int others = -1, on = 1;
    if (sqlite3_prepare_v2(st->wdb, sql, -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        others = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_db_config(st->wdb, SQLITE_DBCONFIG_ENABLE_TRIGGER, others != 0, &on);
    if (st->wcounts != !on)
        log_msg(LOG_DEBUG, "database %s: the writer %s", st->path,
                on ? "runs the triggers" : "counts its exchanges itself (triggers off)");
    st->wcounts = !on;
}

/* sqlite3_wal_hook: after each of the writer's commits (instead of SQLite's checkpoint). */
static int writer_wal_hook(void *cls, sqlite3 *db, const char *name, int frames)
{
    struct store *st = cls;
    (void)db;
    (void)name;
    st->wframes = frames;
    return SQLITE_OK;
}

/* Forget the session row the writer knew of. */
static void writer_forget_session(struct store *st)
{
    free(st->wsession);
    st->wsession = NULL;
}

/* Insert every exchange of batch in the writer's open transaction, setting each item's rc
 * and id; *ensured is the session of the last exchange inserted. Without care, the first
 * failure stops the batch: returns 1, nothing logged, and the caller rolls back and tries
 * again with care. With care, each exchange has its own savepoint, so one bad row does not
 * lose the others (a savepoint costs a copy of every page the exchange changes, so it is
 * paid only after a failure). Returns 0, or -1 when SQLite rolled the whole transaction
 * back on its own (SQLITE_FULL, an I/O error). */
static int writer_insert(struct store *st, struct write_item *batch, int careful,
                         const char **ensured)
{
    char err[APISIM_ERR_LEN], why[APISIM_ERR_LEN];
    for (struct write_item *it = batch; it; it = it->next) {
        it->rc = -1;
        it->ex->id = it->id; /* as it came (0: SQLite's choice), for a second try too */
        const char *session = it->ex->session ? it->ex->session : "default";
        int known = (*ensured && strcmp(*ensured, session) == 0) ||
                    (st->wsession && strcmp(st->wsession, session) == 0);
        if (careful)
            writer_run(st, WTX_SAVEPOINT, 0, NULL);
        if (insert_exchange(st->wdb, st->wcache, it->ex, known, err) == 0) {
            it->rc = 0;
            *ensured = session;
            if (careful)
                writer_run(st, WTX_RELEASE, 0, NULL);
            continue;
        }
        if (!careful)
            return 1;
        failure_hint(st->wdb, why, sizeof why);
        log_msg(LOG_ERROR, "database %s: %s%s", st->path, err, why);
        /* SQLITE_FULL or an I/O error may end the transaction itself: then nothing of the
         * batch is stored, whatever the rows before said. */
        if (sqlite3_get_autocommit(st->wdb))
            return -1;
        sqlite3_exec(st->wdb, "ROLLBACK TO one; RELEASE one", NULL, NULL, NULL);
    }
    return 0;
}

/* Begin the transaction of a batch of nbatch exchanges. Returns 0 when begun; 1 when
 * another process holds the write lock (and stopping is 0): the batch is held, each exchange
 * with the rowid it came with (it->id), and st->mu is held on return; -1 when it cannot
 * begin (logged: the batch is not stored). */
static int writer_begin(struct store *st, struct write_item *batch, size_t nbatch, int stopping)
{
    int rc = writer_run(st, WTX_BEGIN, 0, NULL);
    if (rc == SQLITE_OK)
        return 0;
    if (!stopping && ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)) {
        struct write_item *notified = NULL;
        for (struct write_item *it = batch; it; it = it->next)
            it->ex->id = it->id;
        hold_batch(st, batch, nbatch, &notified);
        if (notified) {
            pthread_mutex_unlock(&st->mu);
            notify_all(notified);
            pthread_mutex_lock(&st->mu);
        }
        return 1;
    }
    char why[APISIM_ERR_LEN];
    failure_hint(st->wdb, why, sizeof why);
    log_msg(LOG_ERROR,
            "database %s: cannot begin a transaction: %s%s; %zu exchange(s) not stored (still "
            "forwarding)",
            st->path, sqlite3_errmsg(st->wdb), why, nbatch);
    return -1;
}

/* The writer: takes everything queued, stores it in one transaction, wakes the waiters.
 * Grouping commits is what lets 64 recording clients share one fsync-bound writer. */
static void *writer_main(void *arg)
{
    struct store *st = arg;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (!st->head && !st->held && !st->writer_stop)
            pthread_cond_wait(&st->cond_work, &st->mu);
        if (!st->head && st->held && !st->writer_stop) {
            /* Only held exchanges: try again a little later (or when more arrive). */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += STORE_RETRY_MS * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&st->cond_work, &st->mu, &ts);
        }
        if (!st->head && !st->held && st->writer_stop)
            break;
        /* Held exchanges go first: they are older. */
        struct write_item *batch = st->held ? st->held : st->head;
        if (st->held)
            st->held_tail->next = st->head;
        st->held = st->held_tail = NULL;
        st->nheld = 0;
        st->head = st->tail = NULL;
        int stopping = st->writer_stop;
        pthread_mutex_unlock(&st->mu);

        size_t nbatch = 0;
        for (struct write_item *it = batch; it; it = it->next)
            nbatch++;
        char why[APISIM_ERR_LEN];
        /* Held batches are retried, so the wait for a lock is short; the last try at stop
         * waits longer. */
        sqlite3_busy_timeout(st->wdb, stopping ? 5000 : STORE_WRITER_BUSY_MS);
        for (struct write_item *it = batch; it; it = it->next) {
            it->rc = -1;
            it->id = it->ex->id; /* the rowid it came with, kept if the batch is held */
        }
        int begun = writer_begin(st, batch, nbatch, stopping);
        if (begun > 0)
            continue; /* held, with st->mu held */
        int ok = begun == 0;
        if (ok && st->locked_out) {
            log_msg(LOG_WARN,
                    "database %s is writable again: storing the exchanges held "
                    "meanwhile",
                    st->path);
            st->locked_out = 0;
        }
        /* Another connection wrote since the last batch (it may have deleted the session
         * the writer knows of, or added a trigger): check both again. */
        int64_t version = 0;
        if (ok &&
            (writer_run(st, WTX_VERSION, 0, &version) != SQLITE_OK || version != st->wversion)) {
            writer_forget_session(st);
            writer_check_triggers(st);
        }
        st->wversion = version;
        const char *ensured = NULL; /* the session of the last exchange inserted */
        int aborted = 0;            /* SQLite rolled the whole transaction back on its own */
        if (ok && writer_insert(st, batch, 0, &ensured) > 0) {
            /* One exchange failed: the batch is done again with a savepoint each, so that
             * only the bad one is lost. */
            sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
            ensured = NULL;
            begun = writer_begin(st, batch, nbatch, stopping);
            if (begun > 0)
                continue; /* another process took the lock in between: held */
            ok = begun == 0;
            for (struct write_item *it = batch; it; it = it->next)
                it->rc = -1;
            if (ok)
                aborted = writer_insert(st, batch, 1, &ensured) < 0;
        }
        int64_t inserted = 0;
        for (struct write_item *it = batch; it; it = it->next) {
            it->id = it->rc == 0 ? it->ex->id : 0;
            inserted += it->rc == 0;
        }
        int committed = 0;
        if (ok && aborted) {
            log_msg(LOG_ERROR,
                    "database %s: the transaction was rolled back: %zu exchange(s) "
                    "not stored (still forwarding)",
                    st->path, nbatch);
            for (struct write_item *it = batch; it; it = it->next)
                it->rc = -1;
        } else if (ok && ((inserted > 0 && st->wcounts &&
                           writer_run(st, WTX_COUNT, inserted, NULL) != SQLITE_OK) ||
                          writer_run(st, WTX_COMMIT, 0, NULL) != SQLITE_OK)) {
            failure_hint(st->wdb, why, sizeof why);
            log_msg(LOG_ERROR,
                    "database %s: commit failed: %s%s; %zu exchange(s) not stored "
                    "(still forwarding)",
                    st->path, sqlite3_errmsg(st->wdb), why, nbatch);
            sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
            for (struct write_item *it = batch; it; it = it->next)
                it->rc = -1;
        } else if (ok) {
            committed = 1;
            atomic_fetch_add(&st->commits, 1); /* readers take a new snapshot */
        }
        /* The session row is known to be there only once committed. */
        if (committed && ensured && !(st->wsession && strcmp(st->wsession, ensured) == 0)) {
            writer_forget_session(st);
            st->wsession = strdup(ensured);
        } else if (!committed) {
            writer_forget_session(st);
        }

        /* Asynchronous submitters first, outside the mutex: their callbacks resume
         * connections. */
        struct write_item *notified = NULL, **link = &batch;
        while (*link) {
            struct write_item *it = *link;
            if (it->notify) {
                *link = it->next;
                if (it->rc < 0)
                    atomic_fetch_add(&st->failures, 1);
                exchange_free(it->ex);
                it->ex = NULL;
                it->next = notified;
                notified = it;
            } else {
                link = &it->next;
            }
        }
        notify_all(notified);
        pthread_mutex_lock(&st->mu);
        struct write_item *it = batch;
        while (it) {
            struct write_item *next = it->next;
            if (it->rc < 0)
                atomic_fetch_add(&st->failures, 1);
            exchange_free(it->ex);
            it->ex = NULL;
            if (it->wait)
                it->done = 1; /* the submitter frees the item */
            else
                free(it);
            it = next;
        }
        pthread_cond_broadcast(&st->cond_done);
        if (st->wframes < st->ckpt_next - STORE_CHECKPOINT_STEP) /* the WAL started again */
            st->ckpt_next = STORE_CHECKPOINT_FRAMES;
        if (st->wframes >= STORE_WAL_RESTART_FRAMES ||
            (!st->ckpt_running && st->wframes >= STORE_CHECKPOINT_FRAMES)) {
            /* A checkpointer run under way is waited for (two never run at once: this one
             * would find the WAL busy, and under a slow disk never get its turn); readers
             * are not (passive: what they still need is copied next time). */
            while (st->ckpt_active)
                pthread_cond_wait(&st->cond_ckpt_done, &st->mu);
            pthread_mutex_unlock(&st->mu);
            sqlite3_wal_checkpoint_v2(st->wdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            pthread_mutex_lock(&st->mu);
        } else if (st->wframes >= st->ckpt_next) {
            st->ckpt_next = st->wframes + STORE_CHECKPOINT_STEP;
            st->ckpt_wanted = 1;
            pthread_cond_signal(&st->cond_ckpt);
        }
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* The checkpointer: a passive checkpoint whenever the writer asks for one. Passive: neither
 * readers nor the writer are waited for (what they hold is copied next time). */
static void *ckpt_main(void *arg)
{
    struct store *st = arg;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (!st->ckpt_wanted && !st->ckpt_stop)
            pthread_cond_wait(&st->cond_ckpt, &st->mu);
        if (st->ckpt_stop)
            break;
        st->ckpt_wanted = 0;
        st->ckpt_active = 1;
        pthread_mutex_unlock(&st->mu);
        sqlite3_wal_checkpoint_v2(st->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&st->mu);
        st->ckpt_active = 0;
        pthread_cond_broadcast(&st->cond_ckpt_done);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* Start the checkpointer for a file (a dump in memory has no WAL). Without it (logged), the
 * writer checkpoints itself every STORE_CHECKPOINT_FRAMES, and a commit waits for each. */
static void ckpt_start(struct store *st)
{
    char err[APISIM_ERR_LEN];
    if (st->is_dump)
        return;
    if (open_connection_raw(st, &st->cdb, err) < 0) {
        log_msg(LOG_WARN, "database %s: no checkpointer (%s): the writer checkpoints itself",
                st->path, err);
        return;
    }
    sqlite3_wal_autocheckpoint(st->cdb, 0);
    /* A connection knows the file is in WAL mode (and can checkpoint it) once it has read. */
    sqlite3_exec(st->cdb, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    if (pthread_create(&st->ckpt, NULL, ckpt_main, st) != 0) {
        log_msg(LOG_WARN,
                "database %s: cannot start the checkpointer thread: the writer "
                "checkpoints itself",
                st->path);
        sqlite3_close(st->cdb);
        st->cdb = NULL;
        return;
    }
    st->ckpt_running = 1;
}

static void ckpt_stop(struct store *st)
{
    if (!st->ckpt_running)
        return;
    pthread_mutex_lock(&st->mu);
    st->ckpt_stop = 1;
    pthread_cond_signal(&st->cond_ckpt);
    pthread_mutex_unlock(&st->mu);
    pthread_join(st->ckpt, NULL);
    st->ckpt_running = 0;
    sqlite3_close(st->cdb);
    st->cdb = NULL;
}

int store_writer_start(struct store *st, char *err)
{
    if (open_connection(st, &st->wdb, err) < 0)
        return -1;
    sqlite3_wal_hook(st->wdb, writer_wal_hook, st); /* replaces SQLite's auto-checkpoint */
    /* The schema's CHECKs cost the writer about a sixth of its time per exchange (SQLite
     * 3.40 builds a table for `source IN (...)` at every insert). What it writes is checked
     * here instead: insert_exchange() refuses any other source. */
    sqlite3_exec(st->wdb, "PRAGMA ignore_check_constraints = ON", NULL, NULL, NULL);
    /* The writer only inserts, each exchange with one index entry of the current key
     * version: it can add a batch's counts itself, in the batch's transaction, instead of
     * the counting triggers; every other connection keeps them. */
    writer_check_triggers(st);
    st->ckpt_next = STORE_CHECKPOINT_FRAMES;
    if (pthread_create(&st->writer, NULL, writer_main, st) != 0) {
        snprintf(err, APISIM_ERR_LEN, "cannot start the database writer thread");
        for (int i = 0; i < STORE_NCACHE; i++)
            sqlite3_finalize(st->wcache[i]);
        for (int i = 0; i < WTX_N; i++)
            sqlite3_finalize(st->wtx[i]);
        sqlite3_close(st->wdb);
        st->wdb = NULL;
        return -1;
    }
    st->writer_running = 1;
    ckpt_start(st);
    return 0;
}

/* A write item for ex, its index key computed: here it is paid by the submitting thread,
 * in parallel, not by the one writer (which computes it when this ran out of memory).
 * NULL when out of memory (ex freed and counted as a failure). */
static struct write_item *item_new(struct store *st, struct exchange *ex)
{
    compute_index(ex);
    struct write_item *it = calloc(1, sizeof *it);
    if (!it) {
        exchange_free(ex);
        atomic_fetch_add(&st->failures, 1);
        return NULL;
    }
    it->ex = ex;
    return it;
}

/* Queue it for the writer and wake it. Called with st->mu held. */
static void item_push(struct store *st, struct write_item *it)
{
    if (st->tail)
        st->tail->next = it;
    else
        st->head = it;
    st->tail = it;
    pthread_cond_signal(&st->cond_work);
}

int store_submit(struct store *st, struct exchange *ex, int wait, int64_t *id_out)
{
    struct write_item *it = item_new(st, ex);
    if (!it)
        return -1;
    it->wait = wait;
    pthread_mutex_lock(&st->mu);
    item_push(st, it);
    if (!wait) {
        pthread_mutex_unlock(&st->mu);
        return 0;
    }
    while (!it->done)
        pthread_cond_wait(&st->cond_done, &st->mu);
    pthread_mutex_unlock(&st->mu);
    int rc = it->rc;
    if (id_out)
        *id_out = it->id;
    free(it);
    return rc;
}

int store_submit_notify(struct store *st, struct exchange *ex,
                        void (*notify)(void *cls, int rc, int64_t id), void *cls)
{
    struct write_item *it = item_new(st, ex);
    if (!it)
        return -1;
    it->notify = notify;
    it->notify_cls = cls;
    pthread_mutex_lock(&st->mu);
    item_push(st, it);
    pthread_mutex_unlock(&st->mu);
    return 0;
}

uint64_t store_write_failures(struct store *st)
{
    return atomic_load(&st->failures);
}

size_t store_held(struct store *st)
{
    pthread_mutex_lock(&st->mu);
    size_t n = st->nheld;
    pthread_mutex_unlock(&st->mu);
    return n;
}

void store_writer_stop(struct store *st)
{
    if (!st || !st->writer_running)
        return;
    pthread_mutex_lock(&st->mu);
    st->writer_stop = 1;
    pthread_cond_signal(&st->cond_work);
    pthread_mutex_unlock(&st->mu);
    pthread_join(st->writer, NULL);
    st->writer_running = 0;
    ckpt_stop(st);
}

void store_close(struct store *st)
{
    if (!st)
        return;
    store_writer_stop(st);
    for (int i = 0; i < STORE_NCACHE; i++) {
        sqlite3_finalize(st->wcache[i]);
        sqlite3_finalize(st->dbcache[i]);
    }
    for (int i = 0; i < WTX_N; i++)
        sqlite3_finalize(st->wtx[i]);
    writer_forget_session(st);
    sqlite3_close(st->wdb);
    for (size_t i = 0; i < st->nreaders; i++) {
        sqlite3_finalize(st->readers[i].body);
        sqlite3_finalize(st->readers[i].lookup);
        sqlite3_finalize(st->readers[i].response);
        sqlite3_finalize(st->readers[i].chunks);
        sqlite3_finalize(st->readers[i].first);
        sqlite3_finalize(st->readers[i].begin);
        sqlite3_finalize(st->readers[i].commit);
        sqlite3_close(st->readers[i].db);
    }
    pthread_key_delete(st->reader_key);
    sqlite3_close(st->db);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cond_work);
    pthread_cond_destroy(&st->cond_done);
    pthread_cond_destroy(&st->cond_ckpt);
    pthread_cond_destroy(&st->cond_ckpt_done);
    free(st->path);
    free(st->uri);
    free(st);
}

/* ---- the match index (schema/007_match_index.sql) -------------------------------------- */

/* match_index_state: 1 with the counts when the row is there, 0 when it is not, -1 on
 * failure. */
static int read_index_state(sqlite3 *db, int64_t *exchanges, int64_t *indexed, int *version)
{
    sqlite3_stmt *s = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT exchanges, indexed, key_version FROM match_index_state "
                           "WHERE id = 1",
                           -1, &s, NULL) != SQLITE_OK)
        goto out;
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        *exchanges = sqlite3_column_int64(s, 0);
        *indexed = sqlite3_column_int64(s, 1);
        *version = sqlite3_column_int(s, 2);
        rc = 1;
    } else if (step == SQLITE_DONE) {
        rc = 0;
    }
out:
    sqlite3_finalize(s);
    return rc;
}

/* An empty recording's index is current by definition: say so, so the entries its first
 * exchanges get are counted from the start. Best effort (a read-only file stays as it is). */
static void adopt_empty_index(struct store *st)
{
    int64_t ex = 0, ix = 0;
    int version = 0;
    int have = read_index_state(st->db, &ex, &ix, &version);
    if (have < 0 || (have && (version == MATCH_INDEX_VERSION || ex != 0)) ||
        sqlite3_db_readonly(st->db, "main") != 0)
        return;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "INSERT INTO match_index_state (id, exchanges, indexed, key_version) "
                           "SELECT 1, 0, 0, ?1 WHERE NOT EXISTS (SELECT 1 FROM exchanges) "
                           "ON CONFLICT (id) DO UPDATE SET indexed = 0, key_version = ?1",
                           -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_int(s, 1, MATCH_INDEX_VERSION);
        sqlite3_step(s);
    }
    sqlite3_finalize(s);
}

/* The text of index name as the schema made it (caller frees), or NULL. */
static char *index_sql(sqlite3 *db, const char *name)
{
    sqlite3_stmt *s = NULL;
    char *sql = NULL;
    if (sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                           -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        if (sqlite3_step(s) == SQLITE_ROW)
            sql = column_dup(s, 0);
    }
    sqlite3_finalize(s);
    return sql;
}

/* Write the missing entries (every one, after a key version change) in one transaction.
 * Many entries are written with the lookup index dropped and made again after (SQLite
 * sorts once), not inserted in hash order into it: 1M entries in seconds, not a minute. */
static int build_index(struct store *st, int64_t *built, char *err)
{
    static const char missing[] =
        "SELECT id, session, seq, method, path, query, request_headers, request_body, scheme, "
        "authority FROM exchanges AS e WHERE NOT EXISTS "
        "(SELECT 1 FROM match_index AS m WHERE m.exchange_id = e.id)";
    sqlite3 *db = st->db;
    sqlite3_stmt *s = NULL, *cache[STORE_NCACHE] = {NULL};
    struct exchange *ex = NULL;
    int rc = -1, step;
    char *msg = NULL, *lookup_sql = NULL;
    char sql[400];
    int64_t nex = 0, nix = 0;
    int version = 0;
    *built = 0;
    /* Pages of the tables being written stay in memory until the commit (64 MiB at most;
     * back to SQLite's default after). */
    sqlite3_exec(db, "PRAGMA cache_size = -65536", NULL, NULL, NULL);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    /* Entries of another version go; those of this version stay and are counted. */
    snprintf(sql, sizeof sql,
             "DELETE FROM match_index WHERE key_version != %d; "
             "INSERT INTO match_index_state (id, exchanges, indexed, key_version) VALUES (1, "
             "(SELECT count(*) FROM exchanges), (SELECT count(*) FROM match_index), %d) "
             "ON CONFLICT (id) DO UPDATE SET exchanges = excluded.exchanges, "
             "indexed = excluded.indexed, key_version = excluded.key_version",
             MATCH_INDEX_VERSION, MATCH_INDEX_VERSION);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    if (read_index_state(db, &nex, &nix, &version) == 1 && nex - nix > 10000 && nex - nix > nix) {
        if (!(lookup_sql = index_sql(db, "match_index_by_key")))
            goto fail;
        if (sqlite3_exec(db, "DROP INDEX match_index_by_key", NULL, NULL, &msg) != SQLITE_OK)
            goto fail;
    }
    if (sqlite3_prepare_v2(db, missing, sizeof missing - 1, &s, NULL) != SQLITE_OK)
        goto fail;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (!(ex = exchange_new()))
            goto oom;
        ex->id = sqlite3_column_int64(s, 0);
        ex->session = column_dup(s, 1);
        ex->seq = sqlite3_column_int64(s, 2);
        ex->method = column_dup(s, 3);
        ex->path = column_dup(s, 4);
        ex->query = column_dup(s, 5);
        ex->request_body = column_bytes_dup(s, 7, &ex->request_body_len);
        ex->scheme = column_dup(s, 8);
        ex->authority = column_dup(s, 9);
        /* Headers that are not a JSON array only lose what they would teach of redaction. */
        exchange_headers_from_json((const char *)sqlite3_column_text(s, 6),
                                   (size_t)sqlite3_column_bytes(s, 6), &ex->request_headers);
        if (!ex->session || !ex->method || !ex->path || compute_index(ex) < 0)
            goto oom;
        if (insert_index(db, cache, ex->id, ex->session, ex->seq, ex->scheme, ex->authority,
                         ex->index) != SQLITE_OK)
            goto fail;
        exchange_free(ex);
        ex = NULL;
        (*built)++;
    }
    if (step != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(s);
    s = NULL;
    if ((lookup_sql && sqlite3_exec(db, lookup_sql, NULL, NULL, &msg) != SQLITE_OK) ||
        sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    rc = 0;
    goto out;
oom:
    snprintf(err, APISIM_ERR_LEN, "out of memory building the match index of %s", st->path);
    goto out;
fail:
    snprintf(err, APISIM_ERR_LEN, "database %s: building the match index: %s", st->path,
             msg ? msg : sqlite3_errmsg(db));
out:
    sqlite3_free(msg);
    exchange_free(ex);
    sqlite3_finalize(s);
    for (int i = 0; i < STORE_NCACHE; i++)
        sqlite3_finalize(cache[i]);
    if (rc < 0 && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    free(lookup_sql);
    sqlite3_exec(db, "PRAGMA cache_size = -2000", NULL, NULL, NULL);
    sqlite3_db_release_memory(db);
    return rc;
}

int store_index_sync(struct store *st, int *current, char *err)
{
    int64_t ex = 0, ix = 0, built = 0;
    int version = 0;
    *current = 0;
    int have = read_index_state(st->db, &ex, &ix, &version);
    if (have < 0) {
        snprintf(err, APISIM_ERR_LEN, "database %s: cannot read the match index state: %s",
                 st->path, sqlite3_errmsg(st->db));
        return -1;
    }
    if (have && version == MATCH_INDEX_VERSION && ex == ix) {
        *current = 1;
        return 0;
    }
    const char *why = !have || version == 0 ? "has no match index yet"
                      : version != MATCH_INDEX_VERSION
                          ? "has a match index of another key version"
                          : "has exchanges without a match index entry";
    if (sqlite3_db_readonly(st->db, "main") != 0) {
        log_msg(LOG_WARN,
                "database %s %s and is read-only: reading the whole recording instead (slower "
                "start-up; make the file writable once to build the index)",
                st->path, why);
        return 0;
    }
    int64_t t0 = now_mono_us();
    log_msg(LOG_INFO, "database %s %s: building it (once)", st->path, why);
    if (build_index(st, &built, err) < 0)
        return -1;
    if (read_index_state(st->db, &ex, &ix, &version) != 1 || version != MATCH_INDEX_VERSION ||
        ex != ix) {
        snprintf(err, APISIM_ERR_LEN,
                 "database %s: the match index still disagrees with the exchanges after "
                 "rebuilding it (%lld exchanges, %lld entries): is another process changing it?",
                 st->path, (long long)ex, (long long)ix);
        return -1;
    }
    log_msg(LOG_INFO, "database %s: match index built: %lld entries written in %.0f ms", st->path,
            (long long)built, (double)(now_mono_us() - t0) / 1000.0);
    *current = 1;
    return 0;
}

size_t store_origin_in(char *buf, size_t cap, const char *scheme, const char *authority)
{
    const char *s = scheme ? scheme : "http";
    size_t sl = strlen(s), al = strlen(authority);
    if (sl + 3 + al < cap) {
        memcpy(buf, s, sl);
        memcpy(buf + sl, "://", 3);
        memcpy(buf + sl + 3, authority, al + 1);
    }
    return sl + 3 + al;
}

char *store_origin(const char *scheme, const char *authority)
{
    if (!authority)
        return NULL;
    size_t n = store_origin_in(NULL, 0, scheme, authority) + 1;
    char *o = malloc(n);
    if (o)
        store_origin_in(o, n, scheme, authority);
    return o;
}

int store_index_lookup(struct store *st, const char *session, const struct match_ident *key,
                       const char *origin, int64_t **ids, size_t *n, char *err)
{
    static const char sql[] =
        "SELECT exchange_id FROM match_index WHERE key_hash = ?1 AND key_check = ?2 AND "
        "(?3 IS NULL OR session = ?3) AND (?4 IS NULL OR origin = ?4) "
        "ORDER BY session, seq, exchange_id";
    struct reader *r = thread_reader(st, err);
    int64_t *v = NULL;
    size_t len = 0, cap = 0;
    int step, rc = -1;
    *ids = NULL;
    *n = 0;
    if (!r)
        return -1;
    if (!r->lookup && sqlite3_prepare_v3(r->db, sql, sizeof sql - 1, SQLITE_PREPARE_PERSISTENT,
                                         &r->lookup, NULL) != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(r->db));
        return -1;
    }
    sqlite3_bind_int64(r->lookup, 1, (sqlite3_int64)key->hash);
    sqlite3_bind_int64(r->lookup, 2, (sqlite3_int64)key->check);
    if (session)
        sqlite3_bind_text(r->lookup, 3, session, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(r->lookup, 3);
    if (origin)
        sqlite3_bind_text(r->lookup, 4, origin, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(r->lookup, 4);
    while ((step = sqlite3_step(r->lookup)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4;
            int64_t *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                snprintf(err, APISIM_ERR_LEN, "out of memory");
                goto out;
            }
            v = nv;
        }
        v[len++] = sqlite3_column_int64(r->lookup, 0);
    }
    if (step != SQLITE_DONE) {
        snprintf(err, APISIM_ERR_LEN, "database %s: match index lookup: %s", st->path,
                 sqlite3_errmsg(r->db));
        goto out;
    }
    *ids = v;
    *n = len;
    v = NULL;
    rc = 0;
out:
    sqlite3_reset(r->lookup);
    free(v);
    return rc;
}

int store_read_begin(struct store *st, char *err)
{
    struct reader *r = thread_reader(st, err);
    if (!r)
        return -1;
    /* In a shared cache, a reader's transaction would lock the writer out (SQLITE_LOCKED,
     * which no busy timeout waits for), and there are no file locks to save. */
    if (st->is_dump)
        return 0;
    int64_t now = now_mono_us();
    if (r->in_txn) {
        if (now - r->txn_us < STORE_SNAPSHOT_US && r->txn_gen == atomic_load(&st->commits))
            return 0;
        sqlite3_step(r->commit);
        sqlite3_reset(r->commit);
        r->in_txn = 0;
    }
    if ((!r->begin && sqlite3_prepare_v3(r->db, "BEGIN", -1, SQLITE_PREPARE_PERSISTENT, &r->begin,
                                         NULL) != SQLITE_OK) ||
        (!r->commit && sqlite3_prepare_v3(r->db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT,
                                          &r->commit, NULL) != SQLITE_OK)) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(r->db));
        return -1;
    }
    int step = sqlite3_step(r->begin);
    sqlite3_reset(r->begin);
    if (step != SQLITE_DONE) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(r->db));
        return -1;
    }
    r->in_txn = 1;
    r->txn_us = now;
    r->txn_gen = atomic_load(&st->commits);
    return 0;
}

void store_read_end(struct store *st)
{
    struct reader *r = pthread_getspecific(st->reader_key);
    if (!r || !r->in_txn || now_mono_us() - r->txn_us < STORE_SNAPSHOT_US)
        return;
    sqlite3_step(r->commit);
    sqlite3_reset(r->commit);
    r->in_txn = 0;
}

/* The response columns of a row (status, response_headers, response_encoding, ttfb_us,
 * delay_ms, complete, error, response_size, body when small) from column c, and the
 * exchange's chunks when with_chunks: 0 with *out, or -1 with err. */
static int response_of_row(struct store *st, struct reader *r, sqlite3_stmt *s, int c, int64_t id,
                           int with_chunks, struct exchange **out, char *err)
{
    struct exchange *ex = exchange_new();
    int rc = -1, step;
    if (!ex)
        goto oom;
    ex->id = id;
    ex->status = sqlite3_column_int(s, c);
    ex->response_encoding = column_dup(s, c + 2);
    ex->ttfb_us = sqlite3_column_int64(s, c + 3);
    ex->delay_ms = sqlite3_column_int64(s, c + 4);
    ex->complete = sqlite3_column_int(s, c + 5);
    ex->error = column_dup(s, c + 6);
    if (sqlite3_column_type(s, c + 8) != SQLITE_NULL) {
        if (!(ex->response_body = column_bytes_dup(s, c + 8, &ex->response_body_len)))
            goto oom;
    } else {
        ex->response_body_len = (size_t)sqlite3_column_int64(s, c + 7);
    }
    if (exchange_headers_from_json((const char *)sqlite3_column_text(s, c + 1),
                                   (size_t)sqlite3_column_bytes(s, c + 1),
                                   &ex->response_headers) < 0) {
        snprintf(err, APISIM_ERR_LEN,
                 "database %s: exchange %lld: response headers are not a JSON array of "
                 "[name, value]",
                 st->path, (long long)id);
        goto out;
    }
    if (with_chunks) {
        if (!r->chunks &&
            sqlite3_prepare_v3(r->db,
                               "SELECT offset_us, size FROM chunks WHERE "
                               "exchange_id = ? ORDER BY idx",
                               -1, SQLITE_PREPARE_PERSISTENT, &r->chunks, NULL) != SQLITE_OK) {
            snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(r->db));
            goto out;
        }
        step = read_chunks(r->chunks, ex);
        sqlite3_reset(r->chunks);
        if (step == SQLITE_NOMEM)
            goto oom;
        if (step != SQLITE_DONE) {
            snprintf(err, APISIM_ERR_LEN, "database %s: exchange %lld: %s", st->path, (long long)id,
                     sqlite3_errmsg(r->db));
            goto out;
        }
    }
    *out = ex;
    ex = NULL;
    rc = 0;
    goto out;
oom:
    snprintf(err, APISIM_ERR_LEN, "out of memory reading exchange %lld", (long long)id);
out:
    exchange_free(ex);
    return rc;
}

int store_get_response(struct store *st, int64_t id, size_t body_max, int with_chunks,
                       struct exchange **out, char *err)
{
    static const char sql[] =
        "SELECT status, response_headers, response_encoding, ttfb_us, delay_ms, complete, "
        "error, response_size, CASE WHEN response_size <= ?2 THEN response_body END "
        "FROM exchanges WHERE id = ?1";
    struct reader *r = thread_reader(st, err);
    int rc = -1;
    if (!r)
        return -1;
    if (!r->response && sqlite3_prepare_v3(r->db, sql, sizeof sql - 1, SQLITE_PREPARE_PERSISTENT,
                                           &r->response, NULL) != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(r->db));
        return -1;
    }
    sqlite3_stmt *s = r->response;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)body_max);
    int step = sqlite3_step(s);
    if (step == SQLITE_DONE)
        rc = 1;
    else if (step != SQLITE_ROW)
        snprintf(err, APISIM_ERR_LEN, "database %s: exchange %lld: %s", st->path, (long long)id,
                 sqlite3_errmsg(r->db));
    else
        rc = response_of_row(st, r, s, 0, id, with_chunks, out, err);
    sqlite3_reset(s);
    return rc;
}

int store_index_first(struct store *st, const char *session, const struct match_ident *key,
                      const char *origin, size_t body_max, int with_chunks, int64_t *id, int *more,
                      struct exchange **out, char *err)
{
    /* The lookup and the first answer's row in one statement: most keys have one exchange,
     * and then this is all a request reads. */
    static const char sql[] =
        "SELECT m.exchange_id, e.status, e.response_headers, e.response_encoding, e.ttfb_us, "
        "e.delay_ms, e.complete, e.error, e.response_size, "
        "CASE WHEN e.response_size <= ?4 THEN e.response_body END "
        "FROM match_index AS m JOIN exchanges AS e ON e.id = m.exchange_id "
        "WHERE m.key_hash = ?1 AND m.key_check = ?2 AND (?3 IS NULL OR m.session = ?3) "
        "AND (?5 IS NULL OR m.origin = ?5) ORDER BY m.session, m.seq, m.exchange_id LIMIT 2";
    struct reader *r = thread_reader(st, err);
    int rc = -1, step;
    *id = 0;
    *more = 0;
    *out = NULL;
    if (!r)
        return -1;
    if (!r->first && sqlite3_prepare_v3(r->db, sql, sizeof sql - 1, SQLITE_PREPARE_PERSISTENT,
                                        &r->first, NULL) != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(r->db));
        return -1;
    }
    sqlite3_stmt *s = r->first;
    sqlite3_bind_int64(s, 1, (sqlite3_int64)key->hash);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)key->check);
    if (session)
        sqlite3_bind_text(s, 3, session, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 3);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)body_max);
    if (origin)
        sqlite3_bind_text(s, 5, origin, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 5);
    step = sqlite3_step(s);
    if (step == SQLITE_DONE) {
        rc = 0;
    } else if (step == SQLITE_ROW) {
        *id = sqlite3_column_int64(s, 0);
        rc = response_of_row(st, r, s, 1, *id, with_chunks, out, err);
        if (rc == 0) {
            step = sqlite3_step(s);
            *more = step == SQLITE_ROW;
        }
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        snprintf(err, APISIM_ERR_LEN, "database %s: match index lookup: %s", st->path,
                 sqlite3_errmsg(r->db));
        exchange_free(*out);
        *out = NULL;
        rc = -1;
    }
    sqlite3_reset(s);
    return rc;
}

int store_redacted_names(struct store *st, struct redact_rules *out, char *err)
{
    sqlite3_stmt *s = NULL;
    int rc = -1, step;
    if (sqlite3_prepare_v2(st->db, "SELECT kind, name FROM match_redacted ORDER BY kind, name", -1,
                           &s, NULL) != SQLITE_OK)
        goto fail;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(s, 0);
        const char *name = (const char *)sqlite3_column_text(s, 1);
        if (!kind || !name)
            continue;
        int added = 0;
        if (strcmp(kind, "query") == 0 && out->nquery < MATCH_LEARN_MAX)
            added = redact_add_query(out, name);
        else if (strcmp(kind, "json") == 0 && out->njson < MATCH_LEARN_MAX)
            added = redact_add_json(out, name);
        else if (strcmp(kind, "header") == 0 && out->nheaders < MATCH_LEARN_MAX &&
                 !redact_is_secret_header(out, name))
            added = redact_add_header(out, name);
        if (added < 0) {
            snprintf(err, APISIM_ERR_LEN, "out of memory");
            goto out;
        }
    }
    if (step != SQLITE_DONE)
        goto fail;
    rc = 0;
    goto out;
fail:
    snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(st->db));
out:
    sqlite3_finalize(s);
    return rc;
}

int store_scan_requests(struct store *st, const char *session,
                        int (*fn)(void *ctx, int64_t id, const struct match_request *req,
                                  const char *origin),
                        void *ctx, char *err)
{
    static const char sql[] =
        "SELECT id, method, path, query, request_headers, request_body, "
        "CASE WHEN authority IS NOT NULL THEN coalesce(scheme, 'http') || '://' || authority END "
        "FROM exchanges WHERE ?1 IS NULL OR session = ?1 ORDER BY session, seq, id";
    sqlite3_stmt *s = NULL;
    int rc = -1, step;
    if (sqlite3_prepare_v2(st->db, sql, sizeof sql - 1, &s, NULL) != SQLITE_OK)
        goto fail;
    if (session)
        sqlite3_bind_text(s, 1, session, -1, SQLITE_STATIC);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        struct headers h = {0};
        const char *hj = (const char *)sqlite3_column_text(s, 4);
        if (exchange_headers_from_json(hj, (size_t)sqlite3_column_bytes(s, 4), &h) < 0) {
            snprintf(err, APISIM_ERR_LEN,
                     "database %s: exchange %lld: request headers are not a JSON array of "
                     "[name, value]",
                     st->path, (long long)sqlite3_column_int64(s, 0));
            headers_free(&h);
            goto out;
        }
        const char *method = (const char *)sqlite3_column_text(s, 1);
        const char *path = (const char *)sqlite3_column_text(s, 2);
        const char *query = (const char *)sqlite3_column_text(s, 3);
        struct match_request mr = {.method = method ? method : "",
                                   .path = path ? path : "",
                                   .query = query ? query : "",
                                   .headers = &h,
                                   .body = sqlite3_column_blob(s, 5),
                                   .body_len = (size_t)sqlite3_column_bytes(s, 5)};
        int frc = fn(ctx, sqlite3_column_int64(s, 0), &mr, (const char *)sqlite3_column_text(s, 6));
        headers_free(&h);
        if (frc < 0)
            goto out;
    }
    if (step != SQLITE_DONE)
        goto fail;
    rc = 0;
    goto out;
fail:
    snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(st->db));
out:
    sqlite3_finalize(s);
    return rc;
}

int store_count_exchanges(struct store *st, const char *session, int64_t *out, char *err)
{
    sqlite3_stmt *s = NULL;
    int rc = -1;
    sqlite3 *db = store_reader(st, err);
    if (!db)
        return -1;
    /* Without a session the triggers' count answers at once. */
    const char *sql = session ? "SELECT count(*) FROM exchanges WHERE session = ?1"
                              : "SELECT coalesce((SELECT exchanges FROM match_index_state "
                                "WHERE id = 1), (SELECT count(*) FROM exchanges))";
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        goto fail;
    if (session)
        sqlite3_bind_text(s, 1, session, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_ROW)
        goto fail;
    *out = sqlite3_column_int64(s, 0);
    rc = 0;
    goto out;
fail:
    snprintf(err, APISIM_ERR_LEN, "database %s: %s", st->path, sqlite3_errmsg(db));
out:
    sqlite3_finalize(s);
    return rc;
}
