"""What every export format renders: one release of an app (process types, formation, config vars,
add-ons, slug checksum) with the supervision numbers, and the file set a renderer returns."""

from __future__ import annotations

from attrs import field, frozen

from dynod.core.formation import local_port
from dynod.core.policy import STOP_TIMEOUT
from dynod.core.procfile import RELEASE

DEFAULT_BASE_PORT = 5000  # foreman's, as `dynod start` uses it

# The command is appended after the profile scripts are sourced, as a dyno does; one line (a
# systemd ExecStart, a Procfile line). tests/dynod/export holds it to dynod/proc/dyno.py's.
PROFILE_PRELUDE = (
    'for f in .profile.d/*.sh; do if [ -r "$f" ]; then . "$f"; fi; done; unset f; '
    "if [ -r .profile ]; then . ./.profile; fi; "
)


@frozen
class File:
    text: str
    mode: int = 0o644


# Paths relative to the export's directory, each with its content and mode.
Files = dict[str, File]


@frozen(kw_only=True)
class ExportPlan:
    """One release of `app`, ready to render. `process_types` is in Procfile order and may hold
    `release` (the release phase); `formation` counts every other type (0 for a stopped one)."""

    app: str
    process_types: dict[str, str] = field(hash=False)
    formation: dict[str, int] = field(hash=False)
    config_vars: dict[str, str] = field(hash=False)
    addons: tuple[str, ...] = ()
    slug_checksum: str  # SHA256:<hex>
    path: str  # the dyno's PATH before the profile scripts extend it
    grace: float = STOP_TIMEOUT  # SIGTERM → grace → SIGKILL
    release_timeout: float  # how long the release command may run
    base_port: int = DEFAULT_BASE_PORT

    @property
    def types(self) -> tuple[str, ...]:
        """The process types a formation scales: all but `release`."""
        return tuple(name for name in self.process_types if name != RELEASE)

    @property
    def release_command(self) -> str | None:
        return self.process_types.get(RELEASE)

    @property
    def slug_sha256(self) -> str:
        return self.slug_checksum.removeprefix("SHA256:")

    def count(self, name: str) -> int:
        return self.formation.get(name, 0)

    def port(self, name: str, instance: int) -> int:
        """foreman's port for the `instance`th (1-based) dyno of type `name`."""
        return local_port(self.base_port, self.types, name, instance)

    def ports(self, name: str) -> list[int]:
        return [self.port(name, i) for i in range(1, self.count(name) + 1)]


def addon_vars(addons: tuple[str, ...]) -> dict[str, str]:
    """The config var each add-on sets, by add-on name, as on Heroku: `redis-N` sets
    REDIS_URL, `postgresql-N` DATABASE_URL, any other name (`--as NAME`) NAME_URL."""
    found: dict[str, str] = {}
    for name in addons:
        service = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else None
        if service == "redis":
            found["REDIS_URL"] = name
        elif service == "postgresql":
            found["DATABASE_URL"] = name
        else:
            found[name.upper().replace("-", "_") + "_URL"] = name
    return found


def grace_seconds(plan: ExportPlan) -> int:
    """The grace as whole seconds (what systemd and Kubernetes take), never below the plan's."""
    whole = int(plan.grace)
    return whole if whole == plan.grace else whole + 1
