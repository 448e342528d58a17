/* claude — the fake claude CLI and claude-record (see claude.h).
 *
 * The records themselves come from scenario.c; this file does the process side: argument
 * parsing, waiting between lines (clock_nanosleep on absolute deadlines, never spinning),
 * stdout and the session log, signals and exit codes, and for claude-record the child
 * process, its pipes and the SQLite rows.
 */
#include "claude.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "latency.h"
#include "log.h"
#include "scenario.h"
#include "store.h"
#include "util.h"

#define CLAUDE_MAX_SCENARIO (64u << 20) /* bytes of a scenario file */
#define CLAUDE_MAX_PROMPT (16u << 20)   /* bytes of a prompt read from stdin */
#define CLAUDE_MAX_LINE (64u << 20)     /* bytes kept of one recorded stdout line */
#define CLAUDE_MAX_LINES 1000000        /* stdout lines kept of one recorded run */
#define CLAUDE_MAX_STDERR (16u << 20)   /* bytes kept of a recorded run's stderr */
#define CLAUDE_MAX_LOG (256u << 20)     /* bytes kept of a recorded session log */
#define CLAUDE_MAX_ERR_CHUNKS 100000    /* timed pieces kept of a recorded run's stderr */
#define CLAUDE_PATH_LEN 4096

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* ---- small process helpers -------------------------------------------------------------- */

/* Write all n bytes to fd. Returns 0 or -1 with errno. */
static int write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Write line and a newline in one write(), so a reader of a pipe gets whole lines. */
static int write_line(int fd, const char *line, size_t len, int newline)
{
    struct buf b = {0};
    int rc = -1;
    if (buf_append(&b, line, len) < 0 || (newline && buf_append(&b, "\n", 1) < 0)) {
        errno = ENOMEM;
        goto out;
    }
    rc = write_all(fd, b.p, b.len);
out:
    buf_free(&b);
    return rc;
}

/* Sleep until the monotonic clock (now_mono_us() is CLOCK_MONOTONIC in µs) reaches
 * deadline_us. A signal handler that returns does not cut the wait short. */
static void sleep_until(int64_t deadline_us)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline_us / 1000000),
                          .tv_nsec = (long)(deadline_us % 1000000) * 1000};
    if (deadline_us <= 0)
        return;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Read a whole file into *out (NUL-terminated, free()), at most max bytes. Returns 0, 1 when
 * it does not exist, -1 with errno (EFBIG when larger than max). */
static int read_file(const char *path, size_t max, char **out, size_t *len)
{
    struct buf b = {.max = max};
    char chunk[65536];
    int rc = -1, fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 1 : -1;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto out;
        if (n == 0)
            break;
        if (buf_append(&b, chunk, (size_t)n) < 0) {
            errno = EFBIG;
            goto out;
        }
    }
    *out = buf_steal(&b, len);
    rc = *out ? 0 : -1;
out:
    buf_free(&b);
    close(fd);
    return rc;
}

/* mkdir -p for the directory part of path. Returns 0 or -1 with errno. */
static int make_parent_dirs(const char *path)
{
    char tmp[CLAUDE_PATH_LEN];
    size_t n = strlen(path);
    if (n >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i < n; i++) {
        if (tmp[i] != '/')
            continue;
        tmp[i] = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
            return -1;
        tmp[i] = '/';
    }
    return 0;
}

/* $CLAUDE_CONFIG_DIR, else $HOME/.claude. Returns 0 or -1 when neither is set. */
static int config_dir(char *out, size_t outlen)
{
    const char *dir = getenv("CLAUDE_CONFIG_DIR");
    const char *home = getenv("HOME");
    int n;
    if (dir && *dir)
        n = snprintf(out, outlen, "%s", dir);
    else if (home && *home)
        n = snprintf(out, outlen, "%s/.claude", home);
    else
        return -1;
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

/* <config dir>/projects/<slug of cwd>/<file>. Returns 0 or -1 when it cannot be formed. */
static int session_log_path(const char *confdir, const char *cwd, const char *file, char *out,
                            size_t outlen)
{
    char slug[CLAUDE_PATH_LEN];
    if (scenario_slug(cwd, slug, sizeof slug) < 0)
        return -1;
    int n = snprintf(out, outlen, "%s/projects/%s/%s", confdir, slug, file);
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* ---- the fake CLI ----------------------------------------------------------------------- */

enum output_format { OUT_TEXT, OUT_JSON, OUT_STREAM_JSON };

struct claude_opts {
    enum output_format format;
    const char *model, *session_id, *resume, *permission_mode, *input_format;
    const char *prompt;
    const char *scenario_file, *preset, *latency;
    int version, help, partial_messages;
};

/* claude's options that take a value; every other option is taken as a flag. */
static const char *const value_options[] = {"--output-format",
                                            "--input-format",
                                            "--model",
                                            "--fallback-model",
                                            "--session-id",
                                            "--system-prompt",
                                            "--system-prompt-file",
                                            "--append-system-prompt",
                                            "--append-system-prompt-file",
                                            "--allowedTools",
                                            "--allowed-tools",
                                            "--disallowedTools",
                                            "--disallowed-tools",
                                            "--tools",
                                            "--mcp-config",
                                            "--permission-mode",
                                            "--permission-prompt-tool",
                                            "--max-turns",
                                            "--max-budget-usd",
                                            "--max-thinking-tokens",
                                            "--add-dir",
                                            "--settings",
                                            "--setting-sources",
                                            "--agents",
                                            "--agent",
                                            "--betas",
                                            "--json-schema",
                                            "--plugin-dir",
                                            "--debug-file",
                                            "--effort",
                                            "--apisim-scenario",
                                            "--apisim-preset",
                                            "--latency",
                                            NULL};

static int takes_value(const char *name)
{
    for (size_t i = 0; value_options[i]; i++) {
        if (strcmp(value_options[i], name) == 0)
            return 1;
    }
    return 0;
}

static void claude_usage(FILE *f)
{
    fputs("Usage: claude [options] [prompt]   (apisim's fake claude CLI)\n"
          "\n"
          "Accepts claude's arguments (-p, --output-format text|json|stream-json, --verbose,\n"
          "--model, --resume, --session-id, --include-partial-messages, ...) and plays a\n"
          "scenario:\n"
          "  --apisim-scenario FILE   or $APISIM_CLAUDE_SCENARIO: a scenario file (JSON)\n"
          "  --apisim-preset NAME     or $APISIM_CLAUDE_PRESET: success, context-exhaustion,\n"
          "                           max-turns, api-retry, api-retry-exhausted, corrupt-stream,\n"
          "                           truncated, interrupted, hang-after-result\n"
          "  $APISIM_DB + $APISIM_SESSION   replay the latest run recorded by claude-record\n"
          "  --latency SPEC           or $APISIM_LATENCY, for replays: none, recorded, "
          "recorded*K\n"
          "\n"
          "Scenario file positions (delays_ms keys, api_retry.at, corrupt.at, truncate_after,\n"
          "exit_at.at) count its \"records\" from 0; the init record added in front of them is\n"
          "not counted, nor are api_retry records. corrupt replaces its record; truncate_after\n"
          "N writes records 0..N-1 and exits 1; exit_at N writes records 0..N; api_retry with\n"
          "exhaust writes nothing from its record on and exits 1. A file with positions must\n"
          "say \"version\": 2; one without it (the older numbering: init 0, retries counted) is\n"
          "refused with how to convert it.\n",
          f);
}

/* Parse claude's command line (argv[0] is the program). Returns 0, or EXIT_USAGE after
 * logging the problem. */
static int parse_claude_args(int argc, char **argv, struct claude_opts *o)
{
    int positional_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (positional_only || a[0] != '-' || a[1] == '\0') {
            if (!o->prompt)
                o->prompt = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            positional_only = 1;
            continue;
        }
        char name[64];
        const char *value = NULL;
        const char *eq = strchr(a, '=');
        size_t nlen = eq && a[1] == '-' ? (size_t)(eq - a) : strlen(a);
        if (nlen >= sizeof name)
            continue; /* no option of claude's is that long: ignore it */
        memcpy(name, a, nlen);
        name[nlen] = '\0';
        if (eq && a[1] == '-')
            value = eq + 1;
        if (strcmp(name, "-r") == 0 || strcmp(name, "--resume") == 0) {
            /* --resume takes an optional session id. */
            if (!value && i + 1 < argc && argv[i + 1][0] != '-')
                value = argv[++i];
            o->resume = value ? value : "";
            continue;
        }
        if (strcmp(name, "-v") == 0 || strcmp(name, "--version") == 0) {
            o->version = 1;
            continue;
        }
        if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
            o->help = 1;
            continue;
        }
        if (strcmp(name, "--include-partial-messages") == 0) {
            o->partial_messages = 1;
            continue;
        }
        if (!takes_value(name))
            continue; /* -p, --print, --verbose, and any flag we do not know */
        if (!value) {
            if (i + 1 >= argc) {
                log_msg(LOG_ERROR, "claude: option %s needs a value", name);
                return EXIT_USAGE;
            }
            value = argv[++i];
        }
        if (strcmp(name, "--output-format") == 0) {
            if (strcmp(value, "text") == 0) {
                o->format = OUT_TEXT;
            } else if (strcmp(value, "json") == 0) {
                o->format = OUT_JSON;
            } else if (strcmp(value, "stream-json") == 0) {
                o->format = OUT_STREAM_JSON;
            } else {
                log_msg(LOG_ERROR,
                        "claude: --output-format \"%s\" is not one of text, json, stream-json",
                        value);
                return EXIT_USAGE;
            }
        } else if (strcmp(name, "--model") == 0) {
            o->model = value;
        } else if (strcmp(name, "--session-id") == 0) {
            o->session_id = value;
        } else if (strcmp(name, "--permission-mode") == 0) {
            o->permission_mode = value;
        } else if (strcmp(name, "--input-format") == 0) {
            o->input_format = value;
        } else if (strcmp(name, "--apisim-scenario") == 0) {
            o->scenario_file = value;
        } else if (strcmp(name, "--apisim-preset") == 0) {
            o->preset = value;
        } else if (strcmp(name, "--latency") == 0) {
            o->latency = value;
        }
    }
    return 0;
}

static void on_interrupt(int sig)
{
    (void)sig;
    /* As the CLI does on Ctrl-C, at any moment: stop with 130. */
    _exit(130);
}

static void install_interrupt(void)
{
    struct sigaction sa;
    sigset_t set;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    /* A parent may hand us SIGTERM ignored or signals blocked; the contract is that they end
     * us (hang-after-result waits for exactly that). */
    signal(SIGTERM, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

/* Stay alive until a signal ends the process (SIGINT exits 130, SIGTERM kills). */
static void hang_forever(void)
{
    sigset_t none;
    sigemptyset(&none);
    for (;;)
        sigsuspend(&none);
}

/* The session log being written: -1 when there is none. */
struct session_log {
    int fd;
    char path[CLAUDE_PATH_LEN];
};

/* Open the session log for session_id, creating its directory. A failure is a warning: the
 * run goes on without a log, as stdout is what callers read first. */
static void session_log_open(struct session_log *sl, const char *cwd, const char *file, int append)
{
    char confdir[CLAUDE_PATH_LEN];
    sl->fd = -1;
    if (config_dir(confdir, sizeof confdir) < 0 ||
        session_log_path(confdir, cwd, file, sl->path, sizeof sl->path) < 0) {
        log_msg(LOG_WARN, "claude: no session log: set CLAUDE_CONFIG_DIR or HOME");
        return;
    }
    if (make_parent_dirs(sl->path) < 0 ||
        (sl->fd = open(sl->path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC),
                       0600)) < 0)
        log_msg(LOG_WARN, "claude: cannot write session log %s: %s", sl->path, strerror(errno));
}

static void session_log_write(struct session_log *sl, const char *text, size_t len)
{
    if (sl->fd < 0 || !text)
        return;
    if (write_all(sl->fd, text, len) < 0) {
        log_msg(LOG_WARN, "claude: cannot write session log %s: %s", sl->path, strerror(errno));
        close(sl->fd);
        sl->fd = -1;
    }
}

static void session_log_close(struct session_log *sl)
{
    if (sl->fd >= 0)
        close(sl->fd);
    sl->fd = -1;
}

/* Play a built run on stdout in the chosen format. Returns the exit status (or does not
 * return: interrupt and hang). */
static int play_run(const struct scenario_run *run, const struct claude_opts *o, const char *cwd)
{
    struct session_log sl;
    char file[SCENARIO_ID_LEN + 8];
    int rc = EXIT_RUNTIME;
    snprintf(file, sizeof file, "%s.jsonl", run->session_id);
    session_log_open(&sl, cwd, file, o->resume != NULL);
    session_log_write(&sl, run->log_head, strlen(run->log_head));
    int64_t t = now_mono_us();
    for (size_t i = 0; i < run->nsteps; i++) {
        const struct scenario_step *st = &run->steps[i];
        const char *out = NULL;
        t += st->delay_us;
        sleep_until(t);
        if (o->format == OUT_STREAM_JSON)
            out = st->line;
        else if (st->is_result)
            out = o->format == OUT_JSON ? st->line : st->result_text;
        if (out && write_line(STDOUT_FILENO, out, strlen(out), 1) < 0) {
            log_msg(LOG_ERROR, "claude: cannot write to stdout: %s", strerror(errno));
            goto out;
        }
        if (st->log)
            session_log_write(&sl, st->log, strlen(st->log));
        t = now_mono_us();
    }
    sleep_until(t + run->end_delay_us);
    if (run->log_tail)
        session_log_write(&sl, run->log_tail, strlen(run->log_tail));
    session_log_close(&sl);
    if (run->stderr_text && *run->stderr_text) {
        size_t n = strlen(run->stderr_text);
        write_line(STDERR_FILENO, run->stderr_text, n, run->stderr_text[n - 1] != '\n');
    }
    switch (run->end) {
    case SCENARIO_END_INTERRUPT:
        raise(SIGINT);
        return 130;
    case SCENARIO_END_HANG:
        hang_forever();
        return 0;
    case SCENARIO_END_EXIT:
        break;
    }
    rc = run->exit_code;
out:
    session_log_close(&sl);
    return rc;
}

static uint64_t fresh_seed(void)
{
    uint64_t seed = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &seed, sizeof seed) != (ssize_t)sizeof seed)
            seed = 0;
        close(fd);
    }
    return seed ^ (uint64_t)now_wall_us() ^ ((uint64_t)getpid() << 32);
}

/* Read the prompt from stdin when none was given, as `echo hi | claude -p` does. */
static char *read_stdin_prompt(const struct claude_opts *o)
{
    if (o->prompt || (o->input_format && strcmp(o->input_format, "text") != 0) ||
        isatty(STDIN_FILENO))
        return NULL;
    struct buf b = {.max = CLAUDE_MAX_PROMPT};
    char chunk[65536];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || buf_append(&b, chunk, (size_t)n) < 0)
            break;
    }
    while (b.len > 0 && (b.p[b.len - 1] == '\n' || b.p[b.len - 1] == '\r'))
        b.p[--b.len] = '\0';
    return buf_steal(&b, NULL);
}

/* Load the scenario the options and environment name. Returns 0 and *out, 1 when none is
 * named (replay or the default), or EXIT_USAGE after logging. */
static int load_scenario(const struct claude_opts *o, struct scenario **out)
{
    char err[APISIM_ERR_LEN];
    const char *file = o->scenario_file ? o->scenario_file : env_nonempty("APISIM_CLAUDE_SCENARIO");
    const char *preset = o->preset ? o->preset : env_nonempty("APISIM_CLAUDE_PRESET");
    if (file) {
        char *text = NULL;
        size_t len = 0;
        int r = read_file(file, CLAUDE_MAX_SCENARIO, &text, &len);
        if (r != 0) {
            log_msg(LOG_ERROR, "scenario %s: cannot read it: %s", file,
                    r > 0 ? "no such file" : strerror(errno));
            return EXIT_USAGE;
        }
        r = scenario_parse(text, len, file, out, err);
        free(text);
        if (r < 0) {
            log_msg(LOG_ERROR, "%s", err);
            return EXIT_USAGE;
        }
        return 0;
    }
    if (preset) {
        if (scenario_preset(preset, out, err) < 0) {
            log_msg(LOG_ERROR, "%s", err);
            return EXIT_USAGE;
        }
        return 0;
    }
    return 1;
}

/* The replay speed: 0 for no gaps, else the factor applied to recorded offsets. Returns 0
 * or EXIT_USAGE after logging. */
static int replay_factor(const char *spec, double *factor)
{
    char err[APISIM_ERR_LEN];
    struct latency_spec ls;
    if (latency_parse(spec, &ls, err) < 0) {
        log_msg(LOG_ERROR, "claude: %s", err);
        return EXIT_USAGE;
    }
    if (ls.kind == LATENCY_NONE) {
        *factor = 0;
    } else if (ls.kind == LATENCY_RECORDED) {
        *factor = ls.factor;
    } else {
        log_msg(LOG_ERROR,
                "claude: latency \"%s\" cannot replay a CLI run: use none, recorded or "
                "recorded*K",
                spec);
        return EXIT_USAGE;
    }
    return 0;
}

/* Write the recorded session log where this run's CLI would have written it. */
static void replay_session_log(sqlite3_stmt *run, const char *cwd)
{
    const char *path = (const char *)sqlite3_column_text(run, 3);
    const void *text = sqlite3_column_blob(run, 4);
    int len = sqlite3_column_bytes(run, 4);
    if (!path || sqlite3_column_type(run, 4) == SQLITE_NULL)
        return;
    const char *base = strrchr(path, '/');
    struct session_log sl;
    session_log_open(&sl, cwd, base ? base + 1 : path, 0);
    session_log_write(&sl, text, (size_t)len);
    session_log_close(&sl);
}

/* Replay the latest run recorded under session in db_path. Returns the recorded exit code,
 * or an error status after logging. */
static int replay_run(const char *db_path, const char *session, double factor, const char *cwd)
{
    char err[APISIM_ERR_LEN];
    struct store *st = NULL;
    sqlite3_stmt *run = NULL, *lines = NULL, *errs = NULL;
    int rc = EXIT_RUNTIME;
    if (store_open(&st, db_path, STORE_READONLY, err) < 0) {
        log_msg(LOG_ERROR, "claude: %s", err);
        goto out;
    }
    sqlite3 *db = store_db(st);
    if (sqlite3_prepare_v2(db,
                           "SELECT id, exit_code, stderr, session_log_path, session_log "
                           "FROM claude_runs WHERE session = ? ORDER BY id DESC LIMIT 1",
                           -1, &run, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT offset_us, line, newline FROM claude_lines WHERE run_id = ? "
                           "ORDER BY idx",
                           -1, &lines, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT offset_us, chunk FROM claude_stderr WHERE run_id = ? "
                           "ORDER BY idx",
                           -1, &errs, NULL) != SQLITE_OK) {
        log_msg(LOG_ERROR, "claude: database %s: %s", db_path, sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_bind_text(run, 1, session, -1, SQLITE_STATIC);
    int step = sqlite3_step(run);
    if (step == SQLITE_DONE) {
        log_msg(LOG_ERROR,
                "claude: no claude run recorded in %s under session \"%s\": record one with "
                "apisim claude-record --db %s --session %s -- claude ...",
                db_path, session, db_path, session);
        rc = EXIT_USAGE;
        goto out;
    }
    if (step != SQLITE_ROW) {
        log_msg(LOG_ERROR, "claude: database %s: %s", db_path, sqlite3_errmsg(db));
        goto out;
    }
    replay_session_log(run, cwd);
    sqlite3_bind_int64(lines, 1, sqlite3_column_int64(run, 0));
    sqlite3_bind_int64(errs, 1, sqlite3_column_int64(run, 0));
    /* stdout lines and stderr pieces, merged by their offsets (a line first on a tie). */
    int64_t start = now_mono_us();
    int lstep = sqlite3_step(lines), estep = sqlite3_step(errs), timed_err = estep == SQLITE_ROW;
    while (lstep == SQLITE_ROW || estep == SQLITE_ROW) {
        int take_err =
            estep == SQLITE_ROW &&
            (lstep != SQLITE_ROW || sqlite3_column_int64(errs, 0) < sqlite3_column_int64(lines, 0));
        sqlite3_stmt *s = take_err ? errs : lines;
        int64_t offset = sqlite3_column_int64(s, 0);
        const void *bytes = sqlite3_column_blob(s, 1);
        size_t len = (size_t)sqlite3_column_bytes(s, 1);
        sleep_until(start + (int64_t)((double)offset * factor));
        int w = take_err ? write_all(STDERR_FILENO, bytes ? bytes : "", len)
                         : write_line(STDOUT_FILENO, bytes ? bytes : "", len,
                                      sqlite3_column_int(lines, 2));
        if (w < 0 && !take_err) {
            log_msg(LOG_ERROR, "claude: cannot write to stdout: %s", strerror(errno));
            goto out;
        }
        if (take_err)
            estep = sqlite3_step(errs);
        else
            lstep = sqlite3_step(lines);
    }
    if (lstep != SQLITE_DONE || estep != SQLITE_DONE) {
        log_msg(LOG_ERROR, "claude: database %s: %s", db_path, sqlite3_errmsg(db));
        goto out;
    }
    /* A run recorded before stderr had its timing: all of it at the end. */
    if (!timed_err && sqlite3_column_type(run, 2) != SQLITE_NULL)
        write_all(STDERR_FILENO, sqlite3_column_blob(run, 2), (size_t)sqlite3_column_bytes(run, 2));
    rc = sqlite3_column_int(run, 1);
out:
    sqlite3_finalize(errs);
    sqlite3_finalize(lines);
    sqlite3_finalize(run);
    store_close(st);
    return rc;
}

int claude_main(int argc, char **argv)
{
    struct claude_opts o = {.format = OUT_TEXT};
    struct scenario *sc = NULL;
    struct scenario_run *run = NULL;
    char *stdin_prompt = NULL;
    char cwd[CLAUDE_PATH_LEN], confdir[CLAUDE_PATH_LEN], err[APISIM_ERR_LEN];
    int rc;

    install_interrupt();
    if ((rc = parse_claude_args(argc, argv, &o)) != 0)
        goto out;
    if (o.help) {
        claude_usage(stdout);
        goto out;
    }
    if (o.version) {
        printf("%s (Claude Code)\n", SCENARIO_CLI_VERSION);
        goto out;
    }
    if (!getcwd(cwd, sizeof cwd))
        snprintf(cwd, sizeof cwd, "/");
    if (config_dir(confdir, sizeof confdir) < 0)
        snprintf(confdir, sizeof confdir, "/.claude");

    double factor = 1.0;
    if (o.latency && (rc = replay_factor(o.latency, &factor)) != 0)
        goto out;
    rc = load_scenario(&o, &sc);
    if (rc == EXIT_USAGE)
        goto out;
    const char *db = env_nonempty("APISIM_DB"), *session = env_nonempty("APISIM_SESSION");
    if (rc == 1 && db && session) {
        const char *spec = o.latency ? o.latency : env_nonempty("APISIM_LATENCY");
        if (spec && (rc = replay_factor(spec, &factor)) != 0)
            goto out;
        rc = replay_run(db, session, factor, cwd);
        goto out;
    }
    if (rc == 1 && scenario_preset("success", &sc, err) < 0) {
        log_msg(LOG_ERROR, "%s", err);
        rc = EXIT_RUNTIME;
        goto out;
    }

    const char *sid = o.session_id ? o.session_id : (o.resume && *o.resume ? o.resume : NULL);
    stdin_prompt = read_stdin_prompt(&o);
    struct scenario_ctx ctx = {
        .cwd = cwd,
        .config_dir = confdir,
        .prompt = o.prompt ? o.prompt : stdin_prompt,
        .session_id = sid,
        .model = o.model,
        .permission_mode = o.permission_mode,
        .now_us = now_wall_us(),
        .seed = fresh_seed(),
        .partial_messages = o.partial_messages,
    };
    if (scenario_build(sc, &ctx, &run, err) < 0) {
        log_msg(LOG_ERROR, "claude: %s", err);
        rc = EXIT_RUNTIME;
        goto out;
    }
    if (strchr(run->session_id, '/') || strcmp(run->session_id, "..") == 0 ||
        strcmp(run->session_id, ".") == 0) {
        log_msg(LOG_ERROR, "claude: session id \"%s\" cannot name a session log file",
                run->session_id);
        rc = EXIT_USAGE;
        goto out;
    }
    rc = play_run(run, &o, cwd);
out:
    scenario_run_free(run);
    scenario_free(sc);
    free(stdin_prompt);
    return rc;
}

/* ---- claude-record ---------------------------------------------------------------------- */

/* One piece of the recorded command's stderr, as read: err.p[start..start+len). */
struct err_chunk {
    int64_t offset_us;
    size_t start, len;
};

/* One stdout line of the recorded command. */
struct rec_line {
    int64_t offset_us; /* from the start to the moment its newline arrived */
    char *text;
    size_t len;
    int newline; /* 0 for a last line left unfinished */
};

struct recording {
    struct rec_line *lines;
    size_t nlines, cap;
    struct buf cur;    /* the line being read */
    int cur_truncated; /* cur reached CLAUDE_MAX_LINE: the rest of the line is dropped */
    size_t dropped;    /* lines past CLAUDE_MAX_LINES, not kept */
    struct buf err;    /* stderr, capped at CLAUDE_MAX_STDERR */
    int err_truncated;
    struct err_chunk *chunks; /* where each piece of err starts and when it was read */
    size_t nchunks, chunks_cap;
    int pass_out, pass_err; /* 0 once writing our stdout/stderr failed (reader gone) */
};

static void recording_free(struct recording *r)
{
    for (size_t i = 0; i < r->nlines; i++)
        free(r->lines[i].text);
    free(r->lines);
    buf_free(&r->cur);
    buf_free(&r->err);
    free(r->chunks);
}

/* Keep the current line. Returns 0 or -1 when out of memory. */
static int push_line(struct recording *r, int64_t offset_us, int newline)
{
    if (r->nlines == CLAUDE_MAX_LINES) {
        r->dropped++;
        buf_free(&r->cur);
        r->cur.max = CLAUDE_MAX_LINE;
        r->cur_truncated = 0;
        return 0;
    }
    if (r->nlines == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct rec_line *p = realloc(r->lines, cap * sizeof *p);
        if (!p)
            return -1;
        r->lines = p;
        r->cap = cap;
    }
    struct rec_line *l = &r->lines[r->nlines++];
    l->offset_us = offset_us;
    l->newline = newline;
    l->text = buf_steal(&r->cur, &l->len);
    r->cur.max = CLAUDE_MAX_LINE;
    r->cur_truncated = 0;
    return l->text ? 0 : -1;
}

/* Split n bytes of stdout into lines stamped offset_us. Returns 0 or -1 (out of memory). */
static int feed_stdout(struct recording *r, const char *p, size_t n, int64_t offset_us)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (!r->cur_truncated && buf_append(&r->cur, p, take) < 0) {
            if (r->cur.len + take <= CLAUDE_MAX_LINE)
                return -1;
            log_msg(LOG_WARN,
                    "claude-record: a stdout line is longer than %u bytes: keeping "
                    "its first %zu",
                    CLAUDE_MAX_LINE, r->cur.len);
            r->cur_truncated = 1;
        }
        if (!nl)
            break;
        if (push_line(r, offset_us, 1) < 0)
            return -1;
        p = nl + 1;
        n -= take + 1;
    }
    return 0;
}

/* Keep n bytes of stderr read at offset_us: the bytes in err, the piece's place and time in
 * chunks (the pieces past CLAUDE_MAX_ERR_CHUNKS join the last one). */
static void feed_stderr(struct recording *r, const char *p, size_t n, int64_t offset_us)
{
    if (r->err_truncated)
        return;
    size_t start = r->err.len;
    if (buf_append(&r->err, p, n) < 0) {
        log_msg(LOG_WARN, "claude-record: stderr longer than %u bytes: keeping the start",
                CLAUDE_MAX_STDERR);
        r->err_truncated = 1;
        return;
    }
    if (r->nchunks == CLAUDE_MAX_ERR_CHUNKS) {
        r->chunks[r->nchunks - 1].len += n;
        return;
    }
    if (r->nchunks == r->chunks_cap) {
        size_t cap = r->chunks_cap ? r->chunks_cap * 2 : 16;
        struct err_chunk *c = realloc(r->chunks, cap * sizeof *c);
        if (!c) {
            /* The bytes are kept; only their timing is lost: they join the last piece. */
            if (r->nchunks > 0)
                r->chunks[r->nchunks - 1].len += n;
            return;
        }
        r->chunks = c;
        r->chunks_cap = cap;
    }
    r->chunks[r->nchunks++] = (struct err_chunk){.offset_us = offset_us, .start = start, .len = n};
}

static volatile sig_atomic_t pending_signal;

static void on_record_signal(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    /* A terminal's Ctrl-C reaches the whole process group, the command included: pass on
     * only what was sent to us alone (kill), so the command gets each signal once. */
    if (si && (si->si_code == SI_USER || si->si_code == SI_QUEUE))
        pending_signal = sig;
}

static void forward_pending(pid_t pid)
{
    int sig = pending_signal;
    if (sig) {
        pending_signal = 0;
        kill(pid, sig);
    }
}

static int set_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    return flags < 0 ? -1 : fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

/* Start cmd with stdout and stderr on pipes. Returns the pid, or -1 after logging (exec
 * failures included: errno_out gets the exec errno, 0 otherwise). */
static pid_t spawn(char **cmd, int *out_fd, int *err_fd, int *errno_out)
{
    int outp[2] = {-1, -1}, errp[2] = {-1, -1}, execp[2] = {-1, -1};
    pid_t pid = -1;
    *errno_out = 0;
    if (pipe(outp) < 0 || pipe(errp) < 0 || pipe(execp) < 0) {
        log_msg(LOG_ERROR, "claude-record: cannot make pipes: %s", strerror(errno));
        goto fail;
    }
    for (int i = 0; i < 2; i++) {
        set_cloexec(outp[i]);
        set_cloexec(errp[i]);
        set_cloexec(execp[i]);
    }
    pid = fork();
    if (pid < 0) {
        log_msg(LOG_ERROR, "claude-record: cannot fork: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        /* The child: only async-signal-safe calls until exec. */
        int e;
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        if (dup2(outp[1], STDOUT_FILENO) < 0 || dup2(errp[1], STDERR_FILENO) < 0) {
            e = errno;
        } else {
            execvp(cmd[0], cmd);
            e = errno;
        }
        ssize_t w = write(execp[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(outp[1]);
    close(errp[1]);
    close(execp[1]);
    int e = 0;
    ssize_t n;
    while ((n = read(execp[0], &e, sizeof e)) < 0 && errno == EINTR)
        ;
    close(execp[0]);
    if (n == (ssize_t)sizeof e) {
        /* exec failed: nothing ran, nothing to record. */
        *errno_out = e;
        close(outp[0]);
        close(errp[0]);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        return -1;
    }
    *out_fd = outp[0];
    *err_fd = errp[0];
    return pid;
fail:
    for (int i = 0; i < 2; i++) {
        if (outp[i] >= 0)
            close(outp[i]);
        if (errp[i] >= 0)
            close(errp[i]);
        if (execp[i] >= 0)
            close(execp[i]);
    }
    return -1;
}

/* Read the command's stdout and stderr until both close, passing them through. Returns 0
 * or -1 after logging. */
static int pump(struct recording *r, int out_fd, int err_fd, pid_t pid, int64_t start)
{
    struct pollfd pfd[2] = {{.fd = out_fd, .events = POLLIN}, {.fd = err_fd, .events = POLLIN}};
    char chunk[65536];
    int rc = 0;
    while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
        forward_pending(pid);
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            log_msg(LOG_ERROR, "claude-record: poll: %s", strerror(errno));
            rc = -1;
            break;
        }
        for (int k = 0; k < 2; k++) {
            if (pfd[k].fd < 0 || !(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(pfd[k].fd, chunk, sizeof chunk);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                close(pfd[k].fd);
                pfd[k].fd = -1;
                continue;
            }
            int64_t at = now_mono_us() - start;
            if (k == 0) {
                if (r->pass_out && write_all(STDOUT_FILENO, chunk, (size_t)n) < 0)
                    r->pass_out = 0;
                if (rc == 0 && feed_stdout(r, chunk, (size_t)n, at) < 0) {
                    log_msg(LOG_ERROR, "claude-record: out of memory keeping stdout");
                    rc = -1; /* keep draining so the command is not blocked */
                }
            } else {
                if (r->pass_err && write_all(STDERR_FILENO, chunk, (size_t)n) < 0)
                    r->pass_err = 0;
                feed_stderr(r, chunk, (size_t)n, at);
            }
        }
    }
    for (int k = 0; k < 2; k++) {
        if (pfd[k].fd >= 0)
            close(pfd[k].fd);
    }
    if (rc == 0 && r->cur.len > 0 && push_line(r, now_mono_us() - start, 0) < 0)
        rc = -1;
    return rc;
}

/* The session_id of the first stdout record that has one, into out ("" when none). */
static void find_session_id(const struct recording *r, char *out, size_t outlen)
{
    out[0] = '\0';
    for (size_t i = 0; i < r->nlines && !out[0]; i++) {
        cJSON *o = cJSON_ParseWithLength(r->lines[i].text, r->lines[i].len);
        const cJSON *sid = cJSON_GetObjectItemCaseSensitive(o, "session_id");
        if (cJSON_IsString(sid) && !strchr(sid->valuestring, '/') &&
            strlen(sid->valuestring) < outlen)
            snprintf(out, outlen, "%s", sid->valuestring);
        cJSON_Delete(o);
    }
}

/* Bind n bytes as TEXT when they are UTF-8, else as a BLOB; NULL when p is NULL. */
static void bind_bytes(sqlite3_stmt *s, int idx, const char *p, size_t n)
{
    if (!p)
        sqlite3_bind_null(s, idx);
    else if (is_utf8_text((const unsigned char *)p, n))
        sqlite3_bind_text64(s, idx, p, n, SQLITE_STATIC, SQLITE_UTF8);
    else
        sqlite3_bind_blob64(s, idx, p, n, SQLITE_STATIC);
}

struct run_meta {
    const char *session, *cwd, *session_id, *log_path, *log;
    const char *step, *tool, *model, *recipe; /* --step and the like: a scenario_steps row */
    char *argv_json;
    size_t log_len;
    int64_t started_wall_us, duration_us;
    int exit_code;
};

/* The stderr pieces of run_id, in the caller's transaction. Returns 0 or -1 (sqlite3_errmsg
 * says why). */
static int store_stderr(sqlite3 *db, int64_t run_id, const struct recording *r)
{
    sqlite3_stmt *s = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO claude_stderr (run_id, idx, offset_us, chunk) "
                           "VALUES (?, ?, ?, ?)",
                           -1, &s, NULL) != SQLITE_OK)
        goto out;
    for (size_t i = 0; i < r->nchunks; i++) {
        const struct err_chunk *c = &r->chunks[i];
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, run_id);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)i);
        sqlite3_bind_int64(s, 3, c->offset_us);
        bind_bytes(s, 4, r->err.p + c->start, c->len);
        if (sqlite3_step(s) != SQLITE_DONE)
            goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(s);
    return rc;
}

/* A scenario_steps row for m's step: of run_id (> 0), or a non-session step with summary
 * (JSON text). In the caller's transaction. Returns 0 or -1 (sqlite3_errmsg says why). */
static int insert_step(sqlite3 *db, const struct run_meta *m, int64_t run_id, const char *summary)
{
    sqlite3_stmt *s = NULL;
    char now[40];
    int rc = -1;
    format_iso8601_ms(now_wall_us(), now, sizeof now);
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO scenario_steps (recipe, step_name, tool, model, run_id, "
                           "result_summary, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           -1, &s, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(s, 1, m->recipe, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, m->step, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, m->tool, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, m->model, -1, SQLITE_STATIC);
    if (run_id > 0)
        sqlite3_bind_int64(s, 5, run_id);
    sqlite3_bind_text(s, 6, summary, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, now, -1, SQLITE_STATIC);
    rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -1;
out:
    sqlite3_finalize(s);
    return rc;
}

/* Store a non-session step (no run) with its summary. Returns 0 or -1 with err. */
static int store_step(struct store *st, const struct run_meta *m, const char *summary, char *err)
{
    sqlite3 *db = store_db(st);
    if (insert_step(db, m, 0, summary) < 0) {
        snprintf(err, APISIM_ERR_LEN, "database %s: cannot store step \"%s\": %s", store_path(st),
                 m->step, sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

/* Store the run and its lines in one transaction. Returns 0 and *run_id, or -1 with err. */
static int store_run(struct store *st, const struct run_meta *m, const struct recording *r,
                     int64_t *run_id, char *err)
{
    sqlite3 *db = store_db(st);
    sqlite3_stmt *ins = NULL, *line = NULL;
    char started[40];
    int rc = -1, began = 0;
    format_iso8601_ms(m->started_wall_us, started, sizeof started);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        goto db_fail;
    began = 1;
    if (store_ensure_session(st, m->session, NULL, err) < 0)
        goto out;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO claude_runs (session, argv, cwd, started_at, duration_us, "
                           "exit_code, stderr, session_id, session_log_path, session_log) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           -1, &ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "INSERT INTO claude_lines (run_id, idx, offset_us, line, newline) "
                           "VALUES (?, ?, ?, ?, ?)",
                           -1, &line, NULL) != SQLITE_OK)
        goto db_fail;
    sqlite3_bind_text(ins, 1, m->session, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 2, m->argv_json, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 3, m->cwd, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 4, started, -1, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 5, m->duration_us);
    sqlite3_bind_int(ins, 6, m->exit_code);
    bind_bytes(ins, 7, r->err.len ? r->err.p : NULL, r->err.len);
    if (m->session_id && *m->session_id)
        sqlite3_bind_text(ins, 8, m->session_id, -1, SQLITE_STATIC);
    if (m->log) {
        sqlite3_bind_text(ins, 9, m->log_path, -1, SQLITE_STATIC);
        bind_bytes(ins, 10, m->log, m->log_len);
    }
    if (sqlite3_step(ins) != SQLITE_DONE)
        goto db_fail;
    *run_id = sqlite3_last_insert_rowid(db);
    for (size_t i = 0; i < r->nlines; i++) {
        const struct rec_line *l = &r->lines[i];
        sqlite3_reset(line);
        sqlite3_bind_int64(line, 1, *run_id);
        sqlite3_bind_int64(line, 2, (sqlite3_int64)i);
        sqlite3_bind_int64(line, 3, l->offset_us);
        bind_bytes(line, 4, l->text, l->len);
        sqlite3_bind_int(line, 5, l->newline);
        if (sqlite3_step(line) != SQLITE_DONE)
            goto db_fail;
    }
    if (store_stderr(db, *run_id, r) < 0 || (m->step && insert_step(db, m, *run_id, NULL) < 0))
        goto db_fail;
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto db_fail;
    began = 0;
    rc = 0;
    goto out;
db_fail:
    snprintf(err, APISIM_ERR_LEN, "database %s: cannot store the run: %s", store_path(st),
             sqlite3_errmsg(db));
out:
    sqlite3_finalize(ins);
    sqlite3_finalize(line);
    if (began)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static char *argv_to_json(char **cmd)
{
    cJSON *a = cJSON_CreateArray();
    char *s = NULL;
    for (size_t i = 0; a && cmd[i]; i++) {
        cJSON *v = cJSON_CreateString(cmd[i]);
        if (!v || !cJSON_AddItemToArray(a, v)) {
            cJSON_Delete(v);
            goto out;
        }
    }
    s = a ? cJSON_PrintUnformatted(a) : NULL;
out:
    cJSON_Delete(a);
    return s;
}

/* The variable an option of claude-record sets (a = "--name" or "--name=value"), or NULL
 * when a is not one of them. */
static const char **record_option(const char *a, const char **db, const char **session,
                                  struct run_meta *m, const char **summary)
{
    static const char *const names[] = {"--db",    "--session", "--step",    "--tool",
                                        "--model", "--recipe",  "--summary", NULL};
    const char **slots[] = {db, session, &m->step, &m->tool, &m->model, &m->recipe, summary};
    for (size_t k = 0; names[k]; k++) {
        size_t n = strlen(names[k]);
        if (strncmp(a, names[k], n) == 0 && (a[n] == '\0' || a[n] == '='))
            return slots[k];
    }
    return NULL;
}

static void record_usage(FILE *f)
{
    fputs("usage: apisim claude-record [--db FILE] [--session NAME] [STEP] -- COMMAND [ARGS...]\n"
          "       apisim claude-record [--db FILE] STEP --summary JSON\n"
          "runs COMMAND (e.g. claude -p ... --output-format stream-json), passes its output\n"
          "through, and stores its stdout lines with their timing, stderr with its timing,\n"
          "exit code and session log in FILE (default apisim.db) under NAME (default\n"
          "\"default\"), for `APISIM_DB=FILE APISIM_SESSION=NAME apisim claude` to replay.\n"
          "STEP (--step NAME [--tool NAME] [--model NAME] [--recipe NAME]) also stores the run\n"
          "as a step of a scenario (table scenario_steps); with --summary JSON (an object) and\n"
          "no command, a step that ran no CLI session.\n",
          f);
}

int claude_record_main(int argc, char **argv)
{
    const char *db_path = "apisim.db", *session = "default", *summary = NULL;
    struct store *st = NULL;
    struct recording rec = {.cur = {.max = CLAUDE_MAX_LINE},
                            .err = {.max = CLAUDE_MAX_STDERR},
                            .pass_out = 1,
                            .pass_err = 1};
    struct run_meta meta = {0};
    char err[APISIM_ERR_LEN], cwd[CLAUDE_PATH_LEN], sid[SCENARIO_ID_LEN];
    char confdir[CLAUDE_PATH_LEN], log_path[CLAUDE_PATH_LEN];
    char *log_text = NULL;
    int rc = EXIT_USAGE, i = 1;

    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            record_usage(stdout);
            return 0;
        }
        const char **slot = record_option(a, &db_path, &session, &meta, &summary);
        if (slot) {
            const char *eq = strchr(a, '=');
            if (eq) {
                *slot = eq + 1;
            } else if (i + 1 >= argc) {
                log_msg(LOG_ERROR, "claude-record: %s needs a value", a);
                return EXIT_USAGE;
            } else {
                *slot = argv[++i];
            }
        } else if (a[0] == '-') {
            log_msg(LOG_ERROR, "claude-record: unknown option %s", a);
            record_usage(stderr);
            return EXIT_USAGE;
        } else {
            break;
        }
    }
    if ((meta.tool || meta.model || meta.recipe || summary) && !meta.step) {
        log_msg(LOG_ERROR, "claude-record: --tool, --model, --recipe and --summary describe a "
                           "step: give its name with --step NAME");
        return EXIT_USAGE;
    }
    if (meta.step && !*meta.step) {
        log_msg(LOG_ERROR, "claude-record: --step must not be empty");
        return EXIT_USAGE;
    }
    if (summary && i < argc) {
        log_msg(LOG_ERROR, "claude-record: --summary is for a step that ran no command: give "
                           "either --summary JSON or -- COMMAND, not both");
        return EXIT_USAGE;
    }
    if (i >= argc && !summary) {
        log_msg(LOG_ERROR, "claude-record: no command to run (after --)");
        record_usage(stderr);
        return EXIT_USAGE;
    }
    if (!*session || !*db_path) {
        log_msg(LOG_ERROR, "claude-record: --db and --session must not be empty");
        return EXIT_USAGE;
    }
    if (summary) {
        cJSON *j = cJSON_Parse(summary);
        int is_object = cJSON_IsObject(j);
        cJSON_Delete(j);
        if (!is_object) {
            log_msg(LOG_ERROR, "claude-record: --summary must be a JSON object (%s)",
                    j ? "it is another JSON value" : "it is not valid JSON");
            return EXIT_USAGE;
        }
    }
    size_t dblen = strlen(db_path);
    if (dblen >= 4 && strcmp(db_path + dblen - 4, ".sql") == 0) {
        /* A text dump is loaded into memory: what is recorded there would be lost. */
        log_msg(LOG_ERROR,
                "claude-record: %s is a text dump, read-only here: record into a .db file and "
                "write a dump with apisim export --format sql",
                db_path);
        return EXIT_USAGE;
    }
    if (summary) {
        if (store_open(&st, db_path, STORE_CREATE, err) < 0 ||
            store_step(st, &meta, summary, err) < 0) {
            log_msg(LOG_ERROR, "claude-record: %s", err);
            store_close(st);
            return EXIT_RUNTIME;
        }
        store_close(st);
        return 0;
    }
    char **cmd = argv + i;
    if (!getcwd(cwd, sizeof cwd)) {
        log_msg(LOG_ERROR, "claude-record: cannot read the working directory: %s", strerror(errno));
        return EXIT_RUNTIME;
    }
    /* Open the database first: a run that cannot be stored is not worth starting. */
    if (store_open(&st, db_path, STORE_CREATE, err) < 0) {
        log_msg(LOG_ERROR, "claude-record: %s", err);
        return EXIT_RUNTIME;
    }

    struct sigaction sa, old_int, old_term, old_pipe;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_record_signal;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sa.sa_handler = SIG_IGN;
    sa.sa_flags = 0;
    sigaction(SIGPIPE, &sa, &old_pipe);

    int out_fd = -1, err_fd = -1, exec_errno = 0, status = 0;
    meta.started_wall_us = now_wall_us();
    int64_t start = now_mono_us();
    pid_t pid = spawn(cmd, &out_fd, &err_fd, &exec_errno);
    if (pid < 0) {
        if (exec_errno)
            log_msg(LOG_ERROR, "claude-record: cannot run %s: %s", cmd[0], strerror(exec_errno));
        rc = exec_errno == ENOENT ? 127 : exec_errno ? 126 : EXIT_RUNTIME;
        goto out;
    }
    int pumped = pump(&rec, out_fd, err_fd, pid, start);
    for (;;) {
        forward_pending(pid);
        if (waitpid(pid, &status, 0) >= 0)
            break;
        if (errno != EINTR) {
            log_msg(LOG_ERROR, "claude-record: waitpid: %s", strerror(errno));
            rc = EXIT_RUNTIME;
            goto out;
        }
    }
    meta.duration_us = now_mono_us() - start;
    meta.exit_code = WIFEXITED(status)     ? WEXITSTATUS(status)
                     : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                           : EXIT_RUNTIME;
    if (pumped < 0) {
        rc = EXIT_RUNTIME;
        goto out;
    }
    if (rec.dropped)
        log_msg(LOG_WARN, "claude-record: kept the first %d stdout lines, dropped %zu",
                CLAUDE_MAX_LINES, rec.dropped);

    /* The session log the command wrote, found the way the CLI names it. */
    find_session_id(&rec, sid, sizeof sid);
    if (sid[0] && config_dir(confdir, sizeof confdir) == 0) {
        char file[SCENARIO_ID_LEN + 8];
        snprintf(file, sizeof file, "%s.jsonl", sid);
        if (session_log_path(confdir, cwd, file, log_path, sizeof log_path) == 0) {
            int r = read_file(log_path, CLAUDE_MAX_LOG, &log_text, &meta.log_len);
            if (r < 0)
                log_msg(LOG_WARN, "claude-record: cannot read session log %s: %s", log_path,
                        strerror(errno));
        }
    }
    meta.session = session;
    meta.cwd = cwd;
    meta.session_id = sid;
    meta.log_path = log_path;
    meta.log = log_text;
    if (!(meta.argv_json = argv_to_json(cmd))) {
        log_msg(LOG_ERROR, "claude-record: out of memory");
        rc = EXIT_RUNTIME;
        goto out;
    }
    int64_t run_id = 0;
    if (store_run(st, &meta, &rec, &run_id, err) < 0) {
        log_msg(LOG_ERROR, "claude-record: %s", err);
        rc = EXIT_RUNTIME;
        goto out;
    }
    log_msg(LOG_INFO,
            "claude-record: stored run %lld of session \"%s\" in %s: %zu stdout lines, exit %d%s",
            (long long)run_id, session, db_path, rec.nlines, meta.exit_code,
            log_text ? ", session log" : "");
    rc = meta.exit_code;
out:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGPIPE, &old_pipe, NULL);
    free(meta.argv_json);
    free(log_text);
    recording_free(&rec);
    store_close(st);
    return rc;
}
