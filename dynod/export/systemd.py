"""The systemd export: a target wanting one instance per dyno of the formation, a template unit
per process type (`APP-web@.service`, the instance being the dyno's port, as foreman's export
did), an EnvironmentFile of config vars, and the release phase as a oneshot the dynos require."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from dynod.export.plan import PROFILE_PRELUDE, ExportPlan, File, Files, grace_seconds

# Values made only of these are written bare in the EnvironmentFile; others are double-quoted.
_BARE = re.compile(r"[A-Za-z0-9_./:@%+,=~-]+")
RESTART_SEC = 1  # systemd 252 has no growing delay (RestartSteps): retry each second, forever


def render_systemd(
    plan: ExportPlan, *, app_dir: str, env_file: str, user: str | None = None
) -> Files:
    """Units for `plan`, running from the unpacked slug at `app_dir` (absolute) with config vars
    from `env_file` (absolute; written here as `APP.env`, mode 0600). `user`: a named user,
    else DynamicUser=yes."""
    app = plan.app
    files: Files = {}
    release = plan.release_command
    for name in plan.types:
        files[f"{app}-{name}@.service"] = File(
            _dyno_unit(plan, name, app_dir, env_file, user, release is not None)
        )
    if release is not None:
        files[f"{app}-release.service"] = File(
            _release_unit(plan, release, app_dir, env_file, user)
        )
    wanted = [f"{app}-{name}@{port}.service" for name in plan.types for port in plan.ports(name)]
    files[f"{app}.target"] = File(
        _unit(
            [
                ("Unit", [f"Description={app}: every dyno of its formation (dynod export)"]),
                ("Unit", [f"Wants={' '.join(wanted)}"] if wanted else []),
                ("Install", ["WantedBy=multi-user.target"]),
            ]
        )
    )
    files[f"{app}.env"] = File(render_environment_file(plan.config_vars), 0o600)
    return files


def _dyno_unit(
    plan: ExportPlan, name: str, app_dir: str, env_file: str, user: str | None, phase: bool
) -> str:
    app = plan.app
    first = plan.port(name, 1)
    # The instance is the port; the dyno's number follows from it (port 5000 is web.1).
    script = [
        ("export PORT=", False),
        ("%i", True),
        (f" DYNO={name}.", False),
        ("$$((%i - ", True),
        (f"{first - 1})) HOME={shlex.quote(app_dir)}; {PROFILE_PRELUDE}", False),
        (plan.process_types[name], False),
    ]
    after = [f"{app}-release.service"] if phase else []
    unit = [
        f"Description={app} {name} dyno on port %i (dynod export)",
        f"PartOf={app}.target",
        f"After={' '.join(['network.target', *after])}",
    ]
    if phase:
        unit.append(f"Requires={app}-release.service")
    service = [
        "Type=simple",
        *_common(plan, app_dir, env_file, user),
        f"ExecStart=/bin/bash -c {_exec_word(script)}",
        "Restart=always",
        f"RestartSec={RESTART_SEC}",
        f"TimeoutStopSec={grace_seconds(plan)}",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"SyslogIdentifier={app}-{name}.%i",
    ]
    return _unit(
        [
            ("Unit", unit),
            ("Unit", ["StartLimitIntervalSec=0"]),  # never give up, as the platform does not
            ("Service", service),
        ]
    )


def _release_unit(
    plan: ExportPlan, command: str, app_dir: str, env_file: str, user: str | None
) -> str:
    app = plan.app
    script = [(f"export DYNO=release.1 HOME={shlex.quote(app_dir)}; {PROFILE_PRELUDE}", False)]
    script.append((command, False))
    service = [
        "Type=oneshot",
        "RemainAfterExit=yes",
        *_common(plan, app_dir, env_file, user),
        f"ExecStart=/bin/bash -c {_exec_word(script)}",
        f"TimeoutStartSec={int(plan.release_timeout)}",
        f"TimeoutStopSec={grace_seconds(plan)}",
        "KillMode=mixed",
        f"SyslogIdentifier={app}-release",
    ]
    unit = [
        f"Description={app} release phase (dynod export)",
        f"PartOf={app}.target",  # restarting the target runs the release command again
        "After=network.target",
    ]
    return _unit([("Unit", unit), ("Service", service)])


def _common(plan: ExportPlan, app_dir: str, env_file: str, user: str | None) -> list[str]:
    who = [f"User={user}"] if user else ["DynamicUser=yes"]
    return [
        *who,
        f"WorkingDirectory={_path_value(app_dir)}",
        # Config vars override this PATH (a dyno's PATH is a default); PORT, DYNO and HOME are
        # the platform's and set in ExecStart, after them.
        f"Environment={_exec_word([(f'PATH={plan.path}', False)])}",
        f"EnvironmentFile={_path_value(env_file)}",
        "StandardInput=null",
    ]


def _unit(sections: list[tuple[str, list[str]]]) -> str:
    """Sections in order, a repeated section name merged into the one before it."""
    merged: dict[str, list[str]] = {}
    for name, lines in sections:
        merged.setdefault(name, []).extend(lines)
    return "\n".join(
        f"[{name}]\n" + "".join(f"{line}\n" for line in lines) for name, lines in merged.items()
    )


def _exec_word(parts: list[tuple[str, bool]]) -> str:
    """One double-quoted word of a unit's command line: text escaped so that systemd passes it
    on as written (no specifier or variable expansion), raw parts (`%i`) kept as they are."""
    out = []
    for text, raw in parts:
        out.append(text if raw else _escape(text))
    return '"' + "".join(out) + '"'


def _escape(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return escaped.replace("%", "%%").replace("$", "$$")


def _path_value(path: str) -> str:
    """An absolute path as a unit file setting takes it: specifiers escaped."""
    return path.replace("%", "%%")


def render_environment_file(env: Mapping[str, str]) -> str:
    """KEY=value lines as systemd's EnvironmentFile reads them: bare when safe, else in double
    quotes with `\\`, `"`, `$` and `` ` `` escaped (newlines stay, inside the quotes)."""
    lines = []
    for key, value in env.items():
        if _BARE.fullmatch(value):
            lines.append(f"{key}={value}\n")
        else:
            escaped = "".join("\\" + c if c in '\\"$`' else c for c in value)
            lines.append(f'{key}="{escaped}"\n')
    return "".join(lines)
