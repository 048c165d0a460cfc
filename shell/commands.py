"""The command table: every `dyno` command's name, arguments, flags, help and handler. One-shot
`dyno COMMAND …` and the interactive shell both dispatch through `run`, so a command behaves the
same (and exits the same way) wherever it is typed."""

from __future__ import annotations

from collections.abc import Sequence

from shell import addons, apps, attach, builds, drains, dynos, releases
from shell.context import Context
from shell.errors import Failure, UsageError
from shell.grammar import Arg, Command, Flag, Parsed, find, overview, parse


def _help(ctx: Context, parsed: Parsed) -> None:
    name = parsed.arg("COMMAND")
    ctx.say(find(TABLE, name).help() if name else overview(TABLE))


NUM = Flag("num", "how many to show", "n", "N")

TABLE: tuple[Command, ...] = (
    Command("apps", "list your apps", apps.apps, app=False, json=True),
    Command(
        "apps:create",
        "create an app (dynod picks a name if you give none)",
        apps.create,
        (Arg("NAME", required=False),),
        json=True,
    ),
    Command("apps:info", "show an app's details", apps.info, json=True),
    Command(
        "apps:destroy",
        "destroy an app, its releases, dynos and add-ons",
        apps.destroy,
        (Arg("APP", required=False),),
        (Flag("confirm", "the app's name again: destroying cannot be undone", value="NAME"),),
    ),
    Command(
        "deploy",
        "build DIR (default .) into a release and stream the build",
        builds.deploy,
        (Arg("DIR", required=False),),
        (
            Flag(
                "buildpack",
                "a buildpack to use instead of detection (repeatable, in order)",
                "b",
                "BUILDPACK",
                repeat=True,
            ),
        ),
        details="The directory is packed without .git and uploaded; its git commit, if any, "
        "becomes the source version. Exits 1 if the build fails.",
    ),
    Command(
        "git:remote",
        "add (or update) the git remote `dynod` for `git push dynod main`",
        apps.git_remote,
    ),
    Command(
        "builds", "list the app's builds, newest first", builds.builds, flags=(NUM,), json=True
    ),
    Command(
        "builds:output",
        "show a build's output (default: the newest build)",
        builds.build_output,
        (Arg("ID", required=False),),
    ),
    Command("ps", "list the app's dynos", dynos.ps, json=True),
    Command(
        "ps:scale",
        "scale process types: web=2 worker=1, web+1, worker-1 (none: show)",
        dynos.scale,
        (Arg("TYPE=N", required=False, many=True),),
        json=True,
    ),
    Command(
        "ps:type",
        "show or set dyno sizes: eco (all types) or web=eco; eco apps sleep when idle",
        dynos.ps_type,
        (Arg("SIZE", required=False, many=True),),
        json=True,
        details="An app whose dynos are all eco (or free) sleeps after 30 minutes without a "
        "request and wakes on the next one; `dyno ps:type standard-1X` keeps it awake.",
    ),
    Command(
        "ps:restart",
        "restart all dynos, one process type or one dyno",
        dynos.restart,
        (Arg("TARGET", required=False),),
        details="TARGET is a process type (web) or a dyno (web.1); none restarts them all.",
    ),
    Command(
        "ps:stop",
        "stop a dyno or a process type's dynos (the formation starts fresh ones)",
        dynos.stop,
        (Arg("TARGET"),),
        details="To keep a process type down, scale it to 0 with `dyno ps:scale TYPE=0`.",
    ),
    Command("config", "show the app's config vars", releases.config, json=True),
    Command("config:get", "print one config var's value", releases.config_get, (Arg("KEY"),)),
    Command(
        "config:set",
        "set config vars (one release, dynos restart)",
        releases.config_set,
        (Arg("KEY=VALUE", many=True),),
    ),
    Command(
        "config:unset",
        "unset config vars (one release, dynos restart)",
        releases.config_unset,
        (Arg("KEY", many=True),),
    ),
    Command(
        "releases",
        "list the app's releases, newest first",
        releases.releases,
        flags=(NUM,),
        json=True,
    ),
    Command(
        "releases:info",
        "show a release (default: the newest)",
        releases.release_info,
        (Arg("VERSION", required=False),),
        json=True,
    ),
    Command(
        "releases:rollback",
        "release an earlier version's slug and config vars again",
        releases.rollback,
        (Arg("VERSION", required=False),),
        details="VERSION defaults to the release before the current one.",
    ),
    Command(
        "releases:output",
        "show a release command's output (default: the newest release)",
        releases.release_output,
        (Arg("VERSION", required=False),),
    ),
    Command("addons", "list the app's add-ons", addons.addons, json=True),
    Command(
        "addons:create",
        "provision an add-on (heroku-redis, heroku-postgresql) and attach it in a release",
        addons.create,
        (Arg("SERVICE[:PLAN]"),),
        (Flag("as", "the add-on's name (default redis-1, postgresql-1, ...)", value="NAME"),),
        json=True,
        details="Its config var (REDIS_URL, DATABASE_URL) is set in a new release and the "
        "app's dynos restart on it.",
    ),
    Command("addons:info", "show an add-on", addons.info, (Arg("NAME"),), json=True),
    Command(
        "addons:destroy",
        "stop an add-on, detach it in a release and delete its data",
        addons.destroy,
        (Arg("NAME"),),
        (Flag("confirm", "the app's name: destroying deletes the data for good", value="APP"),),
        json=True,
    ),
    Command(
        "logs",
        "show the app's recent log lines, and follow them with -t",
        dynos.logs,
        flags=(
            Flag("num", "how many lines to show first (default 100)", "n", "N"),
            Flag("tail", "keep following new lines until Ctrl-C", "t"),
            Flag("dyno", "only this dyno's lines (web.1)", "d", "DYNO"),
            Flag("process-type", "only this process type's lines (web)", "p", "TYPE"),
            Flag("source", "only lines from this source: app or heroku", "s", "SOURCE"),
        ),
    ),
    Command(
        "run",
        "run a one-off dyno attached to this terminal; exits with the dyno's status",
        attach.run,
        (Arg("COMMAND", many=True, literal=True),),
        (
            Flag(
                "env", "a variable for the dyno (repeatable; `;` splits)", "e", "K=V", repeat=True
            ),
            Flag("size", "the dyno size (accepted, as the Heroku CLI sends it)", "s", "SIZE"),
            Flag("no-tty", "no terminal in the dyno, even when stdin is one"),
        ),
        details="With stdin a terminal the dyno gets one of the same size (Ctrl-C and Ctrl-D "
        "reach it); otherwise stdin is piped to it and its end ends the dyno's input. A "
        "process type's name runs that type's command. The words after COMMAND are its own, "
        "except -a/--app APP; after `--` every word is the command's.",
    ),
    Command(
        "run:detached",
        "run a one-off dyno whose output goes to the logs",
        dynos.run_detached,
        (Arg("COMMAND", many=True, literal=True),),
        json=True,
        details="The words after COMMAND are its own, flags included, except -a/--app APP "
        "(as with the Heroku CLI); after `--` every word is the command's.",
    ),
    Command("drains", "list the app's log drains", drains.drains, json=True),
    Command(
        "drains:add",
        "send the app's log to a syslog:// or http(s):// URL",
        drains.add,
        (Arg("URL"),),
        json=True,
        details="syslog://HOST:PORT and syslog+tls://HOST:PORT get RFC 5424 messages over TCP; "
        "http(s):// URLs get batched POSTs (application/logplex-1), as Heroku's drains do.",
    ),
    Command(
        "drains:remove",
        "stop sending the app's log to a drain (its URL, id or token)",
        drains.remove,
        (Arg("URL"),),
        json=True,
    ),
    Command(
        "help",
        "show the commands, or one command's help",
        _help,
        (Arg("COMMAND", required=False),),
        app=False,
    ),
)


def run(ctx: Context, words: Sequence[str]) -> int:
    """Run one command line (without `dyno`); the exit status: 0, 1 (refused or failed) or 2
    (usage). Errors are shown as one line on `ctx.err`."""
    try:
        if not words:
            raise UsageError("no command given: run `dyno help` for the list")
        command = find(TABLE, words[0])
        parsed = parse(command, words[1:])
        ctx.aim(parsed)  # a running `dynod start` here, or dynod serve
        if parsed.on("help"):
            ctx.say(command.help())
            return 0
        return command.handler(ctx, parsed) or 0
    except (Failure, UsageError) as error:
        print(f"dyno: {error}", file=ctx.err, flush=True)
        return error.exit_status
