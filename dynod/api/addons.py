"""API routes for add-ons and their attachments (docs/api.md, "Add-ons"): listing, provisioning,
info, destroy, and the resolve actions the Heroku CLI asks first, in Heroku's shapes."""

from __future__ import annotations

from typing import Any

from dynod.addons.records import AddonRecord
from dynod.api.common import Call, Route, invalid, ref, stable_id
from dynod.api.server import Response, json_response
from dynod.errors import NotFound
from dynod.state.apps import App


def addon_json(app: App, record: AddonRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "app": ref(app),
        "addon_service": {
            "id": stable_id("addon-service", record.service),
            "name": record.service,
            "human_name": _human(record.service),
        },
        "plan": {
            "id": stable_id("addon-plan", record.service, record.plan),
            "name": f"{record.service}:{record.plan}",
            "price": {"cents": 0, "contract": False, "unit": "month"},
        },
        "billed_price": {"cents": 0, "contract": False, "unit": "month"},
        "billing_entity": {"id": app.id, "name": app.name, "type": "app"},
        "state": record.state,
        "config_vars": [record.var],
        "provision_message": f"{_human(record.service)} on 127.0.0.1:{record.port}",
        "actions": [],
        "web_url": None,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def attachment_json(app: App, record: AddonRecord) -> dict[str, Any]:
    return {
        "id": stable_id("addon-attachment", record.id),
        "name": record.attachment,
        "addon": {"id": record.id, "name": record.name, "app": ref(app)},
        "app": ref(app),
        "namespace": None,
        "config_vars": [record.var],
        "web_url": None,
        "log_input_url": None,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _human(service: str) -> str:
    return {"heroku-redis": "Heroku Redis", "heroku-postgresql": "Heroku Postgres"}.get(
        service, service
    )


def _app_of(call: Call, record: AddonRecord) -> App:
    return call.platform.apps.find(record.app_id)


def _records(call: Call) -> list[tuple[App, AddonRecord]]:
    """The add-ons of the path's app, or of every app."""
    if "app" in call.params:
        app = call.app()
        return [(app, record) for record in call.platform.addons.of(app)]
    return [(_app_of(call, record), record) for record in call.platform.addons.all()]


def _record(call: Call) -> tuple[App, AddonRecord]:
    app = call.app() if "app" in call.params else None
    record = call.platform.addons.find(app, call.params["addon"])
    return app or _app_of(call, record), record


async def list_addons(call: Call) -> Response:
    return json_response([addon_json(app, record) for app, record in _records(call)])


async def addon_info(call: Call) -> Response:
    app, record = _record(call)
    return json_response(addon_json(app, record))


async def create_addon(call: Call) -> Response:
    """`{"plan": "heroku-redis"}` (heroku3) or `{"plan": {"name": "heroku-redis:mini"}}` (the
    Heroku CLI); `name` names the add-on, `attachment.name` its config var (`CACHE_URL`)."""
    app = call.app()
    body = await call.json()
    plan = body.get("plan")
    if isinstance(plan, dict):
        plan = plan.get("name")
    if not isinstance(plan, str) or not plan:
        raise invalid('Give the service and plan: {"plan": "heroku-redis"} or "heroku-redis:mini".')
    name = body.get("name")
    attachment = body.get("attachment")
    as_name = attachment.get("name") if isinstance(attachment, dict) else None
    if name is not None and not isinstance(name, str):
        raise invalid('"name" must be a string, such as "redis-cache".')
    if as_name is not None and not isinstance(as_name, str):
        raise invalid('"attachment": {"name": …} must be a string, such as "CACHE".')
    record = await call.platform.addons.create(app, plan, name=name or None, attachment=as_name)
    return json_response(addon_json(app, record), 201)


async def destroy_addon(call: Call) -> Response:
    app, record = _record(call)
    gone = await call.platform.addons.destroy(app, record.id)
    shown = addon_json(app, gone)
    return json_response({**shown, "state": "deprovisioned"})


async def list_attachments(call: Call) -> Response:
    found = _records(call)
    if "addon" in call.params:
        app, record = _record(call)
        found = [(app, record)]
    return json_response([attachment_json(app, record) for app, record in found])


async def attachment_info(call: Call) -> Response:
    app = call.app()
    wanted = call.params["attachment"]
    for record in call.platform.addons.of(app):
        if wanted in (record.attachment, record.name, stable_id("addon-attachment", record.id)):
            return json_response(attachment_json(app, record))
    raise NotFound(f"Couldn't find attachment {wanted} of {app.name}: see `dyno addons`.")


async def resolve_addon(call: Call) -> Response:
    """The add-ons an `addon` (name, id or attachment name) names, in `app` when given: a
    list, as the Heroku CLI expects (an empty match is a 404)."""
    body = await call.json()
    wanted, app_name = body.get("addon"), body.get("app")
    if not isinstance(wanted, str) or not wanted:
        raise invalid('Give the add-on to resolve: {"addon": "redis-1", "app": "my-app"}.')
    apps = [call.platform.apps.find(app_name)] if isinstance(app_name, str) else None
    found = [
        (app, record)
        for app, record in (
            [(a, r) for a in apps for r in call.platform.addons.of(a)]
            if apps is not None
            else [(_app_of(call, r), r) for r in call.platform.addons.all()]
        )
        if wanted in (record.name, record.id, record.attachment)
    ]
    if not found:
        raise NotFound(f"Couldn't find add-on {wanted}: list them with `dyno addons`.")
    return json_response([addon_json(app, record) for app, record in found])


async def resolve_attachment(call: Call) -> Response:
    body = await call.json()
    wanted, app_name = body.get("addon_attachment"), body.get("app")
    if not isinstance(wanted, str) or not wanted:
        raise invalid('Give the attachment to resolve: {"addon_attachment": "REDIS"}.')
    apps = (
        [call.platform.apps.find(app_name)]
        if isinstance(app_name, str)
        else call.platform.apps.all()
    )
    found = [
        attachment_json(app, record)
        for app in apps
        for record in call.platform.addons.of(app)
        if wanted in (record.attachment, record.name, record.id)
    ]
    if not found:
        raise NotFound(f"Couldn't find attachment {wanted}: list them with `dyno addons`.")
    return json_response(found)


ROUTES = [
    Route("GET", "/addons", list_addons),
    Route("GET", "/addons/{addon}", addon_info),
    Route("DELETE", "/addons/{addon}", destroy_addon),
    Route("GET", "/addons/{addon}/addon-attachments", list_attachments),
    Route("GET", "/apps/{app}/addons", list_addons),
    Route("POST", "/apps/{app}/addons", create_addon),
    Route("GET", "/apps/{app}/addons/{addon}", addon_info),
    Route("DELETE", "/apps/{app}/addons/{addon}", destroy_addon),
    Route("GET", "/addon-attachments", list_attachments),
    Route("GET", "/apps/{app}/addon-attachments", list_attachments),
    Route("GET", "/apps/{app}/addon-attachments/{attachment}", attachment_info),
    Route("POST", "/actions/addons/resolve", resolve_addon),
    Route("POST", "/actions/addon-attachments/resolve", resolve_attachment),
]
