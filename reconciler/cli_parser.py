"""The command line's grammar and help: the parser of every command, their options with defaults, examples and
exit codes. Only parsing: `cli` runs what it parses.

The global options (`--config`, `--database`, `--log-level`, `--log-format`) are accepted before or after the
command, the way kubectl and flux take theirs: every parser gets them with `default=SUPPRESS`, so a value given
after the command wins over one given before it, and `parse` fills in the defaults of those given nowhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from reconciler import __version__

GLOBAL_DEFAULTS: dict[str, str | None] = {"config": None, "database": None, "log_level": None, "log_format": "text"}

EXIT_CODES = """\
exit codes:
  0        every watch was checked, and is in sync or its action succeeded
  1        an action failed (or is left open, or waits for its retry), or the database failed
  2        bad configuration or usage
  3        a watch could not be checked
  4        another instance holds the lock
  5        --dry-run: at least one action would be taken (0: none would)
  130, 143 interrupted by SIGINT or SIGTERM; the open actions are named, and the next run resumes them
  141      the output was closed before all of it was written (`… | head -1`)"""

_MAIN_EXAMPLES = """\
examples:
  reconciler config check                           validate ./config.toml, print it resolved
  reconciler reconcile --dry-run                    what one pass would do, changing nothing
  reconciler reconcile --watch staging              one pass over one watch
  reconciler status --config /etc/reconciler.toml --log-level debug
  reconciler history --watch staging --watch production --limit 20
  reconciler run                                    the daemon"""

_EXAMPLES = {
    "run": """\
examples:
  reconciler run
  reconciler run --config /etc/reconciler/config.toml --log-format json""",
    "reconcile": """\
examples:
  reconciler reconcile
  reconciler reconcile --dry-run --json
  reconciler reconcile --watch staging --watch production
  reconciler reconcile --dry-run || echo "something is due (exit 5) or wrong"
""",
    "status": """\
examples:
  reconciler status
  reconciler status --watch staging --json
  reconciler status --config /etc/reconciler/config.toml --database postgresql://db/reconciler""",
    "history": """\
examples:
  reconciler history
  reconciler history --watch staging --limit 10
  reconciler history --watch staging --watch production --json""",
    "retry": """\
examples:
  reconciler retry staging
  reconciler retry staging --config /etc/reconciler/config.toml""",
    "db": """\
examples:
  reconciler db upgrade
  reconciler db upgrade --database postgresql://db/reconciler""",
    "config": """\
examples:
  reconciler config check
  reconciler config check --config /etc/reconciler/config.toml""",
}

_WATCH_HELP = "only this watch; repeat for more (default: every watch)"
_JSON_HELP = "print JSON instead of a table (default: a table)"


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _global_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="configuration file (default: $RECONCILER_CONFIG, else ./config.toml)",
    )
    group.add_argument(
        "--database",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="database URL, wins over $RECONCILER_DATABASE_URL and the file (default: $RECONCILER_DATABASE_URL, "
        "else the file's [reconciler] database, else sqlite:///reconciler.db beside the file)",
    )
    group.add_argument(
        "--log-level",
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        default=argparse.SUPPRESS,
        help="in any case; debug also shows tracebacks (default: info for run, else warning)",
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="the log lines and the final error line on stderr (default: text)",
    )
    return common


def build() -> argparse.ArgumentParser:
    common = _global_options()

    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, epilog: str
    ) -> argparse.ArgumentParser:
        return parent.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=epilog,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Keeps deployments in step with container images.",
        epilog=f"{_MAIN_EXAMPLES}\n\n{EXIT_CODES}",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    command(commands, "run", "the daemon: poll on schedule, act on drift, serve the endpoints", _EXAMPLES["run"])

    rec = command(
        commands,
        "reconcile",
        "one pass over the watches: check, decide, act, report",
        f"{_EXAMPLES['reconcile']}\n{EXIT_CODES}",
    )
    rec.add_argument("--watch", action="append", default=[], metavar="NAME", help=_WATCH_HELP)
    rec.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and print the exact requests, change nothing anywhere; exit 5 if an action would be taken "
        "(default: act)",
    )
    rec.add_argument("--json", action="store_true", help=_JSON_HELP)

    st = command(commands, "status", "what is known, from the database alone", _EXAMPLES["status"])
    st.add_argument("--watch", action="append", default=[], metavar="NAME", help=_WATCH_HELP)
    st.add_argument("--json", action="store_true", help=_JSON_HELP)

    hist = command(commands, "history", "observations and actions, newest first", _EXAMPLES["history"])
    hist.add_argument("--watch", action="append", default=[], metavar="NAME", help=_WATCH_HELP)
    hist.add_argument("--limit", type=_positive, default=50, metavar="N", help="show at most N events (default: 50)")
    hist.add_argument("--json", action="store_true", help=_JSON_HELP)

    retry = command(
        commands, "retry", "clear a watch's failures (gave up, back-off) so the next pass acts", _EXAMPLES["retry"]
    )
    retry.add_argument("watch", metavar="WATCH", help="the watch whose failed action no longer holds it back")

    db = command(commands, "db", "database upkeep", _EXAMPLES["db"])
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    command(db_commands, "upgrade", "apply the migrations", _EXAMPLES["db"])

    cfg = command(commands, "config", "configuration", _EXAMPLES["config"])
    cfg_commands = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    command(
        cfg_commands,
        "check",
        "validate and print the resolved configuration, secrets redacted",
        _EXAMPLES["config"],
    )
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with the global options' defaults filled in where none was given, before or after."""
    args = build().parse_args(argv)
    for name, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    args.log_level = args.log_level or ("info" if args.command == "run" else "warning")
    return args
