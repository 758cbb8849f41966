"""The commands behind the command line: each takes the parsed arguments and the `App`, prints a table or JSON,
and returns its exit code (`output`). Imported once the arguments are parsed: `--help` needs none of this.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from reconciler import config, config_view, engine, errors, model, reading, report
from reconciler.output import (
    EXIT_ACTION_FAILED,
    EXIT_OK,
    EXIT_UNCHECKED,
    EXIT_WOULD_ACT,
    print_json,
    say,
)
from reconciler.progress import Progress

if TYPE_CHECKING:
    from reconciler import app

PROGRESS_EVERY = 2.0  # seconds between the progress lines of a long prune


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
        say("stopping (again to quit at once) …", fmt, level=logging.WARNING)

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
            say(f"interrupted: {_left_open(application, args.watch)}", args.log_format)
            _exit_now(application, 128 + (received[0] if received else signal.SIGINT))
        finally:
            waiting.done()
    document = report.reconcile_document(result)
    if args.json:
        print_json(document)
    else:
        from reconciler import render  # noqa: PLC0415  (rich, ~25 ms: for the tables, not for --json)

        render.reconcile(render.console(), document)
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


def cmd_status(args: argparse.Namespace, application: reading.Reading) -> int:
    document = application.status(args.watch, now=engine.utc_now())
    if args.json:
        print_json(document)
    else:
        from reconciler import render  # noqa: PLC0415  (rich, ~25 ms: for the tables, not for --json)

        render.status(render.console(), document)
    return EXIT_OK


def cmd_history(args: argparse.Namespace, application: reading.Reading) -> int:
    document = application.history(args.watch, limit=args.limit)  # an unknown watch: a usage error, not empty
    if args.json:
        print_json(document)
    else:
        from reconciler import render  # noqa: PLC0415  (rich, ~25 ms: for the tables, not for --json)

        render.history(render.console(), document, now=engine.utc_now())
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, application: app.App) -> int:
    action = application.retry(args.watch, now=engine.utc_now())
    if action is None:
        print(f"watch {args.watch} has no failed or rejected action to retry; nothing changed")
        return EXIT_OK
    again = (
        "the next pass offers it for approval again"
        if action.status is model.ActionStatus.REJECTED
        else "the next pass acts again, from attempt 1"
    )
    print(f"watch {args.watch}: action #{action.id} ({action.tag} {action.digest}) no longer holds it back; {again}")
    return EXIT_OK


def _decider(given: str | None) -> str:
    """Who approves or rejects: as given, else the login name."""
    if given is not None:
        return given
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container's user without a passwd entry)
        return f"uid {os.getuid()}"


def _decide(args: argparse.Namespace, application: app.App, *, approve: bool) -> int:
    action = application.decide(args.watch, args.digest, approve=approve, by=_decider(args.by), now=engine.utc_now())
    if args.json:
        print_json({"watch": action.watch, "action": report.action_document(action)})
        return EXIT_OK
    what = f"watch {action.watch}: action #{action.id} ({action.tag} {action.digest})"
    if approve:
        print(
            f"{what} approved by {action.decided_by}; a running daemon launches it within seconds, "
            "else the next `reconciler reconcile` does"
        )
    else:
        print(f"{what} rejected by {action.decided_by}; that digest is not offered again, a newer one is")
    return EXIT_OK


def cmd_approve(args: argparse.Namespace, application: app.App) -> int:
    return _decide(args, application, approve=True)


def cmd_reject(args: argparse.Namespace, application: app.App) -> int:
    return _decide(args, application, approve=False)


def cmd_db(args: argparse.Namespace, application: app.App) -> int:
    if args.db_command == "prune":
        return _prune(args, application)
    revision = application.upgrade()
    print(f"database {application.db.url.render_as_string(hide_password=True)} is at revision {revision}")
    return EXIT_OK


def _prune(args: argparse.Namespace, application: app.App) -> int:
    """`db prune [--dry-run]`: what went (or would go), by kind; a line on stderr every few seconds while it works."""
    now = engine.utc_now()
    said_at = [time.monotonic()]

    def on_batch(kind: str, removed: int) -> None:
        if time.monotonic() - said_at[0] >= PROGRESS_EVERY:
            said_at[0] = time.monotonic()
            say(f"pruning {kind}: {removed:,} removed so far …", args.log_format, level=logging.INFO)

    with _stoppable(application, args.log_format) as received:
        pruned = application.prune(now=now, dry_run=args.dry_run, on_batch=on_batch)
    document = report.prune_document(pruned, keep=application.settings.keep, now=now, dry_run=args.dry_run)
    if received:
        document["interrupted"] = True
    if args.json:
        print_json(document)
    else:
        counts = ", ".join(f"{n:,} {kind}" for kind, n in pruned.counts().items())
        cutoff = f"older than {config.duration_text(application.settings.keep)} (before {document['before']})"
        if args.dry_run:
            counted = "counted so far" if received else "would remove"
            print(f"{'interrupted: ' if received else ''}{counted} what is {cutoff}: {counts}; nothing was removed")
        elif received:
            print(f"interrupted: removed what is {cutoff}, so far: {counts}; the next prune goes on")
        else:
            print(f"removed what is {cutoff}: {counts}")
    return 128 + received[0] if received else EXIT_OK


def cmd_config(args: argparse.Namespace, application: app.App) -> int:
    print_json(config_view.resolved(application.settings))
    for missing, users in application.settings.missing_secrets():
        held = (f"watch {users[0]}" if len(users) == 1 else f"watches {', '.join(users)}") if users else "no watch"
        if missing.key.startswith(("awx.", "github.")):
            effect = f"{held} will be observed but not acted on"
        else:
            effect = f"`reconcile` and `run` refuse to start ({held} cannot be checked)"
        say(f"warning: {missing.key}: {missing.what}; {effect}", args.log_format, level=logging.WARNING)
    for target in application.settings.notify:
        for missing in target.missing:
            effect = f"notifications to {target.name} will be kept for a day, not sent"
            say(f"warning: {missing.key}: {missing.what}; {effect}", args.log_format, level=logging.WARNING)
    for name, why in application.notifications.unusable().items():
        effect = f"notifications to {name} will be kept for a day, not sent"
        say(f"warning: notify target {name}: {why}; {effect}", args.log_format, level=logging.WARNING)
    valid = f"configuration {application.settings.source} is valid"
    if args.log_format == "json":
        say(valid, args.log_format, level=logging.INFO)
    else:
        print(valid, file=sys.stderr)
    return EXIT_OK


def cmd_notify(args: argparse.Namespace, application: app.App) -> int:
    """`notify test`: one line per target, delivered or why not; exit 1 unless every one was delivered."""
    results = application.notify_test(args.to)
    if args.json:
        print_json(
            {
                "targets": [
                    {"target": name, "delivered": why is None, "error": _reason(name, why)} for name, why in results
                ]
            }
        )
    else:
        for name, why in results:
            print(f"{name}: delivered" if why is None else f"{name}: not delivered: {_reason(name, why)}")
    return EXIT_OK if all(why is None for _, why in results) else EXIT_ACTION_FAILED


def _reason(name: str, why: str | None) -> str | None:
    return None if why is None else why.removeprefix(f"{name}: ")


def cmd_run(args: argparse.Namespace, application: app.App) -> int:
    from reconciler import running  # noqa: PLC0415  (the daemon's libraries: for `run` alone)

    running.serve(application)
    _exit_now(application, EXIT_OK)


def _exit_now(application: app.App, code: int) -> NoReturn:
    """End the process once everything is recorded and said, without waiting for worker threads still blocked in a
    request that nothing will read (up to its 30 s timeout): the outbox needs nothing more of them."""
    application.close()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: started with it closed
            stream.flush()
    os._exit(code)


READING: dict[str, Callable[[argparse.Namespace, reading.Reading], int]] = {
    "status": cmd_status,  # without the App: these open the database's driver themselves (`reading`)
    "history": cmd_history,
}
COMMANDS: dict[str, Callable[[argparse.Namespace, app.App], int]] = {
    "run": cmd_run,
    "reconcile": cmd_reconcile,
    "retry": cmd_retry,
    "approve": cmd_approve,
    "reject": cmd_reject,
    "db": cmd_db,
    "config": cmd_config,
    "notify": cmd_notify,
}
