"""The command line's grammar and help: the parser of every command, their options with defaults, examples and
exit codes. Only parsing: `cli` runs what it parses.

The global options (`--config`, `--database`, `--log-level`, `--log-format`) are accepted before or after the
command, the way kubectl and flux take theirs: every parser gets them with `default=SUPPRESS`, so a value given
after the command wins over one given before it, and `parse` fills in the defaults of those given nowhere.

A usage error honours `--log-format json` wherever it is given: one JSON object on stderr, shaped like every log
line (`cli._JsonFormatter`), instead of argparse's usage text; exit 2 either way.

The help is written for an 80-column terminal (each epilog is wrapped by hand to 78), and its examples name the
watches of the repository's config.toml.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from reconciler import __version__
from reconciler.output import EXIT_CONFIG, say

GLOBAL_DEFAULTS: dict[str, str | None] = {"config": None, "database": None, "log_level": None, "log_format": "text"}
EXIT_USAGE = EXIT_CONFIG  # bad configuration or usage
_LOG_FORMAT = "--log-format"
_LOG_FORMAT_SHORTEST = "--log-f"  # the shortest abbreviation argparse takes for it ("--log-" is also --log-level)

EXIT_CODES = """\
exit codes:
  0        every watch was checked, and is in sync or its action succeeded
  1        an action failed (or is left open, waits for its retry, or is due
           but its secret is not set), or the database failed
  2        bad configuration or usage
  3        a watch could not be checked
  4        another instance holds the lock
  5        --dry-run: drift an action is due for (0: none); also when that
           action waits for its secret
  130, 143 interrupted by SIGINT or SIGTERM; the open actions are named, and
           the next run resumes them
  141      the output was closed before all of it was written (`… | head -1`)"""

_MAIN_EXAMPLES = """\
examples:
  reconciler config check                     validate ./config.toml
  reconciler reconcile --dry-run              show what a pass would do
  reconciler reconcile --watch stack-staging  one pass over one watch
  reconciler status --config /etc/reconciler/config.toml --log-level debug
  reconciler history --watch stack-staging --watch stack-production --limit 5
  reconciler run                              the daemon"""

_MAIN_EXIT_CODES = f"""\
{EXIT_CODES}
  `reconciler COMMAND --help` lists the codes that command can return"""

_EXAMPLES = {
    "run": """\
examples:
  reconciler run
  reconciler run --config /etc/reconciler/config.toml --log-format json""",
    "reconcile": """\
examples:
  reconciler reconcile
  reconciler reconcile --dry-run --json
  reconciler reconcile --dry-run || echo "something is due (exit 5) or wrong"
  reconciler reconcile --watch stack-staging --watch stack-production""",
    "status": """\
examples:
  reconciler status
  reconciler status --watch stack-staging --json
  reconciler status --database postgresql://db/reconciler --log-level debug""",
    "history": """\
examples:
  reconciler history
  reconciler history --watch stack-staging --limit 10
  reconciler history --watch stack-staging --watch stack-production --json""",
    "retry": """\
examples:
  reconciler retry stack-staging
  reconciler retry stack-production --config /etc/reconciler/config.toml""",
    "db": """\
examples:
  reconciler db upgrade
  reconciler db upgrade --database postgresql://db/reconciler""",
    "config": """\
examples:
  reconciler config check
  reconciler config check --config /etc/reconciler/config.toml""",
}

# What each command can really return (`cli.main`, `cli._exit_code` and the `cmd_*`): an unset secret only warns
# in `config check`; a one-line reply (`retry`, `db upgrade`) is never cut short by a closed output.
_INTERRUPTED = "  130      interrupted (Ctrl-C)"
_CLOSED = "  141      the output was closed before all of it was written"
_COMMAND_EXIT_CODES = {
    "run": """\
exit codes:
  0        stopped cleanly by SIGTERM or SIGINT
  1        another error at start, such as a database that cannot be migrated
  2        bad configuration or usage (or a registry's secret is not set), or
           the listen address cannot be used
  130, 143 interrupted before it started serving""",
    "reconcile": EXIT_CODES,
    "status": f"""\
exit codes:
  0        the status was shown (nothing known yet is no error)
  1        the database failed, or is old (then: `reconciler db upgrade`)
  2        bad configuration or usage, or no watch of that name
{_INTERRUPTED}
{_CLOSED}""",
    "history": f"""\
exit codes:
  0        the events were shown (none yet is no error)
  1        the database failed, or is old (then: `reconciler db upgrade`)
  2        bad configuration or usage (`--limit 0`), or no watch of that name
{_INTERRUPTED}
{_CLOSED}""",
    "retry": f"""\
exit codes:
  0        the watch's failed action was cleared, or it had none
  1        the database failed, or is old (then: `reconciler db upgrade`)
  2        bad configuration or usage, or no watch of that name
{_INTERRUPTED}""",
    "db": f"""\
exit codes:
  0        the database is at the newest revision
  1        the database failed: unreachable, or a migration failed
  2        bad configuration or usage
{_INTERRUPTED}""",
    "config": f"""\
exit codes:
  0        the configuration is valid (an unset secret is only a warning)
  2        the configuration is invalid, or bad usage
{_CLOSED}""",
}


def _epilog(command: str) -> str:
    return f"{_EXAMPLES[command]}\n\n{_COMMAND_EXIT_CODES[command]}"


def _asks_for_json(argv: Sequence[str]) -> bool:
    """Whether `--log-format json` (or `=json`, or an abbreviation argparse takes) is the last log format given in
    `argv`, before or after the command: the one `parse` would use."""
    fmt = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        if not (name.startswith(_LOG_FORMAT_SHORTEST) and _LOG_FORMAT.startswith(name)):
            continue
        if eq:
            fmt = value
        elif i + 1 < len(argv):
            fmt = argv[i + 1]
    return fmt == "json"


@dataclass
class _Parsing:
    """What every parser of one command line shares: the arguments being parsed, and the deepest parser reached."""

    argv: list[str] | None = None
    deepest: _Parser | None = None


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one JSON line when the command line asks for `--log-format json`.

    The parser of each command is one too (`add_subparsers` makes its parsers of the class of the parser it is
    called on), sharing the top parser's `_Parsing` through `parsing=`."""

    def __init__(self, *args: Any, parsing: _Parsing | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parsing = parsing or _Parsing()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self.parsing.argv is None:  # the top parser, first: what the user typed
            self.parsing.argv = list(sys.argv[1:] if args is None else args)
        self.parsing.deepest = self  # a command's parser is reached after its parent's
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        # An unrecognized argument is found by the top parser, after the command's parser left it over.
        where = self.parsing.deepest or self
        argv = sys.argv[1:] if self.parsing.argv is None else self.parsing.argv
        if not _asks_for_json(argv):
            super().error(message)
        say(f"{message} (see {where.prog} --help)", "json")
        self.exit(EXIT_USAGE)


_WATCH_HELP = "only this watch; repeat for more (default: every watch)"
_JSON_HELP = "print JSON instead of a table (default: a table)"


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _global_options() -> _Parser:
    common = _Parser(add_help=False)
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
        _LOG_FORMAT,
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="the log lines and the final error line on stderr, usage errors too (default: text)",
    )
    return common


def build() -> argparse.ArgumentParser:
    common = _global_options()
    parsing = _Parsing()

    def command(parent: argparse._SubParsersAction[_Parser], name: str, summary: str, epilog: str) -> _Parser:
        return parent.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=epilog,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parsing=parsing,
        )

    parser = _Parser(
        prog="reconciler",
        description="Keeps deployments in step with container images.",
        epilog=f"{_MAIN_EXAMPLES}\n\n{_MAIN_EXIT_CODES}",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parsing=parsing,
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    command(commands, "run", "the daemon: poll on schedule, act on drift, serve the endpoints", _epilog("run"))

    rec = command(commands, "reconcile", "one pass over the watches: check, decide, act, report", _epilog("reconcile"))
    rec.add_argument("--watch", action="append", default=[], metavar="NAME", help=_WATCH_HELP)
    rec.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and print the exact requests, change nothing anywhere; exit 5 if an action would be taken "
        "(default: act)",
    )
    rec.add_argument("--json", action="store_true", help=_JSON_HELP)

    st = command(commands, "status", "what is known, from the database alone", _epilog("status"))
    st.add_argument("--watch", action="append", default=[], metavar="NAME", help=_WATCH_HELP)
    st.add_argument("--json", action="store_true", help=_JSON_HELP)

    hist = command(commands, "history", "observations and actions, newest first", _epilog("history"))
    hist.add_argument("--watch", action="append", default=[], metavar="NAME", help=_WATCH_HELP)
    hist.add_argument("--limit", type=_positive, default=50, metavar="N", help="show at most N events (default: 50)")
    hist.add_argument("--json", action="store_true", help=_JSON_HELP)

    retry = command(
        commands, "retry", "clear a watch's failures (gave up, back-off) so the next pass acts", _epilog("retry")
    )
    retry.add_argument("watch", metavar="WATCH", help="the watch whose failed action no longer holds it back")

    db = command(commands, "db", "database upkeep", _epilog("db"))
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND", parser_class=_Parser)
    command(db_commands, "upgrade", "apply the migrations", _epilog("db"))

    cfg = command(commands, "config", "configuration", _epilog("config"))
    cfg_commands = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND", parser_class=_Parser)
    command(
        cfg_commands,
        "check",
        "validate and print the resolved configuration, secrets redacted",
        _epilog("config"),
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
