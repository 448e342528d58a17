#!/usr/bin/env python3
"""How faithfully a recorded CLI run is replayed: the gaps between stdout lines (and stderr
pieces) of `apisim claude` replaying a run recorded by `apisim claude-record`, as ratios to
the gaps of the same command run directly and read the same way (the floor, measured in the
same run). Prints figures; asserts nothing.

    bench/claude_pacing.py [APISIM_BIN]     (default build/apisim; env PACING_LINES=20,
                                             PACING_GAP_MS=50)
"""

import os
import select
import statistics
import subprocess
import sys
import tempfile
import time

LINES = int(os.environ.get("PACING_LINES", "20"))
GAP_MS = float(os.environ.get("PACING_GAP_MS", "50"))
SCRIPT = f"""
import sys, time
for i in range({LINES}):
    if i % 5 == 4:
        sys.stderr.write("note %d\\n" % i); sys.stderr.flush()
        time.sleep({GAP_MS / 2000.0})
    sys.stdout.write('{{"type": "assistant", "i": %d}}\\n' % i); sys.stdout.flush()
    time.sleep({GAP_MS / 1000.0})
sys.exit(3)
"""


def stamped(argv, env, cwd):
    """[(time, stream, bytes)] of everything argv writes, as read; and its exit status."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         cwd=cwd)
    fds = {p.stdout.fileno(): "out", p.stderr.fileno(): "err"}
    got = []
    while fds:
        for fd in select.select(list(fds), [], [])[0]:
            chunk = os.read(fd, 65536)
            if chunk:
                got.append((time.monotonic(), fds[fd], chunk))
            else:
                del fds[fd]
    return got, p.wait()


def lines(events):
    """The events split into lines, each stamped with the time its chunk was read (a reader
    that fell behind sees several lines at once: they get one time)."""
    out = []
    for ts, stream, chunk in events:
        out += [(ts, stream, line) for line in chunk.splitlines()]
    return out


def gaps(events):
    t = [ts for ts, _, _ in events]
    return [b - a for a, b in zip(t, t[1:])]


def main():
    apisim = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/apisim")
    with tempfile.TemporaryDirectory(prefix="apisim-pacing-") as tmp:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("APISIM_") and k != "CLAUDE_CONFIG_DIR"}
        env["CLAUDE_CONFIG_DIR"] = os.path.join(tmp, "config")
        cmd = [sys.executable, "-c", SCRIPT]
        floor, _ = stamped(cmd, env, tmp)
        db = os.path.join(tmp, "runs.db")
        subprocess.run([apisim, "claude-record", "--db", db, "--session", "p", "--", *cmd],
                       env=env, cwd=tmp, capture_output=True, check=False)
        replay, code = stamped([apisim, "claude", "-p", "x"],
                               dict(env, APISIM_DB=db, APISIM_SESSION="p"), tmp)
    floor, replay = lines(floor), lines(replay)
    f, r = gaps(floor), gaps(replay)
    n = min(len(f), len(r))
    ratios = [r[i] / f[i] for i in range(n) if f[i] > GAP_MS / 2000.0]
    order = [s for _, s, _ in replay] == [s for _, s, _ in floor]
    print(f"lines {LINES}, gap {GAP_MS:.0f} ms, lines read: floor {len(floor)} replay "
          f"{len(replay)}, same order of stdout/stderr: {order}, replay exit {code}")
    print(f"total: floor {(floor[-1][0] - floor[0][0]) * 1000:.1f} ms, replay "
          f"{(replay[-1][0] - replay[0][0]) * 1000:.1f} ms")
    print(f"gap ratio replay/floor: median {statistics.median(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f} ({len(ratios)} gaps)")


if __name__ == "__main__":
    main()
