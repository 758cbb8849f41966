"""The command line: parses (`cli_parser`), then runs the command (`commands`), and maps errors to exit codes.

Exit codes: 0 fine (every watch checked, in sync or its action succeeded; for `--dry-run`, nothing would be done);
1 an action failed (or the database failed); 2 bad configuration or usage; 3 a watch could not be checked (it wins
over 5); 4 another instance holds the lock; 5 `--dry-run` found at least one action it would take (`EXIT_WOULD_ACT`,
as `git diff --exit-code` says 1 for a difference); 128 + the signal when interrupted (130 SIGINT, 143 SIGTERM);
141 the output was closed. Errors are one sentence on stderr (one JSON object with `--log-format json`); a
traceback only with `--log-level debug`. The configuration and the commands are imported once the arguments are
parsed, so that `--help` and a usage error answer at once.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

from reconciler import cli_parser, errors
from reconciler.output import (
    EXIT_ACTION_FAILED,
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_OUTPUT_CLOSED,
    EXIT_UNCHECKED,
    EXIT_WOULD_ACT,
    log,
    say,
    setup_logging,
)

if TYPE_CHECKING:
    from reconciler import app

__all__ = [
    "EXIT_ACTION_FAILED",
    "EXIT_CONFIG",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_OUTPUT_CLOSED",
    "EXIT_UNCHECKED",
    "EXIT_WOULD_ACT",
    "main",
]


def main(argv: Sequence[str] | None = None) -> int:
    args = cli_parser.parse(argv)
    setup_logging(args.log_level, args.log_format)
    application: app.App | None = None
    try:
        from reconciler import commands, config  # noqa: PLC0415  (the heavy part, once the arguments are good)

        reads = commands.READING.get(args.command)
        if reads is not None:  # no App: neither SQLAlchemy nor a client is imported (`reading`)
            with _no_cycle_collection():
                from reconciler import reading, said  # noqa: PLC0415

                only = getattr(args, "watch", None) or None  # a few watches: only they are built
                settings = config.load(config.resolve_path(args.config, os.environ), database=args.database, only=only)
                said.stray_database(settings.database)
                code = reads(args, reading.Reading(settings))
        else:
            settings = config.load(config.resolve_path(args.config, os.environ), database=args.database)
            from reconciler import app  # noqa: PLC0415

            application = app.App(settings)
            code = commands.COMMANDS[args.command](args, application)
        if sys.stdout is not None:  # None: started with it closed (`>&-`)
            sys.stdout.flush()  # here, so that an output closed early is said as any other (BrokenPipeError below)
        return code
    except errors.ReconcilerError as exc:
        if args.log_level == "debug":
            log.exception("failed")
        say(str(exc), args.log_format)
        return _exit_code(exc)
    except KeyboardInterrupt:
        say("interrupted", args.log_format)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `status --json | head -1`: whoever read the output stopped reading
        _silence_stdout()
        say("the output was closed before all of it was written", args.log_format)
        return EXIT_OUTPUT_CLOSED
    except OSError as exc:  # anything else the system refused at start, in one line
        say(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", args.log_format)
        return EXIT_ACTION_FAILED
    finally:
        if application is not None:
            application.close()


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """A reading command lives a moment and makes no cycles, but objects by the ten thousand (a watch, its state,
    its action, its document), which the cyclic collector would walk again and again: 7% of `status --json` over
    10,000 watches. Collection resumes after (a test calls `main` in its own process)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


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


def run() -> NoReturn:
    """The `reconciler` command: `main`, then the process ends at once. By then everything is recorded, closed and
    written, and what the interpreter would do next (free the objects of every module one at a time, join threads
    that have nothing left to do) takes ~80 ms after a `reconcile` of 1,000 watches, for nothing. An error in the
    arguments (argparse's SystemExit) ends the usual way."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: started with it closed
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
