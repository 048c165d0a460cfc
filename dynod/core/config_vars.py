"""Release rules as pure functions: config var validation and changes, and the descriptions
Heroku gives each kind of release (docs/platform.md, Config vars)."""

from __future__ import annotations

from collections.abc import Mapping

from dynod.core.names import CONFIG_KEY, RESERVED_PREFIX
from dynod.errors import Invalid

MAX_CONFIG_BYTES = 32 * 1024


def apply_config_changes(
    current: Mapping[str, str], changes: Mapping[str, object]
) -> tuple[dict[str, str], str]:
    """The config vars after `changes` (a value of None unsets) and the release description.
    Everything is checked before anything applies: one bad key refuses the whole change."""
    if not changes:
        raise Invalid("No config vars given: pass KEY=value pairs to set, or keys to unset.")
    for key, value in changes.items():
        if not isinstance(key, str) or not CONFIG_KEY.fullmatch(key):
            raise Invalid(
                f"Config var key {key!r} is invalid: keys are letters, digits and underscores, "
                "not starting with a digit."
            )
        if key.upper().startswith(RESERVED_PREFIX):
            raise Invalid(
                f"Config var key {key} is reserved: keys starting {RESERVED_PREFIX} belong to "
                "dynod."
            )
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise Invalid(f"Config var {key} must be a string (or null to unset it).")
        if isinstance(value, str) and "\x00" in value:
            raise Invalid(f"Config var {key} contains a NUL byte, which no environment can hold.")
    result = dict(current)
    set_keys, unset_keys = [], []
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
            unset_keys.append(key)
        else:
            result[key] = _text(value)
            set_keys.append(key)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in result.items())
    if size > MAX_CONFIG_BYTES:
        raise Invalid(
            f"Config vars would total {size} bytes, over the {MAX_CONFIG_BYTES // 1024} kB limit: "
            "keep large values in files or an add-on."
        )
    return result, config_description(set_keys, unset_keys)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def config_description(set_keys: list[str], unset_keys: list[str]) -> str:
    parts = []
    if set_keys:
        parts.append(f"Set {', '.join(set_keys)} config vars")
    if unset_keys:
        verb = "remove" if parts else "Remove"
        parts.append(f"{verb} {', '.join(unset_keys)} config vars")
    return " and ".join(parts)


def deploy_description(source_id: str) -> str:
    return f"Deploy {source_id[:8]}"


def rollback_description(version: int) -> str:
    return f"Rollback to v{version}"


INITIAL_DESCRIPTION = "Initial release"
