"""Finding the apisim binary and running it."""

import os
import shutil

from .errors import ApisimError

# Child processes never go through a proxy from the environment: apisim listens on loopback.
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "ALL_PROXY")


def find_binary(binary=None):
    """Absolute path of the apisim binary: `binary` if given, else $APISIM_BIN, else `apisim`
    on PATH. Raises ApisimError saying how to point at it when none is usable."""
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
                f"point APISIM_BIN at the binary, or unset APISIM_BIN to use `apisim` from PATH")
        return os.path.abspath(path)
    found = shutil.which("apisim")
    if not found:
        raise ApisimError(
            "apisim binary not found: APISIM_BIN is not set and no `apisim` is on PATH; set "
            "APISIM_BIN=/path/to/apisim (e.g. build/apisim) or add its directory to PATH")
    return os.path.abspath(found)


def child_env(extra=None, base=None):
    """`base` (default os.environ) without proxy variables, updated with `extra`."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in PROXY_VARS}
    env.update(extra or {})
    return env
