"""The dyno process core with real processes: environment, profile scripts, output as lines,
the stop sequence, and nothing of the process group left behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from dynod.proc.dyno import DYNO_PATH, DynoSpec, dyno_env, run_dyno
from dynod.proc.reaper import group_alive
from tests.helpers import PY, Collector, pid_alive, wait_until


def spec(tmp_path: Path, command: str, **kw: object) -> DynoSpec:
    env = dyno_env({"GREETING": "hi"}, name="web.1", port=5123, home=tmp_path)
    return DynoSpec("web.1", command, tmp_path, env, **kw)  # type: ignore[arg-type]


def run(tmp_path: Path, command: str, **kw: object) -> tuple[int, Collector]:
    sink = Collector()

    async def main() -> int:
        with trio.fail_after(20):
            return await run_dyno(spec(tmp_path, command, **kw), sink)

    return trio.run(main), sink


def test_environment_is_built_from_nothing(tmp_path: Path) -> None:
    os.environ["DYNOD_TEST_LEAK"] = "leaked"
    try:
        status, sink = run(tmp_path, "env")
    finally:
        del os.environ["DYNOD_TEST_LEAK"]
    assert status == 0
    env = dict(line.split("=", 1) for line in sink.texts(source="app") if "=" in line)
    assert "DYNOD_TEST_LEAK" not in env
    assert env["GREETING"] == "hi"
    assert env["PORT"] == "5123"
    assert env["DYNO"] == "web.1"
    assert env["HOME"] == str(tmp_path) == env["PWD"]
    assert env["PATH"] == DYNO_PATH


def test_profile_scripts_are_sourced_in_order_then_the_command_is_execed(tmp_path: Path) -> None:
    (tmp_path / ".profile.d").mkdir()
    (tmp_path / ".profile.d" / "b.sh").write_text('export ORDER="$ORDER b"\n')
    (tmp_path / ".profile.d" / "a.sh").write_text("export ORDER=a\n")
    (tmp_path / ".profile").write_text('export ORDER="$ORDER profile"\n')
    status, sink = run(
        tmp_path, f"{PY} -c \"import os; print(os.environ['ORDER'], os.getpid() == os.getpgid(0))\""
    )
    assert status == 0
    # the command replaced bash: it leads the dyno's process group itself
    assert sink.texts(source="app") == ["a b profile True"]


def test_compound_commands_and_shell_syntax_work(tmp_path: Path) -> None:
    status, sink = run(tmp_path, 'X=${GREETING:-none} && echo "$X $PORT" && exit 3')
    assert status == 3
    assert sink.texts(source="app") == ["hi 5123"]
    assert sink.texts(source="heroku")[-1] == "Process exited with status 3"


def test_stdout_and_stderr_are_lines_and_a_partial_last_line_is_kept(tmp_path: Path) -> None:
    status, sink = run(tmp_path, "echo out; echo err >&2; printf 'no newline'")
    assert sorted(sink.texts(source="app")) == ["err", "no newline", "out"]


def test_long_lines_are_split(tmp_path: Path) -> None:
    status, sink = run(tmp_path, f"{PY} -c \"print('x' * 25000)\"")
    assert [len(t) for t in sink.texts(source="app")] == [10_000, 10_000, 5_000]


def test_tty_mode_gives_a_terminal(tmp_path: Path) -> None:
    status, sink = run(
        tmp_path, f'{PY} -c "import sys; print(sys.stdout.isatty(), sys.stdin.isatty())"', tty=True
    )
    assert status == 0
    assert sink.texts(source="app") == ["True True"]


def test_without_tty_stdin_is_empty_and_not_a_terminal(tmp_path: Path) -> None:
    status, sink = run(tmp_path, "cat; echo done; [ -t 1 ] || echo notty")
    assert sink.texts(source="app") == ["done", "notty"]


def stop_after(
    tmp_path: Path, command: str, ready: str, stop_timeout: float
) -> tuple[Collector, float]:
    sink = Collector()

    async def main() -> float:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    run_dyno, spec(tmp_path, command, stop_timeout=stop_timeout), sink
                )
                await sink.wait_text(ready)
                began = trio.current_time()
                nursery.cancel_scope.cancel()
            return trio.current_time() - began

    return sink, trio.run(main)


def test_stop_sends_sigterm_to_the_group(tmp_path: Path) -> None:
    sink, took = stop_after(tmp_path, "echo ready; exec sleep 30", "ready", 5)
    assert sink.texts(source="heroku")[-2:] == [
        "Stopping all processes with SIGTERM",
        "Process exited with status 143",
    ]
    assert took < 4


def test_a_process_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    ignorer = (
        f'{PY} -c "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
        "print('ready', flush=True); time.sleep(60)\""
    )
    sink, took = stop_after(tmp_path, ignorer, "ready", 0.5)
    heroku = sink.texts(source="heroku")
    assert (
        "Error R12 (Exit timeout) -> Process failed to exit within 0.5 seconds of SIGTERM" in heroku
    )
    assert heroku[-1] == "Process exited with status 137"
    assert 0.5 <= took < 4


def test_a_grandchild_ignoring_sigterm_is_gone_after_the_stop(tmp_path: Path) -> None:
    grandchild = (
        f'{PY} -c "import os, signal, time; signal.signal(signal.SIGTERM, '
        "signal.SIG_IGN); print('gc', os.getpid(), flush=True); time.sleep(60)\""
    )
    sink, _ = stop_after(tmp_path, f"{grandchild} & wait", "gc ", 0.5)
    pid = int(next(t for t in sink.texts(source="app") if t.startswith("gc ")).split()[1])
    assert wait_until(lambda: not pid_alive(pid), 3)


def test_leftovers_of_a_finished_dyno_are_killed_and_reported(tmp_path: Path) -> None:
    daemon = (
        f"{PY} -c \"import os, time; print('daemon', os.getpid(), flush=True); time.sleep(60)\""
    )
    status, sink = run(tmp_path, f"({daemon} &) ; sleep 0.3; echo bye")
    assert status == 0
    pid = int(next(t for t in sink.texts(source="app") if t.startswith("daemon")).split()[1])
    assert wait_until(lambda: not pid_alive(pid), 3)
    assert any(t.startswith("Killed 1 processes left behind") for t in sink.texts(source="heroku"))


def test_hurry_cuts_the_grace_short(tmp_path: Path) -> None:
    sink = Collector()
    hurry = trio.Event()
    ignorer = (
        f'{PY} -c "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
        "print('ready', flush=True); time.sleep(60)\""
    )

    async def main() -> float:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                process = await nursery.start(
                    lambda task_status: run_dyno(
                        spec(tmp_path, ignorer, stop_timeout=30),
                        sink,
                        hurry=hurry,
                        task_status=task_status,
                    )
                )
                await sink.wait_text("ready")
                began = trio.current_time()
                nursery.cancel_scope.cancel()
                hurry.set()
            assert not group_alive(process.pgid)
            return trio.current_time() - began

    assert trio.run(main) < 5
    heroku = sink.texts(source="heroku")
    assert heroku[-2:] == ["Stopping all processes with SIGKILL", "Process exited with status 137"]
    assert not any("R12" in text for text in heroku)  # no timeout passed: nothing to report


def test_chatty_dynos_lose_and_tear_nothing(tmp_path: Path) -> None:
    """50,000 lines from 4 concurrent processes, written in odd-sized chunks."""
    sink = Collector()
    writer = (
        f'{PY} -c "import os, sys; n = sys.argv[1]; '
        "data = ''.join(f'{n}-{i:05d}-' + 'p' * (i % 97) + '\\n' for i in range(12500)).encode(); "
        '[os.write(1, data[k:k + 4093]) for k in range(0, len(data), 4093)]"'
    )

    async def main() -> None:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for n in range(4):
                    s = DynoSpec(
                        f"chatty.{n}",
                        f"{writer} {n}",
                        tmp_path,
                        dyno_env({}, name=f"chatty.{n}", port=None, home=tmp_path),
                    )
                    nursery.start_soon(run_dyno, s, sink)

    trio.run(main)
    for n in range(4):
        got = sink.texts(dyno=f"chatty.{n}", source="app")
        assert got == [f"{n}-{i:05d}-" + "p" * (i % 97) for i in range(12500)]


def test_exit_by_signal_is_reported_as_128_plus_n(tmp_path: Path) -> None:
    status, sink = run(tmp_path, "kill -USR1 $$")
    assert status == 128 + signal.SIGUSR1


def test_a_root_dynod_runs_dynos_as_the_dyno_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can switch to the dyno user")
    tmp_path.chmod(0o755)
    status, sink = run(
        tmp_path,
        "id -u; id -G; cat /root/.profile >/dev/null 2>&1 || echo denied",
        owner=(65534, 65534),
    )
    assert status == 0
    assert sink.texts(source="app") == ["65534", "65534", "denied"]
