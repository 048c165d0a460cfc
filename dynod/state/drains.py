"""Each app's log drains on disk: `<data>/apps/<id>/drains.json`, a list of drain records
replaced atomically (dynod.state.files), so a drain added is there after any restart or crash.
Reading and writing block: callers run them in a worker thread."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from dynod.errors import Damaged
from dynod.state.files import atomic_write, heroku_time

FILE = "drains.json"


@attrs.frozen
class Drain:
    id: str
    url: str
    token: str  # Heroku's drain token, `d.<uuid>`: HTTP drains send it in each POST
    created_at: str
    updated_at: str

    @classmethod
    def new(cls, url: str) -> Drain:
        now = heroku_time()
        return cls(str(uuid.uuid4()), url, f"d.{uuid.uuid4()}", now, now)

    def to_json(self) -> dict[str, str]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Drain:
        return cls(**{f.name: str(data[f.name]) for f in attrs.fields(cls)})


def load_drains(app_dir: Path) -> list[Drain]:
    path = app_dir / FILE
    try:
        data = json.loads(path.read_text())
        return [Drain.from_json(item) for item in data]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise Damaged(
            f"{path} is damaged ({err}); restore it from a backup, or delete it to forget "
            "the app's drains"
        ) from None


def save_drains(app_dir: Path, drains: Sequence[Drain]) -> None:
    data = json.dumps([drain.to_json() for drain in drains]).encode()
    atomic_write(app_dir / FILE, data)
