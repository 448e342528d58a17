/* scenario — what the fake `claude` CLI writes: scenario files and presets, expanded into the
 * lines of one run.
 *
 * Owns: parsing a scenario file (DESIGN.md "Precise contract") into a struct scenario, the
 * presets, and building a run from a scenario: the stdout records in stream-json form (the
 * shapes of the real CLI in ../shared/reference/claude-stream-json/: the init record first,
 * fresh uuids, the same field names, types and order), the wait before each, the session
 * log lines, and how the run ends (exit code, SIGINT, hang).
 *
 * Pure: no I/O, no clock, no randomness of its own. The caller passes the working
 * directory, the config dir, the wall time and a seed for the uuids in a struct
 * scenario_ctx, so a unit test gets the same run every time.
 *
 * Positions (scenario files, "version": 2): delays_ms keys, api_retry.at, corrupt.at,
 * truncate_after and exit_at.at count the file's "records" from 0; the init record that is
 * prepended when the records do not start with one is not counted, nor are api_retry
 * records. delays_ms["N"] waits before record N ("COUNT" before the end); api_retry puts
 * its attempts just before record at (COUNT: after the last), and with exhaust nothing from
 * record at on is written; corrupt replaces record at with its text (default: the first
 * half of that record); truncate_after N writes records 0..N-1; exit_at N writes records
 * 0..N and exits with its code. Without exit_code the run exits 0, or 1 when truncated or
 * when api_retry.exhaust is true. An exit code of 130 ends the run with SIGINT raised on
 * itself (as the `interrupted` preset does). A file that uses positions without
 * "version": 2 was written for the numbering before (init 0, api_retry records counted,
 * corrupt inserting a line): scenario_parse() refuses it with how to convert it.
 *
 * With ctx->partial_messages (claude's --include-partial-messages), each assistant message
 * is preceded by a system/status record and the stream_event records the real CLI writes
 * (message_start, content_block_start, content_block_delta..., the message itself,
 * content_block_stop, message_delta, message_stop).
 *
 * Failures: scenario_parse() and scenario_preset() return -1 with err naming the scenario
 * (the file name given), the record and the problem, e.g.
 * "scenario s.json: records[2] is not a JSON object (it is a string)".
 */
#ifndef APISIM_SCENARIO_H
#define APISIM_SCENARIO_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define SCENARIO_MAX_RECORDS 10000 /* records in a scenario, api_retry records included */
#define SCENARIO_MAX_DELAY_MS 3600000.0
#define SCENARIO_ID_LEN 128 /* session ids, uuids and the like, with the NUL */
#define SCENARIO_DEFAULT_MODEL "claude-sonnet-4-5"
#define SCENARIO_CLI_VERSION "2.1.197" /* what the init record and session log claim */
#define SCENARIO_FILE_VERSION 2        /* the scenario file "version" of these positions */

struct scenario; /* a parsed scenario file or preset */

/* The presets' names, NULL-terminated, in the order `--help` lists them. */
extern const char *const scenario_preset_names[];

/* Parse the scenario file text (len bytes; name is used in messages). Returns 0 and *out
 * (free with scenario_free()), or -1 with err. */
int scenario_parse(const char *text, size_t len, const char *name, struct scenario **out,
                   char *err);

/* The preset called name. Returns 0 and *out (free with scenario_free()), or -1 with err
 * naming the unknown preset and listing the known ones. */
int scenario_preset(const char *name, struct scenario **out, char *err);

void scenario_free(struct scenario *sc);

/* What the run knows about the world. Strings are borrowed for the duration of the call. */
struct scenario_ctx {
    const char *cwd;             /* working directory: the init record's cwd, the log's slug */
    const char *config_dir;      /* $CLAUDE_CONFIG_DIR or ~/.claude, for memory_paths */
    const char *prompt;          /* the prompt given with -p (or read from stdin); may be NULL */
    const char *session_id;      /* --session-id or --resume; NULL for a fresh one */
    const char *model;           /* --model; NULL for SCENARIO_DEFAULT_MODEL */
    const char *permission_mode; /* --permission-mode; NULL for "default" */
    int64_t now_us;              /* wall clock, µs since the epoch, for log timestamps */
    uint64_t seed;               /* seeds the uuids, message ids and retry jitter */
    int partial_messages;        /* --include-partial-messages: stream_event records too */
};

enum scenario_end {
    SCENARIO_END_EXIT,      /* exit with exit_code */
    SCENARIO_END_INTERRUPT, /* raise SIGINT on itself, which exits 130 */
    SCENARIO_END_HANG,      /* stay alive until a signal ends the process */
};

/* One line of stdout. */
struct scenario_step {
    int64_t delay_us;  /* wait this long before writing it */
    char *line;        /* the line, without its newline */
    char *log;         /* session log lines (each ending in '\n') to append once it is
                          written, or NULL */
    char *result_text; /* the result record's "result" string (text output), or NULL */
    int is_result;     /* 1 for a result record: the only line --output-format json writes */
    int corrupt;       /* 1 for the non-JSON line */
};

/* A run: everything the CLI does, in order. All strings are owned by the run. */
struct scenario_run {
    char session_id[SCENARIO_ID_LEN];
    struct scenario_step *steps;
    size_t nsteps;
    int64_t end_delay_us; /* wait after the last step before ending */
    enum scenario_end end;
    int exit_code;     /* for SCENARIO_END_EXIT */
    char *stderr_text; /* written to stderr after the last step, or NULL */
    char *log_head;    /* session log lines written before the first step */
    char *log_tail;    /* appended after the last step when a result was written, or NULL */
};

/* Build the run of sc in ctx. Returns 0 and *out (free with scenario_run_free()), or -1
 * with err (out of memory). */
int scenario_build(const struct scenario *sc, const struct scenario_ctx *ctx,
                   struct scenario_run **out, char *err);

void scenario_run_free(struct scenario_run *run);

/* The project slug of a working directory: every byte but [A-Za-z0-9] becomes '-'
 * ("/home/user/project" -> "-home-user-project"). Returns 0, or -1 when out is too small. */
int scenario_slug(const char *cwd, char *out, size_t outlen);

#endif
