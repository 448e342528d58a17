"""The pytest plugin, in pytest runs of their own (pytester): one mock server per session
reset before each test, fake_claude's cleanup, apisim_replay's teardown, and loading through
the installed package's pytest11 entry point."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import apisim

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(PACKAGE_ROOT, "examples", "recordings", "models.sql")
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "ALL_PROXY")

HELPERS = '''
import json, os, signal, urllib.error, urllib.request
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
STATE = os.environ["STATE_FILE"]

def status(url, headers=None):
    try:
        return OPENER.open(urllib.request.Request(url, headers=headers or {})).status
    except urllib.error.HTTPError as e:
        return e.code

def save(**kw):
    state = json.load(open(STATE)) if os.path.exists(STATE) else {}
    state.update(kw)
    json.dump(state, open(STATE, "w"))

def load():
    return json.load(open(STATE))
'''


@pytest.fixture
def inner(pytester, monkeypatch, tmp_path):
    """Run a pytest session of its own with the plugin; returns (run(), state())."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(apisim.__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [package_dir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("APISIM_BIN", apisim.find_binary())
    state = tmp_path / "state.json"
    monkeypatch.setenv("STATE_FILE", str(state))
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)

    def run(source):
        pytester.makepyfile(test_inner=HELPERS + source)
        return pytester.runpytest_subprocess("-p", "no:apisim", "-p", "apisim.pytest_plugin",
                                             "-p", "no:cacheprovider", "-q")

    return run, lambda: json.loads(state.read_text())


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_mock_http_server_is_one_server_per_session_reset_before_each_test(inner):
    run, state = inner
    result = run('''
def test_a(mock_http_server):
    mock_http_server.register("GET", "/x", status=200)
    mock_http_server.quota("exhausted")
    assert status(mock_http_server.url + "/x") == 200
    assert status(mock_http_server.url + "/api/oauth/usage", {"Authorization": "Bearer t"}) == 200
    assert mock_http_server.request_count() == 2
    save(url=mock_http_server.url, pid=mock_http_server.pid)

def test_b(mock_http_server):
    assert mock_http_server.url == load()["url"]           # the same server
    assert mock_http_server.request_count() == 0           # journal reset
    assert status(mock_http_server.url + "/x") == 404      # stub gone
    assert status(mock_http_server.url + "/api/oauth/usage", {"Authorization": "Bearer t"}) == 404
''')
    result.assert_outcomes(passed=2)
    assert gone(state()["pid"]), "the session's server still runs after the session"


def test_mock_http_server_is_started_again_when_it_died(inner):
    run, state = inner
    result = run('''
def test_a(mock_http_server):
    save(pid=mock_http_server.pid)
    os.kill(mock_http_server.pid, signal.SIGKILL)

def test_b(mock_http_server):
    assert mock_http_server.pid != load()["pid"]
    assert mock_http_server.health()["status"] == "ok"
''')
    result.assert_outcomes(passed=2)


def test_fake_claude_fixture_leaves_nothing_behind(inner):
    run, state = inner
    result = run('''
def test_a(fake_claude):
    fake_claude.preset("success").__enter__()     # left open on purpose
    assert os.environ["APISIM_CLAUDE_PRESET"] == "success"
    save(bin_dir=fake_claude.bin_dir, path=os.environ["PATH"])

def test_b(fake_claude):
    assert "APISIM_CLAUDE_PRESET" not in os.environ
    assert load()["bin_dir"] not in os.environ["PATH"].split(os.pathsep)
    assert fake_claude is not None and fake_claude.scenario() is None
''')
    result.assert_outcomes(passed=2)
    assert not os.path.exists(state()["bin_dir"])


def test_apisim_replay_factory_stops_its_servers(inner):
    run, state = inner
    result = run(f'''
def test_a(apisim_replay):
    one, two = apisim_replay({MODELS!r}), apisim_replay({MODELS!r}, session="models")
    assert one.url != two.url
    assert status(one.url + "/v1/models") == 200 and status(two.url + "/v1/models") == 200
    save(pids=[one.pid, two.pid])

def test_b():
    assert all(not os.path.exists("/proc/%d/stat" % p) or
               open("/proc/%d/stat" % p).read().split()[2] == "Z" for p in load()["pids"])
''')
    result.assert_outcomes(passed=2)
    assert all(gone(p) for p in state()["pids"])


def test_installed_package_loads_its_fixtures_through_the_entry_point(tmp_path):
    """pip install ./clients/python, then a pytest run with no -p flag and no conftest. The
    package is copied away from the repository and built without the binary
    (APISIM_NO_BINARY=1, it runs $APISIM_BIN); tests/python/test_package.py builds it whole."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE_ROOT, src, ignore=shutil.ignore_patterns(
        "tests", "examples", "build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation",
                          "--no-deps", "--no-index", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "APISIM_NO_BINARY": "1"})
    if pip.returncode != 0 and "No module named pip" in pip.stderr:
        pytest.skip("pip is not available for " + sys.executable)
    assert pip.returncode == 0, pip.stderr
    with open(next(site.glob("apisim-*.dist-info")) / "entry_points.txt") as f:
        assert "[pytest11]\napisim = apisim.pytest_plugin" in f.read()
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "test_uses_fixtures.py").write_text(
        "def test_it(mock_http_server, fake_claude, apisim_replay):\n"
        "    assert mock_http_server.health()['status'] == 'ok'\n")
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env["PYTHONPATH"] = str(site)
    env["APISIM_BIN"] = apisim.find_binary()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "t")], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
