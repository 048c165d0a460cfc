#!/usr/bin/env python3
"""CI smoke bench: `dynod smoke` against the same check done by hand with what CI jobs use.

Run it by hand from the repository root, under the bench lock (figures are wall-clock and CPU
time on this machine; another busy process skews them all):

    flock /tmp/dynod-bench.lock python3 bench/smoke.py                 # 5 rounds (~1 min)
    flock /tmp/dynod-bench.lock python3 bench/smoke.py --rounds 9 --app fixtures/sample

The check, in every variant: the app builds (a virtual environment with its requirements), its
release command runs, its web process boots, `GET /` answers 200, and everything stops.

- dynod cold: `.venv/bin/dynod smoke APP --path /`: an empty build cache, as by default.
- dynod warm: the same with `--cache DIR`, DIR filled by one run before the rounds.
- the peer by hand: the issue names `docker build` + `docker run` + curl when docker is there;
  the development VM has the docker client but no daemon, so that variant is not written and
  the bench stops, saying so, where a daemon answers `docker info`. Here: a bash script doing
  what CI scripts do with honcho (installed into bench/.peers/venv if missing): `python3 -m
  venv .venv`, `pip install -r requirements.txt`, the Procfile's release command, `honcho
  start web` in the background, curl every 0.1 s until it answers 200 (60 s at most), then
  honcho stopped and waited for. cold: a fresh copy of the app and an empty pip cache; warm:
  the copy's `.venv` and pip cache kept from the run before (what actions/cache keeps); bare:
  no install at all (the machine's python3 runs the app in place), the floor of any check by
  hand, which only works for an app without dependencies (the fixture apps are stdlib only).

wall: seconds from starting the command to its exit. cpu: user+system seconds of the command
and of every descendant waited for (RUSAGE_CHILDREN: dynos and buildpacks included). Each
figure is the median of --rounds rounds; every round runs every variant once, in turn, so a VM
that changes speed meanwhile weighs on all alike. The ratio is the peer's median over dynod's
(>1: dynod faster). Scratch lives in bench/.work/smoke/.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work" / "smoke"
PEERS = HERE / ".peers" / "venv"
DYNOD = REPO / ".venv" / "bin" / "dynod"

BY_HAND = r"""
set -euo pipefail
if [ "$INSTALL" = 1 ]; then
  python3 -m venv .venv
  export PATH="$PWD/.venv/bin:$PATH"
  pip install -q --disable-pip-version-check -r requirements.txt
fi
release="$(sed -n 's/^release: *//p' Procfile)"
if [ -n "$release" ]; then bash -c "$release"; fi
"$HONCHO" start web -p "$PORT" >honcho.log 2>&1 &
honcho=$!
ok=
for _ in $(seq 600); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/"; then ok=1; break; fi
  sleep 0.1
done
kill -TERM "$honcho"
wait "$honcho" || true
[ -n "$ok" ]
"""


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of a command that must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    return done.returncode == 0


def ensure_honcho() -> Path:
    honcho = PEERS / "bin" / "honcho"
    if not honcho.exists():
        if not (PEERS / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
        subprocess.run([str(PEERS / "bin" / "pip"), "install", "-q", "honcho"], check=True)
    return honcho


def byte_compile() -> None:
    """As pip compiles an installed package (honcho got its bytecode at install): an editable
    install under PYTHONDONTWRITEBYTECODE=1 would otherwise compile dynod at every launch."""
    python = str(REPO / ".venv" / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    packages = [str(REPO / name) for name in ("dynod", "router")]
    subprocess.run([python, "-m", "compileall", "-q", *packages], env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--app", type=Path, default=REPO / "fixtures" / "python-app")
    args = parser.parse_args()
    app = args.app.resolve()
    if not DYNOD.exists():
        sys.exit(f"{DYNOD} is missing: python3 -m venv .venv && .venv/bin/pip install -e .")
    if docker_answers():
        sys.exit("a docker daemon answers here: add the docker variant (docker build + run + curl)")
    print("docker: no daemon answers `docker info` here; the peer is honcho + curl in bash")
    honcho = ensure_honcho()
    byte_compile()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cache = WORK / "dynod-cache"
    dynod_cmd = [str(DYNOD), "smoke", str(app), "--path", "/"]
    timed([*dynod_cmd, "--cache", str(cache)], REPO, env)  # fills the warm cache

    warm_copy = WORK / "by-hand-warm"
    pip_warm = WORK / "pip-warm"

    def by_hand(copy: Path, pip_cache: Path, install: bool = True) -> tuple[float, float]:
        if not copy.exists():
            shutil.copytree(app, copy)
        peer_env = {**env, "HONCHO": str(honcho), "PORT": str(free_port())}
        peer_env |= {"PIP_CACHE_DIR": str(pip_cache), "INSTALL": "1" if install else "0"}
        return timed(["bash", "-c", BY_HAND], copy, peer_env)

    def by_hand_cold() -> tuple[float, float]:
        copy, pip_cache = WORK / "by-hand-cold", WORK / "pip-cold"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.rmtree(pip_cache, ignore_errors=True)
        return by_hand(copy, pip_cache)

    by_hand(warm_copy, pip_warm)  # the warm copy's .venv and pip cache

    variants: dict[str, Callable[[], tuple[float, float]]] = {
        "dynod smoke, cold cache": lambda: timed(dynod_cmd, REPO, env),
        "dynod smoke, warm cache": lambda: timed([*dynod_cmd, "--cache", str(cache)], REPO, env),
        "honcho + curl, cold": by_hand_cold,
        "honcho + curl, warm": lambda: by_hand(warm_copy, pip_warm),
        "honcho + curl, bare": lambda: by_hand(WORK / "by-hand-bare", pip_warm, install=False),
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for round_number in range(1, args.rounds + 1):
        for name, run in variants.items():
            figures[name].append(run())
        print(f"round {round_number}/{args.rounds} done", flush=True)

    print(f"\napp: {app.relative_to(REPO) if app.is_relative_to(REPO) else app}")
    print(f"load: {os.getloadavg()[0]:.2f} (1 min), cores: {os.cpu_count()}")
    print(f"{'variant':<26}{'wall s (median)':>17}{'cpu s (median)':>16}")
    medians = {}
    for name, runs in figures.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        medians[name] = (wall, cpu)
        print(f"{name:<26}{wall:>17.2f}{cpu:>16.2f}")
    for peer_name, ours_name in (("cold", "cold"), ("warm", "warm"), ("bare", "warm")):
        ours = medians[f"dynod smoke, {ours_name} cache"]
        peer = medians[f"honcho + curl, {peer_name}"]
        print(
            f"honcho + curl {peer_name} / dynod smoke {ours_name}: {peer[0] / ours[0]:.2f}x "
            f"wall, {peer[1] / ours[1]:.2f}x cpu"
        )
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
