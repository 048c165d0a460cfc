"""The add-on provider interface (docs/platform.md, "Add-ons"): what one kind of backing service
does to be provisioned, started, checked, stopped and removed, and the config var it sets; the
lookup of its server programs; and how provisioning steps run (as whom, where)."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from attrs import frozen

from dynod.errors import DynodError
from dynod.proc.child import joining
from dynod.proc.mounts import Mounts

# Where a server sees its data directory when it runs as a uid of its own: bound there, in its
# own mount namespace (dynod's data directory above it is closed to other uids).
BOUND_HOME = "/tmp/addon"
PROVISION_TIMEOUT = 120.0  # seconds for one provisioning step (initdb)


@frozen
class Instance:
    """One add-on as its provider sees it: where its data is and how it is reached."""

    name: str  # "redis-1"
    directory: Path  # its data directory, as dynod sees it
    port: int  # on 127.0.0.1
    password: str
    role: str = ""  # PostgreSQL's role and database
    database: str = ""


@frozen
class Setup:
    """How a provisioning step runs: as `owner` (None: as dynod), in the add-on's data
    directory, which it sees at `home` (BOUND_HOME when bound, else its own path)."""

    owner: tuple[int, int] | None
    bound: bool

    def home(self, directory: Path) -> str:
        return BOUND_HOME if self.bound else str(directory)

    def run(self, directory: Path, argv: Sequence[str], stdin: str = "") -> None:
        """Run one step to its end (blocking: call from a worker thread); DynodError with the
        end of its output when it fails."""
        home = self.home(directory)
        mounts = Mounts((os.fsencode(home),), os.fsencode(home)) if self.bound else None
        try:
            done = subprocess.run(
                list(argv),
                input=stdin.encode(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=directory,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C", "HOME": home},
                preexec_fn=joining(None, self.owner, lambda: os.chdir(home), mounts=mounts),
                timeout=PROVISION_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as err:
            raise DynodError(f"{os.path.basename(argv[0])} could not run: {err}") from None
        if done.returncode != 0:
            tail = done.stdout.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise DynodError(
                f"{os.path.basename(argv[0])} failed (status {done.returncode}): "
                + " / ".join(tail)
            )


class Provider(Protocol):
    """One kind of add-on: provisioning (`provision`), starting (`command`: its server runs in
    the foreground under dynod's supervisor, like a dyno, restarted on a crash), health
    (`healthy`) and the config var (`config_vars`). Stopping is the supervisor's SIGTERM to the
    server's group, which `command` makes the server's graceful stop; deprovisioning is
    deleting the data directory, which holds everything a server keeps: neither needs more of
    a provider."""

    service: str  # "heroku-redis"
    aliases: tuple[str, ...]  # "redis"
    prefix: str  # add-on names: "redis" -> redis-1
    var: str  # the config var it sets: "REDIS_URL"
    package: str  # the Debian package with its server
    plans: tuple[str, ...]  # the first is the default

    def missing(self) -> str | None:
        """Why the server cannot run here (a program not found, and the package to install),
        or None."""
        ...

    def provision(self, instance: Instance, setup: Setup) -> None:
        """Make the server's data in `instance.directory` (empty, the setup owner's):
        blocking, from a worker thread."""
        ...

    def command(self, instance: Instance, home: str) -> str:
        """The shell command that starts the server in the foreground, run in its data
        directory, which it sees at `home`."""
        ...

    async def healthy(self, instance: Instance) -> bool:
        """Whether the server answers with its password now."""
        ...

    def config_vars(self, instance: Instance) -> dict[str, str]:
        """The URL the app reaches it by, keyed by `var`."""
        ...


def program(
    name: str, search: Sequence[str] = (), path: str | None = None
) -> tuple[str | None, list[str]]:
    """Where program `name` is: on PATH (dynod's), else in the `search` globs (the newest
    version first); and where it was looked for."""
    path = os.environ.get("PATH", os.defpath) if path is None else path
    found = shutil.which(name, path=path)
    if found is not None:
        return found, []
    for pattern in search:
        for directory in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            candidate = os.path.join(directory, name)
            if os.access(candidate, os.X_OK):
                return candidate, []
    return None, ["PATH", *search]


def _version_key(directory: str) -> tuple[int, ...]:
    return tuple(int(part) for part in directory.split("/") if part.isdigit())


def not_found(name: str, where: list[str], package: str, service: str) -> str:
    return (
        f"{service} needs `{name}`, which is not installed (looked in {', '.join(where)}): "
        f"install it with `apt-get install {package}`, then try again"
    )


def secret(length: int = 32) -> str:
    """A password of URL-safe letters and digits (nothing to escape in a URL)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def identifier(prefix: str) -> str:
    """A lowercase name for a role or database: `u` or `d` and 13 random letters and digits."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(13))
