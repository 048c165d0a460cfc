"""Slugs: packing, the store, and the unpacking boundary, with real tarballs built by hand."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import dynod.slugs.store as store_module
from dynod.errors import DynodError
from dynod.slugs.model import check_slug_size
from dynod.slugs.pack import pack_slug
from dynod.slugs.store import SlugStore
from dynod.slugs.unpack import UnsafeSlug, unpack_slug
from dynod.state.files import file_checksum

Member = tuple[tarfile.TarInfo, bytes]


def reg(name: str, data: bytes = b"data\n", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
    return info, data


def node(name: str, kind: bytes, linkname: str = "", mode: int = 0o755) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info, b""


def make_slug(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def tree(root: Path) -> dict[str, str]:
    """Every path under root with what it is, for comparing whole trees."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = f"{oct(stat.S_IMODE(path.stat().st_mode))} {path.read_bytes()!r}"
    return found


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "deep").mkdir(parents=True)
    (root / "Procfile").write_text("web: bin/web\n")
    (root / "bin" / "web").write_text("#!/bin/sh\nexec python3 -m http.server $PORT\n")
    (root / "bin" / "web").chmod(0o755)
    (root / "lib" / "deep" / "data.bin").write_bytes(bytes(range(256)) * 40)
    (root / "lib" / "empty").mkdir()
    os.symlink("../bin/web", root / "lib" / "web-link")  # symlinks inside the app are fine
    os.symlink("deep", root / "lib" / "dir-link")
    os.link(root / "Procfile", root / "Procfile.hard")
    return root


def test_pack_and_unpack_round_trip(tmp_path: Path, app: Path) -> None:
    info = pack_slug(app, tmp_path / "slug.tgz")
    assert info.size == (tmp_path / "slug.tgz").stat().st_size
    assert info.checksum == file_checksum(info.path)
    with tarfile.open(info.path) as tar:
        names = tar.getnames()
        assert all(n == "./app" or n.startswith("./app/") for n in names)
        assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in tar.getmembers())
    unpack_slug(info.path, tmp_path / "dyno")
    assert tree(tmp_path / "dyno") == tree(app)
    assert os.access(tmp_path / "dyno" / "bin" / "web", os.X_OK)
    assert (tmp_path / "dyno" / "lib" / "dir-link" / "data.bin").read_bytes()[:3] == b"\0\1\2"
    packed_mtime = int((app / "Procfile").stat().st_mtime)
    assert (tmp_path / "dyno" / "Procfile").stat().st_mtime == packed_mtime


def test_packing_is_deterministic(tmp_path: Path, app: Path) -> None:
    first = pack_slug(app, tmp_path / "one.tgz")
    second = pack_slug(app, tmp_path / "two.tgz")
    assert first.checksum == second.checksum
    with tarfile.open(first.path) as tar:
        names = tar.getnames()
    assert names == ["./app", *sorted(names[1:], key=lambda n: n.split("/"))]


@pytest.mark.parametrize("kind", ["fifo", "escaping symlink", "absolute symlink"])
def test_pack_refuses_what_unpacking_would(tmp_path: Path, app: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(app / "pipe")
    elif kind == "escaping symlink":
        os.symlink("../../etc/passwd", app / "lib" / "evil")
    else:
        os.symlink("/etc/passwd", app / "evil")
    with pytest.raises(UnsafeSlug):
        pack_slug(app, tmp_path / "slug.tgz")
    assert not (tmp_path / "slug.tgz").exists()


GOOD = [
    node("./app", tarfile.DIRTYPE),
    reg("./app/Procfile", b"web: ./run\n"),
    reg("./app/run", mode=0o755),
]

HOSTILE: dict[str, tuple[list[Member], str, str]] = {
    # kind: (members after GOOD, the member the error names, the rule it states)
    "absolute path": ([reg("/app/x")], "/app/x", "absolute path"),
    "absolute outside app": ([reg("/etc/cron.d/evil")], "/etc/cron.d/evil", "absolute path"),
    "dot-dot": ([reg("./app/../../etc/passwd")], "./app/../../etc/passwd", "'..'"),
    "dot-dot outside app": ([reg("../x")], "../x", "'..'"),
    "symlink to /etc/passwd": (
        [node("./app/passwd", tarfile.SYMTYPE, "/etc/passwd")],
        "./app/passwd",
        "absolute path",
    ),
    "symlink escaping via ../..": (
        [node("./app/lib", tarfile.DIRTYPE), node("./app/lib/up", tarfile.SYMTYPE, "../../etc")],
        "./app/lib/up",
        "pointing outside ./app",
    ),
    "symlink escaping through another symlink": (
        # Lexically `self/..` stays in ./app; the kernel follows `self` first and climbs out.
        [node("./app/self", tarfile.SYMTYPE, "."), node("./app/up", tarfile.SYMTYPE, "self/..")],
        "./app/up",
        "pointing outside ./app",
    ),
    "symlink loop": (
        [node("./app/a", tarfile.SYMTYPE, "b"), node("./app/b", tarfile.SYMTYPE, "a")],
        "./app/",
        "in a loop",
    ),
    "hard link to an absolute path": (
        [node("./app/h", tarfile.LNKTYPE, "/etc/passwd")],
        "./app/h",
        "hard link pointing outside",
    ),
    "hard link outside app": (
        [reg("./etc/shadow"), node("./app/h", tarfile.LNKTYPE, "./etc/shadow")],
        "./app/h",
        "hard link pointing outside",
    ),
    "hard link with dot-dot": (
        [node("./app/h", tarfile.LNKTYPE, "./app/../etc/passwd")],
        "./app/h",
        "pointing outside",
    ),
    "hard link to a symlink": (
        [node("./app/s", tarfile.SYMTYPE, "run"), node("./app/h", tarfile.LNKTYPE, "./app/s")],
        "./app/h",
        "not a file earlier",
    ),
    "char device": ([node("./app/tty", tarfile.CHRTYPE)], "./app/tty", "character device"),
    "block device": ([node("./app/sda", tarfile.BLKTYPE)], "./app/sda", "block device"),
    "fifo": ([node("./app/pipe", tarfile.FIFOTYPE)], "./app/pipe", "fifo"),
    "device outside app": ([node("./dev/null", tarfile.CHRTYPE)], "./dev/null", "character device"),
    "file beneath a symlink": (
        [node("./app/etc", tarfile.SYMTYPE, "lib"), reg("./app/etc/passwd")],
        "./app/etc/passwd",
        "beneath ./app/etc",
    ),
    "symlink over a directory already written into": (
        # One pass writes ./app/conf/passwd before it reads that ./app/conf is a symlink.
        [reg("./app/conf/passwd"), node("./app/conf", tarfile.SYMTYPE, "/etc")],
        "./app/conf/passwd",
        "beneath ./app/conf",
    ),
    "file over a directory already written into": (
        [reg("./app/deep/er/x"), reg("./app/deep")],
        "./app/deep/er/x",
        "beneath ./app/deep",
    ),
    "duplicate member": ([reg("./app/run", b"again")], "./app/run", "appears twice"),
    "control characters in names": (
        [node("./app/x\ny", tarfile.SYMTYPE, "../\n/etc")],
        "./app/x\ny",
        "pointing outside ./app",
    ),
    "app is a symlink": ([node("app", tarfile.SYMTYPE, "/")], "app", "other than a directory"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_members_are_refused_and_nothing_of_the_slug_is_left(
    tmp_path: Path, kind: str
) -> None:
    """Each member is checked before it is written; what came before a refused one is removed."""
    extra, member, rule = HOSTILE[kind]
    slug = make_slug(tmp_path / "slug.tgz", GOOD + extra)
    before = tree(tmp_path)
    with pytest.raises(UnsafeSlug) as caught:
        unpack_slug(slug, tmp_path / "dyno")
    assert member in caught.value.member and rule in caught.value.rule
    assert repr(member)[1:-1] in str(caught.value) and "\n" not in str(caught.value)
    assert tree(tmp_path) == before  # not even the good members came out


def test_refusal_leaves_an_existing_empty_destination_empty(tmp_path: Path) -> None:
    slug = make_slug(tmp_path / "slug.tgz", GOOD + [node("./app/tty", tarfile.CHRTYPE)])
    (tmp_path / "dyno").mkdir()
    with pytest.raises(UnsafeSlug):
        unpack_slug(slug, tmp_path / "dyno")
    assert list((tmp_path / "dyno").iterdir()) == []


def test_checksum_mismatch_is_r17(tmp_path: Path) -> None:
    slug = make_slug(tmp_path / "slug.tgz", GOOD)
    wrong = "SHA256:" + "0" * 64
    r17 = r"^Error R17 \(Checksum error\) -> .*Expected: SHA256:0+ "
    with pytest.raises(DynodError, match=r17):
        unpack_slug(slug, tmp_path / "dyno", expected_checksum=wrong)
    assert not (tmp_path / "dyno").exists()
    unpack_slug(slug, tmp_path / "dyno", expected_checksum=file_checksum(slug))
    assert (tmp_path / "dyno" / "Procfile").read_bytes() == b"web: ./run\n"


def test_members_outside_app_are_ignored(tmp_path: Path) -> None:
    slug = make_slug(
        tmp_path / "slug.tgz",
        [
            node(".", tarfile.DIRTYPE),
            reg("./README", b"outside"),
            node("./other", tarfile.DIRTYPE),
            node("./other/link", tarfile.SYMTYPE, "../../../etc"),  # never unpacked: not judged
            reg("./apple/x"),  # a sibling named like app is not app
            *GOOD,
            reg("app/plain-prefix", b"no ./ is fine too"),
        ],
    )
    unpack_slug(slug, tmp_path / "dyno")
    assert sorted(tree(tmp_path / "dyno")) == ["Procfile", "plain-prefix", "run"]


def test_modes_are_kept_but_privilege_bits_dropped(tmp_path: Path) -> None:
    slug = make_slug(
        tmp_path / "slug.tgz",
        [
            reg("./app/suid", mode=0o4755),
            reg("./app/shared", mode=0o666),
            reg("./app/secret", mode=0o600),
            node("./app/locked", tarfile.DIRTYPE, mode=0o500),
            reg("./app/locked/inside"),
        ],
    )
    unpack_slug(slug, tmp_path / "dyno")
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "dyno").rglob("*")}
    assert mode["suid"] == 0o755 and mode["shared"] == 0o644 and mode["secret"] == 0o600
    assert mode["locked"] == 0o700  # the owner can always clean up a dyno's directory


def test_symlinks_and_hard_links_inside_app_are_fine(tmp_path: Path) -> None:
    slug = make_slug(
        tmp_path / "slug.tgz",
        [
            *GOOD,
            node("./app/node_modules/.bin", tarfile.DIRTYPE),
            reg("./app/node_modules/pkg/cli.js", b"#!/usr/bin/env node\n", mode=0o755),
            node("./app/node_modules/.bin/pkg", tarfile.SYMTYPE, "../pkg/cli.js"),
            node("./app/bin", tarfile.SYMTYPE, "node_modules/.bin"),
            node("./app/bin-pkg", tarfile.SYMTYPE, "bin/pkg"),
            node("./app/dangling", tarfile.SYMTYPE, "not/yet/made"),
            node("./app/run2", tarfile.LNKTYPE, "app/run"),
        ],
    )
    unpack_slug(slug, tmp_path / "dyno")
    dyno = tmp_path / "dyno"
    assert (dyno / "bin-pkg").read_bytes() == b"#!/usr/bin/env node\n"
    assert (dyno / "run2").stat().st_ino == (dyno / "run").stat().st_ino


def test_non_empty_destination_and_non_slugs_are_refused(tmp_path: Path) -> None:
    slug = make_slug(tmp_path / "slug.tgz", GOOD)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("mine")
    with pytest.raises(DynodError, match="not an empty directory"):
        unpack_slug(slug, tmp_path / "busy")
    assert (tmp_path / "busy" / "file").read_text() == "mine"
    (tmp_path / "junk.tgz").write_bytes(b"not a tarball at all")
    with pytest.raises(DynodError, match="not a gzip tarball"):
        unpack_slug(tmp_path / "junk.tgz", tmp_path / "dyno")
    truncated = tmp_path / "cut.tgz"
    truncated.write_bytes(slug.read_bytes()[:-20])
    with pytest.raises(DynodError, match="not a gzip tarball"):
        unpack_slug(truncated, tmp_path / "dyno")
    assert not (tmp_path / "dyno").exists()


def test_size_limits() -> None:
    mb = 1 << 20
    assert check_slug_size(100 * mb, warn_mb=300, max_mb=500) is None
    warning = check_slug_size(301 * mb, warn_mb=300, max_mb=500)
    assert warning is not None and "exceeds our soft limit (300 MB)" in warning
    with pytest.raises(DynodError, match=r"Compiled slug size: 501M is too large \(max is 500M\)"):
        check_slug_size(501 * mb, warn_mb=300, max_mb=500)


def test_store_put_get_verify(tmp_path: Path, app: Path) -> None:
    info = pack_slug(app, tmp_path / "slug.tgz")
    store = SlugStore(tmp_path / "store")
    slug = store.put(info.path, {"web": "bin/web"}, commit="abc123")
    again = store.put(info.path, {"web": "bin/web", "worker": "bin/work"})
    assert slug.checksum == again.checksum == info.checksum and slug.id != again.id
    assert len(list((tmp_path / "store" / "blobs").iterdir())) == 1  # content stored once
    assert SlugStore(tmp_path / "store").get(slug.id) == slug
    assert store.get(again.id).process_types == {"web": "bin/web", "worker": "bin/work"}
    assert slug.size == info.size and slug.commit == "abc123"
    store.verify(slug)
    blob = store.blob_path(slug)
    blob.write_bytes(blob.read_bytes() + b"tampered")
    with pytest.raises(DynodError, match=r"^Error R17 \(Checksum error\)"):
        store.verify(slug)
    with pytest.raises(DynodError, match=r"^Error R17"):
        store.materialize(slug, tmp_path / "web.1")
    assert not (tmp_path / "web.1").exists()
    blob.unlink()
    with pytest.raises(DynodError, match=r"^Error R17"):
        store.verify(slug)


def test_store_refusals(tmp_path: Path, app: Path) -> None:
    info = pack_slug(app, tmp_path / "slug.tgz")
    store = SlugStore(tmp_path / "store")
    for bad in ["../../etc/passwd", "not-a-uuid", "0" * 32]:
        with pytest.raises(DynodError, match="no slug"):
            store.get(bad)
    with pytest.raises(DynodError, match="no slug"):
        store.get("8b9ec5b4-54bb-4d8e-a4e5-4d1b3f6d8a10")
    with pytest.raises(DynodError, match="bad process type"):
        store.put(info.path, {"web server": "x"})
    with pytest.raises(DynodError, match=r"^Error R17"):
        store.put(info.path, {}, expected_checksum="SHA256:" + "1" * 64)
    chosen = "8b9ec5b4-54bb-4d8e-a4e5-4d1b3f6d8a10"
    assert store.put(info.path, {}, slug_id=chosen).id == chosen
    with pytest.raises(DynodError, match="already exists"):
        store.put(info.path, {}, slug_id=chosen)
    blobs = [p.name for p in (tmp_path / "store" / "blobs").iterdir()]
    assert blobs == [info.checksum[7:] + ".tar.gz"]  # refused puts leave nothing behind
    (tmp_path / "store" / "slugs" / f"{chosen}.json").write_text('{"id": 5}')
    with pytest.raises(DynodError, match="is damaged"):
        store.get(chosen)


def test_materialize_gives_each_dyno_its_own_copy(tmp_path: Path, app: Path) -> None:
    store = SlugStore(tmp_path / "store")
    slug = store.put(pack_slug(app, tmp_path / "slug.tgz").path, {"web": "bin/web"})
    one = store.materialize(slug, tmp_path / "web.1")
    two = store.materialize(slug, tmp_path / "web.2")
    assert tree(one) == tree(two) == tree(app)
    (one / "Procfile").write_text("changed by web.1\n")
    (one / "lib" / "deep" / "data.bin").unlink()
    (one / "new").write_text("made by web.1")
    assert tree(two) == tree(app)
    assert tree(store.materialize(slug, tmp_path / "web.3")) == tree(app)
    with pytest.raises(DynodError, match="already exists"):
        store.materialize(slug, tmp_path / "web.1")  # never into a used directory


def test_pruning_keeps_the_current_slugs_trees_and_any_being_copied(
    tmp_path: Path, app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SlugStore(tmp_path / "store")
    old = store.put(pack_slug(app, tmp_path / "old.tgz").path, {"web": "bin/web"})
    (app / "new").write_text("a second deploy\n")
    new = store.put(pack_slug(app, tmp_path / "new.tgz").path, {"web": "bin/web"})
    store.materialize(old, tmp_path / "web.1")
    store.materialize(new, tmp_path / "web.2")
    trees = tmp_path / "store" / "trees"
    assert len(list(trees.glob("*/*"))) == 2
    assert store.prune_trees({new.checksum}) == 1
    assert len(list(trees.glob("*/*"))) == 1
    assert tree(store.materialize(old, tmp_path / "rollback.1")) == tree(
        tmp_path / "web.1"
    )  # again

    real_copy = store_module.copy_tree  # type: ignore[attr-defined]
    pruned: list[int] = []

    def pruning_copy(src: Path, dest: Path, **kwargs: Any) -> None:
        pruned.append(store.prune_trees(set()))  # a deploy elsewhere prunes mid-copy
        real_copy(src, dest, **kwargs)

    monkeypatch.setattr(store_module, "copy_tree", pruning_copy)
    copy = store.materialize(new, tmp_path / "web.3")
    assert pruned == [1] and tree(copy) == tree(tmp_path / "web.2")  # old's went, new's was in use
    monkeypatch.setattr(store_module, "copy_tree", real_copy)
    assert store.prune_trees(set()) == 1 and not list(trees.glob("*/*"))


def test_dynos_starting_together_unpack_a_new_slug_once(
    tmp_path: Path, app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SlugStore(tmp_path / "store")
    slug = store.put(pack_slug(app, tmp_path / "slug.tgz").path, {"web": "bin/web"})
    unpacks: list[Path] = []

    def slow_unpack(*args: object, **kwargs: object) -> None:
        unpacks.append(Path(str(args[1])))
        time.sleep(0.2)  # long enough for every other thread to arrive meanwhile
        unpack_slug(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("dynod.slugs.store.unpack_slug", slow_unpack)
    with ThreadPoolExecutor(20) as pool:
        homes = list(
            pool.map(lambda i: store.materialize(slug, tmp_path / f"web.{i}"), range(1, 21))
        )
    assert len(unpacks) == 1
    assert all(tree(home) == tree(app) for home in homes)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")
def test_materialize_hands_the_copy_to_the_dyno_user(tmp_path: Path, app: Path) -> None:
    store = SlugStore(tmp_path / "store")
    slug = store.put(pack_slug(app, tmp_path / "slug.tgz").path, {"web": "bin/web"})
    dyno = store.materialize(slug, tmp_path / "web.1", owner=(65534, 65534))
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in [dyno, *dyno.rglob("*")]}
    assert owners == {(65534, 65534)}
    assert store.materialize(slug, tmp_path / "web.2").stat().st_uid == 0


def test_pack_refuses_to_write_inside_the_app(tmp_path: Path, app: Path) -> None:
    with pytest.raises(DynodError, match="outside the app"):
        pack_slug(app, app / "slug.tgz")


def test_store_drops_leftovers_of_an_interrupted_unpack(tmp_path: Path) -> None:
    SlugStore(tmp_path / "store")
    trees = tmp_path / "store" / "trees"
    (current,) = trees.iterdir()
    (current / ".half-unpacked").mkdir()
    (trees / "an-earlier-boot").mkdir()
    SlugStore(tmp_path / "store")
    assert list(trees.iterdir()) == [current] and list(current.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")
def test_a_lent_tree_is_the_owners_and_spared_by_pruning_until_given_back(
    tmp_path: Path, app: Path
) -> None:
    store = SlugStore(tmp_path / "store")
    slug = store.put(pack_slug(app, tmp_path / "slug.tgz").path, {"web": "bin/web"})
    with store.lend(slug, (65534, 65534)) as lent, store.lend(slug, (65534, 65534)) as again:
        assert lent == again and tree(lent) == tree(app)  # one tree for the owner's dynos
        owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in [lent, *lent.rglob("*")]}
        assert owners == {(65534, 65534)}
        with store.lend(slug) as roots:
            assert roots != lent and roots.stat().st_uid == 0  # another owner, another tree
        assert store.prune_trees(set()) == 1  # root's, given back; never a lent one
        assert tree(lent) == tree(app)
    assert store.prune_trees(set()) == 1 and not list((tmp_path / "store/trees").glob("*/*"))
