"""docs/python.md: its migration diff is the one change a seed user makes (the example it
quotes is the suite with the change applied), its examples are the files it names, quoted
exactly, and they pass under pytest against the real binary."""

import glob
import os
import re
import subprocess
import sys

import apisim

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PACKAGE_ROOT))
DOC = os.path.join(REPO, "docs", "python.md")
EXAMPLES = sorted(glob.glob(os.path.join(PACKAGE_ROOT, "examples", "migration", "test_*.py")))
BLOCK = re.compile(r"<!-- example: (\S+) -->\n```python\n(.*?)```", re.S)
DIFF = re.compile(r"```diff\n(.*?)```", re.S)
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "ALL_PROXY")


def doc_text():
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def test_sections_issue_17_merges_with():
    text = doc_text()
    assert "\n## Migrating from api_simulator\n" in text
    assert "\n## Recording and replaying multi-step scenarios\n" in text


def test_migration_is_one_rename_in_the_imports():
    (diff,) = DIFF.findall(doc_text())
    minus = [line[1:] for line in diff.splitlines() if line.startswith("-")]
    plus = [line[1:] for line in diff.splitlines() if line.startswith("+")]
    assert minus and [m.replace("api_simulator", "apisim") for m in minus] == plus
    with open(os.path.join(PACKAGE_ROOT, "examples", "migration",
                           "test_session_classifier.py"), encoding="utf-8") as f:
        example = f.read().splitlines()
    assert all(p in example for p in plus), "the example does not use the diff's imports"


def test_docs_quote_every_example_exactly():
    quoted = dict(BLOCK.findall(doc_text()))
    assert sorted(quoted) == sorted(os.path.relpath(p, REPO) for p in EXAMPLES)
    for rel, code in quoted.items():
        with open(os.path.join(REPO, rel), encoding="utf-8") as f:
            assert code == f.read(), f"docs/python.md quotes an old {rel}"


def test_examples_pass_under_pytest():
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env["APISIM_BIN"] = apisim.find_binary()
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(apisim.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [package_dir] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
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
