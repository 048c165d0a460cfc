"""Builds: source trees (directories, tarballs, .slugignore, source ids) and Heroku's classic
buildpack API run for real — built-in python, nodejs and procfile buildpacks, the hello
fixture buildpack, failures, time limits and cancellation."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
import trio

from dynod.builds.buildpacks import parse_release_yaml
from dynod.builds.handover import hand_over, take_back
from dynod.builds.pipeline import fetch_source, lent_cache
from dynod.builds.runner import BuildFailed, BuildResult, run_build
from dynod.builds.source import apply_slugignore, prepare_source, source_id
from dynod.core.names import STACK
from dynod.errors import DynodError
from dynod.proc.reaper import Reaper
from dynod.slugs.pack import pack_slug
from dynod.slugs.unpack import unpack_slug
from tests.helpers import ROOT, cgroups_used, none_running, pid_alive, wait_until

FIXTURES = ROOT / "fixtures"
PYTHON_APP = FIXTURES / "python-app"
NODE_APP = FIXTURES / "node-app"
HELLO = FIXTURES / "buildpacks" / "hello"
DYNO_PATH = "/usr/local/bin:/usr/bin:/bin"


def build(
    app: Path, cache: Path, timeout: float = 120, **kwargs: Any
) -> tuple[BuildResult, list[str]]:
    lines: list[str] = []

    async def main() -> BuildResult:
        with trio.fail_after(timeout):
            return await run_build(
                app,
                cache_dir=cache,
                config_vars=kwargs.pop("config_vars", {}),
                output=lines.append,
                **kwargs,
            )

    return trio.run(main), lines


def failed_build(app: Path, cache: Path, **kwargs: Any) -> tuple[BuildFailed, list[str]]:
    lines: list[str] = []

    async def main() -> None:
        with trio.fail_after(120):
            await run_build(
                app,
                cache_dir=cache,
                config_vars=kwargs.pop("config_vars", {}),
                output=lines.append,
                **kwargs,
            )

    with pytest.raises(BuildFailed) as caught:
        trio.run(main)
    return caught.value, lines


def write_app(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def write_buildpack(root: Path, compile_script: str, detect: str = "echo Test") -> Path:
    (root / "bin").mkdir(parents=True)
    for name, body in {"detect": detect, "compile": compile_script}.items():
        script = root / "bin" / name
        script.write_text(f"#!/usr/bin/env bash\nset -euo pipefail\n{body}\n")
        script.chmod(0o755)
    return root


def make_wheel(directory: Path) -> Path:
    """A pure-Python wheel with a console script: installs offline, with no build backend."""
    info = "hello_tool-0.1.dist-info"
    files = {
        "hello_tool/__init__.py": "def main():\n    print('hello from the tool')\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: hello-tool\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\nhello-tool = hello_tool:main\n",
    }
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "hello_tool-0.1-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
            digest = hashlib.sha256(text.encode()).digest()
            b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            record.append(f"{name},sha256={b64},{len(text)}")
        record.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def in_dyno(home: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` the way a dyno does: HOME and cwd the app, PATH Heroku's, .profile.d first."""
    return subprocess.run(
        ["bash", "-c", f'for f in .profile.d/*.sh; do . "$f"; done; {command}'],
        cwd=home,
        env={"HOME": str(home), "PATH": DYNO_PATH, "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---------------------------------------------------------------------------------------------
# Sources


def test_directory_source_is_copied_without_git_and_slugignore_applied(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"Procfile": "web: x\n", ".git/HEAD": "ref\n"})
    (app / "sub" / ".git").mkdir(parents=True)
    build_dir = prepare_source(PYTHON_APP, tmp_path / "build")
    assert sorted(p.name for p in build_dir.iterdir()) == [
        ".slugignore",
        "Procfile",
        "app.py",
        "requirements.txt",
    ]  # docs/ went, as the fixture's .slugignore says
    copied = prepare_source(app, tmp_path / "build2")
    assert sorted(p.relative_to(copied).as_posix() for p in copied.rglob("*")) == [
        "Procfile",
        "sub",
    ]
    with pytest.raises(DynodError, match="not an empty directory"):
        prepare_source(app, copied)
    with pytest.raises(DynodError, match="tarball"):
        prepare_source(app / "Procfile", tmp_path / "build3")
    os.mkfifo(app / "pipe")
    with pytest.raises(DynodError, match="pipe is not a regular file"):
        prepare_source(app, tmp_path / "build4")
    assert not (tmp_path / "build4").exists()


def test_slugignore_patterns_delete_only_inside_the_build_dir(tmp_path: Path) -> None:
    outside = write_app(tmp_path / "outside", {"keep.log": "x", "docs/keep": "x"})
    app = write_app(
        tmp_path / "app",
        {
            ".slugignore": (
                "# comment\n\n*.log\n/tmp/\ndocs/\nsecret/key.pem\n**/cache\n../outside/keep.log\n"
                "linked\n"
            ),
            "app.log": "x",
            "lib/deep/trace.log": "x",
            "tmp/a": "x",
            "lib/tmp/kept": "x",
            "docs/a": "x",
            "lib/docs/b": "x",
            "docs.txt": "kept",
            "secret/key.pem": "x",
            "lib/secret/key.pem": "kept",
            "a/b/cache/c": "x",
            "Procfile": "web: x\n",
        },
    )
    (app / "linked").symlink_to(outside / "docs")
    deleted = apply_slugignore(app)
    remaining = sorted(p.relative_to(app).as_posix() for p in app.rglob("*") if not p.is_dir())
    assert remaining == [
        ".slugignore",
        "Procfile",
        "docs.txt",
        "lib/secret/key.pem",
        "lib/tmp/kept",
    ]
    assert "linked" in deleted and (outside / "docs" / "keep").exists()
    assert (outside / "keep.log").exists()


def make_tarball(path: Path, members: dict[str, str], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            data = text.encode()
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("name", "mode", "prefix"),
    [
        ("root.tar.gz", "w:gz", "./"),
        ("bare.tar", "w", ""),
        ("top.tgz", "w:gz", "myapp-1.0/"),
        ("top-dot.tar.gz", "w:gz", "./app/"),
    ],
)
def test_tarball_source_at_root_or_under_one_directory(
    tmp_path: Path, name: str, mode: str, prefix: str
) -> None:
    members = {"Procfile": "web: x\n", "lib/a.py": "a", "lib/b.txt": "b", ".slugignore": "*.py\n"}
    tarball = make_tarball(tmp_path / name, {prefix + k: v for k, v in members.items()}, mode)
    build_dir = prepare_source(tarball, tmp_path / "build")
    files = sorted(p.relative_to(build_dir).as_posix() for p in build_dir.rglob("*"))
    assert files == [".slugignore", "Procfile", "lib", "lib/b.txt"]
    assert (build_dir / "Procfile").read_text() == "web: x\n"


def hostile(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize(
    ("member", "kind", "linkname", "rule"),
    [
        ("/etc/evil", tarfile.REGTYPE, "", "absolute path"),
        ("app/../../evil", tarfile.REGTYPE, "", r"contains '\.\.'"),
        ("app/link", tarfile.SYMTYPE, "../../etc", "symlink pointing outside"),
        ("app/abs", tarfile.SYMTYPE, "/etc/passwd", "absolute path"),
        ("app/hard", tarfile.LNKTYPE, "/etc/passwd", "hard link"),
        ("app/dev", tarfile.CHRTYPE, "", "character device"),
        ("app/fifo", tarfile.FIFOTYPE, "", "fifo"),
    ],
)
def test_hostile_source_tarball_is_refused(
    tmp_path: Path, member: str, kind: bytes, linkname: str, rule: str
) -> None:
    tarball = tmp_path / "source.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        make_member = tarfile.TarInfo("app/Procfile")
        make_member.size = 0
        tar.addfile(make_member, io.BytesIO(b""))
        hostile(tar, member, kind, linkname)
    with pytest.raises(DynodError, match=rf"unsafe source tarball source.tgz: .*{rule}") as err:
        prepare_source(tarball, tmp_path / "build")
    assert f"member {member!r}" in str(err.value)  # named as in the tarball
    assert not (tmp_path / "build").exists()


def test_a_file_that_is_not_a_tarball_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(DynodError, match="not a tarball"):
        prepare_source(junk, tmp_path / "build")


def test_source_id_is_the_git_commit_or_a_digest(tmp_path: Path) -> None:
    plain = write_app(tmp_path / "plain", {"Procfile": "web: x\n"})
    first = source_id(plain)
    assert len(first) == 8 and int(first, 16) >= 0
    assert source_id(plain) == first
    (plain / "Procfile").write_text("web: y\n")
    assert source_id(plain) != first

    repo = write_app(tmp_path / "repo", {"Procfile": "web: x\n", "sub/app.py": "x"})
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    assert len(source_id(repo)) == 8  # a work tree with no commit yet: the digest
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert source_id(repo) == head and len(head) == 40
    assert len(source_id(repo / "sub")) == 8  # inside a repository, not a work tree of its own

    tarball = make_tarball(tmp_path / "app.tgz", {"Procfile": "web: x\n"})
    assert source_id(tarball) == hashlib.sha256(tarball.read_bytes()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------
# Buildpacks


def test_release_yaml_subset() -> None:
    text = (
        "---\naddons: []\nconfig_vars:\n  A: b\ndefault_process_types:\n"
        "  web: bundle exec puma -p $PORT # comment\n  worker: 'say ''hi'''\n"
        '  clock: "echo \\"tick\\""\n'
    )
    assert parse_release_yaml(text) == {
        "web": "bundle exec puma -p $PORT",
        "worker": "say 'hi'",
        "clock": 'echo "tick"',
    }
    assert parse_release_yaml("--- {}\n") == {}
    assert parse_release_yaml("default_process_types: {}\n") == {}
    for bad in (
        "default_process_types: {web: x}\n",
        "default_process_types:\n  web: |\n",
        "default_process_types:\n  web: a\n    b: c\n",
        "default_process_types:\n  web\n",
    ):
        with pytest.raises(ValueError, match="line"):
            parse_release_yaml(bad)


def test_detection_order_python_then_nodejs_then_procfile(tmp_path: Path) -> None:
    everything = write_app(
        tmp_path / "all",
        {"requirements.txt": "", "package.json": "{}", "Procfile": "web: python app.py\n"},
    )
    result, lines = build(everything, tmp_path / "cache1")
    assert result.buildpacks == ("python",) and result.stack == STACK == "heroku-24"
    assert "-----> Python app detected" in lines

    procfile_only = write_app(tmp_path / "procfile", {"Procfile": "worker: ./run\n"})
    result, lines = build(procfile_only, tmp_path / "cache2")
    assert result.buildpacks == ("procfile",) and result.process_types == {"worker": "./run"}
    assert "       Procfile declares types     -> worker" in lines

    nothing = write_app(tmp_path / "nothing", {"README": "hi"})
    err, lines = failed_build(nothing, tmp_path / "cache3")
    assert str(err).startswith("No default language could be detected for this app")


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm")
def test_nodejs_fixture_builds_offline_with_npm_start(tmp_path: Path) -> None:
    app = prepare_source(NODE_APP, tmp_path / "build")
    result, lines = build(app, tmp_path / "cache")
    assert result.buildpacks == ("nodejs",)
    assert result.process_types == {"web": "npm start"}  # no Procfile: the buildpack's default
    assert "-----> Node.js app detected" in lines
    assert (tmp_path / "cache" / "npm").is_dir()
    done = in_dyno(app, 'echo "$PATH"; node -e "console.log(process.env.NODE_ENV)"')
    assert done.stdout.split("\n")[:2] == [f"{app}/node_modules/.bin:{DYNO_PATH}", "production"]


def test_python_app_builds_and_its_venv_survives_relocation(tmp_path: Path) -> None:
    # A long path with a space: pip writes its /bin/sh trampoline instead of a #! line there.
    long_dir = tmp_path / ("x" * 100) / "build dir"
    app = prepare_source(PYTHON_APP, long_dir)
    wheel = make_wheel(app / "wheels")
    (app / "requirements.txt").write_text(f"./wheels/{wheel.name}\n")
    result, lines = build(app, tmp_path / "cache", source_version="abc123")
    assert result.buildpacks == ("python",)
    assert result.process_types["web"] == "python app.py" and "release" in result.process_types
    assert any(line.startswith("-----> Installing dependencies") for line in lines)
    assert not (app / "docs").exists()

    # As a deploy does it: packed into a slug, unpacked elsewhere, build dir and cache gone.
    pack_slug(app, tmp_path / "slug.tgz")
    shutil.rmtree(long_dir)
    shutil.rmtree(tmp_path / "cache")
    moved = tmp_path / "dyno"
    unpack_slug(tmp_path / "slug.tgz", moved)
    python = moved / ".heroku" / "python" / "bin" / "python"
    direct = subprocess.run(
        [python, "-c", "import sys, hello_tool; print(sys.prefix)"],
        capture_output=True,
        text=True,
        env={"PATH": DYNO_PATH},
        timeout=60,
    )
    assert direct.stdout.strip() == str(moved / ".heroku" / "python"), direct.stderr
    done = in_dyno(moved, 'hello-tool; echo "$PYTHONUNBUFFERED $VIRTUAL_ENV"; command -v python')
    assert done.stdout.split("\n")[:3] == [
        "hello from the tool",
        f"1 {moved}/.heroku/python",
        f"{moved}/.heroku/python/bin/python",
    ], done.stderr
    release = in_dyno(moved, result.process_types["release"])
    assert release.stdout.strip() == f"release phase on {moved}/.heroku/python", release.stderr
    old = str(long_dir).encode()
    venv = moved / ".heroku" / "python"
    for path in [*(venv / "bin").iterdir(), *venv.glob("lib/*/site-packages/*.pth")]:
        assert path.is_symlink() or old not in path.read_bytes(), path


def test_cached_rebuild_reuses_the_venv(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = prepare_source(PYTHON_APP, tmp_path / "one")
    make_wheel(first / "wheels")
    (first / "requirements.txt").write_text("./wheels/hello_tool-0.1-py3-none-any.whl\n")
    _, lines = build(first, cache)
    assert any("Installing dependencies" in line for line in lines)
    (cache / "python" / "venv" / "from-the-cache").write_text("yes")

    second = tmp_path / "two"
    shutil.copytree(first, second, ignore=shutil.ignore_patterns(".heroku", ".profile.d"))
    _, lines = build(second, cache)
    assert any(line.startswith("-----> Using the cached virtual environment") for line in lines)
    assert not any("Installing dependencies" in line for line in lines)
    assert (second / ".heroku" / "python" / "from-the-cache").exists()
    assert in_dyno(second, "hello-tool").stdout == "hello from the tool\n"

    (second / "requirements.txt").write_text("# nothing any more\n")
    shutil.rmtree(second / ".heroku")
    _, lines = build(second, cache)
    assert "       requirements.txt names no packages: nothing to install" in lines
    assert not (second / ".heroku" / "python" / "from-the-cache").exists()


def test_custom_buildpacks_get_the_classic_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYNOD_SECRET_FOR_TEST", "must not leak")
    app = write_app(tmp_path / "app", {"hello.txt": "hi", "Procfile": "web: ./serve\n"})
    cache = tmp_path / "cache"
    result, lines = build(
        app,
        cache,
        buildpacks=[str(HELLO), str(HELLO)],
        source_version="0123abcd",
        config_vars={"GREETING": "hello there", "OTHER": "x"},
    )
    assert result.buildpacks == (str(HELLO), str(HELLO))
    # The Procfile's web wins over the release's default; worker comes from bin/release.
    assert result.process_types == {"web": "./serve", "worker": "echo 'quoted' worker"}
    assert lines[:4] == [
        "-----> Building on the Heroku-24 stack",
        "-----> Using buildpacks:",
        f"       1. {HELLO}",
        f"       2. {HELLO}",
    ]
    assert "-----> Hello app detected" in lines
    assert "       Default types for buildpack -> web, worker" in lines
    envs = [
        dict(
            line.split("=", 1)
            for line in (app / f"hello-env.{n}").read_text().splitlines()
            if "=" in line
        )
        for n in (1, 2)
    ]
    for env in envs:
        assert env["STACK"] == "heroku-24" and env["SOURCE_VERSION"] == "0123abcd"
        assert "DYNOD_SECRET_FOR_TEST" not in env and "GREETING" not in env
    assert "HELLO_EXPORTED" not in envs[0]
    assert envs[1]["HELLO_EXPORTED"] == "from run 1"  # the first one's export, sourced
    assert (app / "hello-greeting.1").read_text() == "hello there"  # from ENV_DIR
    assert (cache / "hello-builds").read_text() == "2\n"
    build(app, cache, buildpacks=[str(HELLO)])
    assert (cache / "hello-builds").read_text() == "3\n"  # CACHE_DIR persists between builds

    not_hello = write_app(tmp_path / "other", {"Procfile": "web: x\n"})
    err, lines = failed_build(not_hello, cache, buildpacks=[str(HELLO)])
    assert str(err).startswith("detect of hello failed with status 1")
    with pytest.raises(DynodError, match="buildpack nope not found"):
        build(not_hello, cache, buildpacks=["nope"])
    no_shebang = write_buildpack(tmp_path / "no-shebang", "true")
    (no_shebang / "bin" / "detect").write_text("echo Test\n")
    err, lines = failed_build(not_hello, cache, buildpacks=[str(no_shebang)])
    assert str(err) == "detect of no-shebang cannot run (Exec format error): check its #! line"


def test_dot_buildpacks_file_names_the_buildpacks(tmp_path: Path) -> None:
    app = write_app(
        tmp_path / "app",
        {
            "hello.txt": "hi",
            "Procfile": "web: ./serve\n",
            ".buildpacks": "# local first\nvendor/hello\n\nheroku/procfile\n",
        },
    )
    shutil.copytree(HELLO, app / "vendor" / "hello")
    result, lines = build(app, tmp_path / "cache")
    assert result.buildpacks == (str((app / "vendor" / "hello").resolve()), "procfile")
    assert "-----> No dependencies to install" in lines
    # The last buildpack (procfile) has no bin/release: no default types.
    assert result.process_types == {"web": "./serve"}
    result, _ = build(app, tmp_path / "cache", buildpacks=["procfile"])
    assert result.buildpacks == ("procfile",)  # named explicitly: .buildpacks is not read


def test_failing_compile_names_the_step_and_streams_errors(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"hello.txt": "hi"})
    err, lines = failed_build(
        app, tmp_path / "cache", buildpacks=[str(HELLO)], config_vars={"HELLO_FAIL": "1"}
    )
    assert str(err) == "compile of hello failed with status 3"
    assert lines[-2:] == ["-----> Saying hello", " !     HELLO_FAIL is set: failing as asked"]
    # The step's failure is the exception's to tell: the caller shows it once.
    assert not any(str(err) in line for line in lines)

    bad_procfile = write_app(tmp_path / "bad", {"Procfile": "web python\n"})
    err, lines = failed_build(bad_procfile, tmp_path / "cache")
    assert str(err).startswith("Procfile line 1: expected `type: command`")


def test_leftover_processes_are_killed_and_time_limit_applies(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    daemon = write_buildpack(
        tmp_path / "daemon", f'sleep 300 & echo $! >> "{pidfile}"; echo "-----> left a sleeper"'
    )
    app = write_app(tmp_path / "app", {"Procfile": "web: x\n"})
    _, lines = build(app, tmp_path / "cache", buildpacks=[str(daemon)], timeout=30)
    assert "-----> left a sleeper" in lines
    assert wait_until(lambda: not pid_alive(int(pidfile.read_text())), timeout=10)

    slow = write_buildpack(
        tmp_path / "slow", f'echo $$ >> "{pidfile}"; echo "-----> sleeping"; sleep 300'
    )
    pidfile.unlink()
    err, lines = failed_build(app, tmp_path / "cache", buildpacks=[str(slow)], timeout=3)
    assert str(err).startswith("build timed out after 3 seconds")
    assert "-----> sleeping" in lines
    assert not pid_alive(int(pidfile.read_text()))


def test_cancelling_a_build_kills_the_buildpack_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    stubborn = write_buildpack(
        tmp_path / "stubborn",
        f'trap "" TERM; sleep 300 & echo $! >> "{pidfile}"; echo "-----> started"; wait',
    )
    app = write_app(tmp_path / "app", {"Procfile": "web: x\n"})
    lines: list[str] = []

    async def main() -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: run_build(
                        app,
                        cache_dir=tmp_path / "cache",
                        config_vars={},
                        buildpacks=[str(stubborn)],
                        output=lines.append,
                    )
                )
                while "-----> started" not in lines:
                    await trio.sleep(0.02)
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert not pid_alive(int(pidfile.read_text()))


def test_a_source_url_that_cannot_be_downloaded_is_a_clear_build_error(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(
        DynodError, match=rf"^cannot download source http://127.0.0.1:{port}/app.tgz: .*refused"
    ):
        fetch_source(f"http://127.0.0.1:{port}/app.tgz", tmp_path, max_bytes=1 << 20)

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        with pytest.raises(DynodError, match=r"^cannot download source .*: HTTP 501"):
            fetch_source(
                f"http://127.0.0.1:{server.server_address[1]}/app.tgz", tmp_path, max_bytes=1 << 20
            )
    finally:
        server.server_close()


# --- builds as the app's user (a root dynod) -------------------------------------------------

NOBODY = (65534, 65534)
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another user needs root")


@root_only
def test_handing_a_tree_over_never_follows_its_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "file").write_text("x")
    (tree / "secret").symlink_to(outside / "secret")
    (tree / "elsewhere").symlink_to(outside, target_is_directory=True)
    hand_over(tree, NOBODY)
    for path in (tree, tree / "sub", tree / "sub" / "file", tree / "secret", tree / "elsewhere"):
        assert os.lstat(path).st_uid == NOBODY[0], path
    for path in (outside, outside / "secret"):
        assert os.lstat(path).st_uid == 0, path
    assert os.stat(tree).st_mode & 0o777 == 0o700  # no other app's user reads it


@root_only
def test_taking_a_tree_back_leaves_the_build_user_nothing_to_change(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.write_text("root's")
    tree = tmp_path / "tree"
    (tree / "open").mkdir(parents=True)
    (tree / "open" / "tool").write_text("#!/bin/sh\n")
    (tree / "link").symlink_to("/etc/passwd")
    hand_over(tree, NOBODY)
    (tree / "open").chmod(0o777)
    (tree / "open" / "tool").chmod(0o6777)  # set-id and world-writable, as a build could leave
    os.link(foreign, tree / "open" / "linked")  # a hard link to a file that is not the build's
    removed = take_back(tree, NOBODY)
    assert removed == [str(tree / "open" / "linked")]
    assert foreign.read_text() == "root's"
    for path in (tree, tree / "open", tree / "open" / "tool", tree / "link"):
        info = os.lstat(path)
        assert (info.st_uid, info.st_gid) == (0, 0), path
        if not path.is_symlink():
            assert not info.st_mode & 0o6022, (path, oct(info.st_mode))
    assert os.readlink(tree / "link") == "/etc/passwd"


def test_making_a_buildpacks_scripts_executable_never_touches_a_links_target(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not a script")
    outside.chmod(0o644)
    pack = tmp_path / "pack"
    (pack / "bin").mkdir(parents=True)
    for name in ("detect", "compile"):
        (pack / "bin" / name).write_text(
            "#!/bin/sh\necho Linky\n"
        )  # lost its x bits, as from a zip
    (pack / "bin" / "helper").symlink_to(outside)
    app = tmp_path / "app"
    app.mkdir()
    (app / "Procfile").write_text("web: true\n")
    build(app, tmp_path / "cache", buildpacks=[str(pack)])
    assert outside.stat().st_mode & 0o777 == 0o644


@root_only
def test_a_lent_cache_and_the_build_directory_are_closed_to_other_users(tmp_path: Path) -> None:
    data_cache = tmp_path / "data" / "cache"
    data_cache.mkdir(parents=True)
    (data_cache / "kept").write_text("k")
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    (work / "source.tar.gz").write_text("the app's source")
    (work / "source.tar.gz").chmod(0o644)
    (work / "build").mkdir(mode=0o755)

    async def main() -> None:
        async with lent_cache(data_cache, work, NOBODY) as lent:
            assert stat.S_IMODE(work.stat().st_mode) == 0o711  # passable, not listable
            for entry in ("source.tar.gz", "build", "cache"):
                assert not (work / entry).stat().st_mode & 0o077, entry
            assert (lent / "kept").read_text() == "k"
        assert stat.S_IMODE(work.stat().st_mode) == 0o700  # closed again for the packing
        assert (data_cache / "kept").read_text() == "k"  # dynod's own cache goes back

    trio.run(main)


# --- sources: the upload cap on downloads, local paths as the app's user --------------------


def test_a_downloaded_source_stops_at_the_upload_cap(tmp_path: Path) -> None:
    class Big(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()  # no Content-Length: only counting stops it
            for _ in range(3):
                self.wfile.write(b"\0" * (1 << 20))

    server = http.server.HTTPServer(("127.0.0.1", 0), Big)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/app.tgz"
        with pytest.raises(
            DynodError, match=r"is over the limit of 2 MB: .* \[build\] slug_max_mb"
        ):
            fetch_source(url, tmp_path, max_bytes=2 << 20)
    finally:
        server.server_close()


def test_local_sources_can_be_switched_off(tmp_path: Path) -> None:
    for url in (str(tmp_path), f"file://{tmp_path}"):
        with pytest.raises(DynodError, match=r"switched off \(\[build\] local_sources"):
            fetch_source(url, tmp_path, max_bytes=1 << 20, local=False)


@root_only
def test_a_local_source_is_read_as_the_apps_user(tmp_path: Path) -> None:
    shared = Path(tempfile.mkdtemp(prefix="dynod-test-source-"))  # /tmp: every user passes
    try:
        shared.chmod(0o755)
        app = shared / "app"
        (app / "lib" / ".git").mkdir(parents=True)
        (app / "lib" / "code.py").write_text("x = 1\n")
        (app / "lib" / ".git" / "HEAD").write_text("ref\n")
        (app / "run").symlink_to("lib/code.py")
        shutil.copytree(app, shared / "one")  # a lone directory at the top stays where it is
        (shared / "one" / "run").unlink()
        for source, expected in (
            (app, {"lib", "lib/code.py", "run"}),
            (shared / "one", {"lib", "lib/code.py"}),
        ):
            work = tmp_path / f"work-{source.name}"
            work.mkdir()
            fetched = fetch_source(str(source), work, max_bytes=1 << 20, owner=NOBODY)
            assert fetched.parent == work  # packed by the app's user, into dynod's directory
            built = prepare_source(fetched, work / "build")
            found = {p.relative_to(built).as_posix() for p in built.rglob("*")}
            assert found == expected
        secret = shared / "secret.tar.gz"  # root's alone
        secret.write_bytes(b"not for the app")
        secret.chmod(0o600)
        unreadable = tmp_path / "app"  # under pytest's 0700 directory
        unreadable.mkdir()
        for refused in (secret, unreadable):
            with pytest.raises(DynodError, match=r"cannot be read by the app's user \(.*denied"):
                fetch_source(f"file://{refused}", tmp_path, max_bytes=1 << 20, owner=NOBODY)
        with pytest.raises(DynodError, match=r"over the limit of 0 MB"):
            fetch_source(str(app), tmp_path, max_bytes=10, owner=NOBODY)
    finally:
        shutil.rmtree(shared)


@pytest.mark.skipif(not cgroups_used(), reason="needs root and cgroup v2 (CI runs as root)")
def test_escapees_of_a_build_are_gone_when_it_ends(tmp_path: Path) -> None:
    # A chain handing over to a new session every 50 ms (fixtures/hostile/refork.sh): only the
    # build's cgroup holds it.
    marker = f"chain-{os.getpid()}-build"
    hostile = write_buildpack(
        tmp_path / "hostile",
        f'setsid {FIXTURES}/hostile/refork.sh {marker} & echo "-----> left a chain"\n'
        # until it has handed over: a process of it with no environment
        "for i in $(seq 100); do\n"
        f"  for p in $(pgrep -f {marker}); do\n"
        '    [ -z "$(head -c1 /proc/$p/environ 2>/dev/null)" ] && break 2\n'
        "  done; sleep 0.05\n"
        "done",
    )
    app = write_app(tmp_path / "app", {"Procfile": "web: x\n"})
    with Reaper() as reaper:
        _, lines = build(app, tmp_path / "cache", buildpacks=[str(hostile)], reaper=reaper)
        assert "-----> left a chain" in lines
        assert none_running(marker), "the chain outlived its build"
