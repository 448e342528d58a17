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
 * none, recorded, recorded*K), else the `success` preset. SIGINT at any time exits 130.
 *
 * claude_record_main() runs COMMAND with pipes, passes its stdout and stderr through as
 * they come, and stores in the --db file (table claude_runs, claude_lines: see
 * schema/002_claude.sql) its argv, cwd, each stdout line with its time offset, stderr,
 * exit code, duration and the session log it wrote. It exits with the command's status.
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
