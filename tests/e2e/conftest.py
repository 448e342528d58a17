"""pytest fixtures for apisim's end-to-end tests (see harness.py for the helpers).

    apisim_bin            path of the binary under test ($APISIM_BIN); the session fails
                          at once with a clear message when it is missing
    upstream              an upstream.Upstream on 127.0.0.1:0 in a thread, stopped afterwards
    db_path               a fresh database path in the test's tmp dir (not created)
    apisim                factory: apisim("record", "--upstream", u, ...) -> ApisimProcess
                          on 127.0.0.1:0 (any keyword goes to ApisimProcess); every process
                          it started is killed at teardown if still running
    record_then_replay    function(requests, **kw) -> harness.RecordReplay, recording against
                          the `upstream` fixture into `db_path` (keywords: see
                          harness.record_then_replay)
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


@pytest.fixture(scope="session")
def apisim_bin():
    try:
        return harness.apisim_bin()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def upstream():
    with harness.upstream_server() as up:
        yield up


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "rec.db"


@pytest.fixture
def apisim(apisim_bin):
    started = []

    def start(*args, **kw):
        p = harness.ApisimProcess(list(args), **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


@pytest.fixture
def record_then_replay(apisim_bin, upstream, db_path):
    def run(requests, **kw):
        return harness.record_then_replay(requests, upstream, db_path, **kw)

    return run
