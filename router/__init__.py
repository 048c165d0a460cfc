"""dynod's HTTP router: round-robin over an app's web dynos, Heroku's H codes and log lines.

It knows nothing of slugs or releases; dynod hands it a `Backend` (which web dynos serve a
host, wake an app, log a line) and runs `serve(config, backend)` in its nursery.
"""

from .backend import AppTable, Backend, DynoState, TableBackend, WebDyno, static_backend
from .config import ConfigError, RouterConfig

__all__ = [
    "AppTable",
    "Backend",
    "ConfigError",
    "DynoState",
    "RouterConfig",
    "TableBackend",
    "WebDyno",
    "serve",
    "static_backend",
]


def __getattr__(name: str) -> object:
    # `serve` pulls in h11 and the proxy: loaded on first use, so `dynod start` without
    # --router (and every import of the backend types) does not pay for it.
    if name == "serve":
        from .server import serve

        return serve
    raise AttributeError(f"module 'router' has no attribute {name!r}")
