"""`python -m apisim ARGS` and the `apisim` console script: run the apisim binary with ARGS.

The binary is the one find_binary() picks ($APISIM_BIN, else the one packaged with this
module, else `apisim` on PATH). It replaces this process (exec), so it gets the same
arguments, standard streams and signals, and its exit status is the command's.
`python -m apisim claude ...` is the fake `claude` CLI.
"""

import os
import sys

from ._binary import find_binary
from .errors import ApisimError


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        binary = find_binary()
    except ApisimError as e:
        print(f"apisim: {e}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(binary, [binary, *args])
    except OSError as e:  # execv returns only when it failed
        print(f"apisim: cannot run {binary}: {e.strerror}", file=sys.stderr)
        return 126


if __name__ == "__main__":
    sys.exit(main())
