"""The apisim package's own tests: every method against the real binary ($APISIM_BIN, else
`apisim` on PATH). ctest runs them with APISIM_BIN set and PYTHONPATH=clients/python."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import apisim  # noqa: E402

pytest_plugins = ["pytester"]


def pytest_configure(config):
    # Installed, the package's pytest11 entry point has loaded the fixtures already; run from
    # a source tree (PYTHONPATH), load them here.
    pm = config.pluginmanager
    if not pm.has_plugin("apisim") and not pm.has_plugin("apisim.pytest_plugin"):
        pm.import_plugin("apisim.pytest_plugin")


@pytest.fixture(scope="session")
def apisim_bin():
    """The binary under test; the session fails at once, saying why, when there is none."""
    try:
        return apisim.find_binary()
    except apisim.ApisimError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(autouse=True)
def _needs_binary(apisim_bin):
    """Every test here runs the real binary."""
