import json
import subprocess


def run_agent(prompt):  # the code under test: runs `claude` and classifies the session
    out = subprocess.run(["claude", "-p", prompt, "--output-format", "stream-json",
                          "--verbose"], capture_output=True, text=True)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    retried = any(r.get("subtype") == "api_retry" for r in records)
    return "ok" if out.returncode == 0 else "overloaded" if retried else "failed"


def test_run_agent_reports_exhausted_retries(fake_claude):
    with fake_claude.preset("api-retry-exhausted"):  # `claude` on PATH is now the fake
        assert run_agent("fix the bug") == "overloaded"


def test_truncated_session_has_no_result(fake_claude):
    result = fake_claude.preset("truncated").run()  # -p hello --output-format stream-json
    assert result.exit_code == 1 and result.records[0]["subtype"] == "init"
    assert result.result is None
