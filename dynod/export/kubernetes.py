"""The Kubernetes export: per process type a Deployment whose init container fetches the slug,
checks its checksum and unpacks it into an emptyDir; config vars as a Secret, add-ons' vars as a
Secret to fill in, a Service (and with a host an Ingress) for `web`, the release phase as a Job.
Manifests are JSON, which `kubectl apply -f` reads as it reads YAML."""

from __future__ import annotations

import json
import re
from typing import Any

from dynod.errors import DynodError
from dynod.export.plan import PROFILE_PRELUDE, ExportPlan, File, Files, addon_vars, grace_seconds

CONTAINER_PORT = 5000  # each pod has its own network: every dyno listens on the same $PORT
SLUG_MOUNT = "/slug"
APP_DIR = "/app"  # Heroku's HOME and working directory
DEFAULT_IMAGE = "heroku/heroku:24"  # the stack image slugs are built for (names.STACK)
FETCH_IMAGE = "busybox:1.36"
# The slug's members are under ./app, so the app lands in the volume's app/ directory.
_FETCH = (
    'wget -q -O /tmp/slug.tgz "$SLUG_URL" && '
    'echo "$SLUG_SHA256  /tmp/slug.tgz" | sha256sum -c - && '
    f"tar -xzf /tmp/slug.tgz -C {SLUG_MOUNT} && rm /tmp/slug.tgz"
)
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def render_kubernetes(
    plan: ExportPlan, *, slug_url: str, image: str = DEFAULT_IMAGE, host: str | None = None
) -> Files:
    """Manifests for `plan`, one object a file, named so that `ls` lists them in the order to
    apply them: Secrets, the release Job, Deployments, then the Service and Ingress."""
    names = _object_names(plan)
    objects: list[tuple[str, dict[str, Any]]] = [("00-secret-config", _config_secret(plan))]
    supply = _addon_secret(plan)
    if supply is not None:
        objects.append(("01-secret-addons", supply))
    release = plan.release_command
    if release is not None:
        objects.append(("10-job-release", _release_job(plan, release, slug_url, image)))
    for name in plan.types:
        objects.append(
            (f"20-deployment-{names[name]}", _deployment(plan, name, names[name], slug_url, image))
        )
    if "web" in plan.types:
        objects.append(("30-service-web", _service(plan)))
        if host is not None:
            objects.append(("31-ingress-web", _ingress(plan, host)))
    return {f"{stem}.json": File(json.dumps(obj, indent=2) + "\n") for stem, obj in objects}


def _literal(text: str) -> str:
    """`text` as a container's command element, which Kubernetes would otherwise expand
    `$(NAME)` in: `$$` is its escape for `$`."""
    return text.replace("$", "$$")


def _object_names(plan: ExportPlan) -> dict[str, str]:
    """Each type's name in object names (`Worker_2` → `worker-2`), refusing clashes and names
    Kubernetes would refuse."""
    names: dict[str, str] = {}
    for name in plan.process_types:
        kube = name.lower().replace("_", "-")
        full = f"{plan.app}-{kube}"
        if not _DNS_LABEL.fullmatch(kube) or len(full) > 63:
            raise DynodError(
                f"process type {name!r} gives {full!r}, not a name Kubernetes accepts (lowercase "
                "letters, digits and -, at most 63): rename the type in the Procfile"
            )
        if kube in names.values():
            raise DynodError(
                f"process types {name!r} and another both become {full!r} in Kubernetes: "
                "rename one in the Procfile"
            )
        names[name] = kube
    return names


def _labels(plan: ExportPlan, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": plan.app,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "dynod-export",
    }


def _meta(plan: ExportPlan, name: str, component: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "labels": _labels(plan, component), **more}


def _config_secret(plan: ExportPlan) -> dict[str, Any]:
    supplied = addon_vars(plan.addons)
    data = {k: v for k, v in plan.config_vars.items() if k not in supplied}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(plan, f"{plan.app}-config", "config"),
        "type": "Opaque",
        "stringData": data,
    }


def _addon_secret(plan: ExportPlan) -> dict[str, Any] | None:
    """The add-ons' config vars, empty: the cluster's own services must supply them."""
    supplied = addon_vars(plan.addons)
    if not supplied:
        return None
    note = "; ".join(f"{key}: from add-on {addon}" for key, addon in supplied.items())
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(
            plan,
            f"{plan.app}-addons",
            "addons",
            annotations={"dynod/supply": f"fill in before applying: {note}"},
        ),
        "type": "Opaque",
        "stringData": dict.fromkeys(supplied, ""),
    }


def _pod(
    plan: ExportPlan, dyno: str, command: str, slug_url: str, image: str, *, web: bool
) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "DYNO", "value": dyno},
        {"name": "HOME", "value": APP_DIR},
        {"name": "PATH", "value": plan.path},
    ]
    container: dict[str, Any] = {
        "name": "dyno",
        "image": image,
        "workingDir": APP_DIR,
        "command": ["bash", "-c", _literal(PROFILE_PRELUDE + command)],
        "envFrom": [{"secretRef": {"name": f"{plan.app}-config"}}],
        "volumeMounts": [{"name": "slug", "mountPath": APP_DIR, "subPath": "app"}],
    }
    if addon_vars(plan.addons):
        container["envFrom"].append({"secretRef": {"name": f"{plan.app}-addons"}})
    if web:
        env.insert(0, {"name": "PORT", "value": str(CONTAINER_PORT)})
        container["ports"] = [{"name": "http", "containerPort": CONTAINER_PORT}]
        # Up once $PORT accepts connections, as dynod decides a web dyno is up.
        container["readinessProbe"] = {"tcpSocket": {"port": "http"}, "periodSeconds": 5}
    container["env"] = env
    fetch = {
        "name": "fetch-slug",
        "image": FETCH_IMAGE,
        "command": ["sh", "-c", _literal(_FETCH)],
        "env": [
            {"name": "SLUG_URL", "value": slug_url},
            {"name": "SLUG_SHA256", "value": plan.slug_sha256},
        ],
        "volumeMounts": [{"name": "slug", "mountPath": SLUG_MOUNT}],
    }
    return {
        "terminationGracePeriodSeconds": grace_seconds(plan),
        "initContainers": [fetch],
        "containers": [container],
        "volumes": [{"name": "slug", "emptyDir": {}}],
    }


def _deployment(
    plan: ExportPlan, name: str, kube: str, slug_url: str, image: str
) -> dict[str, Any]:
    labels = _labels(plan, kube)
    # A pod has no dyno number: DYNO is the type and the pod's name (web.app-web-5d9c-x2x7q).
    pod = _pod(
        plan, f"{name}.$(POD_NAME)", plan.process_types[name], slug_url, image, web=name == "web"
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(plan, f"{plan.app}-{kube}", kube),
        "spec": {
            "replicas": plan.count(name),
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def _release_job(plan: ExportPlan, command: str, slug_url: str, image: str) -> dict[str, Any]:
    pod = _pod(plan, "release.1", command, slug_url, image, web=False)
    pod["restartPolicy"] = "Never"
    labels = _labels(plan, "release")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        # Named by the slug: a new release is a new Job (a Job's pod template cannot change).
        "metadata": _meta(plan, f"{plan.app}-release-{plan.slug_sha256[:10]}", "release"),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(plan.release_timeout),
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def _service(plan: ExportPlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(plan, plan.app, "web"),
        "spec": {
            "selector": _labels(plan, "web"),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def _ingress(plan: ExportPlan, host: str) -> dict[str, Any]:
    backend = {"service": {"name": plan.app, "port": {"name": "http"}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(plan, plan.app, "web"),
        "spec": {"rules": [{"host": host, "http": {"paths": [path]}}]},
    }
