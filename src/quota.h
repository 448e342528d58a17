/* quota — the quota fixture: what GET /api/oauth/usage answers, the endpoint that quota
 * guards poll (Anthropic's OAuth usage endpoint).
 *
 * A struct quota_state is either a preset (ok, near-limit, exhausted, long-window-exhausted,
 * unknown-reset, rate-limited, server-error, slow, unauthorized) or explicit windows, plus a
 * delay. It is built from `--quota PRESET` (quota_from_preset) or from the body of
 * POST /__apisim/fixtures/quota (quota_from_json), and turned into a response for one request
 * at request time (quota_answer), so `resets_at` is always relative to that request.
 *
 * Answers (exact values in docs/quota.md):
 *   - every preset but `unauthorized` answers 401 to a request without
 *     `Authorization: Bearer TOKEN`; `unauthorized` answers 401 always;
 *   - 200 bodies are {"five_hour": W, "seven_day": W, "seven_day_opus": W,
 *     "seven_day_sonnet": W} with W = {"utilization": number|null, "resets_at": ISO-8601|null};
 *     a window a preset does not name has utilization and resets_at null;
 *   - `rate-limited` 429 with `retry-after: 30`, `server-error` 503, both with an Anthropic
 *     error body {"type":"error","error":{"type":...,"message":...}};
 *   - `slow` answers the `ok` body (and a 401 too) after delay_ms (default 2000);
 *   - a method other than GET or HEAD answers 405.
 *
 * Pure: no I/O, no logging. Errors go into char err[APISIM_ERR_LEN].
 */
#ifndef APISIM_QUOTA_H
#define APISIM_QUOTA_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "server.h"
#include "util.h"

/* The path the fixture answers (replay calls quota_answer for requests to it). */
#define QUOTA_PATH "/api/oauth/usage"
/* Windows in the order they appear in a body. */
#define QUOTA_NWINDOWS 4
/* The delay of `slow` when none is given. */
#define QUOTA_SLOW_DEFAULT_MS 2000
/* Longest delay accepted (one hour). */
#define QUOTA_MAX_DELAY_MS 3600000
/* Farthest reset accepted, either way (about ten years). */
#define QUOTA_MAX_RESETS_IN_S 315360000

/* The window names, QUOTA_NWINDOWS of them: five_hour, seven_day, seven_day_opus,
 * seven_day_sonnet. */
extern const char *const quota_window_names[QUOTA_NWINDOWS];

struct quota_window {
    int has_utilization; /* 0: "utilization": null */
    double utilization;  /* a percentage */
    int has_reset;       /* 0: "resets_at": null */
    int64_t resets_in_s; /* resets_at = the request's time + this */
};

struct quota_state {
    char preset[32];  /* preset name, or "windows" for explicit windows */
    int status;       /* 200, 401, 429 or 503 answered to an authorised request */
    int64_t delay_ms; /* before every answer; only `slow` has one */
    struct quota_window windows[QUOTA_NWINDOWS];
};

/* A state for preset name. delay_ms is how long `slow` waits (< 0: QUOTA_SLOW_DEFAULT_MS);
 * the other presets answer at once whatever it is. Returns 0 and *out (free with quota_free), or -1
 * with err listing the accepted names (unknown preset, out of memory, delay too long). */
int quota_from_preset(const char *name, int64_t delay_ms, struct quota_state **out, char *err);

/* A state from the body of POST /__apisim/fixtures/quota: {"preset": NAME, "delay_ms": N}
 * (delay_ms only with "slow", default 2000) or {"windows": {"five_hour": {"utilization": 95,
 * "resets_in_s": 3600}, ...}} (windows not named answer nulls). utilization is a number or null;
 * resets_in_s an integer or null (or absent: resets_at null). Returns 0 and *out (free with
 * quota_free), or -1 with err naming the field ("fixtures/quota: field
 * \"windows.five_hour.utilization\": expected a number or null"). */
int quota_from_json(const cJSON *body, struct quota_state **out, char *err);

/* What is active, as JSON: {"preset", "status", "delay_ms", "path", "windows": {NAME:
 * {"utilization", "resets_in_s"}}}. Caller frees with cJSON_Delete; NULL when out of
 * memory. */
cJSON *quota_describe(const struct quota_state *q);

/* Fill resp for req received at now_us (µs since the epoch): status, headers
 * (content-type: application/json; retry-after for rate-limited), a malloc'd body (the
 * response owns it) and delay_us. Returns 0, or -1 when out of memory (resp then holds
 * nothing to free beyond what it held before). */
int quota_answer(const struct quota_state *q, const struct server_request *req, int64_t now_us,
                 struct server_response *resp);

/* Free a state. NULL does nothing. */
void quota_free(struct quota_state *q);

#endif
