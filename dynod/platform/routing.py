"""What the router sees of dynod: each app's web dynos as a routing table, refreshed whenever
the app's dyno manager changes anything, and router log lines handed to the app's logplex."""

from __future__ import annotations

from dynod.core.lifecycle import DynoState
from dynod.proc.manager import DynoSlot, Manager
from dynod.state.config import RouterSettings
from router.backend import DynoState as RouteState
from router.backend import TableBackend, WebDyno
from router.config import RouterConfig

_STATES = {
    DynoState.UP: RouteState.UP,
    DynoState.STARTING: RouteState.STARTING,
    DynoState.IDLE: RouteState.IDLE,
    DynoState.CRASHED: RouteState.CRASHED,
}


def web_table(manager: Manager) -> list[WebDyno]:
    """The app's web dynos the router may know of (down and finished ones are not listed). Only
    an `up` one has an address, its process's PORT: it is up once its own processes listen
    there (proc/manager.py); the router holds requests for starting ones, connecting to none."""
    return [
        WebDyno(slot.name, ("127.0.0.1", _address_port(slot)), _STATES[slot.state])
        for slot in manager.web_dynos()
        if slot.state in _STATES
    ]


def _address_port(slot: DynoSlot) -> int:
    """An up dyno's PORT; 0 for the others, which the router never connects to."""
    if slot.state is DynoState.UP and slot.port is not None:
        return slot.port
    return 0


async def feed_router(manager: Manager, backend: TableBackend, app: str) -> None:
    """Keep `app`'s routing table equal to its web dynos, until cancelled."""
    try:
        while True:
            backend.update(app, web_table(manager))
            await manager.changed.wait()
    finally:
        backend.remove(app)


def router_config(settings: RouterSettings) -> RouterConfig:
    """dynod.toml's `[router]` table as the router's own config (the router knows no
    dynod types)."""
    return RouterConfig(
        listen=str(settings.listen),
        domain=settings.domain,
        connect_timeout=settings.connect_timeout,
        request_timeout=settings.request_timeout,
        idle_timeout=settings.idle_timeout,
        boot_wait=settings.boot_wait,
        header_timeout=settings.header_timeout,
        max_connections=settings.max_connections,
    )
