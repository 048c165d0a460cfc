"""`python -m router`: the router alone in front of fixed dynos, as the bench and users run it."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

from tests.router.support import ChildDyno


def test_cli_routes_round_robin_and_logs() -> None:
    dynos = [ChildDyno.start("web.1"), ChildDyno.start("web.2")]
    args = ["--listen", "127.0.0.1:0", "--log", "--request-timeout", "5"]
    for dyno in dynos:
        args += ["--dyno", "{}:{}".format(*dyno.address)]
    router = subprocess.Popen(
        [sys.executable, "-m", "router", *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert router.stdout is not None
        listening = router.stdout.readline().split()
        assert listening[:3] == ["router", "listening", "on"]
        url = f"http://{listening[3]}/"
        bodies = [urllib.request.urlopen(url, timeout=5).read() for _ in range(4)]
        assert bodies == [b"web.1", b"web.2", b"web.1", b"web.2"]
        line = router.stdout.readline()
        if line.startswith("router listening on ["):  # 127.0.0.1 holds [::1] too
            line = router.stdout.readline()
        assert (
            line.startswith('heroku[router]: at=info method=GET path="/" ')
            and " dyno=web.1 " in line
        )
    finally:
        router.terminate()
        router.wait(timeout=5)
        for dyno in dynos:
            dyno.kill()


def test_cli_refuses_a_bad_setting() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "router", "--dyno", "nonsense", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "HOST:PORT" in done.stderr and "Traceback" not in done.stderr
