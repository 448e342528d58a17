"""Builds the apisim binary with CMake while pip builds this package, and ships it inside.

`pip install ./clients/python`, `pip install "apisim @ git+URL#subdirectory=clients/python"`
and `pip wheel ./clients/python` all run `build_py`, which here also configures and builds the
C project with its own CMakeLists.txt (Release, target `apisim` only) and puts the binary at
apisim/bin/apisim in the build. apisim._binary.find_binary() looks there after $APISIM_BIN.

Where the C project is:
    ../..      in a checkout or a git clone: this directory is clients/python of the repository
               (pip >= 21.3 builds a local directory in place, and clones the whole repository
               for a git URL, so ../.. is there in both cases)
    native/    in an sdist, which carries a copy of it (see `sdist` below)
Anything else (an installer that copied clients/python alone to a temporary directory) fails
at once saying so.

The wheel is tagged py3-none-<platform>: the binary is native code but does not link Python,
so one wheel serves every Python 3 on that platform. It links the system's libcurl,
libmicrohttpd, SQLite and cJSON shared libraries, so it runs where those are installed.

Before CMake runs, the build checks for cmake, a C compiler, make and pkg-config, and a
configure that cannot find a library is read for the pkg-config modules it missed: either way
pip stops within seconds with a message naming the Debian packages to install, not a
traceback.

APISIM_NO_BINARY=1 builds the package without the binary (a py3-none-any wheel that runs
$APISIM_BIN or `apisim` from PATH), for a machine that brings its own build of apisim.

Environment: CMAKE_BUILD_PARALLEL_LEVEL (compile jobs; default: the number of CPUs),
APISIM_CMAKE_ARGS (extra arguments for the configure step, split as a shell would), and what
CMake itself reads (CC, CFLAGS, CMAKE_GENERATOR, PKG_CONFIG_PATH).
"""

import os
import re
import shlex
import shutil
import subprocess

from setuptools import Command, Distribution, setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist
from setuptools.errors import ExecError, SetupError

try:  # setuptools >= 70.1 has its own
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:
    try:  # the `wheel` package (Debian 12: python3-wheel, python3-wheel-whl)
        from wheel.bdist_wheel import bdist_wheel as _bdist_wheel
    except ImportError:
        _bdist_wheel = None

HERE = os.path.dirname(os.path.abspath(__file__))

# What building apisim needs on Debian 12 (scripts/install-deps.sh installs the same).
DEBIAN_BUILD_DEPS = ("cmake", "build-essential", "pkg-config", "libcurl4-openssl-dev",
                     "libmicrohttpd-dev", "libsqlite3-dev", "libcjson-dev", "zlib1g-dev",
                     "libbrotli-dev", "libzstd-dev", "libssl-dev", "libgnutls28-dev")

# pkg-config module -> the Debian package that provides it, for a configure that missed one.
DEBIAN_DEV_PACKAGES = {
    "libmicrohttpd": "libmicrohttpd-dev",
    "libcurl": "libcurl4-openssl-dev",
    "sqlite3": "libsqlite3-dev",
    "libcjson": "libcjson-dev",
    "zlib": "zlib1g-dev",
    "openssl": "libssl-dev",
    "libssl": "libssl-dev",
    "libcrypto": "libssl-dev",
    "libbrotlienc": "libbrotli-dev",
    "libbrotlidec": "libbrotli-dev",
    "libbrotlicommon": "libbrotli-dev",
    "libzstd": "libzstd-dev",
    "libnghttp2": "libnghttp2-dev",
    "gnutls": "libgnutls28-dev",
}

# What an sdist carries of the C project: everything its CMakeLists.txt reads to build apisim
# (the root CMakeLists adds tests/ unconditionally, so tests/ comes along).
NATIVE_PARTS = ("CMakeLists.txt", "cmake", "schema", "src", "tests")


def apt_line(packages=DEBIAN_BUILD_DEPS):
    return "sudo apt-get install " + " ".join(packages)


def is_apisim_project(path):
    cmakelists = os.path.join(path, "CMakeLists.txt")
    if not (os.path.isfile(cmakelists) and os.path.isfile(os.path.join(path, "src", "main.c"))):
        return False
    with open(cmakelists, encoding="utf-8", errors="replace") as f:
        return re.search(r"^\s*project\(\s*apisim\b", f.read(), re.M) is not None


def native_source():
    """The directory holding apisim's CMakeLists.txt: native/ (an sdist) or ../.. (a
    checkout). Raises SetupError saying how to install when there is neither."""
    candidates = (os.path.join(HERE, "native"), os.path.dirname(os.path.dirname(HERE)))
    for path in candidates:
        if is_apisim_project(path):
            return path
    raise SetupError(
        f"apisim's C sources not found: this package compiles the apisim binary from the "
        f"repository it belongs to, but neither {candidates[0]} (an sdist's copy) nor "
        f"{candidates[1]} (the repository root, two levels above clients/python) holds "
        f"apisim's CMakeLists.txt and src/. Install from a checkout or a git URL of the whole "
        f"repository (pip install ./clients/python, or "
        f"\"apisim @ git+URL#subdirectory=clients/python\"), or from an sdist of it; an "
        f"installer that copies clients/python alone elsewhere cannot build it.")


def _first_on_path(names):
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def check_tools():
    """Fails at once, naming Debian packages, when a tool the build runs is missing."""
    missing = []  # (what, debian package)
    if not _first_on_path(["cmake"]):
        missing.append(("cmake", "cmake"))
    cc = shlex.split(os.environ.get("CC", ""))[:1]
    if not _first_on_path(cc or ["cc", "gcc", "clang"]):
        what = f"the C compiler $CC={cc[0]}" if cc else "a C compiler (cc, gcc or clang)"
        missing.append((what, "build-essential"))
    generator = os.environ.get("CMAKE_GENERATOR", "")
    if "ninja" in generator.lower():
        if not _first_on_path(["ninja", "ninja-build"]):
            missing.append(("ninja (CMAKE_GENERATOR=" + generator + ")", "ninja-build"))
    elif not _first_on_path(["make", "gmake"]):
        missing.append(("make", "build-essential"))
    if not _first_on_path(["pkg-config", "pkgconf"]):
        missing.append(("pkg-config", "pkg-config"))
    if missing:
        raise SetupError(
            "cannot build the apisim binary: " + "; ".join(
                f"{what} not found on PATH (Debian package {pkg})" for what, pkg in missing) +
            ". Install the build dependencies, e.g. on Debian 12:\n    " + apt_line() +
            "\n(the repository's scripts/install-deps.sh installs them), then run pip again.")


def explain_configure_failure(output, status):
    """The message for a failed `cmake` configure: the missing libraries' Debian packages
    when pkg-config named them, and the end of CMake's output."""
    modules = re.findall(r"No package '([^']+)' found", output)
    modules += re.findall(r"Package '([^']+)', required by '[^']*', not found", output)
    old = re.findall(r"Package '([^']+)' has version '([^']+)', required version is '([^']+)'",
                     output)
    modules += [m for m, _, _ in old]
    if re.search(r"Could NOT find OpenSSL", output):
        modules.append("openssl")
    tail = "\n".join("    " + line for line in output.rstrip().splitlines()[-40:])
    if modules:
        pkgs = []
        for m in modules:
            pkg = DEBIAN_DEV_PACKAGES.get(m, f"the package providing {m}.pc")
            if pkg not in pkgs:
                pkgs.append(pkg)
        too_old = "".join(f"; {m} is {have}, apisim needs {want}" for m, have, want in old)
        return (f"cannot build the apisim binary: the C libraries "
                f"{', '.join(dict.fromkeys(modules))} were not found by pkg-config{too_old}. "
                f"Install their development packages, on Debian 12:\n    "
                f"{apt_line(pkgs)}\n(all build dependencies: {apt_line()}), then run pip "
                f"again. CMake said:\n{tail}")
    return (f"cannot build the apisim binary: cmake's configure step failed (exit {status}). "
            f"Its output ends:\n{tail}\nOn Debian 12 the build dependencies are:\n    "
            f"{apt_line()}")


def cmake_build(source, build_dir, jobs):
    """Configures and builds target `apisim` of `source` in `build_dir`; returns the binary's
    path. Raises SetupError/ExecError with a message for the user."""
    cache = os.path.join(build_dir, "CMakeCache.txt")
    if os.path.isfile(cache):  # a build dir left by another copy of the tree: start afresh
        with open(cache, encoding="utf-8", errors="replace") as f:
            home = re.search(r"^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$", f.read(), re.M)
        if not home or os.path.realpath(home.group(1)) != os.path.realpath(source):
            shutil.rmtree(build_dir)
    os.makedirs(build_dir, exist_ok=True)
    configure = ["cmake", "-S", source, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                 *shlex.split(os.environ.get("APISIM_CMAKE_ARGS", ""))]
    print("running " + " ".join(shlex.quote(a) for a in configure), flush=True)
    proc = subprocess.run(configure, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace")
    if proc.returncode != 0:  # the message carries the end of CMake's output
        raise SetupError(explain_configure_failure(proc.stdout, proc.returncode))
    print(proc.stdout, end="", flush=True)
    build = ["cmake", "--build", build_dir, "--target", "apisim", "--parallel", str(jobs)]
    print("running " + " ".join(shlex.quote(a) for a in build), flush=True)
    status = subprocess.run(build).returncode
    if status != 0:
        raise ExecError(f"compiling apisim failed (cmake --build exited {status}); the "
                        f"compiler's messages are above. Build dependencies on Debian 12: "
                        f"{apt_line()}")
    binary = os.path.join(build_dir, "apisim")
    if not os.path.isfile(binary):
        raise ExecError(f"cmake --build succeeded but left no {binary}")
    return binary


def without_binary():
    return os.environ.get("APISIM_NO_BINARY", "") not in ("", "0")


def build_jobs():
    level = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "")
    return int(level) if level.isdigit() and int(level) > 0 else (os.cpu_count() or 1)


class build_py(_build_py):
    """build_py that also compiles apisim and puts it at apisim/bin/apisim in build_lib (in
    the source tree for an editable install, whose package is the source directory)."""

    def run(self):
        super().run()
        if without_binary():
            print("APISIM_NO_BINARY is set: the package carries no apisim binary", flush=True)
            return
        source = native_source()
        check_tools()
        build_temp = self.get_finalized_command("build").build_temp
        build_dir = os.path.abspath(os.path.join(build_temp, "apisim-cmake"))
        binary = cmake_build(source, build_dir, build_jobs())
        target = self._binary_target()
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(binary, target)
        os.chmod(target, 0o755)

    def _binary_target(self):
        root = HERE if getattr(self, "editable_mode", False) else self.build_lib
        return os.path.join(root, "apisim", "bin", "apisim")

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False) and not without_binary():
            outputs.append(self._binary_target())
        return outputs


class sdist(_sdist):
    """sdist that carries the C project under native/, so a wheel built from the sdist alone
    (pip unpacks it to a temporary directory, away from the repository) still compiles."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        source = native_source()
        for part in NATIVE_PARTS:
            src = os.path.join(source, part)
            dst = os.path.join(base_dir, "native", part)
            if os.path.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                    "__pycache__", "*.pyc", ".pytest_cache", "node_modules"))
            elif os.path.isfile(src):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy2(src, dst)


class BinaryDistribution(Distribution):
    """Not pure Python: it installs to platlib and makes a platform wheel (whose root is
    platlib) rather than a py3-none-any one, unless APISIM_NO_BINARY is set."""

    def has_ext_modules(self):
        return not without_binary()


if _bdist_wheel is not None:
    class bdist_wheel(_bdist_wheel):
        """A platform wheel, tagged py3-none-PLATFORM (e.g. linux_x86_64): the binary is native
        but does not depend on the Python version or ABI."""

        def get_tag(self):
            python, abi, plat = super().get_tag()
            return (python, abi, plat) if without_binary() else ("py3", "none", plat)
else:
    class bdist_wheel(Command):
        """Says what to install when neither setuptools nor `wheel` can build a wheel (pip
        with --no-build-isolation in a virtualenv that has setuptools but not wheel)."""

        user_options = []

        def initialize_options(self):
            pass

        def finalize_options(self):
            pass

        def run(self):
            raise SetupError(
                "building a wheel needs the `wheel` package, which this Python lacks "
                "(--no-build-isolation uses what is installed). Install it: pip install wheel, "
                "or offline on Debian 12: sudo apt-get install python3-wheel-whl, then "
                "pip install --no-index --find-links /usr/share/python-wheels wheel")


setup(distclass=BinaryDistribution,
      cmdclass={"build_py": build_py, "sdist": sdist, "bdist_wheel": bdist_wheel})
