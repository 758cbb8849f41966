"""What every `--help` shows below its options: the examples (naming the watches of the repository's config.toml)
and the exit codes that command can really return (`cli.main`, `cli._exit_code` and the `cmd_*`). Written for an
80-column terminal: each epilog is wrapped by hand to 78.
"""

from __future__ import annotations

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

MAIN_EXAMPLES = """\
examples:
  reconciler config check                     validate ./config.toml
  reconciler reconcile --dry-run              show what a pass would do
  reconciler reconcile --watch stack-staging  one pass over one watch
  reconciler status --config /etc/reconciler/config.toml --log-level debug
  reconciler history --watch stack-staging --watch stack-production --limit 5
  reconciler run                              the daemon"""

MAIN_EXIT_CODES = f"""\
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
    "approve": """\
examples:
  reconciler approve stack-production
  reconciler approve stack-production --digest sha256:0123456789ab --by alice""",
    "reject": """\
examples:
  reconciler reject stack-production
  reconciler reject stack-production --digest sha256:0123456789ab --by alice""",
    "db": """\
examples:
  reconciler db upgrade
  reconciler db upgrade --database postgresql://db/reconciler
  reconciler db prune --dry-run""",
    "db prune": """\
examples:
  reconciler db prune --dry-run     # count what is older than [reconciler].keep
  reconciler db prune               # remove it, in batches; prints what went
  reconciler db prune --json""",
    "notify": """\
examples:
  reconciler notify test
  reconciler notify test --to slack-staging --to audit
  reconciler notify test --json""",
    "config": """\
examples:
  reconciler config check
  reconciler config check --config /etc/reconciler/config.toml""",
}

# What each command can really return (`cli.main`, `cli._exit_code` and the `cmd_*`): an unset secret only warns
# in `config check`; a one-line reply (`retry`, `db upgrade`) is never cut short by a closed output.
_INTERRUPTED = "  130      interrupted (Ctrl-C)"
_CLOSED = "  141      the output was closed before all of it was written"
_DECISION_EXIT_CODES = f"""\
exit codes:
  0        recorded: the holder of the lease acts on it at its next pass
  1        nothing of that watch (or digest) waits for approval: superseded,
           already decided, or unknown; nothing changed. Or the database failed
  2        bad configuration or usage, or no watch of that name
{_INTERRUPTED}"""
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
    "approve": _DECISION_EXIT_CODES,
    "reject": _DECISION_EXIT_CODES,
    "db": f"""\
exit codes:
  0        the database is at the newest revision
  1        the database failed: unreachable, or a migration failed
  2        bad configuration or usage
{_INTERRUPTED}""",
    "db prune": f"""\
exit codes:
  0        what was older than [reconciler].keep was removed (or counted),
           or there was no database yet
  1        the database failed, or is old (then: `reconciler db upgrade`)
  2        bad configuration or usage
  130, 143 interrupted: the batches removed so far stay removed, whole
{_CLOSED}""",
    "config": f"""\
exit codes:
  0        the configuration is valid (an unset secret is only a warning)
  2        the configuration is invalid, or bad usage
{_CLOSED}""",
    "notify": f"""\
exit codes:
  0        every target chosen took the test notification
  1        a target did not (its line says why), or its secret is not set
  2        bad configuration or usage, no [[notify]] target, or none of that
           name
{_INTERRUPTED}""",
}


def epilog(command: str) -> str:
    """The examples and the exit codes of this command, below its options."""
    return f"{_EXAMPLES[command]}\n\n{_COMMAND_EXIT_CODES[command]}"
