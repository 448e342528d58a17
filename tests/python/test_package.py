"""`pip install` gives a Python user a working apisim (issue 17), tried as a new user would.

From a clean copy of the repository (its files as git lists them, committed afresh in a
temporary git repository), in fresh virtualenvs that do not see the system's site-packages:

- `pip install --no-build-isolation "apisim @ git+file://localhost/COPY#subdirectory=
  clients/python"` (the dependency-line form) compiles apisim and installs it inside the
  package; with APISIM_BIN unset and no `apisim` on PATH, a pytest run uses the
  mock_http_server and fake_claude fixtures (the plugin loads through its entry point), and
  `python -m apisim` / the `apisim` console script run the packaged binary with the same
  arguments and exit status.
- `pip wheel ./clients/python` makes one platform wheel holding the binary; with the tree it
  was built from deleted, that wheel installed in another virtualenv works the same way.
- Without cmake on PATH, without the C libraries' pkg-config files, or with clients/python
  copied away from the repository, pip fails before compiling anything, with a message
  naming what to install (the Debian packages) or how to install instead.
- The sdist carries the C project (native/), and pip building it in a temporary directory
  finds it there.

pytest inside the virtualenvs: Debian ships no pytest wheel and nothing may come from an
index, so the virtualenvs (made without --system-site-packages) get a .pth file naming one
directory of links to exactly the modules Debian's pytest loads (pytest, _pytest, pluggy,
iniconfig, ...); nothing else of the system's site-packages is on their sys.path. The `wheel`
package comes from Debian's python3-wheel-whl (/usr/share/python-wheels) with --no-index.

Compiles apisim twice (Release, CMAKE_BUILD_PARALLEL_LEVEL=2). ctest: python.package, labels
python and package.
"""

import glob
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

ROOT = os.environ.get("APISIM_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEBIAN_WHEELS = "/usr/share/python-wheels"
PIP_TIMEOUT = 600  # a hang guard only: a build takes seconds
PLATFORM = sysconfig.get_platform().replace("-", "_").replace(".", "_")
WHEEL = f"apisim-0.1.0-py3-none-{PLATFORM}.whl"

INNER_TESTS = '''
import json, os, shutil, subprocess, sys, urllib.error, urllib.request

import apisim

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def test_the_binary_is_the_packaged_one():
    assert "APISIM_BIN" not in os.environ
    assert shutil.which("apisim") is None
    assert apisim.__file__.startswith(sys.prefix + os.sep), apisim.__file__
    packaged = os.path.join(os.path.dirname(apisim.__file__), "bin", "apisim")
    assert apisim.find_binary() == packaged


def test_mock_http_server(mock_http_server):
    mock_http_server.register("GET", "/hello", status=201)
    with OPENER.open(mock_http_server.url + "/hello") as r:
        assert r.status == 201
    try:
        OPENER.open(mock_http_server.url + "/not-stubbed")
        raise AssertionError("an unstubbed path answered")
    except urllib.error.HTTPError as e:
        assert e.code == 404 and e.headers["X-Apisim-Miss"] == "1"
    assert mock_http_server.request_count() == 2


def test_fake_claude(fake_claude):
    with fake_claude:
        claude = shutil.which("claude")
        assert os.path.realpath(claude) == apisim.find_binary()
        proc = subprocess.run(["claude", "-p", "hello", "--output-format", "stream-json",
                               "--verbose"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert records[0]["type"] == "system" and records[-1]["type"] == "result"
'''


def clean_env(path=None, **extra):
    """os.environ without APISIM_BIN, proxies, pip configuration and PYTHONPATH; PATH without
    any directory that holds an `apisim` (or `path` when given)."""
    drop = ("APISIM_BIN", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "http_proxy",
            "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PIP_")}
    if path is None:
        path = os.pathsep.join(d for d in env.get("PATH", os.defpath).split(os.pathsep)
                               if d and not os.path.exists(os.path.join(d, "apisim")))
    env.update(PATH=path, PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", CMAKE_BUILD_PARALLEL_LEVEL="2")
    env.update(extra)
    return env


def run(argv, env=None, cwd=None, timeout=PIP_TIMEOUT):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          env=env or clean_env(), cwd=cwd, timeout=timeout)


def check(argv, **kwargs):
    proc = run(argv, **kwargs)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def cmake_pkg_modules():
    """The pkg-config modules CMakeLists.txt asks for, in its order (versions dropped)."""
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"pkg_check_modules\(DEPS REQUIRED IMPORTED_TARGET\s+([^)]*)\)", text)
    return [re.split(r"[<>=]", word)[0] for word in m.group(1).split()]


def debian_dev_packages():
    """The Debian packages that provide cmake_pkg_modules(), without repeats."""
    names = {"libmicrohttpd": "libmicrohttpd-dev", "libcurl": "libcurl4-openssl-dev",
             "sqlite3": "libsqlite3-dev", "libcjson": "libcjson-dev", "zlib": "zlib1g-dev",
             "libbrotlidec": "libbrotli-dev", "libzstd": "libzstd-dev", "openssl": "libssl-dev",
             "gnutls": "libgnutls28-dev"}
    return list(dict.fromkeys(names[m] for m in cmake_pkg_modules()))


def copy_tree(dst):
    """The repository's files (tracked and untracked-but-not-ignored: no build directories)
    copied to dst; a tree that is not a git work tree is copied without its build*/ and
    Python leftovers."""
    listing = run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                   "--exclude-standard"], env=clean_env(os.environ.get("PATH", "")))
    if listing.returncode != 0 or not listing.stdout:
        def ignore(d, names):
            top = os.path.realpath(d) == os.path.realpath(ROOT)
            return [n for n in names if n in (".git", "__pycache__", ".pytest_cache", ".venv")
                    or n.endswith(".egg-info") or (top and n.startswith("build"))
                    or (n == "build" and d.endswith(os.path.join("clients", "python")))]
        shutil.copytree(ROOT, dst, ignore=ignore, symlinks=True, dirs_exist_ok=True)
        return dst
    listing = listing.stdout
    for rel in filter(None, listing.split("\0")):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):  # deleted in the work tree but not yet in the index
            continue
        os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, rel), follow_symlinks=False)
    return dst


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A clean copy of the repository, committed in a git repository of its own."""
    dst = copy_tree(str(tmp_path_factory.mktemp("repo")))
    git = ["git", "-C", dst, "-c", "user.name=apisim tests", "-c",
           "user.email=tests@apisim.invalid"]
    env = clean_env(os.environ.get("PATH", ""))
    check(git + ["init", "-q"], env=env)
    check(git + ["add", "-A"], env=env)
    check(git + ["commit", "-q", "-m", "copy"], env=env)
    return dst


@pytest.fixture(scope="module")
def pytest_links(tmp_path_factory):
    """A directory of links to the modules Debian's pytest (this Python's) loads for a run."""
    links = tmp_path_factory.mktemp("pytest-links")
    empty = tmp_path_factory.mktemp("empty")
    report = tmp_path_factory.mktemp("report") / "modules.json"
    script = f'''
import json, os, site, sys
import pytest
pytest.main(["-q", "--co", "-p", "no:cacheprovider", "-p", "no:apisim", {str(empty)!r}])
sites = [os.path.realpath(p) for p in site.getsitepackages() + [site.getusersitepackages()]]
found = {{}}
for name, mod in list(sys.modules.items()):
    f = getattr(mod, "__file__", None)
    if "." in name or not f or name == "apisim":
        continue
    f = os.path.realpath(f)
    top = os.path.dirname(f) if os.path.basename(f) == "__init__.py" else f
    if any(top.startswith(s + os.sep) for s in sites):
        found[name] = top
json.dump(found, open({str(report)!r}, "w"))
'''
    check([sys.executable, "-c", script], cwd=str(empty))
    modules = json.loads(report.read_text())
    assert "pytest" in modules and "_pytest" in modules and "pluggy" in modules, modules
    for top in modules.values():
        os.symlink(top, links / os.path.basename(top))
    return str(links)


def make_venv(path, pytest_links, with_wheel):
    """A virtualenv without system site packages; pytest through the links; `wheel` (for
    builds without isolation) from Debian's wheel directory."""
    check([sys.executable, "-m", "venv", path])
    python = os.path.join(path, "bin", "python")
    purelib = check([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                    ).stdout.strip()
    with open(os.path.join(purelib, "debian-pytest-only.pth"), "w") as f:
        f.write(pytest_links + "\n")
    if with_wheel:
        check([python, "-m", "pip", "install", "-q", "--no-index", "--find-links",
               DEBIAN_WHEELS, "wheel"])
    sys_path = json.loads(check([python, "-c", "import json, sys; print(json.dumps(sys.path))"]
                                ).stdout)
    system = {os.path.realpath(p) for p in site.getsitepackages()}
    assert not system & {os.path.realpath(p) for p in sys_path}, sys_path
    return python


def run_inner_pytest(python, workdir):
    """The plugin's fixtures in a pytest run of the virtualenv's own, from a directory outside
    any source tree, with APISIM_BIN unset and no apisim on PATH."""
    tests = os.path.join(workdir, "inner")
    os.makedirs(tests)
    with open(os.path.join(tests, "test_uses_apisim.py"), "w") as f:
        f.write(INNER_TESTS)
    proc = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests], cwd=workdir,
               timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout, proc.stdout


def binary_of(python):
    return check([python, "-c", "import apisim; print(apisim.find_binary())"]).stdout.strip()


def assert_launchers_run_the_binary(python):
    """`python -m apisim` and the console script: the binary's own output and exit status."""
    binary = binary_of(python)
    for args in (["--version"], ["ls", "--no-such-flag"], ["mock", "--listen", "nonsense"]):
        direct = run([binary, *args], timeout=30)
        for launcher in ([python, "-m", "apisim"], [os.path.join(os.path.dirname(python),
                                                                 "apisim")]):
            got = run([*launcher, *args], timeout=30)
            assert (got.returncode, got.stdout, got.stderr) == (
                direct.returncode, direct.stdout, direct.stderr), (launcher, args)
    assert run([binary, "--version"]).returncode == 0
    assert run([binary, "ls", "--no-such-flag"]).returncode == 2


@pytest.fixture(scope="module")
def venv_a(tmp_path_factory, pytest_links):
    return make_venv(str(tmp_path_factory.mktemp("venv-a") / "v"), pytest_links, True)


def pip(python, *args, **kwargs):
    return run([python, "-m", "pip", *args], **kwargs)


def test_git_url_install_carries_a_binary_the_fixtures_use(venv_a, tree, tmp_path):
    proc = pip(venv_a, "install", "--no-build-isolation", "--no-index",
               f"apisim @ git+file://localhost{tree}#subdirectory=clients/python")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"filename={WHEEL}" in proc.stdout, proc.stdout
    run_inner_pytest(venv_a, str(tmp_path))
    assert_launchers_run_the_binary(venv_a)


def test_pip_wheel_is_one_platform_wheel_that_installs_without_the_tree(
        venv_a, tree, pytest_links, tmp_path):
    src = copy_tree(str(tmp_path / "src"))
    wheels = tmp_path / "wheels"
    proc = pip(venv_a, "wheel", "--no-build-isolation", "--no-deps", "--no-index",
               "-w", wheels, os.path.join(src, "clients", "python"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.rmtree(src)

    built = sorted(os.listdir(wheels))
    assert built == [WHEEL], built
    with zipfile.ZipFile(wheels / built[0]) as whl:
        info = whl.getinfo("apisim/bin/apisim")
        assert (info.external_attr >> 16) & 0o111, "the binary is not executable in the wheel"
        assert whl.read("apisim/bin/apisim")[:4] == b"\x7fELF"
        wheel_meta = whl.read("apisim-0.1.0.dist-info/WHEEL").decode()
        assert "Root-Is-Purelib: false" in wheel_meta, wheel_meta
        assert "[console_scripts]\napisim = apisim.__main__:main" in whl.read(
            "apisim-0.1.0.dist-info/entry_points.txt").decode()

    venv_b = make_venv(str(tmp_path / "venv-b"), pytest_links, False)
    proc = pip(venv_b, "install", "--no-index", wheels / built[0])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert binary_of(venv_b).startswith(str(tmp_path / "venv-b") + os.sep)
    run_inner_pytest(venv_b, str(tmp_path))
    assert_launchers_run_the_binary(venv_b)


def failed_install(venv, package_dir, env):
    """pip install of package_dir that must fail before compiling: returns pip's output."""
    proc = pip(venv, "install", "--no-build-isolation", "--no-index", package_dir, env=env)
    assert proc.returncode != 0, proc.stdout
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    built = glob.glob(os.path.join(package_dir, "build", "temp*", "apisim-cmake", "apisim"))
    built += glob.glob(os.path.join(package_dir, "build", "lib*", "apisim", "bin", "apisim"))
    assert not built, "it compiled apisim"
    return out


@pytest.mark.parametrize("missing, message", [
    ("cmake", "cmake not found on PATH (Debian package cmake)"),
    ("cc", "a C compiler (cc, gcc or clang) not found on PATH (Debian package build-essential)"),
])
def test_missing_tool_fails_at_once_naming_the_debian_packages(venv_a, tree, tmp_path, missing,
                                                              message):
    bin_dir = tmp_path / "bin"  # what a build runs, but one
    bin_dir.mkdir()
    for tool in ("cmake", "cc", "make", "pkg-config"):
        if tool != missing:
            os.symlink(shutil.which(tool), bin_dir / tool)
    src = copy_tree(str(tmp_path / "src"))
    env = clean_env(str(bin_dir))
    env.pop("CC", None)
    out = failed_install(venv_a, os.path.join(src, "clients", "python"), env)
    assert "error: cannot build the apisim binary: " + message in out, out
    assert "sudo apt-get install cmake build-essential pkg-config libcurl4-openssl-dev " \
           "libmicrohttpd-dev libsqlite3-dev libcjson-dev zlib1g-dev" in out
    for pkg in debian_dev_packages():
        assert pkg in out, (pkg, out)
    assert not list((tmp_path / "src").glob("clients/python/build/temp*/apisim-cmake")), \
        "cmake ran"


def test_missing_libraries_are_named_with_their_debian_packages(venv_a, tree, tmp_path):
    src = copy_tree(str(tmp_path / "src"))
    empty = tmp_path / "no-pc-files"
    empty.mkdir()
    out = failed_install(venv_a, os.path.join(src, "clients", "python"),
                         clean_env(PKG_CONFIG_LIBDIR=str(empty), PKG_CONFIG_PATH=""))
    modules = cmake_pkg_modules()
    assert f"the C libraries {', '.join(modules)} were not found by pkg-config" in out, out
    assert "sudo apt-get install " + " ".join(debian_dev_packages()) in out, out


def test_package_dir_away_from_its_repository_says_how_to_install(venv_a, tree, tmp_path):
    alone = tmp_path / "a" / "b" / "python"
    shutil.copytree(os.path.join(tree, "clients", "python"), alone)
    out = failed_install(venv_a, str(alone), clean_env())
    assert "error: apisim's C sources not found" in out, out
    assert "subdirectory=clients/python" in out and "sdist" in out


def test_sdist_carries_the_c_project_and_builds_away_from_the_repository(venv_a, tmp_path):
    """The sdist holds the C project under native/; pip unpacks it to a temporary directory,
    away from any repository, and the build finds the sources there: without cmake it gets as
    far as asking for cmake (not `C sources not found`). The compile from native/ is the same
    as from ../.. (checked by hand: docs/python.md)."""
    src = copy_tree(str(tmp_path / "src"))
    dist = tmp_path / "dist"
    dist.mkdir()
    name = check([venv_a, "-c", "import sys\nfrom setuptools import build_meta\n"
                  "print(build_meta.build_sdist(sys.argv[1]))", dist],
                 cwd=os.path.join(src, "clients", "python")).stdout.strip().splitlines()[-1]
    sdist = dist / name
    assert name == "apisim-0.1.0.tar.gz", name
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
    for part in ("setup.py", "pyproject.toml", "apisim/__main__.py", "native/CMakeLists.txt",
                 "native/src/main.c", "native/schema", "native/cmake/embed_schema.cmake"):
        assert "apisim-0.1.0/" + part in names, part
    shutil.rmtree(src)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cc", "make", "pkg-config"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    proc = pip(venv_a, "install", "--no-build-isolation", "--no-index", sdist,
               env=clean_env(str(bin_dir)))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out
    assert "cmake not found on PATH (Debian package cmake)" in out, out
    assert "C sources not found" not in out
