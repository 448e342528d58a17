"""apisim for Python: drive the apisim binary from tests.

    Server          an `apisim mock` / `apisim replay` process and its control API
    ResponseSpec    what a stub answers
    FakeClaude      a scripted fake `claude` CLI (run it, or put it on PATH)
    ClaudeResult    one run of the fake CLI
    ApisimError     anything apisim refused or could not do, with apisim's message
                    (ScenarioError: the scenario recorder or player was asked the impossible)

apisim.http has the mock server under the seed's names (MockResponseSpec, ...); apisim.claude
has FakeClaudeCLI / ClaudeCLI and make_scenario_recorder / make_scenario_player.
    find_binary()   the binary: $APISIM_BIN, else the one packaged inside, else `apisim` on PATH

pytest fixtures (apisim.pytest_plugin, loaded automatically once the package is installed):
mock_http_server, fake_claude, apisim_replay.
"""

from ._binary import find_binary
from . import http  # noqa: F401
from .claude import (DEFAULT_ARGS, PRESETS, ClaudeResult, FakeClaude, make_scenario_player,
                     make_scenario_recorder, slug)
from .errors import ApisimError, ScenarioError
from .http import MockResponseSpec
from .server import ResponseSpec, Server, wait_until

__version__ = "0.1.0"

__all__ = ["ApisimError", "ClaudeResult", "DEFAULT_ARGS", "FakeClaude", "MockResponseSpec",
           "PRESETS", "ResponseSpec", "ScenarioError", "Server", "find_binary",
           "make_scenario_player", "make_scenario_recorder", "slug", "wait_until",
           "__version__"]
