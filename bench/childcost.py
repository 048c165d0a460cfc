#!/usr/bin/env python3
"""What one child costs in CPU before it is ready, by the shell that starts it: the figures
behind "(a) is a tie" in the README (dynod starts dynos with `bash -c`, as Heroku does; honcho,
foreman and node-foreman with /bin/sh).

    .venv/bin/python bench/childcost.py [--n 30]

Each child is started alone (posix_spawn, this environment, its own session), runs (a) launch's
sh workload (`echo ready; exec sleep 120`, output to /dev/null) or the python3 one, and is read
when asleep: its on-CPU time from /proc/PID/schedstat (nanoseconds, the exec'ed `sleep` included,
as in (a)). The median over --n children is printed, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import statistics
import time

from supervise import real_python3  # bench/ is on the path when this script runs

PRELUDE = (
    'for f in .profile.d/*.sh; do if [ -r "$f" ]; then . "$f"; fi; done; unset f\n'
    "if [ -r .profile ]; then . ./.profile; fi\n"
)  # dynod.proc.dyno.PROFILE_PRELUDE
SH = "echo ready >/dev/null; exec sleep 120"
PY = "import time; print('ready', file=open('/dev/null', 'w')); time.sleep(120)"


def cost(argv: list[str], n: int, settle: float) -> float:
    spent = []
    for _ in range(n):
        pid = os.posix_spawn(argv[0], argv, os.environ, setsid=True)
        time.sleep(settle)  # long enough to be asleep in `sleep` / time.sleep
        with open(f"/proc/{pid}/schedstat") as f:
            spent.append(int(f.read().split()[0]) / 1e6)
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return statistics.median(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=30, help="children per row (default 30)")
    n = parser.parse_args().n
    bash, sh = shutil.which("bash") or "bash", os.path.realpath("/bin/sh")
    python3 = shlex.split(real_python3())[0]  # the interpreter (a) runs, not a pyenv shim
    rows = [
        ("bash -c, with dynod's profile prelude", [bash, "-c", PRELUDE + SH], 0.05),
        ("bash -c (an app without .profile.d)", [bash, "-c", SH], 0.05),
        (f"/bin/sh -c ({os.path.basename(sh)}), as the peers", ["/bin/sh", "-c", SH], 0.05),
        (f"python3 ({python3})", [python3, "-c", PY], 0.5),
    ]
    print(f"CPU per child until ready and asleep, median of {n}; LANG={os.environ.get('LANG', '')}")
    for label, argv, settle in rows:
        print(f"  {cost(argv, n, settle):7.2f} ms  {label}")


if __name__ == "__main__":
    main()
