"""API routes for log drains, Heroku's `/apps/{app}/log-drains`: list, add, show and remove,
a drain named by its id, URL (percent-encoded, as the Heroku CLI sends it) or token."""

from __future__ import annotations

from typing import Any

from dynod.api.common import Call, Route, invalid, paginate, ref
from dynod.api.server import Response, json_response
from dynod.state.apps import App
from dynod.state.drains import Drain


def drain_json(app: App, drain: Drain) -> dict[str, Any]:
    return {
        "id": drain.id,
        "url": drain.url,
        "token": drain.token,
        "addon": None,
        "app": ref(app),
        "created_at": drain.created_at,
        "updated_at": drain.updated_at,
    }


async def list_drains(call: Call) -> Response:
    app = call.app()
    return paginate(
        call.request,
        call.platform.drains.all(app),
        {"id": lambda d: d.id, "url": lambda d: d.url},
        lambda drain: drain_json(app, drain),
    )


async def add_drain(call: Call) -> Response:
    app = call.app()
    url = (await call.json()).get("url")
    if not isinstance(url, str):
        raise invalid('Give the drain\'s URL: {"url": "syslog://logs.example.com:514"}.')
    drain = await call.platform.drains.add(app, url)
    return json_response(drain_json(app, drain), 201)


async def drain_info(call: Call) -> Response:
    app = call.app()
    return json_response(drain_json(app, call.platform.drains.get(app, call.params["drain"])))


async def remove_drain(call: Call) -> Response:
    app = call.app()
    drain = await call.platform.drains.remove(app, call.params["drain"])
    return json_response(drain_json(app, drain))


ROUTES = [
    Route("GET", "/apps/{app}/log-drains", list_drains),
    Route("POST", "/apps/{app}/log-drains", add_drain),
    Route("GET", "/apps/{app}/log-drains/{drain}", drain_info),
    Route("DELETE", "/apps/{app}/log-drains/{drain}", remove_drain),
]
