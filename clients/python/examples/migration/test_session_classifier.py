import json
import urllib.request

from apisim.claude import ClaudeCLI
from apisim.http import MockResponseSpec as PyResponseSpec

USAGE = "/api/oauth/usage"


def last_result(stdout):  # the code under test: the last result record wins
    results = [json.loads(line) for line in stdout.splitlines()
               if line.startswith("{") and json.loads(line).get("type") == "result"]
    return results[-1] if results else None


def test_retries_then_success(fake_claude: ClaudeCLI):
    fake_claude.inject_api_retry(at_message=0, error_status=529, attempts=3)
    fake_claude.add_message({"type": "result", "subtype": "success", "is_error": False,
                             "result": "done"})
    proc = fake_claude.run()
    assert proc.returncode == 0 and last_result(proc.stdout)["result"] == "done"


def test_exhausted_retries_leave_no_result(fake_claude: ClaudeCLI):
    fake_claude.inject_api_retry(at_message=0, error_status=529, attempts=10, exhaust=True)
    fake_claude.add_message({"type": "result", "subtype": "success", "is_error": False})
    proc = fake_claude.run()
    assert proc.returncode == 1 and last_result(proc.stdout) is None


def test_quota_endpoint(mock_http_server):  # the newer call form; json=... works too
    mock_http_server.register("GET", USAGE, PyResponseSpec(
        body={"five_hour": {"utilization": 95.0, "resets_at": None}}))
    req = urllib.request.Request(mock_http_server.url + USAGE,
                                 headers={"Authorization": "Bearer t"})
    assert json.load(urllib.request.urlopen(req))["five_hour"]["utilization"] == 95.0
    assert mock_http_server.get_requests("GET", USAGE)[0].headers["authorization"] == "Bearer t"
