import sys

from apisim.claude import make_scenario_player, make_scenario_recorder

# Stands in for `claude -p ... --output-format stream-json`: one JSON line, then exit 1.
STEP = [sys.executable, "-c",
        "import json, time; print(json.dumps({'type': 'result', 'is_error': True})); "
        "time.sleep(0.2); raise SystemExit(1)"]


def test_record_then_replay(tmp_path):
    recorder = make_scenario_recorder(output_dir=str(tmp_path), recipe_name="implement")
    step = recorder.record_step(step_name="plan", tool="run_skill", args=STEP, model="sonnet")
    recorder.record_non_session_step(step_name="tests", tool="run_cmd",
                                     result_summary={"exit_code": 0, "stdout_head": "ok"})
    recorder.finalize()  # writes scenario.json; scenario.db holds the same steps
    assert step.cassette_path == str(tmp_path / "sessions" / "plan")
    assert step.cassette_exit_code == 1

    player = make_scenario_player(scenario_dir=str(tmp_path),
                                  output_dir=str(tmp_path / "replay"),
                                  binary_path=str(tmp_path / "replay" / "claude"))
    steps = player.scenario().step_sequence
    assert [(s.step_name, s.session_dir is None) for s in steps] == [("plan", False),
                                                                    ("tests", True)]
    (cli, meta), = player.build_session_map()["plan"]
    replayed = cli.run()  # the fake `claude`: same lines, same exit status, same pacing
    assert replayed.stdout == step.stdout and replayed.returncode == meta.exit_code == 1
