"""Error paths: no binary, specs apisim refuses (with apisim's own message), a server that
failed to start, a server that is gone."""

import os
import signal

import pytest

from _support import fetch
from apisim import ApisimError, FakeClaude, ResponseSpec, Server, find_binary


def test_missing_binary_names_apisim_bin_and_path(monkeypatch, tmp_path):
    monkeypatch.delenv("APISIM_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))           # an empty directory: no apisim
    with pytest.raises(ApisimError) as err:
        Server().start()
    assert "APISIM_BIN" in str(err.value) and "PATH" in str(err.value)
    with pytest.raises(ApisimError, match="APISIM_BIN"):
        FakeClaude().run()


def test_apisim_bin_that_is_not_executable_is_named(monkeypatch, tmp_path):
    missing = tmp_path / "no-such-apisim"
    monkeypatch.setenv("APISIM_BIN", str(missing))
    with pytest.raises(ApisimError) as err:
        find_binary()
    assert str(missing) in str(err.value)


def test_binary_found_on_path_without_apisim_bin(monkeypatch, tmp_path, apisim_bin):
    (tmp_path / "apisim").symlink_to(apisim_bin)
    monkeypatch.delenv("APISIM_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_binary() == str(tmp_path / "apisim")
    with Server() as s:
        assert s.health()["status"] == "ok"


def _apisim_says(server, path, payload):
    """What apisim itself answers to payload, sent without the client."""
    r = fetch(server.url + path, method="POST", body=payload)
    assert 400 <= r.status < 500, r
    return r.status, r.json()["error"]


@pytest.mark.parametrize("method,path,spec", [
    ("GET", "/bad-status", ResponseSpec(status=42)),
    ("GET", "/bad-delay", ResponseSpec(delay_ms=-5)),
    ("GET", "no-leading-slash", ResponseSpec()),
    ("GET", "/__apisim/stubs", ResponseSpec()),
])
def test_bad_spec_raises_with_apisims_message(method, path, spec):
    with Server() as s:
        status, message = _apisim_says(s, "/__apisim/stubs",
                                       {"method": method, "path": path, **spec.to_json()})
        with pytest.raises(ApisimError) as err:
            s.register(method, path, spec)
        assert err.value.status == status
        assert err.value.message == message
        assert message in str(err.value)
        assert s.request_count() == 0   # nothing was registered: the server still answers


def test_bad_sequence_and_unknown_quota_preset_carry_apisims_message():
    with Server() as s:
        status, message = _apisim_says(s, "/__apisim/stubs",
                                       {"method": "GET", "path": "/s", "sequence": []})
        with pytest.raises(ApisimError) as err:
            s.register_sequence("GET", "/s", [])
        assert (err.value.status, err.value.message) == (status, message)

        with pytest.raises(ApisimError) as err:
            s.quota("no-such-preset")
        assert err.value.status == 400
        assert "no-such-preset" in err.value.message
        assert "long-window-exhausted" in err.value.message   # it lists the accepted names
        with pytest.raises(ApisimError, match="utilization"):
            s.quota({"five_hour": {"utilization": "lots"}})


def test_server_that_cannot_start_reports_apisims_stderr(tmp_path):
    with pytest.raises(ApisimError) as err:
        Server(quota="no-such-preset").start()
    assert "exited with status 2" in str(err.value)
    assert "--quota" in err.value.message and "no-such-preset" in err.value.message
    with pytest.raises(ApisimError) as err:
        Server.replay(tmp_path / "missing.db")
    assert "missing.db" in err.value.message


def test_server_gone_after_stop_raises():
    s = Server().start()
    url = s.url
    assert s.stop() == 0
    with pytest.raises(ApisimError) as err:
        s.request_count()
    assert url in str(err.value) and "gone" in str(err.value)
    assert "exited with status 0" in str(err.value)


def test_server_killed_under_the_client_raises():
    s = Server().start()
    try:
        os.kill(s.pid, signal.SIGKILL)
        s._proc.wait(timeout=10)
        for call in (s.reset, s.get_requests, lambda: s.register("GET", "/x", 200),
                     lambda: s.quota("ok"), s.health):
            with pytest.raises(ApisimError) as err:
                call()
            assert "gone" in str(err.value)
            assert f"exited with status {-signal.SIGKILL}" in str(err.value)
    finally:
        s.stop()


def test_unstarted_server_raises():
    with pytest.raises(ApisimError, match="not started"):
        Server().request_count()
