"""The command line of SPEC.md: parses, delegates to `app`, prints a table or JSON, and maps errors to exit codes.

Exit codes: 0 fine; 1 an action failed (or the database failed); 2 bad configuration or usage; 3 a watch could
not be checked; 4 another instance holds the lock. Errors are one sentence on stderr; a traceback only with
`--log-level debug`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import Any, NoReturn

from rich.console import Console
from sqlalchemy.engine import make_url

from reconciler import __version__, app, config, engine, errors, model, render, report

log = logging.getLogger("reconciler")
EXIT_OK, EXIT_ACTION_FAILED, EXIT_CONFIG, EXIT_UNCHECKED, EXIT_LOCKED = 0, 1, 2, 3, 4
_LOG_FIELDS = ("watch", "image", "decision", "action_id")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in _LOG_FIELDS if hasattr(record, k)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # urllib3 warns on every retry; the outcome is reported once, by us, unless debugging.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if level == "debug" else logging.ERROR)
    # APScheduler reports every job it runs at info: one line per watch per interval, which says nothing.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reconciler", description="Keeps deployments in step with images.")
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    parser.add_argument("--config", help="configuration file (default $RECONCILER_CONFIG, else ./config.toml)")
    parser.add_argument("--database", help="database URL (overrides $RECONCILER_DATABASE_URL and the file)")
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        help="default: info for run, else warning (any case)",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("run", help="the daemon: poll on schedule, act on drift, serve the endpoints")

    rec = commands.add_parser("reconcile", help="one pass over the watches: check, decide, act, report")
    rec.add_argument("--watch", action="append", default=[], metavar="NAME", help="only this watch (repeatable)")
    rec.add_argument("--dry-run", action="store_true", help="decide and print, change nothing anywhere")
    rec.add_argument("--json", action="store_true", help="print JSON instead of a table")

    st = commands.add_parser("status", help="what is known, from the database alone")
    st.add_argument("--watch", action="append", default=[], metavar="NAME")
    st.add_argument("--json", action="store_true")

    hist = commands.add_parser("history", help="observations and actions, newest first")
    hist.add_argument("--watch", metavar="NAME")
    hist.add_argument("--limit", type=_positive, default=50, metavar="N")
    hist.add_argument("--json", action="store_true")

    retry = commands.add_parser("retry", help="clear a watch's failures (gave up, back-off) so the next pass acts")
    retry.add_argument("watch", metavar="WATCH")

    db = commands.add_parser("db", help="database upkeep")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    db_commands.add_parser("upgrade", help="apply the migrations")

    cfg = commands.add_parser("config", help="configuration")
    cfg_commands = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    cfg_commands.add_parser("check", help="validate and print the resolved configuration, secrets redacted")
    return parser


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200, no_color=True)


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


@contextmanager
def _stoppable(application: app.App) -> Iterator[list[int]]:
    """SIGINT/SIGTERM ask the pass to stop (its waits wake at once, open actions stay open to be resumed); a
    second one ends the process at once, which the outbox also survives. Yields the signals received."""
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if received:
            os._exit(128 + signum)
        received.append(signum)
        application.stop.set()
        print("reconciler: stopping (again to quit at once) …", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _left_open(application: app.App, names: Sequence[str]) -> str:
    actions = application.open_actions(names)
    if not actions:
        return "no action was left open"
    shown = "; ".join(
        f"action #{a.id} of watch {a.watch} is left {a.status.value}" + (f" ({a.link})" if a.link else "")
        for a in actions
    )
    return (
        f"{shown}; the next `reconciler reconcile` or `reconciler run` resumes it "
        "(a launched job is followed, never launched again)"
    )


def cmd_reconcile(args: argparse.Namespace, application: app.App) -> int:
    with _stoppable(application) as received:
        try:
            result = application.reconcile(args.watch, dry_run=args.dry_run)
        except errors.Stopped:
            print(f"reconciler: interrupted: {_left_open(application, args.watch)}", file=sys.stderr)
            _exit_now(application, 128 + (received[0] if received else signal.SIGINT))
    document = report.reconcile_document(result)
    _print_json(document) if args.json else render.reconcile(_console(), document)
    unchecked = [o for o in result.outcomes if isinstance(o.result, model.CheckFailure)]
    for outcome in unchecked:
        assert isinstance(outcome.result, model.CheckFailure)
        print(f"reconciler: watch {outcome.watch.name}: {outcome.result.message}", file=sys.stderr)
    unfinished = [w for w in document["watches"] if w["state"] in ("failed", "deploying")]
    for w in unfinished:
        action = w["last_action"] or {}
        print(
            f"reconciler: watch {w['name']}: action {w['state']}: {action.get('detail') or w['state']}", file=sys.stderr
        )
    if unfinished:
        return EXIT_ACTION_FAILED
    return EXIT_UNCHECKED if unchecked else EXIT_OK


def cmd_status(args: argparse.Namespace, application: app.App) -> int:
    document = application.status(args.watch, now=engine.utc_now())
    _print_json(document) if args.json else render.status(_console(), document)
    return EXIT_OK


def cmd_history(args: argparse.Namespace, application: app.App) -> int:
    if args.watch:
        application.settings.watch(args.watch)  # an unknown name is a usage error, not an empty history
    store = application.reader()
    entries = store.history(watch=args.watch, limit=args.limit) if store is not None else []
    actions = application.actions(watch=args.watch, limit=args.limit)
    document = report.history_document(entries, actions, limit=args.limit)
    _print_json(document) if args.json else render.history(_console(), document)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, application: app.App) -> int:
    action = application.retry(args.watch, now=engine.utc_now())
    if action is None:
        print(f"watch {args.watch} has no failed action to retry; nothing changed")
        return EXIT_OK
    print(
        f"watch {args.watch}: action #{action.id} ({action.tag} {action.digest}) no longer holds it back; "
        "the next pass acts again, from attempt 1"
    )
    return EXIT_OK


def cmd_db(args: argparse.Namespace, application: app.App) -> int:
    revision = application.upgrade()
    print(f"database {application.db.url.render_as_string(hide_password=True)} is at revision {revision}")
    return EXIT_OK


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = [(seconds // 3600, "h"), (seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n)


def _resolved(settings: config.Settings) -> dict[str, Any]:
    def secret(value: config.Secret | None) -> str | None:
        return None if value is None else f"<redacted, from {value.source}>"

    def watch(w: model.Watch) -> dict[str, Any]:
        action: dict[str, Any] | None = None
        if isinstance(w.action, model.AwxAction):
            action = {
                "kind": "awx",
                "awx": w.action.server,
                "workflow_template" if w.action.workflow else "template": w.action.template,
                "extra_vars": dict(w.action.extra_vars),
            }
        elif isinstance(w.action, model.StatefulSetAction):
            action = {
                "kind": "statefulset",
                "namespace": w.action.namespace,
                "name": w.action.name,
                "container": w.action.container,
                "mode": w.action.mode.value,
                "on_delete": w.action.on_delete.value,
                "timeout": _duration(w.action.timeout),
            }
        return {
            "name": w.name,
            "image": str(w.image),
            "selector": w.selector.describe(),
            "interval": _duration(w.interval),
            "jitter": _duration(w.jitter),
            "settle": _duration(w.settle),
            "first_seen": w.first_seen.value,
            "max_attempts": w.max_attempts,
            "action": action,
        }

    return {
        "source": settings.source,
        "database": make_url(settings.database).render_as_string(hide_password=True),
        "server": {
            "listen": settings.server.listen,
            "token": secret(settings.server.token),
            "webhook_secret": secret(settings.server.webhook_secret),
        },
        "registries": {
            host: {"url": r.url, "username": secret(r.username), "password": secret(r.password)}
            for host, r in settings.registries.items()
        },
        "awx": {
            name: {
                "url": a.url,
                "token": secret(a.token),
                "username": secret(a.username),
                "password": secret(a.password),
                "timeout": _duration(a.timeout),
                "poll": _duration(a.poll),
                "marker": a.marker,
            }
            for name, a in settings.awx.items()
        },
        "kubernetes": {"context": settings.kube_context, "poll": _duration(settings.kube_poll)},
        "watch": [watch(w) for w in settings.watches],
    }


def cmd_config(args: argparse.Namespace, application: app.App) -> int:
    _print_json(_resolved(application.settings))
    print(f"configuration {application.settings.source} is valid", file=sys.stderr)
    return EXIT_OK


def cmd_run(args: argparse.Namespace, application: app.App) -> int:
    application.serve()
    _exit_now(application, EXIT_OK)


def _exit_now(application: app.App, code: int) -> NoReturn:
    """End the process once everything is recorded and said, without waiting for worker threads still blocked in a
    request that nothing will read (up to its 30 s timeout): the outbox needs nothing more of them."""
    application.close()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


COMMANDS: dict[str, Callable[[argparse.Namespace, app.App], int]] = {
    "run": cmd_run,
    "reconcile": cmd_reconcile,
    "status": cmd_status,
    "history": cmd_history,
    "retry": cmd_retry,
    "db": cmd_db,
    "config": cmd_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.log_level = args.log_level or ("info" if args.command == "run" else "warning")
    _setup_logging(args.log_level, args.log_format)
    application: app.App | None = None
    try:
        settings = config.load(config.resolve_path(args.config, os.environ), database=args.database)
        application = app.App(settings)
        return COMMANDS[args.command](args, application)
    except errors.ReconcilerError as exc:
        if args.log_level == "debug":
            log.exception("failed")
        print(f"reconciler: {exc}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        print("reconciler: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `status --json | head -1`: whoever read the output stopped reading
        _silence_stdout()
        print("reconciler: the output was closed before all of it was written", file=sys.stderr)
        return 128 + signal.SIGPIPE
    except OSError as exc:  # anything else the system refused at start, in one line
        print(f"reconciler: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return EXIT_ACTION_FAILED
    finally:
        if application is not None:
            application.close()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _exit_code(exc: errors.ReconcilerError) -> int:
    if isinstance(exc, errors.ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, errors.RegistryError):
        return EXIT_UNCHECKED
    if isinstance(exc, errors.LockHeld):
        return EXIT_LOCKED
    return EXIT_ACTION_FAILED


if __name__ == "__main__":
    sys.exit(main())
