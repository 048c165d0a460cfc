"""`dynod export` end to end: each format produced for the sample app, from a deployed app's
data directory (read, never changed) and from a directory built on the spot, and validated by
the engine's own tools: `systemd-analyze verify`, the Kubernetes schemas, and the Procfile pair
run by `dynod start`, honcho and foreman (README, "dynod export")."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import urllib.request
from functools import partial
from pathlib import Path

import pytest
import trio

from dynod.builds.runner import run_build
from dynod.builds.source import prepare_source
from dynod.core.dotenv import render_dotenv
from dynod.slugs.pack import pack_slug
from dynod.slugs.store import SlugStore
from dynod.state.apps import AppStore
from dynod.state.files import file_checksum
from dynod.state.ledger import Release
from tests.dynod.export.test_render import TRICKY
from tests.helpers import ROOT, dynod, pid_alive, wait_until

SAMPLE = ROOT / "fixtures" / "sample"
PYTHON_APP = ROOT / "fixtures" / "python-app"
HONCHO = shutil.which("honcho", path=str(Path(sys.executable).parent)) or shutil.which("honcho")
FOREMAN = shutil.which("foreman")
CONFIG = {"GREETING": "hello world", "SECRET": 'a"b$c'}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with `shop`, the sample app deployed (v2: its slug, config vars, a
    Redis add-on, web=2 worker=1), and `empty`, an app with only its v1."""
    root = tmp_path_factory.mktemp("deployed")
    build = prepare_source(SAMPLE, root / "build")
    result = trio.run(
        lambda: run_build(build, cache_dir=root / "cache", config_vars={}, output=lambda _: None)
    )
    info = pack_slug(build, root / "slug.tgz")
    data = root / "data"
    slug = SlugStore(data / "slugs").put(info.path, result.process_types)
    config = {**CONFIG, "REDIS_URL": "redis://127.0.0.1:6400"}

    async def deploy() -> None:
        apps = AppStore(data)
        for name in ("shop", "empty"):
            app = await apps.create(name)
            v1 = Release(version=1, description="Initial release", user="me", status="succeeded")
            await apps.ledger(app).append(v1)
        shop = apps.find("shop")
        v2 = Release(
            version=2,
            description="Deploy 1",
            user="me",
            status="succeeded",
            slug_id=slug.id,
            config_vars=config,
            addons=("redis-1",),  # type: ignore[arg-type]  # attrs converter=tuple
        )
        await apps.ledger(shop).append(v2)
        await apps.save_formation(shop, {"web": 2, "worker": 1})

    trio.run(deploy)
    return data


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime: what a read-only reader must not move."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def export(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return dynod("export", *args, cwd=cwd, timeout=120)


def test_systemd_units_pass_systemd_analyze_verify(data_dir: Path, tmp_path: Path) -> None:
    # A create that a running dynod serve is in the middle of: a reader must leave it be.
    busy = data_dir / "apps" / ".new-0000"
    busy.mkdir(exist_ok=True)
    before = tree(data_dir)
    out = tmp_path / "units"
    done = export("systemd", str(out), "--app", "shop", "--data", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert tree(data_dir) == before
    assert "Note: DynamicUser=yes hides /tmp from the service" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "app",
        "shop-release.service",
        "shop-web@.service",
        "shop-worker@.service",
        "shop.env",
        "shop.target",
    ]
    assert stat.S_IMODE((out / "shop.env").stat().st_mode) == 0o600
    assert "REDIS_URL=redis://127.0.0.1:6400" in (out / "shop.env").read_text()
    assert (out / "app" / "web.py").read_bytes() == (SAMPLE / "web.py").read_bytes()
    target = (out / "shop.target").read_text()
    assert "Wants=shop-web@5000.service shop-web@5001.service shop-worker@5100.service" in target
    web = (out / "shop-web@.service").read_text()
    for line in (
        "DynamicUser=yes",
        "Restart=always",
        "TimeoutStopSec=30",
        "KillMode=mixed",
        "Requires=shop-release.service",
        f"WorkingDirectory={out}/app",
        f"EnvironmentFile={out}/shop.env",
    ):
        assert line in web.splitlines(), line
    release = (out / "shop-release.service").read_text()
    assert "Type=oneshot" in release and "python3 release.py" in release
    verify(out, ["shop.target", "shop-release.service", "shop-web@5000.service",
                 "shop-web@5001.service", "shop-worker@5100.service"])  # fmt: skip
    busy.rmdir()


def test_systemd_with_a_named_user_from_a_built_directory(tmp_path: Path) -> None:
    out = tmp_path / "units"
    done = export("systemd", str(out), str(PYTHON_APP), "--user", "www-data", "-m", "web=1")
    assert done.returncode == 0, done.stderr
    web = (out / "python-app-web@.service").read_text()
    assert "User=www-data" in web and "DynamicUser=yes" not in web
    assert (out / "app" / ".heroku" / "python" / "bin" / "python").exists()  # built by its pack
    verify(out, ["python-app.target", "python-app-release.service", "python-app-web@5000.service"])


def verify(out: Path, units: list[str]) -> None:
    """systemd's own check of the units, loaded from OUT by name; warnings fail it too."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{out}:", "SYSTEMD_LOG_COLOR": "0"}
    check = subprocess.run(
        [analyze, "verify", "--man=no", *units],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and check.stdout + check.stderr == "", check


def test_kubernetes_manifests_match_the_official_schemas(data_dir: Path, tmp_path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    out = tmp_path / "k8s"
    done = export(
        "kubernetes",
        str(out),
        "--app",
        "shop",
        "--data",
        str(data_dir),
        "--slug-url",
        "https://slugs.example.com/shop.tgz",
        "--host",
        "shop.example.com",
    )
    assert done.returncode == 0, done.stderr
    assert "kubectl wait --for=condition=complete --timeout=3600s job/shop-release-" in done.stdout
    manifests = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    assert list(manifests) == [
        "00-secret-config.json",
        "01-secret-addons.json",
        "10-job-release.json",
        "20-deployment-web.json",
        "20-deployment-worker.json",
        "30-service-web.json",
        "31-ingress-web.json",
    ]
    version = kubernetes_validate.latest_version()
    for manifest in manifests.values():
        kubernetes_validate.validate(manifest, version, strict=True)  # raises when invalid
    assert manifests["00-secret-config.json"]["stringData"] == CONFIG
    assert manifests["01-secret-addons.json"]["stringData"] == {"REDIS_URL": ""}
    web = manifests["20-deployment-web.json"]["spec"]
    pod = web["template"]["spec"]
    assert web["replicas"] == 2 and pod["terminationGracePeriodSeconds"] == 30
    assert manifests["20-deployment-worker.json"]["spec"]["replicas"] == 1
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PORT"] == "5000" and env["DYNO"] == "web.$(POD_NAME)"
    assert container["readinessProbe"] == {"tcpSocket": {"port": "http"}, "periodSeconds": 5}
    fetch = pod["initContainers"][0]
    fetched = {e["name"]: e["value"] for e in fetch["env"]}
    checksum = file_checksum(out / "slug.tgz")
    assert fetched == {"SLUG_URL": "https://slugs.example.com/shop.tgz",
                       "SLUG_SHA256": checksum.removeprefix("SHA256:")}  # fmt: skip
    job = manifests["10-job-release.json"]["spec"]["template"]["spec"]
    assert job["restartPolicy"] == "Never"
    assert job["containers"][0]["command"][2].endswith("python3 release.py")
    rule = manifests["31-ingress-web.json"]["spec"]["rules"][0]
    assert rule["host"] == "shop.example.com"


def unescaped(element: str) -> str:
    """A container's command element as Kubernetes hands it over: `$$` is one `$`."""
    return element.replace("$$", "$")


def test_the_pod_fetches_checks_and_runs_the_slug(data_dir: Path, tmp_path: Path) -> None:
    """The init container's script and the web container's command, run here as the pod runs
    them: the slug downloaded over HTTP, its checksum checked, unpacked, and served from."""
    out = tmp_path / "k8s"
    url = "https://slugs.example.com/shop.tgz"
    done = export("kubernetes", str(out), "--app", "shop", "--data", str(data_dir),
                  "--slug-url", url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    pod = json.loads((out / "20-deployment-web.json").read_text())["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    mount = tmp_path / "volume"
    mount.mkdir()
    script = unescaped(fetch["command"][2]).replace("/tmp/slug.tgz", str(tmp_path / "dl.tgz"))
    script = script.replace(" /slug ", f" {mount} ")
    env = {e["name"]: e["value"] for e in fetch["env"]}
    assert env["SLUG_URL"] == url
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        env["SLUG_URL"] = f"http://127.0.0.1:{server.server_address[1]}/slug.tgz"
        bad = subprocess.run(["sh", "-c", script], env={**env, "SLUG_SHA256": "0" * 64},
                             capture_output=True, timeout=30)  # fmt: skip
        assert bad.returncode != 0 and not any(mount.iterdir())
        good = subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=30)
        server.shutdown()
    assert good.returncode == 0, good
    app = mount / "app"
    assert (app / "web.py").read_bytes() == (SAMPLE / "web.py").read_bytes()

    container = pod["containers"][0]
    secret = json.loads((out / "00-secret-config.json").read_text())["stringData"]
    port = free_base()
    dyno_env = {**secret, "POD_NAME": "shop-web-abc"}
    for item in container["env"]:
        if "value" in item:
            dyno_env[item["name"]] = item["value"].replace("$(POD_NAME)", "shop-web-abc")
    dyno_env.update(PORT=str(port), HOME=str(app))  # the pod's /app, here
    web = subprocess.Popen([unescaped(c) for c in container["command"]], cwd=app, env=dyno_env)
    try:
        assert wait_until(lambda: not _free(port), timeout=20)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
            assert answer.read() == b"Hello from web.shop-web-abc (hello world)\n"
    finally:
        web.terminate()
        web.wait(timeout=30)


@pytest.mark.parametrize(
    ("args", "status", "said"),
    [
        (["yaml", "{out}", "--app", "shop"], 2, "invalid choice: 'yaml'"),
        (["systemd", "{out}", "--app", "nope"], 1, "Couldn't find that app: nope"),
        (["systemd", "{full}", "--app", "shop"], 1, "exists and is not empty"),
        (["systemd", "{out}", "--app", "empty"], 1, "empty has no release with a slug"),
        (["kubernetes", "{out}", "--app", "shop"], 2, "kubernetes needs --slug-url"),
        (["systemd", "{out}", str(SAMPLE), "--app", "shop"], 2, "not both"),
        (["systemd", "{out}"], 2, "give --app APP"),
        (["procfile", "{out}", "--app", "shop", "-m", "web=500"], 1, "at most 100"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    data_dir: Path, tmp_path: Path, args: list[str], status: int, said: str
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep").write_text("mine")
    before = tree(tmp_path)
    paths = {"{out}": str(tmp_path / "out"), "{full}": str(full)}
    done = export(*[paths.get(a, a) for a in args], "--data", str(data_dir))
    assert done.returncode == status, done
    assert said in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert tree(tmp_path) == before


def test_a_damaged_slug_leaves_nothing_beside_out(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    for blob in (copy / "slugs" / "blobs").glob("*.tar.gz"):
        blob.write_bytes(blob.read_bytes()[:-10])
    done = export("systemd", str(tmp_path / "out"), "--app", "shop", "--data", str(copy))
    assert done.returncode == 1 and "R17" in done.stderr, done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def free_base() -> int:
    """A base port whose web.1, web.2 and worker.1 ports are all free."""
    for base in range(31000 + os.getpid() % 50 * 200, 65000, 200):
        ports = (base, base + 1, base + 100)
        if all(_free(port) for port in ports):
            return base
    raise AssertionError("no free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def procfile_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample app with a .env of values that are hard to quote, built and exported."""
    root = tmp_path_factory.mktemp("procfile")
    source = root / "sample"
    shutil.copytree(SAMPLE, source)
    (source / ".env").write_text(render_dotenv(TRICKY))
    out = root / "out"
    done = export("procfile", str(out), str(source), "-m", "web=2,worker=1")
    assert done.returncode == 0, done.stderr
    assert "honcho start -c web=2,worker=1,release=0" in done.stdout
    return out


def processes_in(directory: Path) -> dict[str, dict[str, str]]:
    """The app's processes running in `directory` (web.py, worker.py), by DYNO, with their
    environment as the kernel holds it."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") != str(directory):
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if argv[1:2] not in ([b"web.py"], [b"worker.py"]) or not pid_alive(int(entry)):
            continue
        env = dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)
        found[env.get("DYNO", "?")] = env
    return found


# Each with the formation the export printed; foreman reads it from the export's .foreman.
RUNNERS = {
    "dynod": lambda base: [sys.executable, "-m", "dynod.cli", "start", "-p", str(base),
                           "-m", "web=2,worker=1"],
    "honcho": lambda base: [str(HONCHO), "start", "-p", str(base),
                            "-c", "web=2,worker=1,release=0"],
    "foreman": lambda base: [str(FOREMAN), "start", "-p", str(base)],
}  # fmt: skip


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_the_procfile_pair_runs_alike(procfile_export: Path, tmp_path: Path, runner: str) -> None:
    if runner == "honcho" and HONCHO is None:
        pytest.skip("honcho is not installed (pip install -e '.[test]')")
    if runner == "foreman" and FOREMAN is None:
        pytest.skip("foreman is not installed")
    run_dir = tmp_path / "app"
    shutil.copytree(procfile_export, run_dir, symlinks=True)
    base = free_base()
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "DYNO")}
    process = subprocess.Popen(
        RUNNERS[runner](base),
        cwd=run_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        expected = {"web.1", "web.2", "worker.1"}
        assert wait_until(lambda: set(processes_in(run_dir)) == expected, timeout=30), processes_in(
            run_dir
        )
        seen = processes_in(run_dir)
    finally:
        os.killpg(process.pid, signal.SIGINT) if process.poll() is None else None
        output, _ = process.communicate(timeout=30)
    for dyno, dyno_env in seen.items():
        assert {k: dyno_env.get(k) for k in TRICKY} == TRICKY, (runner, dyno)
        assert dyno_env["HOME"] == str(run_dir)
    assert seen["web.1"]["PORT"] == str(base) and seen["web.2"]["PORT"] == str(base + 1)
    assert seen["worker.1"]["PORT"] == str(base + 100)
    assert wait_until(lambda: not processes_in(run_dir), timeout=10), output


def test_help_names_the_formats_and_the_two_sources() -> None:
    done = export("--help")
    assert done.returncode == 0
    for word in ("systemd,kubernetes,procfile", "--app APP", "[DIR]", "--slug-url", "--user"):
        assert word in done.stdout, word
