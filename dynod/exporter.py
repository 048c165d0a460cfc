"""`dynod export`: reads one release (a deployed app's current one, read-only from a data
directory a `dynod serve` may be running on, or a directory built on the spot as a deploy
builds it) and writes what dynod/export renders into OUT, whole or not at all."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TextIO

import trio
from attrs import frozen

from dynod.builds.runner import run_build
from dynod.builds.source import prepare_source, source_id
from dynod.core.dotenv import load_env_files
from dynod.core.formation import MAX_PER_TYPE, parse_formation
from dynod.core.names import PROCESS_TYPE
from dynod.errors import DynodError, UsageError
from dynod.export.kubernetes import DEFAULT_IMAGE, render_kubernetes
from dynod.export.plan import ExportPlan, Files
from dynod.export.procfile import render_procfile_export
from dynod.export.systemd import render_systemd
from dynod.platform.releases import RELEASE_PHASE_TIMEOUT
from dynod.proc.dyno import DYNO_PATH
from dynod.slugs.model import Slug, check_slug_size
from dynod.slugs.pack import pack_slug
from dynod.slugs.store import SlugReader, SlugStore
from dynod.slugs.unpack import unpack_slug
from dynod.state.apps import APP_NAME, peek_app, read_formation
from dynod.state.config import BuildConfig, resolve_data_dir
from dynod.state.files import file_checksum
from dynod.state.ledger import Ledger

FORMATS = ("systemd", "kubernetes", "procfile")
_HOST = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_USER = re.compile(r"[a-z_][a-z0-9_-]*[$]?")


@frozen(kw_only=True)
class ExportOptions:
    format: str
    out: Path
    app: str | None = None
    source: Path | None = None  # a directory to build on the spot
    data: Path | None = None  # the data directory --app is read from
    formation: str | None = None
    name: str | None = None  # the app's name for a built directory
    user: str | None = None  # systemd: a named user instead of DynamicUser
    slug_url: str | None = None  # kubernetes: where the cluster fetches slug.tgz
    image: str = DEFAULT_IMAGE
    host: str | None = None  # kubernetes: the web Ingress's host
    buildpacks: tuple[str, ...] = ()


@frozen
class _Release:
    """What an export reads: the plan and the slug's stored tarball."""

    plan: ExportPlan
    blob: Path


def export(options: ExportOptions, out: TextIO = sys.stdout) -> int:
    """Write the export; raises UsageError (exit 2) or DynodError (exit 1) before writing
    anything, and leaves nothing behind when writing fails."""
    target = _check(options)
    if options.app is not None:
        chosen = _deployed(options)
        return _write(options, target, chosen, out)
    assert options.source is not None
    with tempfile.TemporaryDirectory(prefix="dynod-export-") as scratch:
        chosen = _built(options, Path(scratch))
        return _write(options, target, chosen, out)


def _check(options: ExportOptions) -> Path:
    """OUT as an absolute path, once every option is known good."""
    if options.format not in FORMATS:
        raise UsageError(f"unknown format {options.format!r}: use {', '.join(FORMATS)}")
    if (options.app is None) == (options.source is None):
        raise UsageError("export what? give --app APP (a deployed app) or a directory to build")
    if options.format == "kubernetes" and not options.slug_url:
        raise UsageError(
            "kubernetes needs --slug-url URL: where the cluster will fetch the slug.tgz written "
            "to OUT (upload it there)"
        )
    if options.format != "kubernetes" and (options.slug_url or options.host):
        raise UsageError("--slug-url and --host are for the kubernetes format")
    if options.format != "systemd" and options.user:
        raise UsageError("--user is for the systemd format")
    if options.host is not None and not _HOST.fullmatch(options.host):
        raise UsageError(f"--host {options.host!r} is not a host name: e.g. --host www.example.com")
    if options.user is not None and not _USER.fullmatch(options.user):
        raise UsageError(f"--user {options.user!r} is not a user name: e.g. --user www-data")
    out = Path(os.path.abspath(options.out))
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise DynodError(f"{options.out} exists and is not empty: name a new or empty directory")
    if not out.parent.is_dir():
        raise DynodError(f"{out.parent} is not a directory: create it first")
    return out


def _deployed(options: ExportOptions) -> _Release:
    """The current release of a deployed app, read without changing the data directory."""
    assert options.app is not None
    data = resolve_data_dir(options.data)
    app, app_dir = peek_app(data, options.app)
    release = Ledger(app_dir / "releases.ledger").current()
    if release is None or release.slug_id is None:
        raise DynodError(f"{app.name} has no release with a slug to export: deploy it first")
    slugs = SlugReader(data / "slugs")
    slug = slugs.get(release.slug_id)
    formation = read_formation(app_dir)
    plan = _plan(app.name, slug, formation, release.config_vars, release.addons, options)
    return _Release(plan, slugs.blob_path(slug))


def _built(options: ExportOptions, scratch: Path) -> _Release:
    """A directory built as a deploy builds it, on a throwaway data directory: its buildpacks
    (or those named), a fresh cache, and its `.env` as config vars, as `dynod start` reads it."""
    assert options.source is not None
    source = options.source
    if not source.is_dir():
        raise DynodError(f"{source} is not a directory: name the app's directory")
    name = options.name or re.sub(r"[^a-z0-9-]+", "-", source.resolve().name.lower()).strip("-")
    if not APP_NAME.fullmatch(name):
        raise UsageError(
            f"{name!r} is not an app name: give one with --name (3 to 30 lowercase letters, "
            "digits and dashes, starting with a letter)"
        )
    env_file = source / ".env"
    config_vars = load_env_files([env_file]) if env_file.is_file() else {}
    build_dir = prepare_source(source, scratch / "build")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    build = partial(
        run_build,
        build_dir,
        cache_dir=scratch / "cache",
        config_vars=config_vars,
        buildpacks=list(options.buildpacks),
        source_version=source_id(source),
        output=say,
    )
    result = trio.run(build)
    info = pack_slug(build_dir, scratch / "slug.tgz")
    settings = BuildConfig()
    warning = check_slug_size(info.size, warn_mb=settings.slug_warn_mb, max_mb=settings.slug_max_mb)
    if warning:
        say(f" !     {warning}")
    store = SlugStore(scratch / "data" / "slugs")
    slug = store.put(info.path, result.process_types)
    # A first deploy's formation: one web dyno, the other types at 0 (as on Heroku).
    first = {t: int(t == "web") for t in slug.process_types if t != "release"}
    plan = _plan(name, slug, first, config_vars, (), options)
    return _Release(plan, store.blob_path(slug))


def _plan(
    app: str,
    slug: Slug,
    formation: dict[str, int],
    config_vars: dict[str, str],
    addons: tuple[str, ...],
    options: ExportOptions,
) -> ExportPlan:
    types = tuple(t for t in slug.process_types if t != "release")
    for name in slug.process_types:
        if not PROCESS_TYPE.fullmatch(name):
            raise DynodError(f"the slug's process type {name!r} is not valid: deploy again")
    counts = {t: formation.get(t, 0) for t in types}
    if options.formation is not None:
        counts.update(parse_formation(options.formation, types))
    plan = ExportPlan(
        app=app,
        process_types=dict(slug.process_types),
        formation=counts,
        config_vars=dict(config_vars),
        addons=addons,
        slug_checksum=slug.checksum,
        path=DYNO_PATH,
        release_timeout=RELEASE_PHASE_TIMEOUT,
    )
    for name in types:
        count = plan.count(name)
        if count > MAX_PER_TYPE or (count and plan.port(name, count) > 65535):
            raise UsageError(f"{name}={plan.count(name)} gives ports above 65535: scale it down")
    return plan


def _render(options: ExportOptions, target: Path, plan: ExportPlan) -> Files:
    if options.format == "systemd":
        return render_systemd(
            plan,
            app_dir=str(target / "app"),
            env_file=str(target / f"{plan.app}.env"),
            user=options.user,
        )
    if options.format == "kubernetes":
        assert options.slug_url is not None
        return render_kubernetes(
            plan, slug_url=options.slug_url, image=options.image, host=options.host
        )
    return render_procfile_export(plan)


def _write(options: ExportOptions, target: Path, chosen: _Release, out: TextIO) -> int:
    """Everything into a fresh directory beside OUT, renamed to OUT once complete."""
    plan = chosen.plan
    files = _render(options, target, plan)  # refusals (a .env value) come before any write
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        if options.format == "systemd":
            unpack_slug(chosen.blob, staging / "app", expected_checksum=plan.slug_checksum)
        elif options.format == "procfile":
            unpack_slug(chosen.blob, staging / "app", expected_checksum=plan.slug_checksum)
            for entry in (staging / "app").iterdir():  # the app is OUT itself
                entry.rename(staging / entry.name)
            (staging / "app").rmdir()
        else:
            shutil.copyfile(chosen.blob, staging / "slug.tgz")
            actual = file_checksum(staging / "slug.tgz")
            if actual != plan.slug_checksum:
                raise DynodError(f"stored slug {chosen.blob} is damaged ({actual}): deploy again")
        for relative, file in files.items():
            path = staging / relative
            path.unlink(missing_ok=True)  # the slug's own Procfile or .env
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, file.mode)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(file.text)
            os.chmod(path, file.mode)  # whatever the umask
        staging.chmod(0o755)
        os.rename(staging, target)  # replaces an empty directory
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(_summary(options, target, plan), file=out)
    return 0


def _summary(options: ExportOptions, target: Path, plan: ExportPlan) -> str:
    where = str(target)
    if options.format == "systemd":
        hidden = [d for d in ("/tmp", "/home", "/root") if target.is_relative_to(d)]
        note = ""
        if hidden and options.user is None:
            note = (
                f"Note: DynamicUser=yes hides {hidden[0]} from the service: move OUT (under /srv,"
                " say) or give --user.\n"
            )
        return (
            note + f"Wrote systemd units for {plan.app} to {where} (the app unpacked in "
            f"{where}/app).\n"
            f"Install: systemctl link {where}/*.service {where}/{plan.app}.target && "
            f"systemctl enable --now {plan.app}.target"
        )
    if options.format == "kubernetes":
        job = f"job/{plan.app}-release-{plan.slug_sha256[:10]}"
        first = f"kubectl apply -f {where}/00-secret-config.json"
        if plan.addons:
            first += f" -f {where}/01-secret-addons.json"  # filled in by then
        wait = ""
        if plan.release_command is not None:
            first += f" -f {where}/10-job-release.json"
            limit = int(plan.release_timeout)
            wait = f" && kubectl wait --for=condition=complete --timeout={limit}s {job}"
        return (
            f"Wrote Kubernetes manifests for {plan.app} to {where}.\n"
            f"Upload {where}/slug.tgz to {options.slug_url}, then: {first}{wait}"
            f" && kubectl apply -f {where}"
        )
    formation = ",".join(f"{t}={plan.count(t)}" for t in plan.types)
    honcho = formation + (",release=0" if plan.release_command else "")
    return (
        f"Wrote {plan.app} with a Procfile and .env to {where}.\n"
        f"Run it in {where}: foreman start | honcho start -c {honcho} | dynod start -m {formation}"
    )


def options(args: argparse.Namespace) -> ExportOptions:
    """The command line's `dynod export` arguments as options."""
    if args.app is not None and args.dir is not None:
        raise UsageError("give --app APP or DIR, not both")
    return ExportOptions(
        format=args.format,
        out=args.out,
        app=args.app,
        source=args.dir,
        data=args.data,
        formation=args.formation,
        name=args.name,
        user=args.user,
        slug_url=args.slug_url,
        image=args.image or DEFAULT_IMAGE,
        host=args.host,
        buildpacks=tuple(args.buildpack),
    )
