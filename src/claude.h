/* claude — the fake `claude` CLI and the recorder of real CLI runs.
 *
 * claude_main() behaves as the claude CLI in print mode (-p): it accepts claude's
 * arguments, writes the records of a scenario on stdout (stream-json: one JSON object a
 * line; json: the result object; text: the result text) with the scenario's delays, writes
 * the session log under $CLAUDE_CONFIG_DIR (else ~/.claude)
 * /projects/<slug of cwd>/<session_id>.jsonl and exits with the scenario's code. The
 * scenario is, first found: --apisim-scenario FILE, $APISIM_CLAUDE_SCENARIO (a file),
 * --apisim-preset NAME, $APISIM_CLAUDE_PRESET, the latest run recorded in $APISIM_DB under
 * $APISIM_SESSION (replayed with the recorded gaps, scaled by --latency or $APISIM_LATENCY:
 * none, recorded, recorded*K), else the `success` preset. --include-partial-messages adds
 * the stream_event records of the real CLI around each assistant message of a scenario.
 * SIGINT at any time exits 130.
 *
 * claude_record_main() runs COMMAND with pipes, passes its stdout and stderr through as
 * they come, and stores in the --db file (tables claude_runs, claude_lines: see
 * schema/002_claude.sql; claude_stderr: schema/006_claude_stderr.sql) its argv, cwd, each
 * stdout line with its time offset, stderr (whole, and in the pieces read with their time
 * offsets, which a replay interleaves with stdout), exit code, duration and the session log
 * it wrote. It exits with the command's status. With --step NAME (--tool, --model,
 * --recipe) the run is also a row of scenario_steps; with --step and --summary JSON and no
 * command, only that row is stored (a step that ran no CLI session).
 *
 * Both return the process exit status: 2 for a usage or scenario error (one line on stderr
 * naming the file, the record and the problem), 1 for a runtime failure.
 */
#ifndef APISIM_CLAUDE_H
#define APISIM_CLAUDE_H

/* `apisim claude ARGS...` (argv[0] "claude") or the binary run through a link named
 * claude (argv[0] the link's path). */
int claude_main(int argc, char **argv);

/* `apisim claude-record [--db FILE] [--session NAME] -- COMMAND ARGS...`
 * (argv[0] "claude-record"). */
int claude_record_main(int argc, char **argv);

#endif
