"""The command line: parses (`cli_parser`), delegates to `app`, prints a table or JSON, and maps errors to
exit codes.

Exit codes: 0 fine (every watch checked, in sync or its action succeeded; for `--dry-run`, nothing would be done);
1 an action failed (or the database failed); 2 bad configuration or usage; 3 a watch could not be checked (it wins
over 5); 4 another instance holds the lock; 5 `--dry-run` found at least one action it would take (`EXIT_WOULD_ACT`,
as `git diff --exit-code` says 1 for a difference); 128 + the signal when interrupted (130 SIGINT, 143 SIGTERM);
141 the output was closed. Errors are one sentence on stderr (one JSON object with `--log-format json`); a
traceback only with `--log-level debug`.
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

from sqlalchemy.engine import make_url

from reconciler import app, cli_parser, config, engine, errors, model, render, report
from reconciler.progress import Progress

log = logging.getLogger("reconciler")
EXIT_OK, EXIT_ACTION_FAILED, EXIT_CONFIG, EXIT_UNCHECKED, EXIT_LOCKED = 0, 1, 2, 3, 4
EXIT_WOULD_ACT = 5  # --dry-run: at least one action would be taken
EXIT_INTERRUPTED = 128 + signal.SIGINT  # and 128 + SIGTERM
EXIT_OUTPUT_CLOSED = 128 + signal.SIGPIPE
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
    # A long wait says how it goes once a minute (or on a live line), whatever the level, unless only errors count.
    logging.getLogger("reconciler.progress").setLevel(logging.ERROR if level == "error" else logging.INFO)
    # APScheduler reports every job it runs at info: one line per watch per interval, which says nothing.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def _say(message: str, fmt: str, *, level: int = logging.ERROR) -> None:
    """One line on stderr from the command itself, outside the log: `reconciler: MESSAGE`, or with `--log-format
    json` the object every log line is, so that a log collector reads the last line too."""
    if fmt == "json":
        record = log.makeRecord(log.name, level, "(cli)", 0, message, (), None)
        print(_JsonFormatter().format(record), file=sys.stderr, flush=True)
    else:
        print(f"reconciler: {message}", file=sys.stderr, flush=True)


@contextmanager
def _stoppable(application: app.App, fmt: str) -> Iterator[list[int]]:
    """SIGINT/SIGTERM ask the pass to stop (its waits wake at once, open actions stay open to be resumed); a
    second one ends the process at once, which the outbox also survives. Yields the signals received."""
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if received:
            os._exit(128 + signum)
        received.append(signum)
        application.stop.set()
        _say("stopping (again to quit at once) …", fmt, level=logging.WARNING)

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
    it = "it" if len(actions) == 1 else "them"
    return (
        f"{shown}; the next `reconciler reconcile` or `reconciler run` resumes {it} "
        "(a launched job is followed, never launched again)"
    )


def _would_act(document: dict[str, Any]) -> bool:
    """Whether a dry run found an action it would take: a drift whose action it would send."""
    return any(
        w["decision"]["verdict"] == model.Verdict.DRIFT.value and (w["action"] or {}).get("status") == "would_act"
        for w in document["watches"]
    )


def cmd_reconcile(args: argparse.Namespace, application: app.App) -> int:
    # A long wait for AWX or a roll-out: a live line on a terminal, else a log line a minute.
    application.progress = waiting = Progress(engine.utc_now, stream=sys.stderr, live=sys.stderr.isatty())
    with _stoppable(application, args.log_format) as received:
        try:
            result = application.reconcile(args.watch, dry_run=args.dry_run)
        except errors.Stopped:
            waiting.done()
            _say(f"interrupted: {_left_open(application, args.watch)}", args.log_format)
            _exit_now(application, 128 + (received[0] if received else signal.SIGINT))
        finally:
            waiting.done()
    document = report.reconcile_document(result)
    _print_json(document) if args.json else render.reconcile(render.console(), document)
    # Each failure was logged once, at warning, by the pass itself: the table row and the exit code say the rest.
    unchecked = any(isinstance(o.result, model.CheckFailure) for o in result.outcomes)
    blocked = any(o.decision.verdict is model.Verdict.BLOCKED for o in result.outcomes)  # due; its secret is unset
    if args.dry_run:  # an earlier action's failure is no news of this pass, which acted on nothing
        if unchecked:
            return EXIT_UNCHECKED
        return EXIT_WOULD_ACT if blocked or _would_act(document) else EXIT_OK
    if blocked or any(w["state"] in ("failed", "deploying") for w in document["watches"]):
        return EXIT_ACTION_FAILED
    return EXIT_UNCHECKED if unchecked else EXIT_OK


def cmd_status(args: argparse.Namespace, application: app.App) -> int:
    document = application.status(args.watch, now=engine.utc_now())
    _print_json(document) if args.json else render.status(render.console(), document)
    return EXIT_OK


def cmd_history(args: argparse.Namespace, application: app.App) -> int:
    names = [w.name for w in application.select(args.watch)] if args.watch else []  # unknown: usage error, not empty
    store = application.reader()
    entries = store.history(watch=names or None, limit=args.limit) if store is not None else []
    actions = application.actions(watch=names, limit=args.limit)
    document = report.history_document(entries, actions, limit=args.limit)
    _print_json(document) if args.json else render.history(render.console(), document, now=engine.utc_now())
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
    for missing, users in application.settings.missing_secrets():
        held = (f"watch {users[0]}" if len(users) == 1 else f"watches {', '.join(users)}") if users else "no watch"
        if missing.key.startswith("awx."):
            effect = f"{held} will be observed but not acted on"
        else:
            effect = f"`reconcile` and `run` refuse to start ({held} cannot be checked)"
        _say(f"warning: {missing.key}: {missing.what}; {effect}", args.log_format, level=logging.WARNING)
    valid = f"configuration {application.settings.source} is valid"
    if args.log_format == "json":
        _say(valid, args.log_format, level=logging.INFO)
    else:
        print(valid, file=sys.stderr)
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
    args = cli_parser.parse(argv)
    _setup_logging(args.log_level, args.log_format)
    application: app.App | None = None
    try:
        settings = config.load(config.resolve_path(args.config, os.environ), database=args.database)
        application = app.App(settings)
        return COMMANDS[args.command](args, application)
    except errors.ReconcilerError as exc:
        if args.log_level == "debug":
            log.exception("failed")
        _say(str(exc), args.log_format)
        return _exit_code(exc)
    except KeyboardInterrupt:
        _say("interrupted", args.log_format)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `status --json | head -1`: whoever read the output stopped reading
        _silence_stdout()
        _say("the output was closed before all of it was written", args.log_format)
        return EXIT_OUTPUT_CLOSED
    except OSError as exc:  # anything else the system refused at start, in one line
        _say(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", args.log_format)
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
