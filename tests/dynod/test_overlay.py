"""`dynod serve` as root makes every dyno's directory an overlay of the slug's one shared,
read-only tree and an upper directory of the dyno's own (README "How a dyno runs"): a dyno's
writes, deletes and renames reach neither the shared tree nor another dyno nor its own next
start, and no overlay is left in a mount table after the dynos end or dynod is killed."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynod.core.procfile import load_procfile
from dynod.platform.runtime import sweep_scratch
from dynod.proc.mounts import overlays_work
from dynod.slugs.pack import pack_slug
from dynod.slugs.unpack import unpack_slug
from tests.dynod.proc.test_mounts import host_mounts
from tests.dynod.test_private_tmp import namespace_used
from tests.dynod.test_serve import SAMPLE, call, start
from tests.helpers import running, wait_until


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "dynod.toml").write_text("[dynos]\nstop_timeout = 1\n")
    if not overlays_work(tmp_path, Path("/tmp")):
        pytest.skip("needs a root dynod whose kernel mounts overlays (CI runs as root)")
    yield data
    sweep_scratch(data)  # what a dynod killed by the test left


def digest(root: Path) -> str:
    """Every path under `root` with its kind, mode and content (or link target)."""
    summary = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        summary.update(f"{path.relative_to(root)} {info.st_mode:o}\0".encode())
        if path.is_symlink():
            summary.update(os.readlink(path).encode())
        elif path.is_file():
            summary.update(path.read_bytes())
    return summary.hexdigest()


def deploy(tmp_path: Path, base: str, token: str, procfile: str) -> Path:
    """The sample app with a directory `static/` beside it; the slug's tarball."""
    app_dir = tmp_path / "app"
    shutil.copytree(SAMPLE, app_dir)
    (app_dir / "static").mkdir()
    (app_dir / "static" / "site.css").write_text("body {}\n")
    (app_dir / "Procfile").write_text(procfile)
    tarball = pack_slug(app_dir, tmp_path / "app.tgz").path
    types = {t.name: t.command for t in load_procfile(app_dir / "Procfile").types}
    call(base, token, "POST", "/apps", {"name": "layers"})
    slug = call(base, token, "POST", "/apps/layers/slugs", {"process_types": types})
    call(base, None, "PUT", slug["blob"]["url"], data=tarball.read_bytes())
    call(base, token, "POST", "/apps/layers/releases", {"slug": slug["id"]})
    return tarball


def states(base: str, token: str) -> list[str]:
    """The web dynos' states."""
    dynos = call(base, token, "GET", "/apps/layers/dynos")
    return [d["state"] for d in dynos if d["type"] == "web"]


def test_each_dyno_changes_only_its_own_layer_of_one_shared_tree(
    tmp_path: Path, data_dir: Path
) -> None:
    mark = f"layers-{secrets.token_hex(6)}"
    before = host_mounts()
    serve, base, token = start(data_dir)
    try:
        tarball = deploy(
            tmp_path,
            base,
            token,
            # A second start that finds the first one's changes says so; every start changes
            # the slug's files: a write, a delete and a directory rename.
            f"web: test -e written && (exec -a {mark}-saw sleep 600 &); echo mine > written"
            f" && rm release.py && mv static moved && (exec -a {mark}-web sleep 600 &)"
            " && exec python3 web.py\n",
        )
        assert wait_until(lambda: states(base, token) == ["up"], 60), states(base, token)
        first = running(f"{mark}-web")
        assert len(first) == 1
        web = first[0]
        assert os.readlink(f"/proc/{web}/ns/mnt") != os.readlink(f"/proc/{serve.pid}/ns/mnt")

        trees = [p for p in (data_dir / "slugs" / "trees").glob("*/*") if p.is_dir()]
        assert len(trees) == 1, trees  # one tree for the app's dynos, however many
        tree = trees[0]
        fresh = tmp_path / "fresh"
        unpack_slug(tarball, fresh)
        assert digest(tree) == digest(fresh)  # the slug as built
        assert len({path.lstat().st_uid for path in tree.rglob("*")}) == 1  # the app's uid
        assert (tree / "release.py").is_file() and (tree / "static" / "site.css").is_file()
        assert not (tree / "written").exists() and not (tree / "moved").exists()
        shared = digest(tree)
        cwd = os.readlink(f"/proc/{web}/cwd")
        mounted = Path(f"/proc/{web}/mountinfo").read_text()
        assert f" {cwd} " in mounted and f"lowerdir={tree}," in mounted, mounted

        # Another dyno of the app sees the slug as it was built, none of web.1's changes.
        command = (
            "test -e written || test ! -e release.py || test ! -d static || test -e moved"
            f" || exec -a {mark}-run sleep 30"
        )
        call(base, token, "POST", "/apps/layers/dynos", {"command": command})
        assert wait_until(lambda: bool(running(f"{mark}-run")), 20), "the one-off saw web.1's"

        # Its own next start gets a fresh upper layer: nothing of the first start's is there.
        call(base, token, "DELETE", "/apps/layers/dynos/web.1")
        assert wait_until(lambda: running(f"{mark}-web") not in ([], first), 30)
        assert wait_until(lambda: states(base, token) == ["up"], 30)
        assert not running(f"{mark}-saw"), "the next start saw the first one's changes"

        assert digest(tree) == shared  # the shared tree never changed
        assert not any(p for p in (data_dir / "slugs" / "trees").rglob("written"))
        assert host_mounts(serve.pid) == before  # every overlay is in its dyno's namespace
        ns = os.readlink(f"/proc/{running(f'{mark}-web')[0]}/ns/mnt")
    finally:
        serve.kill()
        serve.communicate(timeout=10)
    assert wait_until(lambda: not namespace_used(ns), 5), "a dyno's overlay outlived dynod"
    assert host_mounts() == before
    assert not [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if " overlay " in line and str(data_dir) in line
    ]
