#include "export.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "har.h"
#include "log.h"
#include "redact.h"
#include "store.h"

#define EXIT_OK 0
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

#define DEFAULT_DB "apisim.db"
#define DEFAULT_IMPORT_SESSION "default"
#define IMPORT_DEFAULT_MAX_BODY ((size_t)64 * 1024 * 1024)
/* Import files are read whole (HAR is one JSON document); larger ones are refused. */
#define IMPORT_MAX_FILE ((size_t)1024 * 1024 * 1024)
#define SHOW_MAX_ID_TEXT 32

/* ---------------------------------------------------------------- command line */

struct opts {
    const char *db;
    const char *session;
    const char *format;
    const char *output;
    const char *max_body;
    int json;
    const char *arg; /* the one positional argument (ID, FILE) */
};

enum {
    OPT_DB = 1 << 0,
    OPT_SESSION = 1 << 1,
    OPT_FORMAT = 1 << 2,
    OPT_OUTPUT = 1 << 3,
    OPT_MAX_BODY = 1 << 4,
    OPT_JSON = 1 << 5,
};

static const struct {
    const char *name;
    unsigned bit;
} flags_known[] = {
    {"--db", OPT_DB},         {"--session", OPT_SESSION},   {"--format", OPT_FORMAT},
    {"--output", OPT_OUTPUT}, {"--max-body", OPT_MAX_BODY}, {"--json", OPT_JSON},
};

static const char *usage_of(const char *cmd)
{
    if (strcmp(cmd, "ls") == 0)
        return "usage: apisim ls [--db FILE] [--session NAME] [--json]";
    if (strcmp(cmd, "show") == 0)
        return "usage: apisim show [--db FILE] ID";
    if (strcmp(cmd, "export") == 0)
        return "usage: apisim export [--db FILE] [--session NAME] --format har|jsonl|sql "
               "[--output FILE]";
    if (strcmp(cmd, "init") == 0)
        return "usage: apisim init [--db FILE]\n"
               "creates FILE (default apisim.db) with apisim's schema, or brings an older one up\n"
               "to date, and prints its schema version";
    return "usage: apisim import [--db FILE] [--session NAME] [--max-body SIZE] FILE";
}

/* Returns -1 when the command should go on, else the exit status (help or usage error). */
static int parse_opts(const char *cmd, int argc, char **argv, unsigned allowed, int want_arg,
                      struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->db = DEFAULT_DB;
    int only_args = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_args || a[0] != '-' || strcmp(a, "-") == 0) {
            if (!want_arg || o->arg) {
                log_msg(LOG_ERROR, "%s: unexpected argument \"%s\"\n%s", cmd, a, usage_of(cmd));
                return EXIT_USAGE;
            }
            o->arg = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("%s\n", usage_of(cmd));
            return EXIT_OK;
        }
        size_t nlen = strcspn(a, "=");
        unsigned bit = 0;
        for (size_t k = 0; k < sizeof flags_known / sizeof flags_known[0]; k++)
            if (strlen(flags_known[k].name) == nlen && strncmp(a, flags_known[k].name, nlen) == 0)
                bit = flags_known[k].bit;
        if (!(bit & allowed)) {
            log_msg(LOG_ERROR, "%s: unknown option %.*s\n%s", cmd, (int)nlen, a, usage_of(cmd));
            return EXIT_USAGE;
        }
        if (bit == OPT_JSON) {
            if (a[nlen]) {
                log_msg(LOG_ERROR, "%s: --json takes no value", cmd);
                return EXIT_USAGE;
            }
            o->json = 1;
            continue;
        }
        const char *v = a[nlen] ? a + nlen + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v || !*v) {
            log_msg(LOG_ERROR, "%s: %.*s needs a value\n%s", cmd, (int)nlen, a, usage_of(cmd));
            return EXIT_USAGE;
        }
        switch (bit) {
        case OPT_DB:
            o->db = v;
            break;
        case OPT_SESSION:
            o->session = v;
            break;
        case OPT_FORMAT:
            o->format = v;
            break;
        case OPT_OUTPUT:
            o->output = v;
            break;
        default:
            o->max_body = v;
            break;
        }
    }
    if (want_arg && !o->arg) {
        log_msg(LOG_ERROR, "%s: missing %s\n%s", cmd,
                strcmp(cmd, "show") == 0 ? "the exchange ID" : "the FILE to import", usage_of(cmd));
        return EXIT_USAGE;
    }
    return -1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* ---------------------------------------------------------------- database helpers */

/* Fails with err naming the sessions there are when session has no exchange and no row. */
static int check_session(sqlite3 *db, const char *path, const char *session, char *err)
{
    sqlite3_stmt *s = NULL;
    int rc = -1;
    if (!session)
        return 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT EXISTS (SELECT 1 FROM sessions WHERE name = ?1) OR "
                           "EXISTS (SELECT 1 FROM exchanges WHERE session = ?1), "
                           "(SELECT group_concat(name, ', ') FROM "
                           "(SELECT name FROM sessions ORDER BY name))",
                           -1, &s, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(s, 1, session, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_ROW)
        goto fail;
    if (sqlite3_column_int(s, 0)) {
        rc = 0;
        goto out;
    }
    const char *names = (const char *)sqlite3_column_text(s, 1);
    snprintf(err, APISIM_ERR_LEN, "database %s has no session \"%s\" (sessions: %s)", path, session,
             names ? names : "none");
    goto out;
fail:
    snprintf(err, APISIM_ERR_LEN, "database %s: %s", path, sqlite3_errmsg(db));
out:
    sqlite3_finalize(s);
    return rc;
}

typedef int (*exchange_fn)(struct exchange *ex, void *ctx, char *err);

/* Call fn for every exchange (of session, when not NULL) in id order. */
static int for_each_exchange(sqlite3 *db, const char *path, const char *session, exchange_fn fn,
                             void *ctx, char *err)
{
    sqlite3_stmt *s = NULL;
    struct exchange *ex = NULL;
    int rc = -1, step;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, started_at FROM exchanges "
                           "WHERE (?1 IS NULL OR session = ?1) ORDER BY id",
                           -1, &s, NULL) != SQLITE_OK)
        goto fail;
    if (session)
        sqlite3_bind_text(s, 1, session, -1, SQLITE_STATIC);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0);
        int got = store_get_exchange(db, id, &ex, err);
        if (got < 0)
            goto out;
        if (got > 0)
            continue; /* gone since the SELECT started: cannot happen in one transaction */
        /* The stored text is exact to the millisecond; a float round trip may not be. */
        const char *started = (const char *)sqlite3_column_text(s, 1);
        int64_t us;
        if (started && har_parse_time(started, &us) == 0)
            ex->started_us = us;
        if (fn(ex, ctx, err) < 0)
            goto out;
        exchange_free(ex);
        ex = NULL;
    }
    if (step != SQLITE_DONE)
        goto fail;
    rc = 0;
    goto out;
fail:
    snprintf(err, APISIM_ERR_LEN, "database %s: %s", path, sqlite3_errmsg(db));
out:
    exchange_free(ex);
    sqlite3_finalize(s);
    return rc;
}

/* ---------------------------------------------------------------- output */

struct out {
    FILE *f;
    const char *name; /* for messages: the --output path or "standard output" */
    int owned;
};

/* Open --output (refusing the database itself) or take stdout. */
static int out_open(struct out *o, const char *output, const char *db, char *err, int *usage)
{
    o->f = stdout;
    o->name = "standard output";
    o->owned = 0;
    if (!output || strcmp(output, "-") == 0)
        return 0;
    struct stat a, b;
    if (stat(output, &a) == 0 && stat(db, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino) {
        snprintf(err, APISIM_ERR_LEN,
                 "--output %s is the database being exported: write the export elsewhere", output);
        *usage = 1;
        return -1;
    }
    o->f = fopen(output, "wb");
    if (!o->f) {
        snprintf(err, APISIM_ERR_LEN, "cannot write %s: %s", output, strerror(errno));
        return -1;
    }
    o->name = output;
    o->owned = 1;
    return 0;
}

static int out_write(struct out *o, const void *p, size_t n, char *err)
{
    if (n && fwrite(p, 1, n, o->f) != n) {
        snprintf(err, APISIM_ERR_LEN, "cannot write %s: %s", o->name, strerror(errno));
        return -1;
    }
    return 0;
}

static int out_puts(struct out *o, const char *s, char *err)
{
    return out_write(o, s, strlen(s), err);
}

/* Flush and close; a file left behind by a failed export is removed. */
static int out_close(struct out *o, int failed, char *err)
{
    int rc = 0;
    if (fflush(o->f) != 0 || ferror(o->f)) {
        if (!failed)
            snprintf(err, APISIM_ERR_LEN, "cannot write %s: %s", o->name, strerror(errno));
        rc = -1;
    }
    if (o->owned) {
        if (fclose(o->f) != 0 && rc == 0) {
            snprintf(err, APISIM_ERR_LEN, "cannot write %s: %s", o->name, strerror(errno));
            rc = -1;
        }
        if (rc < 0 || failed)
            remove(o->name);
    }
    o->f = NULL;
    return rc;
}

/* ---------------------------------------------------------------- ls */

/* 1 when scheme://authority is the origin of upstream (the session's --upstream URL). */
static int origin_is_upstream(const char *scheme, const char *authority, const char *upstream)
{
    if (!upstream || !authority)
        return 0;
    size_t sl = scheme ? strlen(scheme) : 4, al = strlen(authority);
    const char *u = upstream;
    if (strncasecmp(u, scheme ? scheme : "http", sl) != 0 || strncmp(u + sl, "://", 3) != 0)
        return 0;
    u += sl + 3;
    return strncasecmp(u, authority, al) == 0 && (u[al] == '\0' || u[al] == '/');
}

int ls_main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_opts("ls", argc, argv, OPT_DB | OPT_SESSION | OPT_JSON, 0, &o);
    if (rc >= 0)
        return rc;
    rc = EXIT_RUNTIME;
    char err[APISIM_ERR_LEN] = "";
    struct store *st = NULL;
    sqlite3_stmt *s = NULL;
    struct buf line = {.max = 1024 * 1024};
    int step, n = 0;
    if (store_open(&st, o.db, STORE_READONLY, err) < 0)
        goto out;
    sqlite3 *db = store_db(st);
    if (check_session(db, o.db, o.session, err) < 0)
        goto out;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, session, seq, source, started_at, method, path, query, "
                           "status, coalesce(length(CAST(response_body AS BLOB)), 0), ttfb_us, "
                           "duration_us, complete, error, scheme, authority, "
                           /* Relative URLs for what came from the session's --upstream. */
                           "(SELECT s.upstream FROM sessions AS s WHERE s.name = session) "
                           "FROM exchanges WHERE (?1 IS NULL OR session = ?1) ORDER BY id",
                           -1, &s, NULL) != SQLITE_OK)
        goto dberr;
    if (o.session)
        sqlite3_bind_text(s, 1, o.session, -1, SQLITE_STATIC);
    if (o.json)
        fputs("[", stdout);
    else
        fputs("ID  SESSION  METHOD  URL  STATUS  BYTES  TTFB_MS\n", stdout);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        const char *session = (const char *)sqlite3_column_text(s, 1);
        const char *method = (const char *)sqlite3_column_text(s, 5);
        const char *path = (const char *)sqlite3_column_text(s, 6);
        const char *query = (const char *)sqlite3_column_text(s, 7);
        double ttfb_ms = (double)sqlite3_column_int64(s, 10) / 1000.0;
        const char *scheme = (const char *)sqlite3_column_text(s, 14);
        const char *authority = (const char *)sqlite3_column_text(s, 15);
        const char *upstream = (const char *)sqlite3_column_text(s, 16);
        line.len = 0;
        if (authority && !origin_is_upstream(scheme, authority, upstream) &&
            buf_printf(&line, "%s://%s", scheme ? scheme : "http", authority) < 0)
            goto oom;
        if (buf_printf(&line, "%s%s%s", path ? path : "", query && *query ? "?" : "",
                       query ? query : "") < 0)
            goto oom;
        if (!o.json) {
            printf("%lld  %s  %s  %s  %d  %lld  %.1f\n", (long long)sqlite3_column_int64(s, 0),
                   session ? session : "", method ? method : "", line.p, sqlite3_column_int(s, 8),
                   (long long)sqlite3_column_int64(s, 9), ttfb_ms);
            continue;
        }
        cJSON *j = cJSON_CreateObject();
        const char *err_text = (const char *)sqlite3_column_text(s, 13);
        int ok =
            j && cJSON_AddNumberToObject(j, "id", (double)sqlite3_column_int64(s, 0)) &&
            cJSON_AddStringToObject(j, "session", session ? session : "") &&
            cJSON_AddNumberToObject(j, "seq", (double)sqlite3_column_int64(s, 2)) &&
            cJSON_AddStringToObject(j, "source", (const char *)sqlite3_column_text(s, 3)) &&
            cJSON_AddStringToObject(j, "started_at", (const char *)sqlite3_column_text(s, 4)) &&
            cJSON_AddStringToObject(j, "method", method ? method : "") &&
            cJSON_AddStringToObject(j, "path", path ? path : "") &&
            cJSON_AddStringToObject(j, "query", query ? query : "") &&
            cJSON_AddStringToObject(j, "url", line.p) &&
            (scheme ? cJSON_AddStringToObject(j, "scheme", scheme) != NULL
                    : cJSON_AddNullToObject(j, "scheme") != NULL) &&
            (authority ? cJSON_AddStringToObject(j, "authority", authority) != NULL
                       : cJSON_AddNullToObject(j, "authority") != NULL) &&
            cJSON_AddNumberToObject(j, "status", sqlite3_column_int(s, 8)) &&
            cJSON_AddNumberToObject(j, "bytes", (double)sqlite3_column_int64(s, 9)) &&
            cJSON_AddNumberToObject(j, "ttfb_ms", ttfb_ms) &&
            cJSON_AddNumberToObject(j, "duration_ms",
                                    (double)sqlite3_column_int64(s, 11) / 1000.0) &&
            cJSON_AddBoolToObject(j, "complete", sqlite3_column_int(s, 12) != 0) &&
            (err_text ? cJSON_AddStringToObject(j, "error", err_text) != NULL
                      : cJSON_AddNullToObject(j, "error") != NULL);
        char *text = ok ? cJSON_PrintUnformatted(j) : NULL;
        cJSON_Delete(j);
        if (!text)
            goto oom;
        printf("%s\n%s", n ? "," : "", text);
        free(text);
        n++;
    }
    if (step != SQLITE_DONE)
        goto dberr;
    if (o.json)
        fputs(n ? "\n]\n" : "]\n", stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        snprintf(err, APISIM_ERR_LEN, "cannot write standard output: %s", strerror(errno));
        goto out;
    }
    rc = EXIT_OK;
    goto out;
oom:
    snprintf(err, APISIM_ERR_LEN, "out of memory");
    goto out;
dberr:
    snprintf(err, APISIM_ERR_LEN, "database %s: %s", o.db, sqlite3_errmsg(store_db(st)));
out:
    if (rc != EXIT_OK)
        log_msg(LOG_ERROR, "ls: %s", err);
    buf_free(&line);
    sqlite3_finalize(s);
    store_close(st);
    return rc;
}

/* ---------------------------------------------------------------- show */

static void show_headers(FILE *f, char dir, const struct headers *h)
{
    for (size_t i = 0; i < h->n; i++)
        fprintf(f, "%c %s: %s\n", dir, h->v[i].name, h->v[i].value);
}

static void show_body(FILE *f, const unsigned char *p, size_t n)
{
    if (!n)
        return;
    if (!is_utf8_text(p, n)) {
        fprintf(f, "[%zu bytes binary]\n", n);
        return;
    }
    fwrite(p, 1, n, f);
    if (p[n - 1] != '\n')
        fputc('\n', f);
}

/* Take started_us from the stored text, which is exact to the millisecond (the store's
 * conversion goes through a float). */
static void exact_started(sqlite3 *db, struct exchange *ex)
{
    sqlite3_stmt *s = NULL;
    int64_t us;
    if (sqlite3_prepare_v2(db, "SELECT started_at FROM exchanges WHERE id = ?", -1, &s, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_int64(s, 1, ex->id);
        if (sqlite3_step(s) == SQLITE_ROW &&
            har_parse_time((const char *)sqlite3_column_text(s, 0), &us) == 0)
            ex->started_us = us;
    }
    sqlite3_finalize(s);
}

static int parse_id(const char *s, int64_t *out)
{
    if (!s || !*s || strlen(s) > SHOW_MAX_ID_TEXT)
        return -1;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9' || v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v <= 0)
        return -1;
    *out = v;
    return 0;
}

int show_main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_opts("show", argc, argv, OPT_DB, 1, &o);
    if (rc >= 0)
        return rc;
    int64_t id;
    if (parse_id(o.arg, &id) < 0) {
        log_msg(LOG_ERROR,
                "show: \"%s\" is not an exchange id (a positive number, as "
                "`apisim ls` shows)",
                o.arg);
        return EXIT_USAGE;
    }
    rc = EXIT_RUNTIME;
    char err[APISIM_ERR_LEN] = "";
    struct store *st = NULL;
    struct exchange *ex = NULL;
    if (store_open(&st, o.db, STORE_READONLY, err) < 0)
        goto out;
    int got = store_get_exchange(store_db(st), id, &ex, err);
    if (got < 0)
        goto out;
    if (got > 0) {
        snprintf(err, APISIM_ERR_LEN,
                 "database %s has no exchange %lld (`apisim ls --db %s` "
                 "lists them)",
                 o.db, (long long)id, o.db);
        goto out;
    }
    char started[40];
    exact_started(store_db(st), ex);
    format_iso8601_ms(ex->started_us, started, sizeof started);
    printf("* exchange %lld, session %s, seq %lld, source %s\n", (long long)ex->id, ex->session,
           (long long)ex->seq, ex->source ? ex->source : "record");
    printf("* started %s, ttfb %.1f ms, duration %.1f ms, %zu chunk%s\n", started,
           (double)ex->ttfb_us / 1000.0, (double)ex->duration_us / 1000.0, ex->nchunks,
           ex->nchunks == 1 ? "" : "s");
    if (ex->error)
        printf("* upstream failure: %s\n", ex->error);
    if (!ex->complete)
        printf("* incomplete: the client or upstream went away before the end\n");
    if (ex->response_encoding)
        printf("* response body stored decoded from %s\n", ex->response_encoding);
    if (ex->authority)
        printf("* url %s://%s%s%s%s\n", ex->scheme ? ex->scheme : "http", ex->authority, ex->path,
               *ex->query ? "?" : "", ex->query);
    printf("> %s %s%s%s HTTP/1.1\n", ex->method, ex->path, *ex->query ? "?" : "", ex->query);
    show_headers(stdout, '>', &ex->request_headers);
    fputc('\n', stdout);
    show_body(stdout, ex->request_body, ex->request_body_len);
    if (ex->request_body_len)
        fputc('\n', stdout);
    const char *reason = har_status_text(ex->status);
    printf("< HTTP/1.1 %d%s%s\n", ex->status, *reason ? " " : "", reason);
    show_headers(stdout, '<', &ex->response_headers);
    fputc('\n', stdout);
    show_body(stdout, ex->response_body, ex->response_body_len);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        snprintf(err, APISIM_ERR_LEN, "cannot write standard output: %s", strerror(errno));
        goto out;
    }
    rc = EXIT_OK;
out:
    if (rc != EXIT_OK)
        log_msg(LOG_ERROR, "show: %s", err);
    exchange_free(ex);
    store_close(st);
    return rc;
}

/* ---------------------------------------------------------------- export: HAR, JSONL */

struct export_ctx {
    struct out *out;
    sqlite3 *db;
    int n;
    char *origin_session; /* the session whose upstream is in origin */
    char *origin;
};

/* The upstream a session was recorded from, for HAR's absolute URLs. */
static int origin_of(struct export_ctx *c, const char *session, char *err)
{
    sqlite3_stmt *s = NULL;
    if (c->origin_session && strcmp(c->origin_session, session) == 0)
        return 0;
    free(c->origin_session);
    free(c->origin);
    c->origin = NULL;
    if (!(c->origin_session = xstrndup(session, strlen(session)))) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    if (sqlite3_prepare_v2(c->db, "SELECT upstream FROM sessions WHERE name = ?", -1, &s, NULL) !=
        SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "reading sessions: %s", sqlite3_errmsg(c->db));
        return -1;
    }
    sqlite3_bind_text(s, 1, session, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) == SQLITE_TEXT)
        c->origin =
            xstrndup((const char *)sqlite3_column_text(s, 0), (size_t)sqlite3_column_bytes(s, 0));
    sqlite3_finalize(s);
    return 0;
}

static int write_har_entry(struct exchange *ex, void *ctx, char *err)
{
    struct export_ctx *c = ctx;
    if (origin_of(c, ex->session, err) < 0)
        return -1;
    /* Each exchange's own host; the session's --upstream when it is that host (it may
     * carry a path prefix the exchange's path goes under). */
    char own[600];
    const char *origin = c->origin;
    if (ex->authority && !origin_is_upstream(ex->scheme, ex->authority, c->origin)) {
        snprintf(own, sizeof own, "%s://%.500s", ex->scheme ? ex->scheme : "http", ex->authority);
        origin = own;
    }
    cJSON *e = har_entry_from_exchange(ex, origin);
    char *text = e ? cJSON_PrintUnformatted(e) : NULL;
    cJSON_Delete(e);
    if (!text) {
        snprintf(err, APISIM_ERR_LEN, "out of memory converting exchange %lld", (long long)ex->id);
        return -1;
    }
    int rc = out_puts(c->out, c->n++ ? ",\n" : "\n", err) < 0 || out_puts(c->out, text, err) < 0
                 ? -1
                 : 0;
    free(text);
    return rc;
}

static int write_jsonl_line(struct exchange *ex, void *ctx, char *err)
{
    struct export_ctx *c = ctx;
    cJSON *j = har_jsonl_from_exchange(ex);
    char *text = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!text) {
        snprintf(err, APISIM_ERR_LEN, "out of memory converting exchange %lld", (long long)ex->id);
        return -1;
    }
    int rc = out_puts(c->out, text, err) < 0 || out_puts(c->out, "\n", err) < 0 ? -1 : 0;
    free(text);
    c->n++;
    return rc;
}

static int export_har(sqlite3 *db, const char *path, const char *session, struct out *out,
                      char *err)
{
    int rc = -1;
    struct export_ctx c = {.out = out, .db = db};
    cJSON *doc = har_log_new(APISIM_VERSION, NULL);
    char *head = doc ? cJSON_PrintUnformatted(doc) : NULL;
    size_t n = head ? strlen(head) : 0;
    /* The document ends in "[]}}": entries go between the brackets, one a line. */
    if (!head || n < 4 || strcmp(head + n - 4, "[]}}") != 0) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        goto out;
    }
    if (out_write(out, head, n - 3, err) < 0 ||
        for_each_exchange(db, path, session, write_har_entry, &c, err) < 0 ||
        out_puts(out, "\n]}}\n", err) < 0)
        goto out;
    rc = 0;
out:
    free(c.origin_session);
    free(c.origin);
    free(head);
    cJSON_Delete(doc);
    return rc;
}

/* ---------------------------------------------------------------- export: SQL dump */

/* "name" with embedded quotes doubled: an identifier, never data. */
static int put_ident(struct buf *b, const char *name)
{
    if (buf_puts(b, "\"") < 0)
        return -1;
    for (const char *p = name; *p; p++)
        if (buf_append(b, p, 1) < 0 || (*p == '"' && buf_append(b, p, 1) < 0))
            return -1;
    return buf_puts(b, "\"");
}

static int put_hex(struct buf *b, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        char two[2] = {hex[p[i] >> 4], hex[p[i] & 15]};
        if (buf_append(b, two, 2) < 0)
            return -1;
    }
    return 0;
}

/* A TEXT value as a literal. Text the sqlite3 shell would not read back byte for byte
 * (carriage returns, which it drops before a newline) goes through replace() with a marker
 * the text does not contain; text that is not UTF-8 or holds NUL goes as hex. */
static int put_text(struct buf *b, const unsigned char *p, size_t n)
{
    if (!is_utf8_text(p, n)) {
        return buf_puts(b, "CAST(X'") < 0 || put_hex(b, p, n) < 0 || buf_puts(b, "' AS TEXT)") < 0
                   ? -1
                   : 0;
    }
    int has_cr = memchr(p, '\r', n) != NULL;
    char marker[40] = "\\r";
    if (has_cr) {
        /* \r, \\r, \\\r, ...: the first one the text does not hold. */
        for (size_t k = 1; k + 2 < sizeof marker; k++) {
            memset(marker, '\\', k);
            marker[k] = 'r';
            marker[k + 1] = '\0';
            size_t ml = k + 1, i;
            for (i = 0; i + ml <= n; i++)
                if (memcmp(p + i, marker, ml) == 0)
                    break;
            if (i + ml > n)
                break;
        }
        if (buf_puts(b, "replace(") < 0)
            return -1;
    }
    if (buf_puts(b, "'") < 0)
        return -1;
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const char *subst = p[i] == '\'' ? "''" : p[i] == '\r' ? marker : NULL;
        if (!subst)
            continue;
        if (buf_append(b, p + start, i - start) < 0 || buf_puts(b, subst) < 0)
            return -1;
        start = i + 1;
    }
    if (buf_append(b, p + start, n - start) < 0 || buf_puts(b, "'") < 0)
        return -1;
    if (has_cr &&
        (buf_puts(b, ",'") < 0 || buf_puts(b, marker) < 0 || buf_puts(b, "',char(13))") < 0))
        return -1;
    return 0;
}

static int put_value(struct buf *b, sqlite3_stmt *s, int i)
{
    switch (sqlite3_column_type(s, i)) {
    case SQLITE_INTEGER:
        return buf_printf(b, "%lld", (long long)sqlite3_column_int64(s, i));
    case SQLITE_FLOAT: {
        double d = sqlite3_column_double(s, i);
        if (isnan(d))
            return buf_puts(b, "NULL");
        if (isinf(d))
            return buf_puts(b, d > 0 ? "1e999" : "-1e999");
        char num[40];
        snprintf(num, sizeof num, "%.17g", d);
        /* Keep it a REAL when read back: "1" would load as an INTEGER. */
        if (!strpbrk(num, ".e"))
            return buf_printf(b, "%s.0", num);
        return buf_puts(b, num);
    }
    case SQLITE_TEXT:
        return put_text(b, sqlite3_column_text(s, i), (size_t)sqlite3_column_bytes(s, i));
    case SQLITE_BLOB: {
        const void *p = sqlite3_column_blob(s, i);
        return buf_puts(b, "X'") < 0 || put_hex(b, p, (size_t)sqlite3_column_bytes(s, i)) < 0 ||
                       buf_puts(b, "'") < 0
                   ? -1
                   : 0;
    }
    default:
        return buf_puts(b, "NULL");
    }
}

/* A statement from sqlite_master, ended so that a trailing "--" comment cannot swallow the
 * semicolon (SQLite keeps such a comment in the text and trims the newline after it). */
static int put_statement(struct out *o, const char *sql, char *err)
{
    const char *last_line = strrchr(sql, '\n');
    last_line = last_line ? last_line + 1 : sql;
    int comment = strstr(last_line, "--") != NULL;
    if (out_puts(o, sql, err) < 0 || out_puts(o, comment ? "\n;\n" : ";\n", err) < 0)
        return -1;
    return 0;
}

struct table_list {
    char **names;
    size_t n, cap;
};

static void table_list_free(struct table_list *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->names[i]);
    free(t->names);
    memset(t, 0, sizeof *t);
}

/* Order tables so every table comes after those its foreign keys point to (ties and cycles
 * broken by name), so the dump loads with foreign_keys on. names are sorted by name. */
static int order_by_foreign_keys(sqlite3 *db, struct table_list *t, char *err)
{
    int rc = -1;
    sqlite3_stmt *s = NULL;
    char **ordered = calloc(t->n ? t->n : 1, sizeof *ordered);
    int *done = calloc(t->n ? t->n : 1, sizeof *done);
    if (!ordered || !done) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        goto out;
    }
    if (sqlite3_prepare_v2(db, "SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?)", -1, &s,
                           NULL) != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "reading foreign keys: %s", sqlite3_errmsg(db));
        goto out;
    }
    for (size_t k = 0; k < t->n; k++) {
        size_t pick = t->n;
        for (size_t i = 0; i < t->n && pick == t->n; i++) {
            if (done[i])
                continue;
            int ready = 1;
            sqlite3_reset(s);
            sqlite3_bind_text(s, 1, t->names[i], -1, SQLITE_STATIC);
            while (ready && sqlite3_step(s) == SQLITE_ROW) {
                const char *parent = (const char *)sqlite3_column_text(s, 0);
                for (size_t j = 0; j < t->n; j++)
                    if (!done[j] && j != i && parent && strcmp(parent, t->names[j]) == 0)
                        ready = 0;
            }
            if (ready)
                pick = i;
        }
        if (pick == t->n) /* a cycle: take the first left, by name */
            for (size_t i = 0; i < t->n && pick == t->n; i++)
                if (!done[i])
                    pick = i;
        done[pick] = 1;
        ordered[k] = t->names[pick];
    }
    if (t->n)
        memcpy(t->names, ordered, t->n * sizeof *ordered);
    rc = 0;
out:
    sqlite3_finalize(s);
    free(ordered);
    free(done);
    return rc;
}

/* INSERT statements for every row of table, by primary key (rowid when there is none). */
static int dump_rows(sqlite3 *db, const char *table, struct out *o, char *err)
{
    int rc = -1;
    sqlite3_stmt *pk = NULL, *rows = NULL;
    struct buf sql = {.max = 64 * 1024}, line = {0}, prefix = {.max = 4096};
    if (sqlite3_prepare_v2(db, "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", -1,
                           &pk, NULL) != SQLITE_OK)
        goto dberr;
    sqlite3_bind_text(pk, 1, table, -1, SQLITE_STATIC);
    if (buf_puts(&sql, "SELECT * FROM ") < 0 || put_ident(&sql, table) < 0 ||
        buf_puts(&sql, " ORDER BY ") < 0)
        goto oom;
    int npk = 0, step;
    while ((step = sqlite3_step(pk)) == SQLITE_ROW) {
        if ((npk++ && buf_puts(&sql, ", ") < 0) ||
            put_ident(&sql, (const char *)sqlite3_column_text(pk, 0)) < 0)
            goto oom;
    }
    if (step != SQLITE_DONE)
        goto dberr;
    if (!npk && buf_puts(&sql, "_rowid_") < 0)
        goto oom;
    if (sqlite3_prepare_v2(db, sql.p, -1, &rows, NULL) != SQLITE_OK)
        goto dberr;
    if (buf_puts(&prefix, "INSERT INTO ") < 0 || put_ident(&prefix, table) < 0 ||
        buf_puts(&prefix, " VALUES(") < 0)
        goto oom;
    int ncol = sqlite3_column_count(rows);
    while ((step = sqlite3_step(rows)) == SQLITE_ROW) {
        line.len = 0;
        if (buf_append(&line, prefix.p, prefix.len) < 0)
            goto oom;
        for (int i = 0; i < ncol; i++)
            if ((i && buf_puts(&line, ",") < 0) || put_value(&line, rows, i) < 0)
                goto oom;
        if (buf_puts(&line, ");\n") < 0)
            goto oom;
        if (out_write(o, line.p, line.len, err) < 0)
            goto out;
    }
    if (step != SQLITE_DONE)
        goto dberr;
    rc = 0;
    goto out;
oom:
    snprintf(err, APISIM_ERR_LEN, "out of memory dumping table %s", table);
    goto out;
dberr:
    snprintf(err, APISIM_ERR_LEN, "dumping table %s: %s", table, sqlite3_errmsg(db));
out:
    sqlite3_finalize(pk);
    sqlite3_finalize(rows);
    buf_free(&sql);
    buf_free(&line);
    buf_free(&prefix);
    return rc;
}

/* The match index (schema/007) is derived from the exchanges: a dump leaves its rows out
 * (they would only add noise to a diff) and loading it builds them again. */
static int derived_table(const char *name)
{
    return strncmp(name, "match_", 6) == 0;
}

static int export_sql(sqlite3 *db, const char *path, struct out *o, char *err)
{
    int rc = -1, step, in_txn = 0;
    sqlite3_stmt *s = NULL;
    struct table_list tables = {0};
    char head[96];
    /* One read transaction: a recorder writing meanwhile cannot tear the dump. */
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        goto dberr;
    in_txn = 1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW)
        goto dberr;
    snprintf(head, sizeof head, "PRAGMA user_version=%d;\nBEGIN TRANSACTION;\n",
             sqlite3_column_int(s, 0));
    sqlite3_finalize(s);
    s = NULL;
    if (out_puts(o, head, err) < 0)
        goto out;

    /* Tables first (by name), then their rows, then what is built on them. */
    if (sqlite3_prepare_v2(db,
                           "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND "
                           "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY CASE type WHEN "
                           "'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 ELSE 3 END, "
                           "name",
                           -1, &s, NULL) != SQLITE_OK)
        goto dberr;
    int rows_done = 0;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        const char *type = (const char *)sqlite3_column_text(s, 0);
        const char *name = (const char *)sqlite3_column_text(s, 1);
        const char *sql = (const char *)sqlite3_column_text(s, 2);
        int is_table = strcmp(type, "table") == 0;
        if (!is_table && !rows_done) {
            if (order_by_foreign_keys(db, &tables, err) < 0)
                goto out;
            for (size_t i = 0; i < tables.n; i++)
                if (!derived_table(tables.names[i]) && dump_rows(db, tables.names[i], o, err) < 0)
                    goto out;
            rows_done = 1;
        }
        if (put_statement(o, sql, err) < 0)
            goto out;
        if (is_table && strncmp(sql, "CREATE VIRTUAL", 14) != 0) {
            if (tables.n == tables.cap) {
                size_t cap = tables.cap ? tables.cap * 2 : 16;
                char **v = realloc(tables.names, cap * sizeof *v);
                if (!v)
                    goto oom;
                tables.names = v;
                tables.cap = cap;
            }
            if (!(tables.names[tables.n] = xstrndup(name, strlen(name))))
                goto oom;
            tables.n++;
        }
    }
    if (step != SQLITE_DONE)
        goto dberr;
    if (!rows_done) {
        if (order_by_foreign_keys(db, &tables, err) < 0)
            goto out;
        for (size_t i = 0; i < tables.n; i++)
            if (!derived_table(tables.names[i]) && dump_rows(db, tables.names[i], o, err) < 0)
                goto out;
    }
    if (out_puts(o, "COMMIT;\n", err) < 0)
        goto out;
    rc = 0;
    goto out;
oom:
    snprintf(err, APISIM_ERR_LEN, "out of memory");
    goto out;
dberr:
    snprintf(err, APISIM_ERR_LEN, "database %s: %s", path, sqlite3_errmsg(db));
out:
    sqlite3_finalize(s);
    if (in_txn)
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    table_list_free(&tables);
    return rc;
}

int export_main(int argc, char **argv)
{
    struct opts o;
    int rc =
        parse_opts("export", argc, argv, OPT_DB | OPT_SESSION | OPT_FORMAT | OPT_OUTPUT, 0, &o);
    if (rc >= 0)
        return rc;
    if (!o.format) {
        log_msg(LOG_ERROR, "export: --format har|jsonl|sql is required\n%s", usage_of("export"));
        return EXIT_USAGE;
    }
    int fmt_har = strcmp(o.format, "har") == 0, fmt_jsonl = strcmp(o.format, "jsonl") == 0,
        fmt_sql = strcmp(o.format, "sql") == 0;
    if (!fmt_har && !fmt_jsonl && !fmt_sql) {
        log_msg(LOG_ERROR, "export: unknown --format \"%s\": use har, jsonl or sql", o.format);
        return EXIT_USAGE;
    }
    if (fmt_sql && o.session) {
        log_msg(LOG_ERROR, "export: --session cannot be used with --format sql (a dump "
                           "holds the whole database); use har or jsonl for one session");
        return EXIT_USAGE;
    }
    rc = EXIT_RUNTIME;
    char err[APISIM_ERR_LEN] = "";
    struct store *st = NULL;
    struct out out = {0};
    int usage = 0, failed = 1;
    if (store_open(&st, o.db, STORE_READONLY, err) < 0)
        goto out;
    sqlite3 *db = store_db(st);
    if (check_session(db, o.db, o.session, err) < 0)
        goto out;
    if (out_open(&out, o.output, o.db, err, &usage) < 0) {
        if (usage)
            rc = EXIT_USAGE;
        goto out;
    }
    if (fmt_sql) {
        if (export_sql(db, o.db, &out, err) < 0)
            goto out;
    } else if (fmt_har) {
        if (export_har(db, o.db, o.session, &out, err) < 0)
            goto out;
    } else {
        struct export_ctx c = {.out = &out, .db = db};
        if (for_each_exchange(db, o.db, o.session, write_jsonl_line, &c, err) < 0)
            goto out;
    }
    failed = 0;
    rc = EXIT_OK;
out:
    if (out.f && out_close(&out, failed, err) < 0)
        rc = EXIT_RUNTIME;
    if (rc != EXIT_OK)
        log_msg(LOG_ERROR, "export: %s", err);
    store_close(st);
    return rc;
}

/* ---------------------------------------------------------------- import */

struct importer {
    const char *file;
    const char *db_path;
    struct store *st;
    sqlite3 *db;
    const char *session;
    struct har_limits lim;
    int64_t next_seq;
    int imported, skipped;
    struct redact_rules redact; /* empty: the built-in secret headers */
};

static void import_skip(struct importer *im, const char *what, const char *why)
{
    im->skipped++;
    log_msg(LOG_WARN, "%s: %s: skipped: %s", im->file, what, why);
}

/* Store one checked exchange in its own savepoint: a failure leaves nothing of it. */
static void import_store(struct importer *im, struct exchange *ex, const char *what)
{
    char err[APISIM_ERR_LEN] = "";
    free(ex->session);
    free(ex->source);
    ex->session = xstrndup(im->session, strlen(im->session));
    ex->source = xstrndup("import", 6);
    ex->seq = im->next_seq;
    if (!ex->session || !ex->source) {
        import_skip(im, what, "out of memory");
        return;
    }
    /* Imported traffic is redacted like recorded traffic: no cookie reaches the file. */
    char *q = redact_query(&im->redact, ex->query);
    if (!q || redact_headers(&im->redact, &ex->request_headers) < 0 ||
        redact_headers(&im->redact, &ex->response_headers) < 0) {
        free(q);
        import_skip(im, what, "out of memory");
        return;
    }
    free(ex->query);
    ex->query = q;
    if (sqlite3_exec(im->db, "SAVEPOINT entry", NULL, NULL, NULL) != SQLITE_OK) {
        import_skip(im, what, sqlite3_errmsg(im->db));
        return;
    }
    if (store_put_exchange(im->st, ex, err) < 0) {
        sqlite3_exec(im->db, "ROLLBACK TO entry; RELEASE entry", NULL, NULL, NULL);
        import_skip(im, what, err);
        return;
    }
    sqlite3_exec(im->db, "RELEASE entry", NULL, NULL, NULL);
    im->next_seq++;
    im->imported++;
}

/* Line and column of byte offset off in text, for messages. */
static void position_of(const char *text, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static int import_har(struct importer *im, const char *text, char *err)
{
    int rc = -1;
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithOpts(text, &end, 1);
    if (!doc) {
        size_t line, col;
        position_of(text, end ? (size_t)(end - text) : 0, &line, &col);
        snprintf(err, APISIM_ERR_LEN,
                 "%s: not valid JSON: the HAR breaks off at line %zu, "
                 "column %zu",
                 im->file, line, col);
        goto out;
    }
    const cJSON *log = cJSON_GetObjectItemCaseSensitive(doc, "log");
    const cJSON *entries = cJSON_GetObjectItemCaseSensitive(log, "entries");
    if (!cJSON_IsObject(log)) {
        snprintf(err, APISIM_ERR_LEN, "%s: log is not an object: not a HAR file", im->file);
        goto out;
    }
    if (!cJSON_IsArray(entries)) {
        snprintf(err, APISIM_ERR_LEN, "%s: log.entries is %s: not a HAR file", im->file,
                 entries ? "not an array" : "missing");
        goto out;
    }
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, entries)
    {
        char what[300], why[APISIM_ERR_LEN] = "";
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(e, "request");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(req, "method");
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(req, "url");
        if (cJSON_IsString(m) && cJSON_IsString(u))
            snprintf(what, sizeof what, "entry %d (%.20s %.200s)", i, m->valuestring,
                     u->valuestring);
        else
            snprintf(what, sizeof what, "entry %d", i);
        i++;
        struct exchange *ex = NULL;
        if (har_entry_to_exchange(e, &im->lim, &ex, why) < 0) {
            import_skip(im, what, why);
            continue;
        }
        import_store(im, ex, what);
        exchange_free(ex);
    }
    rc = 0;
out:
    cJSON_Delete(doc);
    return rc;
}

static int import_jsonl(struct importer *im, char *text)
{
    size_t lineno = 0;
    char *p = text;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        char *line = p;
        p = nl ? nl + 1 : p + strlen(p);
        line += strspn(line, " \t\r");
        if (!*line)
            continue;
        char what[64], why[APISIM_ERR_LEN] = "";
        snprintf(what, sizeof what, "line %zu", lineno);
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithOpts(line, &end, 0);
        if (!j || end[strspn(end, " \t\r")] != '\0') {
            snprintf(why, sizeof why, "not valid JSON (at column %zu)",
                     end ? (size_t)(end - line) + 1 : (size_t)1);
            cJSON_Delete(j);
            import_skip(im, what, why);
            continue;
        }
        struct exchange *ex = NULL;
        if (har_jsonl_to_exchange(j, &im->lim, &ex, why) < 0)
            import_skip(im, what, why);
        else
            import_store(im, ex, what);
        exchange_free(ex);
        cJSON_Delete(j);
    }
    return 0;
}

/* Read the whole file (or standard input for "-"), capped. */
static char *read_file(const char *path, char *err)
{
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    struct buf b = {.max = IMPORT_MAX_FILE};
    char *text = NULL, chunk[65536];
    size_t n;
    if (!f) {
        snprintf(err, APISIM_ERR_LEN, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (buf_append(&b, chunk, n) < 0) {
            snprintf(err, APISIM_ERR_LEN, "%s is larger than %zu MiB: split it before importing",
                     path, IMPORT_MAX_FILE >> 20);
            goto out;
        }
    }
    if (ferror(f)) {
        snprintf(err, APISIM_ERR_LEN, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    if (memchr(b.p ? b.p : "", '\0', b.len)) {
        snprintf(err, APISIM_ERR_LEN, "%s holds NUL bytes: not a HAR or JSONL text file", path);
        goto out;
    }
    text = buf_steal(&b, NULL);
out:
    buf_free(&b);
    if (!is_stdin)
        fclose(f);
    return text;
}

/* HAR when the top-level object's first member is "log"; anything else that starts with
 * '{' is taken as JSONL. */
static int looks_like_har(const char *t)
{
    t += strspn(t, " \t\r\n");
    if (*t++ != '{')
        return 0;
    t += strspn(t, " \t\r\n");
    return strncmp(t, "\"log\"", 5) == 0;
}

int import_main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_opts("import", argc, argv, OPT_DB | OPT_SESSION | OPT_MAX_BODY, 1, &o);
    if (rc >= 0)
        return rc;
    char err[APISIM_ERR_LEN] = "";
    struct importer im = {.file = o.arg,
                          .db_path = o.db,
                          .session = o.session ? o.session : DEFAULT_IMPORT_SESSION,
                          .lim = {.max_body = IMPORT_DEFAULT_MAX_BODY}};
    if (o.max_body && parse_size(o.max_body, &im.lim.max_body, err) < 0) {
        log_msg(LOG_ERROR, "import: --max-body: %s", err);
        return EXIT_USAGE;
    }
    if (o.max_body && im.lim.max_body == 0) {
        log_msg(LOG_ERROR, "import: --max-body must be more than 0");
        return EXIT_USAGE;
    }
    if (ends_with(o.db, ".sql")) {
        log_msg(LOG_ERROR,
                "import: --db %s is a text dump, which is read-only: import "
                "into a .db file, then `apisim export --format sql` it",
                o.db);
        return EXIT_USAGE;
    }
    rc = EXIT_RUNTIME;
    struct store *st = NULL;
    char *text = NULL;
    int in_txn = 0;
    if (!(text = read_file(o.arg, err)))
        goto out;
    char *t = text + strspn(text, " \t\r\n");
    if (strncmp(t, "\xef\xbb\xbf", 3) == 0) /* a byte order mark, as some tools write */
        t += 3 + strspn(t + 3, " \t\r\n");
    if (*t != '{') {
        if (*t)
            snprintf(err, APISIM_ERR_LEN,
                     "%s is neither HAR nor JSONL: it starts with '%c', "
                     "not '{'",
                     o.arg, *t);
        else
            snprintf(err, APISIM_ERR_LEN, "%s is empty: nothing to import", o.arg);
        goto out;
    }
    if (store_open(&st, o.db, STORE_CREATE, err) < 0)
        goto out;
    im.st = st;
    im.db = store_db(st);
    /* One transaction for the whole file: with SQLite's default 2 MiB page cache, the pages
     * of the indexes (the match index's is in hash order) are written to the WAL again and
     * again as they are evicted; 64 MiB keeps them in memory until the commit. */
    sqlite3_exec(im.db, "PRAGMA cache_size = -65536", NULL, NULL, NULL);
    if (sqlite3_exec(im.db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", o.db, sqlite3_errmsg(im.db));
        goto out;
    }
    in_txn = 1;
    if (store_ensure_session(st, im.session, NULL, err) < 0 ||
        store_max_seq(st, im.session, &im.next_seq, err) < 0)
        goto out;
    im.next_seq++;
    int is_har = looks_like_har(t);
    if (is_har ? import_har(&im, t, err) < 0 : import_jsonl(&im, t) < 0)
        goto out;
    if (im.imported == 0 && im.skipped > 0) {
        snprintf(err, APISIM_ERR_LEN, "%s: none of its %d %s could be imported (see above)", o.arg,
                 im.skipped, is_har ? "entries" : "lines");
        goto out;
    }
    if (sqlite3_exec(im.db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "database %s: commit failed: %s", o.db,
                 sqlite3_errmsg(im.db));
        goto out;
    }
    in_txn = 0;
    printf("imported %d of %d %s from %s into %s (session %s)\n", im.imported,
           im.imported + im.skipped, is_har ? "HAR entries" : "JSONL lines", o.arg, o.db,
           im.session);
    rc = EXIT_OK;
out:
    if (in_txn)
        sqlite3_exec(im.db, "ROLLBACK", NULL, NULL, NULL);
    if (rc != EXIT_OK)
        log_msg(LOG_ERROR, "import: %s", err);
    free(text);
    store_close(st);
    return rc;
}

/* ---------------------------------------------------------------- init */

int init_main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_opts("init", argc, argv, OPT_DB, 0, &o);
    if (rc >= 0)
        return rc;
    if (ends_with(o.db, ".sql")) {
        log_msg(LOG_ERROR,
                "init: --db %s is a text dump, which is loaded into memory and never written: "
                "give a .db file",
                o.db);
        return EXIT_USAGE;
    }
    char err[APISIM_ERR_LEN] = "";
    struct store *st = NULL;
    struct stat sb;
    int existed = stat(o.db, &sb) == 0;
    if (store_open(&st, o.db, STORE_CREATE, err) < 0) {
        log_msg(LOG_ERROR, "init: %s", err);
        return EXIT_RUNTIME;
    }
    sqlite3_stmt *s = NULL;
    rc = EXIT_RUNTIME;
    if (sqlite3_prepare_v2(store_db(st), "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW) {
        log_msg(LOG_ERROR, "init: database %s: %s", o.db, sqlite3_errmsg(store_db(st)));
    } else {
        printf("%s: apisim schema version %d%s\n", o.db, sqlite3_column_int(s, 0),
               existed ? "" : " (created)");
        rc = EXIT_OK;
    }
    sqlite3_finalize(s);
    store_close(st);
    return rc;
}
