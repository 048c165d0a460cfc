"""`dynod serve` as a user runs it: a real process on port 0, found through its `api-url` and
`api-token` files, deploying over HTTP, and stopping cleanly (dynos included) on a signal."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynod.core.procfile import load_procfile
from dynod.slugs.pack import pack_slug
from tests.helpers import ROOT, dynod, pid_alive, spawn_dynod, wait_until

SAMPLE = ROOT / "fixtures" / "sample"


def call(
    base: str,
    token: str | None,
    method: str,
    path: str,
    body: Any = None,
    data: bytes | None = None,
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    url = path if path.startswith("http") else base + path
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=20) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def start(
    data_dir: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, str]:
    (data_dir / "api-url").unlink(missing_ok=True)
    process = spawn_dynod(
        "serve",
        "--data",
        str(data_dir),
        "--api",
        "127.0.0.1:0",
        "--router",
        "127.0.0.1:0",
        env=env,
    )
    assert wait_until(lambda: (data_dir / "api-url").exists() or process.poll() is not None, 30)
    assert process.poll() is None, process.communicate()
    return (
        process,
        (data_dir / "api-url").read_text().strip(),
        (data_dir / "api-token").read_text().strip(),
    )


def scratch_of(data_dir: Path) -> Path:
    """The running dynod's scratch directory, as its data directory records it."""
    return Path((data_dir / "scratch.path").read_text().strip())


def dyno_pids(data_dir: Path) -> list[int]:
    """Processes running inside one of the dyno directories of the dynod serving data_dir."""
    scratch = f"{scratch_of(data_dir)}/"
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.readlink(f"/proc/{entry}/cwd").startswith(scratch):
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def stop(process: subprocess.Popen[str], signum: int) -> str:
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out


def deploy(tmp_path: Path, base: str, token: str, procfile: str | None = None) -> None:
    """The sample app as a slug through the API; returns once web.1 is up."""
    app_dir = tmp_path / "sample"
    shutil.copytree(SAMPLE, app_dir)
    if procfile is not None:
        (app_dir / "Procfile").write_text(procfile)
    tarball = pack_slug(app_dir, tmp_path / "sample.tgz").path.read_bytes()
    types = {t.name: t.command for t in load_procfile(app_dir / "Procfile").types}
    call(base, token, "POST", "/apps", {"name": "served"})
    slug = call(base, token, "POST", "/apps/served/slugs", {"process_types": types})
    call(base, None, "PUT", slug["blob"]["url"], data=tarball)
    call(base, token, "POST", "/apps/served/releases", {"slug": slug["id"]})
    assert wait_until(
        lambda: (
            [(d["name"], d["state"]) for d in call(base, token, "GET", "/apps/served/dynos")]
            == [("web.1", "up")]
        ),
        60,
    )


def api_refuses(base: str) -> bool:
    try:
        call(base, None, "GET", "/account")
    except urllib.error.HTTPError:
        return False
    except OSError:
        return True
    return False


def test_serve_runs_the_api_deploys_and_stops_its_dynos_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    process, base, token = start(data_dir)
    try:
        assert (
            data_dir.stat().st_mode & 0o777,
            (data_dir / "api-token").stat().st_mode & 0o777,
        ) == (0o700, 0o600)
        try:
            call(base, "wrong", "GET", "/apps")
            raise AssertionError("a wrong token was accepted")
        except urllib.error.HTTPError as err:
            assert err.code == 401
        deploy(tmp_path, base, token)
        pids = dyno_pids(data_dir)
        assert pids
        # A second dynod on the same data directory refuses, leaving the first's dynos alone.
        second = dynod(
            "serve", "--data", str(data_dir), "--api", "127.0.0.1:0", "--router", "127.0.0.1:0"
        )
        assert second.returncode == 1 and second.stderr == (
            f"dynod: another dynod serve (pid {process.pid}) is using {data_dir}: stop it first, "
            "or give this one another --data DIR\n"
        )
        assert (
            all(pid_alive(pid) for pid in pids)
            and (data_dir / "api-url").read_text().strip() == base
        )
    except BaseException:
        process.kill()
        raise
    out = stop(process, signal.SIGTERM)
    assert out.startswith(f"dynod serve: API on {base}, router on http://127.0.0.1:")
    assert out.endswith(f", data in {data_dir}\n") and len(out.splitlines()) == 1
    assert not any(pid_alive(pid) for pid in pids)

    # A second start keeps the token, brings the app back, and stops on Ctrl-C too.
    again, base_again, token_again = start(data_dir)
    try:
        assert token_again == token and base_again != base
        assert wait_until(
            lambda: (
                [d["state"] for d in call(base_again, token, "GET", "/apps/served/dynos")] == ["up"]
            ),
            60,
        )
        pids = dyno_pids(data_dir)
    except BaseException:
        again.kill()
        raise
    stop(again, signal.SIGINT)
    assert not any(pid_alive(pid) for pid in pids)


def test_a_second_signal_hurries_dynos_that_ignore_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "dynod.toml").write_text("[dynos]\nstop_timeout = 120\n")
    process, base, token = start(data_dir)
    try:
        deploy(tmp_path, base, token, "web: trap '' TERM; exec python3 web.py\n")
        pids = dyno_pids(data_dir)
        process.send_signal(signal.SIGTERM)
        assert wait_until(lambda: api_refuses(base), 20)  # stopping, the dyno still in its grace
        assert all(pid_alive(pid) for pid in pids)
    except BaseException:
        process.kill()
        raise
    stop(process, signal.SIGTERM)  # long before the 120 s grace would end
    assert not any(pid_alive(pid) for pid in pids)


@pytest.fixture
def own_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """TMPDIR for the dynods of one test: a /tmp of their own (1777, in /tmp: every user
    passes through to it)."""
    path = Path(tempfile.mkdtemp(prefix="dynod-test-tmp-"))
    path.chmod(0o1777)
    monkeypatch.setenv("TMPDIR", str(path))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_serve_refuses_bad_addresses_with_one_line(tmp_path: Path, own_tmp: Path) -> None:
    usage = dynod("serve", "--data", str(tmp_path / "data"), "--api", "nowhere")
    assert (
        usage.returncode == 2
        and "--api nowhere" in usage.stderr
        and len(usage.stderr.splitlines()) == 1
    )

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = dynod("serve", "--data", str(tmp_path / "data"), "--api", f"127.0.0.1:{port}")
    assert busy.returncode == 1 and len(busy.stderr.splitlines()) == 1, busy.stderr
    assert "cannot listen on 127.0.0.1" in busy.stderr and "for the API" in busy.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = dynod(
            "serve",
            "--data",
            str(tmp_path / "data"),
            "--api",
            "127.0.0.1:0",
            "--router",
            f"127.0.0.1:{port}",
        )
    assert busy.returncode == 1 and len(busy.stderr.splitlines()) == 1, busy.stderr
    assert "for the router" in busy.stderr and "--router HOST:PORT" in busy.stderr
    # A start that failed leaves no scratch directory behind (a root dynod's is in TMPDIR).
    assert not (tmp_path / "data" / "scratch.path").exists()
    assert list((tmp_path / "data" / "scratch").glob("*")) == []
    assert list(own_tmp.iterdir()) == []


NOBODY = pwd.getpwnam("nobody")


def _cwd(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def test_planted_scratch_directories_are_never_used(tmp_path: Path) -> None:
    """The attack of issue 11: another user pre-creates `dynod-dynos-<pid>` (0777, or a symlink
    to a directory of its own) for the next pids in the shared temporary directory; dynod must
    make its scratch fresh and take none of them (README, "`dynod serve`")."""
    shared = Path(tempfile.mkdtemp(prefix="dynod-test-tmp-"))  # a /tmp of this test's own
    shared.chmod(0o1777)
    attacker = shared / "attacker"
    attacker.mkdir(mode=0o777)
    attacker.chmod(0o777)
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    window = range(last + 1, last + 3001)
    for pid in window:
        planted = shared / f"dynod-dynos-{pid}"
        if pid % 2:
            planted.mkdir()
            planted.chmod(0o777)
            if os.geteuid() == 0:
                os.chown(planted, NOBODY.pw_uid, NOBODY.pw_gid)
        else:
            planted.symlink_to(attacker)
    try:
        data_dir = tmp_path / "data"
        process, base, token = start(data_dir, {**os.environ, "TMPDIR": str(shared)})
        try:
            assert process.pid in window, "pids moved too fast: nothing was planted for dynod"
            deploy(tmp_path, base, token)
            planted_homes = [  # what the old dynod ran its dynos in: the attacker's directory
                entry
                for entry in os.listdir("/proc")
                if entry.isdigit() and _cwd(entry).startswith(f"{shared}/dynod-dynos-")
            ]
            assert planted_homes == []
            scratch = scratch_of(data_dir)
            root = os.geteuid() == 0  # dynos then run as uids of their own
            assert scratch.parent == (shared if root else data_dir / "scratch")
            info = scratch.lstat()
            assert (stat.S_IMODE(info.st_mode), info.st_uid) == (
                (0o711 if root else 0o700),
                os.geteuid(),
            )
            pids = dyno_pids(data_dir)
            assert pids
            for pid in pids:
                home = Path(os.readlink(f"/proc/{pid}/cwd"))
                assert home.parent == scratch, home
                dyno = home.lstat()
                assert stat.S_IMODE(dyno.st_mode) == 0o700 and (dyno.st_uid != os.geteuid()) == root
        except BaseException:
            process.kill()
            raise
        stop(process, signal.SIGTERM)
        assert not scratch.exists() and not (data_dir / "scratch.path").exists()
        assert not any(attacker.iterdir())
        assert not any(any(p.iterdir()) for p in shared.glob("dynod-dynos-*") if p.is_dir())
    finally:
        shutil.rmtree(shared)


def test_serve_refuses_a_data_directory_others_could_change(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    refused = dynod("serve", "--data", str(loose), "--api", "127.0.0.1:0")
    assert refused.returncode == 1 and refused.stderr == (
        f"dynod: data directory {loose} is mode 0755, not 0700: chmod 700 {loose}\n"
    )
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # not sticky: anyone could rename the data directory away
    (shared / "data").mkdir(mode=0o700)
    refused = dynod("serve", "--data", str(shared / "data"), "--api", "127.0.0.1:0")
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert (
        f"data directory {shared / 'data'} is unsafe: {shared} is writable by other users"
        in refused.stderr
    )
    assert not (shared / "data" / "api-token").exists()  # refused before anything was made


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_serve_refuses_a_data_directory_of_another_user(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY.pw_uid, NOBODY.pw_gid)
    refused = dynod("serve", "--data", str(theirs), "--api", "127.0.0.1:0")
    assert refused.returncode == 1 and refused.stderr == (
        f"dynod: data directory {theirs} is owned by uid {NOBODY.pw_uid}, not by dynod's uid 0: "
        "give --data a directory of your own\n"
    )
