import json
import urllib.request

from apisim import ResponseSpec

USAGE = "/api/oauth/usage"


def five_hour_used(base_url):  # the code under test: a quota guard's poll
    req = urllib.request.Request(base_url + USAGE, headers={"Authorization": "Bearer t"})
    return json.load(urllib.request.urlopen(req))["five_hour"]["utilization"]


def test_quota_guard_sees_usage_grow(mock_http_server):
    mock_http_server.register_sequence("GET", USAGE, [
        ResponseSpec(body={"five_hour": {"utilization": 40.0, "resets_at": None}}),
        ResponseSpec(body={"five_hour": {"utilization": 97.0, "resets_at": None}})])
    assert [five_hour_used(mock_http_server.url) for _ in range(2)] == [40.0, 97.0]
    assert mock_http_server.request_count("GET", USAGE) == 2
    assert mock_http_server.get_requests("GET", USAGE)[0]["headers"]["authorization"] == "Bearer t"


def test_quota_guard_on_the_exhausted_preset(mock_http_server):
    mock_http_server.quota("exhausted")  # apisim's quota fixture answers /api/oauth/usage
    assert five_hour_used(mock_http_server.url) == 100.0
