"""Finding the apisim binary and running it."""

import os
import shutil

from .errors import ApisimError

# Child processes never go through a proxy from the environment: apisim listens on loopback.
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "ALL_PROXY")


# Where a package built by pip (setup.py) carries the binary.
PACKAGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "apisim")


def packaged_binary():
    """Path of the binary inside this package (apisim/bin/apisim, compiled when pip built
    the package), or None when the package carries none (a source tree on PYTHONPATH)."""
    if not os.path.isfile(PACKAGED):
        return None
    if not os.access(PACKAGED, os.X_OK):
        raise ApisimError(
            f"the packaged apisim binary {PACKAGED} is not executable: reinstall the package "
            f"(pip install --force-reinstall ...) or set APISIM_BIN")
    return PACKAGED


def _is_launcher(path):
    """True for the `apisim` console script of this package (a Python script running
    apisim.__main__): taking it for the binary would make it run itself."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"#!") and b"apisim.__main__" in head


def _on_path():
    """The first `apisim` on PATH that is not this package's console script, or None."""
    for d in os.get_exec_path():
        path = os.path.join(d or os.curdir, "apisim")
        if os.path.isfile(path) and os.access(path, os.X_OK) and not _is_launcher(path):
            return path
    return None


def find_binary(binary=None):
    """Absolute path of the apisim binary: `binary` if given, else $APISIM_BIN, else the one
    packaged with this module (packaged_binary()), else `apisim` on PATH (never this package's
    own console script). Raises ApisimError saying how to point at it when none is usable."""
    if binary is None:
        binary = os.environ.get("APISIM_BIN") or None
        origin = "APISIM_BIN=" + binary if binary else None
    else:
        origin = "binary=" + os.fspath(binary)
    if binary is not None:
        path = os.fspath(binary)
        if os.sep not in path:
            found = shutil.which(path)
            path = found or path
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ApisimError(
                f"{origin} is not an executable file: build apisim (cmake --build build) and "
                f"point APISIM_BIN at the binary, or unset APISIM_BIN to use the packaged one "
                f"or `apisim` from PATH")
        return os.path.abspath(path)
    found = packaged_binary() or _on_path()
    if not found:
        raise ApisimError(
            f"apisim binary not found: APISIM_BIN is not set, this apisim package carries no "
            f"binary (no {PACKAGED}: a source tree rather than a pip install) and no `apisim` "
            f"is on PATH; pip install the package (it compiles apisim), set "
            f"APISIM_BIN=/path/to/apisim (e.g. build/apisim), or add its directory to PATH")
    return os.path.abspath(found)


def child_env(extra=None, base=None):
    """`base` (default os.environ) without proxy variables, updated with `extra`."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in PROXY_VARS}
    env.update(extra or {})
    return env
