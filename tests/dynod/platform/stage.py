"""What the service tests build their service on, without a Platform: a temporary app registry,
slug store and logplex, slugs packed from a few files, and background work in a test nursery."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from dynod.core.logline import APP
from dynod.logs.logplex import Logplex
from dynod.platform.formation import Formation
from dynod.platform.runtime import AppRuntime, Ports, SlugWorkspace
from dynod.proc.seams import ManagerSettings
from dynod.slugs.model import Slug
from dynod.slugs.pack import pack_slug
from dynod.slugs.store import SlugStore
from dynod.state.apps import App, AppStore
from dynod.state.ledger import Release
from router.backend import TableBackend


class Stage:
    def __init__(self, root: Path, nursery: trio.Nursery) -> None:
        self.root = root
        self.nursery = nursery
        self.apps = AppStore(root / "data")
        self.slugs = SlugStore(root / "data" / "slugs")
        self.logplex = Logplex(history=1500, tail_buffer=1000)
        self.logged: list[tuple[str, str]] = []  # (app name, text)

    def spawn(self, fn: Callable[[], Awaitable[object]], name: str) -> None:
        self.nursery.start_soon(fn, name=name)

    def log(self, app: App, text: str) -> None:
        self.logged.append((app.name, text))
        self.logplex.ring(app.id).publish(APP, "api", [text], time.time())

    def slug(self, files: dict[str, str], types: dict[str, str]) -> Slug:
        source = self.root / f"src-{len(list(self.root.glob('src-*')))}"
        source.mkdir()
        for name, text in files.items():
            (source / name).write_text(text)
        info = pack_slug(source, self.root / f"{source.name}.tgz")
        return self.slugs.put(info.path, types)

    async def app(self, name: str) -> App:
        app = await self.apps.create(name)
        v1 = Release(version=1, description="Initial release", user="me", status="succeeded")
        await self.apps.ledger(app).append(v1)
        return app


async def wait_until(
    predicate: Callable[[], bool], changed: Callable[[], trio.Event], timeout: float = 20
) -> None:
    """Until `predicate` holds, looking again whenever `changed()` fires (or every 0.1 s)."""
    with trio.fail_after(timeout):
        while not predicate():
            with trio.move_on_after(0.1):
                await changed().wait()


SAMPLE = Path(__file__).resolve().parents[3] / "fixtures" / "sample"


def sample_files() -> dict[str, str]:
    return {path.name: path.read_text() for path in SAMPLE.iterdir() if path.is_file()}


def runtimes(stage: Stage, ports: Ports) -> Callable[[App], AppRuntime]:
    """A runtime factory as the platform's, for dynod's own user, with a short restart ladder."""
    scratch = stage.root / "dynos"
    scratch.mkdir(exist_ok=True)
    settings = ManagerSettings(ladder=(0, 1), stop_timeout=3, owner=None)

    def make(app: App) -> AppRuntime:
        workspace = SlugWorkspace(stage.slugs, scratch, None)
        ring = stage.logplex.ring(app.id)
        return AppRuntime(app.id, ring, workspace, ports, settings, None)

    return make


def formation_of(stage: Stage, ports: Ports) -> Formation:
    return Formation(
        stage.apps,
        stage.slugs,
        TableBackend(),
        user="me@localhost",
        log=stage.log,
        make_runtime=runtimes(stage, ports),
        spawn=stage.spawn,
    )


async def release(stage: Stage, app: App, slug: Slug, config_vars: dict[str, str]) -> Release:
    """A release as Releases would append it (the release phase is not Formation's)."""
    ledger = stage.apps.ledger(app)
    made = Release(
        version=ledger.next_version(),
        description="Deploy",
        user="me",
        status="succeeded",
        slug_id=slug.id,
        config_vars=config_vars,
    )
    await ledger.append(made)
    return made
