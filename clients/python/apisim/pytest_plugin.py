"""pytest fixtures backed by the apisim binary.

Loaded automatically when the package is installed (entry point `pytest11`); otherwise add
`pytest_plugins = ["apisim.pytest_plugin"]` to a conftest.py.

    mock_http_server  an apisim.Server (`apisim mock`), one per test session, reset before
                      each test: stubs, journal, sequence counters and the quota fixture
                      start empty
    fake_claude       a fresh apisim.FakeClaude (the seed's apisim.claude.FakeClaudeCLI /
                      ClaudeCLI), its temporary files removed afterwards
    apisim_replay     factory: apisim_replay(path, **Server keywords) -> a running
                      `apisim replay --db path`; stopped at the end of the test
"""

import pytest

from .claude import FakeClaude
from .errors import ApisimError
from .server import Server


class _SessionServer:
    """The session's mock server, started on first use (and again if it died)."""

    def __init__(self):
        self.server = None

    def get(self):
        if self.server is None or not self.server.running:
            self.restart()
        return self.server

    def restart(self):
        if self.server is not None:
            self.server.stop()
        self.server = Server("mock").start()
        return self.server

    def close(self):
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="session")
def _apisim_session_server():
    holder = _SessionServer()
    yield holder
    holder.close()


@pytest.fixture
def mock_http_server(_apisim_session_server):
    """An `apisim mock` server shared by the session; reset before each test."""
    server = _apisim_session_server.get()
    try:
        server.reset()
    except ApisimError as e:
        if e.status is not None:  # apisim answered: not a dead server
            raise
        server = _apisim_session_server.restart()  # a test killed it, or it crashed
        server.reset()
    if server.quota_set:  # reset keeps the quota fixture: do not let it leak between tests
        server.clear_quota()
    return server


@pytest.fixture
def fake_claude():
    """A fresh FakeClaude: build a scenario, then run() it or use it as a context manager."""
    fc = FakeClaude()
    yield fc
    fc.close()


@pytest.fixture
def apisim_replay():
    """Factory: apisim_replay("recordings/x.sql", session=..., args=[...]) -> a running
    `apisim replay` Server on 127.0.0.1:0, stopped at the end of the test."""
    started = []

    def start(path, **kwargs):
        server = Server("replay", db=path, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
