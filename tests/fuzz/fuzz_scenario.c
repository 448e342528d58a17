/* libFuzzer target: fake-claude scenario files (scenario.h): parse, then build the run the
 * CLI would play (plain, and with the stream_event records of --include-partial-messages).
 * The whole input is the file's text. */
#include <stdint.h>
#include <stdlib.h>

#include "scenario.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct scenario *sc = NULL;
    char err[APISIM_ERR_LEN];
    if (scenario_parse((const char *)data, size, "fuzz.json", &sc, err) < 0)
        return 0;
    struct scenario_ctx ctx = {.cwd = "/work/project",
                               .config_dir = "/home/u/.claude",
                               .prompt = "hello",
                               .session_id = NULL,
                               .now_us = 1764000000000000LL,
                               .seed = 7};
    struct scenario_run *run = NULL;
    if (scenario_build(sc, &ctx, &run, err) == 0)
        scenario_run_free(run);
    /* Again with a session id, no prompt and --include-partial-messages. */
    ctx.session_id = "6f1c0bde-0000-4000-8000-000000000001";
    ctx.prompt = NULL;
    ctx.partial_messages = 1;
    run = NULL;
    if (scenario_build(sc, &ctx, &run, err) == 0)
        scenario_run_free(run);
    scenario_free(sc);
    return 0;
}
