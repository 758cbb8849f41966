"""The command line's grammar and help: the parser of every command, their options with defaults, examples and
exit codes. Only parsing: `cli` runs what it parses.

The global options (`--config`, `--database`, `--log-level`, `--log-format`) are accepted before or after the
command, the way kubectl and flux take theirs: every parser gets them with `default=SUPPRESS`, so a value given
after the command wins over one given before it, and `parse` fills in the defaults of those given nowhere.

A usage error honours `--log-format json` wherever it is given: one JSON object on stderr, shaped like every log
line (`cli._JsonFormatter`), instead of argparse's usage text; exit 2 either way.

The examples and exit codes below each command's options are in `cli_help`.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from reconciler import __version__, cli_help
from reconciler.output import EXIT_CONFIG, say

GLOBAL_DEFAULTS: dict[str, str | None] = {"config": None, "database": None, "log_level": None, "log_format": "text"}
EXIT_USAGE = EXIT_CONFIG  # bad configuration or usage
_LOG_FORMAT = "--log-format"
_LOG_FORMAT_SHORTEST = "--log-f"  # the shortest abbreviation argparse takes for it ("--log-" is also --log-level)


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


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, asking the terminal's width once: argparse builds one for every argument added, and
    each asked (~0.5 ms, a tenth of the start of `--version`)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, width or _width())


@functools.cache
def _width() -> int:
    return shutil.get_terminal_size().columns - 2  # what argparse takes by default


def build() -> argparse.ArgumentParser:
    common = _global_options()
    parsing = _Parsing()

    def command(
        parent: argparse._SubParsersAction[_Parser], name: str, summary: str, *, help_of: str | None = None
    ) -> _Parser:
        """A command's parser; its help ends with the examples and exit codes of `help_of` (default: itself)."""
        return parent.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=cli_help.epilog(help_of or name),
            parents=[common],
            formatter_class=_Formatter,
            parsing=parsing,
        )

    parser = _Parser(
        prog="reconciler",
        description="Keeps deployments in step with container images.",
        epilog=f"{cli_help.MAIN_EXAMPLES}\n\n{cli_help.MAIN_EXIT_CODES}",
        parents=[common],
        formatter_class=_Formatter,
        parsing=parsing,
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    command(commands, "run", "the daemon: poll on schedule, act on drift, serve the endpoints")

    rec = command(commands, "reconcile", "one pass over the watches: check, decide, act, report")
    rec.add_argument("--watch", action="append", default=[], metavar="NAME", help=_WATCH_HELP)
    rec.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and print the exact requests, change nothing anywhere; exit 5 if an action would be taken "
        "(default: act)",
    )
    rec.add_argument("--json", action="store_true", help=_JSON_HELP)

    st = command(commands, "status", "what is known, from the database alone")
    st.add_argument("--watch", action="append", default=[], metavar="NAME", help=_WATCH_HELP)
    st.add_argument("--json", action="store_true", help=_JSON_HELP)

    hist = command(commands, "history", "observations and actions, newest first")
    hist.add_argument("--watch", action="append", default=[], metavar="NAME", help=_WATCH_HELP)
    hist.add_argument("--limit", type=_positive, default=50, metavar="N", help="show at most N events (default: 50)")
    hist.add_argument("--json", action="store_true", help=_JSON_HELP)

    retry = command(commands, "retry", "clear a watch's failures (gave up, back-off) so the next pass acts")
    retry.add_argument("watch", metavar="WATCH", help="the watch whose failed action no longer holds it back")

    for verb, says in (("approve", "let it deploy"), ("reject", "never offer it again")):
        decision = command(commands, verb, f"{verb} the digest a watch waits on for approval: {says}")
        decision.add_argument("watch", metavar="WATCH", help=f"the watch whose waiting action to {verb}")
        decision.add_argument(
            "--digest",
            metavar="DIGEST",
            help="the digest waiting (sha256:…, or its first 12 hex digits as shown); "
            "needed when the watch has more than one waiting",
        )
        decision.add_argument("--by", metavar="NAME", help="who decides, as recorded (default: your login name)")
        decision.add_argument("--json", action="store_true", help="print the action as JSON instead of a line")

    db = command(commands, "db", "database upkeep")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND", parser_class=_Parser)
    command(db_commands, "upgrade", "apply the migrations", help_of="db")
    prune = command(
        db_commands,
        "prune",
        "remove what is older than [reconciler].keep (never a watch's newest, an open action or an undelivered "
        "notification)",
        help_of="db prune",
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would be removed, remove nothing")
    prune.add_argument("--json", action="store_true", help=_JSON_HELP)

    cfg = command(commands, "config", "configuration")
    cfg_commands = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND", parser_class=_Parser)
    command(cfg_commands, "check", "validate and print the resolved configuration, secrets redacted", help_of="config")

    notify = command(commands, "notify", "notifications")
    notify_commands = notify.add_subparsers(
        dest="notify_command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    test = command(notify_commands, "test", "send a test notification to each target now", help_of="notify")
    test.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="NAME",
        help="only this target; repeat for more (default: every target)",
    )
    test.add_argument("--json", action="store_true", help="print JSON instead of lines (default: a line per target)")
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with the global options' defaults filled in where none was given, before or after."""
    args = build().parse_args(argv)
    for name, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    args.log_level = args.log_level or ("info" if args.command == "run" else "warning")
    return args
