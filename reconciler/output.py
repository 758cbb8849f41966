"""What the command line says outside its tables: the exit codes, the log's format (text or one JSON object a
line), and the one line a command says itself on stderr. Light on purpose: `reconciler --help` imports only this
and the parser.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from typing import Any

log = logging.getLogger("reconciler")
EXIT_OK, EXIT_ACTION_FAILED, EXIT_CONFIG, EXIT_UNCHECKED, EXIT_LOCKED = 0, 1, 2, 3, 4
EXIT_WOULD_ACT = 5  # --dry-run: at least one action would be taken
EXIT_INTERRUPTED = 128 + signal.SIGINT  # and 128 + SIGTERM
EXIT_OUTPUT_CLOSED = 128 + signal.SIGPIPE
_LOG_FIELDS = ("watch", "image", "decision", "action_id")


class JsonFormatter(logging.Formatter):
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


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # urllib3 warns on every retry; the outcome is reported once, by us, unless debugging.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if level == "debug" else logging.ERROR)
    # A long wait says how it goes once a minute (or on a live line), whatever the level, unless only errors count.
    logging.getLogger("reconciler.progress").setLevel(logging.ERROR if level == "error" else logging.INFO)
    # Alembic reports its plugins and each migration step at info; the outcome is ours to say.
    logging.getLogger("alembic").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    # APScheduler reports every job it runs at info: one line per watch per interval, which says nothing.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def print_json(document: dict[str, Any]) -> None:
    """Indented for a person at a terminal; on one line for a program (json's C encoder: a third of the time for
    10,000 watches, where `indent` takes the pure-Python one). A document is a tree built for this: no container
    in it can hold itself, so the encoder need not keep track of them (a sixth of its time)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(document, indent=indent, check_circular=False) + "\n")


def say(message: str, fmt: str, *, level: int = logging.ERROR) -> None:
    """One line on stderr from the command itself, outside the log: `reconciler: MESSAGE`, or with `--log-format
    json` the object every log line is, so that a log collector reads the last line too."""
    if fmt == "json":
        record = log.makeRecord(log.name, level, "(cli)", 0, message, (), None)
        print(JsonFormatter().format(record), file=sys.stderr, flush=True)
    else:
        print(f"reconciler: {message}", file=sys.stderr, flush=True)
