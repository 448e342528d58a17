"""Which binary the package runs: $APISIM_BIN, else the packaged one (apisim/bin/apisim, put
there by pip), else `apisim` on PATH but never the package's own console script; and
`python -m apisim`, which runs it with the same arguments and exit status.

Run from the source tree, the package carries no binary: the tests point apisim._binary's
PACKAGED at a link to the binary under test to stand for one. tests/python/test_package.py
checks the real thing, a pip-built package."""

import os
import subprocess
import sys

import pytest

import apisim._binary as binary_mod
from apisim import ApisimError, find_binary

SOURCE_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(binary_mod.__file__)))


def link(path, target):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return str(path)


@pytest.fixture
def packaged(monkeypatch, tmp_path, apisim_bin):
    """A packaged binary (a link to the one under test) where the package looks for it."""
    path = link(tmp_path / "pkg" / "bin" / "apisim", apisim_bin)
    monkeypatch.setattr(binary_mod, "PACKAGED", path)
    return path


def test_apisim_bin_comes_before_the_packaged_binary(monkeypatch, packaged, apisim_bin,
                                                    tmp_path):
    mine = link(tmp_path / "mine" / "apisim", apisim_bin)
    monkeypatch.setenv("APISIM_BIN", mine)
    assert find_binary() == mine


def test_packaged_binary_comes_before_path(monkeypatch, packaged, apisim_bin, tmp_path):
    link(tmp_path / "on-path" / "apisim", apisim_bin)
    monkeypatch.delenv("APISIM_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "on-path"))
    assert find_binary() == packaged


def test_path_lookup_passes_over_the_console_script(monkeypatch, tmp_path, apisim_bin):
    scripts = tmp_path / "venv-bin"  # what pip writes for [project.scripts] apisim
    scripts.mkdir()
    (scripts / "apisim").write_text(
        "#!/usr/bin/python3\nimport sys\nfrom apisim.__main__ import main\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n")
    (scripts / "apisim").chmod(0o755)
    real = link(tmp_path / "later" / "apisim", apisim_bin)
    monkeypatch.setattr(binary_mod, "PACKAGED", str(tmp_path / "none" / "apisim"))
    monkeypatch.delenv("APISIM_BIN", raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join([str(scripts), str(tmp_path / "later")]))
    assert find_binary() == real
    monkeypatch.setenv("PATH", str(scripts))  # only the console script: not found, no loop
    with pytest.raises(ApisimError, match="apisim binary not found"):
        find_binary()


def test_packaged_file_that_is_not_executable_is_named(monkeypatch, tmp_path):
    path = tmp_path / "bin" / "apisim"
    path.parent.mkdir()
    path.write_bytes(b"\x7fELF")
    monkeypatch.setattr(binary_mod, "PACKAGED", str(path))
    monkeypatch.delenv("APISIM_BIN", raising=False)
    with pytest.raises(ApisimError, match="not executable") as err:
        find_binary()
    assert str(path) in str(err.value)


def python_m_apisim(*args, env):
    child = {k: v for k, v in os.environ.items() if k != "APISIM_BIN"}
    child.update(env, PYTHONPATH=SOURCE_PACKAGE)
    return subprocess.run([sys.executable, "-m", "apisim", *args], capture_output=True,
                          text=True, env=child, timeout=30)


def test_python_m_apisim_is_the_binary_with_its_arguments_and_status(apisim_bin):
    for args in (["--version"], ["ls", "--no-such-flag"], ["claude", "--apisim-scenario"]):
        direct = subprocess.run([apisim_bin, *args], capture_output=True, text=True,
                                timeout=30)
        got = python_m_apisim(*args, env={"APISIM_BIN": apisim_bin})
        assert (got.returncode, got.stdout, got.stderr) == (
            direct.returncode, direct.stdout, direct.stderr), args
    assert python_m_apisim("ls", "--no-such-flag", env={"APISIM_BIN": apisim_bin}
                           ).returncode == 2


def test_python_m_apisim_without_a_binary_says_so(tmp_path):
    if os.path.exists(binary_mod.PACKAGED):
        pytest.skip(f"this source tree has a packaged binary ({binary_mod.PACKAGED}, left by "
                    f"an editable install)")
    got = python_m_apisim("--version", env={"PATH": str(tmp_path)})
    assert got.returncode == 1
    assert got.stderr.startswith("apisim: apisim binary not found: APISIM_BIN is not set")
    assert got.stdout == ""
