"""The examples of README.md's "From Python" section: each is a file in clients/python/examples that passes
under pytest against the real binary, and the page quotes every one of them exactly."""

import glob
import os
import re
import subprocess
import sys

import apisim

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)                       # clients/python
REPO = os.path.dirname(os.path.dirname(PACKAGE_ROOT))
EXAMPLES = sorted(glob.glob(os.path.join(PACKAGE_ROOT, "examples", "test_example_*.py")))
DOC = os.path.join(REPO, "README.md")  # its "From Python" section
BLOCK = re.compile(r"<!-- example: (\S+) -->\n```python\n(.*?)```", re.S)
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "ALL_PROXY")


def test_every_fixture_has_an_example():
    names = {os.path.basename(p) for p in EXAMPLES}
    assert names == {"test_example_mock_http_server.py", "test_example_fake_claude.py",
                     "test_example_apisim_replay.py"}
    for path in EXAMPLES:
        fixture = os.path.basename(path)[len("test_example_"):-len(".py")]
        with open(path, encoding="utf-8") as f:
            assert f"({fixture})" in f.read(), f"{path} does not use {fixture}"


def test_docs_quote_every_example_exactly():
    with open(DOC, encoding="utf-8") as f:
        quoted = {path: code for path, code in BLOCK.findall(f.read())}
    assert sorted(quoted) == sorted(os.path.relpath(p, REPO) for p in EXAMPLES)
    for rel, code in quoted.items():
        with open(os.path.join(REPO, rel), encoding="utf-8") as f:
            assert code == f.read(), f"README.md quotes an old {rel}"


def test_examples_pass_under_pytest():
    """A separate pytest run, as a user's would be (proxies from the environment dropped,
    as urllib would otherwise send 127.0.0.1 through them)."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env["APISIM_BIN"] = apisim.find_binary()
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(apisim.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [package_dir] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    # -p no:apisim keeps an installed copy's entry point from loading a second time
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:apisim",
         "-p", "apisim.pytest_plugin", "-rA", *EXAMPLES],
        capture_output=True, text=True, env=env, timeout=120, cwd=PACKAGE_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = 0
    for path in EXAMPLES:
        with open(path, encoding="utf-8") as f:
            tests = re.findall(r"^def (test_\w+)", f.read(), re.M)
        rel = os.path.relpath(path, PACKAGE_ROOT)
        for name in tests:
            assert f"PASSED {rel}::{name}" in proc.stdout, proc.stdout
        expected += len(tests)
    assert f"{expected} passed" in proc.stdout
