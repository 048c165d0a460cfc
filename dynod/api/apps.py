"""API routes over the platform's state: the account, apps, config vars, releases (with
rollback and releasing a slug), the formation and dynos, and the empty lists the Heroku CLI
reads for features dynod does not have yet (collaborators, pipelines)."""

from __future__ import annotations

from typing import Any

from dynod.api import attach
from dynod.api.common import (
    Call,
    Route,
    account_json,
    app_json,
    dyno_json,
    formation_json,
    invalid,
    paginate,
    release_json,
)
from dynod.api.server import Response, json_response
from dynod.core.config_vars import apply_config_changes, deploy_description
from dynod.errors import DynodError, NotFound
from dynod.slugs.model import Slug
from dynod.state.apps import App
from dynod.state.ledger import Release

ACCEPTED = 202


# ----- account and apps


async def account(call: Call) -> Response:
    return json_response(account_json(call.platform.user))


async def list_apps(call: Call) -> Response:
    apps = sorted(call.platform.apps.all(), key=lambda app: app.name)
    fields = {"name": lambda app: app.name, "id": lambda app: app.id}
    return paginate(call.request, apps, fields, lambda app: app_json(call.state, app))


async def create_app(call: Call) -> Response:
    body = await call.json()
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise invalid('name must be a string, such as "my-app".')
    # `stack` and `region` (heroku3 sends "stack": "cedar") are accepted: there is one of each.
    app = await call.platform.create_app(name or None)
    return json_response(app_json(call.state, app), 201)


async def app_info(call: Call) -> Response:
    return json_response(app_json(call.state, call.app()))


async def destroy_app(call: Call) -> Response:
    app = call.app()
    shown = app_json(call.state, app)
    await call.platform.destroy_app(app)
    return json_response(shown)


# ----- config vars and releases


async def config_vars(call: Call) -> Response:
    return json_response(call.platform.releases.config_vars(call.app()))


async def set_config_vars(call: Call) -> Response:
    app = call.app()
    await call.platform.releases.set_config(app, await call.json())
    return json_response(call.platform.releases.config_vars(app))


def _releases_fields() -> dict[str, Any]:
    # Ordered by version whatever the Range names: heroku3 asks for `id ..` and expects v1 first.
    return {"version": lambda r: r.version, "id": lambda r: r.id}


async def list_releases(call: Call) -> Response:
    app = call.app()
    current = call.platform.releases.current(app)
    return paginate(
        call.request,
        call.platform.releases.all(app),
        _releases_fields(),
        lambda release: release_json(call.state, app, release, current),
    )


def _release(call: Call, app: App) -> Release:
    return call.platform.releases.get(app, call.params["release"])


async def release_info(call: Call) -> Response:
    app = call.app()
    return json_response(
        release_json(call.state, app, _release(call, app), call.platform.releases.current(app))
    )


async def release_config_vars(call: Call) -> Response:
    return json_response(dict(_release(call, call.app()).config_vars))


async def create_release(call: Call) -> Response:
    """`{"release": id-or-version}` rolls back to it; `{"slug": id}` releases that slug with
    the app's current config vars."""
    app = call.app()
    body = await call.json()
    platform = call.platform
    target, slug_id = body.get("release"), body.get("slug")
    if isinstance(target, (str, int)) and not isinstance(target, bool):
        release = await platform.releases.rollback(app, target)
    elif isinstance(slug_id, str):
        slug = _slug(call, slug_id)
        description = body.get("description")
        if not isinstance(description, str) or not description:
            description = deploy_description(slug.commit or slug.checksum.partition(":")[2])
        release = await platform.releases.create(
            app,
            slug_id=slug.id,
            config_vars=platform.releases.config_vars(app),
            description=description,
        )
    else:
        raise invalid(
            'Give {"slug": "<slug id>"} to release a slug, or {"release": "<id or version>"} '
            "to roll back."
        )
    current = platform.releases.current(app)
    return json_response(release_json(call.state, app, release, current), 201)


def _slug(call: Call, slug_id: str) -> Slug:
    try:
        return call.platform.slugs.get(slug_id)
    except DynodError:
        raise NotFound(
            f"Couldn't find slug {slug_id}: create it with POST /apps/{{app}}/slugs "
            "and PUT its tarball to the blob URL first."
        ) from None


# ----- formation


async def list_formation(call: Call) -> Response:
    app = call.app()
    return json_response(
        [formation_json(app, entry) for entry in call.platform.formation.entries(app)]
    )


async def formation_info(call: Call) -> Response:
    app = call.app()
    kind = call.params["type"]
    for entry in call.platform.formation.entries(app):
        if entry.type == kind:
            return json_response(formation_json(app, entry))
    raise NotFound(f"Couldn't find that process type ({kind}): see `dyno ps`.")


async def _scale(call: Call, app: App, updates: list[Any]) -> list[dict[str, Any]]:
    wanted: dict[str, object] = {}
    sizes: dict[str, object] = {}  # `ps:type eco`: a size-only update
    for update in updates:
        if not isinstance(update, dict) or not isinstance(update.get("type"), str):
            raise invalid(
                'Each update needs a process type and a quantity: {"type": "web", "quantity": 2}.'
            )
        kind = update["type"]
        if update.get("quantity") is not None:
            wanted[kind] = update["quantity"]
        if update.get("size") is not None:
            sizes[kind] = update["size"]
        if kind not in wanted and kind not in sizes:
            raise invalid(f'The update of {kind} needs a "quantity" or a "size".')
    scaled = await call.platform.formation.scale(app, wanted, sizes)
    return [formation_json(app, entry) for entry in scaled]


async def scale_batch(call: Call) -> Response:
    app = call.app()
    updates = (await call.json()).get("updates")
    if not isinstance(updates, list) or not updates:
        raise invalid('Send {"updates": [{"type": "web", "quantity": 2}]}.')
    return json_response(await _scale(call, app, updates))


async def scale_one(call: Call) -> Response:
    app = call.app()
    body = await call.json()
    return json_response((await _scale(call, app, [{**body, "type": call.params["type"]}]))[0])


# ----- dynos


async def list_dynos(call: Call) -> Response:
    app = call.app()
    platform = call.platform
    return paginate(
        call.request,
        platform.formation.dynos(app),
        {"name": lambda d: d.name},
        lambda dyno: dyno_json(platform, app, dyno),
    )


async def dyno_info(call: Call) -> Response:
    app = call.app()
    wanted = call.params["dyno"]
    for dyno in call.platform.formation.dynos(app):
        shown = dyno_json(call.platform, app, dyno)
        if wanted in (dyno.name, shown["id"]):
            return json_response(shown)
    raise NotFound(f"Couldn't find dyno {wanted}: see `dyno ps`.")


async def run_dyno(call: Call) -> Response:
    app = call.app()
    body = await call.json()
    command = body.get("command")
    if not isinstance(command, str) or not command.strip():
        raise invalid('Give the command to run: {"command": "python manage.py migrate"}.')
    env = body.get("env") or {}
    if not isinstance(env, dict):
        raise invalid('"env" must be an object of variables: {"env": {"FOO": "bar"}}.')
    # The one-off's own variables (`run:detached -e FOO=bar`), over the config vars: checked
    # as config vars are.
    extra = apply_config_changes({}, env)[0] if env else {}
    if body.get("attach"):
        return await attach.run_attached(call, app, body, command, extra)
    dyno = await call.platform.one_offs.run_detached(app, command, env=extra)
    return json_response(dyno_json(call.platform, app, dyno), 201)


async def restart_all(call: Call) -> Response:
    call.platform.formation.restart(call.app())
    return json_response({}, ACCEPTED)


async def restart_one(call: Call) -> Response:
    call.platform.formation.restart(call.app(), call.params["dyno"])
    return json_response({}, ACCEPTED)


async def restart_type(call: Call) -> Response:
    call.platform.formation.restart(call.app(), call.params["type"])
    return json_response({}, ACCEPTED)


async def stop_dyno(call: Call) -> Response:
    call.platform.formation.stop(call.app(), call.params["dyno"])
    return json_response({}, ACCEPTED)


async def stop_type(call: Call) -> Response:
    call.platform.formation.stop(call.app(), call.params["type"])
    return json_response({}, ACCEPTED)


# ----- what the Heroku CLI reads for features dynod does not have yet


async def empty_list(call: Call) -> Response:
    if "app" in call.params:
        call.app()  # an unknown app is still a 404
    return json_response([])


async def no_pipeline(call: Call) -> Response:
    call.app()
    raise NotFound("This app is not in a pipeline: dynod has no pipelines.")


ROUTES = [
    Route("GET", "/account", account),
    Route("GET", "/apps", list_apps),
    Route("POST", "/apps", create_app),
    Route("GET", "/users/~/apps", list_apps),
    Route("GET", "/apps/{app}", app_info),
    Route("DELETE", "/apps/{app}", destroy_app),
    Route("GET", "/apps/{app}/config-vars", config_vars),
    Route("PATCH", "/apps/{app}/config-vars", set_config_vars),
    Route("GET", "/apps/{app}/releases", list_releases),
    Route("POST", "/apps/{app}/releases", create_release),
    Route("GET", "/apps/{app}/releases/{release}", release_info),
    Route("GET", "/apps/{app}/releases/{release}/config-vars", release_config_vars),
    Route("GET", "/apps/{app}/formation", list_formation),
    Route("PATCH", "/apps/{app}/formation", scale_batch),
    Route("GET", "/apps/{app}/formation/{type}", formation_info),
    Route("PATCH", "/apps/{app}/formation/{type}", scale_one),
    Route("GET", "/apps/{app}/dynos", list_dynos),
    Route("POST", "/apps/{app}/dynos", run_dyno),
    Route("DELETE", "/apps/{app}/dynos", restart_all),
    Route("GET", "/apps/{app}/dynos/{dyno}", dyno_info),
    Route("DELETE", "/apps/{app}/dynos/{dyno}", restart_one),
    Route("POST", "/apps/{app}/dynos/{dyno}/actions/stop", stop_dyno),
    Route("DELETE", "/apps/{app}/formations/{type}", restart_type),
    Route("POST", "/apps/{app}/formations/{type}/actions/stop", stop_type),
    Route("GET", "/apps/{app}/collaborators", empty_list),
    Route("GET", "/apps/{app}/pipeline-couplings", no_pipeline),
]
