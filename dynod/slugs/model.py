"""The slug record: a stored slug's uuid, content checksum, size and process types (as kept in
`slugs/<id>.json`), the rules for those values, Heroku's slug size rule and its R17 checksum
error."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from attrs import field, frozen
from attrs.validators import instance_of, optional

from dynod.core.names import PROCESS_TYPE
from dynod.errors import DynodError
from dynod.state.files import heroku_time

_MB = 1 << 20


def _slug_id(text: str) -> str:
    """The canonical uuid form, which is also a safe file name; ValueError otherwise."""
    canonical = str(uuid.UUID(text))
    if canonical != text.lower():
        raise ValueError(f"not a slug id: {text!r}")
    return canonical


def _hex_of(checksum: str) -> str:
    algorithm, _, hexdigest = checksum.partition(":")
    if algorithm != "SHA256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise ValueError(f"not a SHA256:<hex> checksum: {checksum!r}")
    return hexdigest


def _text_that(check: Callable[[str], object]) -> Callable[[object, object, str], None]:
    """An attrs validator: a string (records come from JSON) that passes `check`."""

    def validate(_: object, __: object, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, not {value!r}")
        check(value)

    return validate


def _process_types(types: Mapping[str, object]) -> dict[str, str]:
    for name, command in types.items():
        if not PROCESS_TYPE.fullmatch(name) or not isinstance(command, str):
            raise ValueError(f"bad process type {name!r}: names match [A-Za-z0-9_-]{{1,63}}")
    return {name: str(command) for name, command in types.items()}


@frozen
class Slug:
    """A stored slug. `id` is a uuid as on Heroku; the content is stored by `checksum`."""

    id: str = field(validator=_text_that(_slug_id))
    checksum: str = field(validator=_text_that(_hex_of))
    size: int = field(validator=instance_of(int))
    process_types: dict[str, str] = field(hash=False, converter=_process_types)
    commit: str | None = field(default=None, validator=optional(instance_of(str)))
    created_at: str = field(factory=heroku_time, validator=instance_of(str))

    def to_json(self) -> dict[str, object]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Slug:
        """ValueError/TypeError/KeyError when the record is not a slug's."""
        values: dict[str, Any] = {spec.name: data[spec.name] for spec in attrs.fields(cls)}
        return cls(**values)


def check_slug_size(size: int, *, warn_mb: int, max_mb: int) -> str | None:
    """Heroku's slug size rule on the compressed size: refuse above `max_mb` (DynodError),
    return a warning line above `warn_mb`, else None."""
    megabytes = size / _MB
    if megabytes > max_mb:
        raise DynodError(
            f"Compiled slug size: {megabytes:.0f}M is too large (max is {max_mb}M);"
            " list large build-only files in .slugignore or move assets out of the slug"
        )
    if megabytes > warn_mb:
        return (
            f"Warning: Your slug size ({megabytes:.0f} MB) exceeds our soft limit ({warn_mb} MB)"
            " which may affect boot time."
        )
    return None


def checksum_error(expected: str, actual: str) -> DynodError:
    return DynodError(
        f"Error R17 (Checksum error) -> Checksum does not match expected value."
        f" Expected: {expected} Actual: {actual}; deploy again to build a new slug"
    )
