"""The command line when the system says no: the daemon's port already taken, the reader of the output gone, a
log level in capitals. Each gets one clear line and a sensible exit code, never a traceback; real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

_SCRUBBED = ("RECONCILER_", "AWX_", "DOCKERHUB_")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}


def _cli(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler.cli", "--config", str(tmp_path / "config.toml"), *args]


def test_a_port_already_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        (tmp_path / "config.toml").write_text(
            f'[reconciler]\ndatabase = "sqlite:///{tmp_path}/r.db"\n[server]\nlisten = "127.0.0.1:{port}"\n'
        )
        result = subprocess.run(_cli(tmp_path, "run"), capture_output=True, text=True, timeout=60, env=_env())
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("reconciler:")]
    assert errors == [f"reconciler: server.listen: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command", [("status", "--json"), ("status",), ("history",), ("status", "--json", "--watch", "w1")]
)
def test_output_into_a_closed_pipe_is_one_line_not_a_traceback(tmp_path: Path, command: tuple[str, ...]) -> None:
    """`status --json | head -1` once the reader is gone: the pipe is closed before anything is written. A table
    too: rich alone would exit 1 without a word. And a document of one watch, written in one piece at the end,
    before the process ends at once (`cli.run`)."""
    watches = "".join(f'[[watch]]\nname = "w{i}"\nimage = "xchem/w{i}"\ntag = "latest"\n' for i in range(50))
    (tmp_path / "config.toml").write_text(f'[reconciler]\ndatabase = "sqlite:///{tmp_path}/r.db"\n{watches}')
    proc = subprocess.Popen(_cli(tmp_path, *command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader went away (head has what it wanted) before reconciler started writing
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert code == 141, err
    assert err.strip() == "reconciler: the output was closed before all of it was written"


@pytest.mark.parametrize(
    ("closed", "command", "code"),
    [
        ("1", ("db", "upgrade"), 0),
        ("1", ("status",), 0),
        ("2", ("status", "--json"), 0),
        ("2", ("history", "--watch", "nosuch"), 2),
        ("1", ("retry", "nosuch"), 2),
    ],
)
def test_a_command_started_with_its_output_or_errors_closed_keeps_its_exit_code(
    tmp_path: Path, closed: str, command: tuple[str, ...], code: int
) -> None:
    """`2>&-` in a script: nothing can be said there, but the exit code is the command's, and its work is done."""
    (tmp_path / "config.toml").write_text(
        f'[reconciler]\ndatabase = "sqlite:///{tmp_path}/r.db"\n[[watch]]\nname = "w1"\nimage = "a/b"\ntag = "x"\n'
    )
    other = subprocess.PIPE
    shell = ["sh", "-c", f'exec "$0" "$@" {closed}>&-', *_cli(tmp_path, *command)]
    done = subprocess.run(shell, stdout=other, stderr=other, text=True, timeout=60, env=_env())
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    if command == ("db", "upgrade"):
        assert (tmp_path / "r.db").exists()


def test_the_log_level_ignores_case(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(f'[reconciler]\ndatabase = "sqlite:///{tmp_path}/r.db"\n')
    result = subprocess.run(
        _cli(tmp_path, "--log-level", "INFO", "status"), capture_output=True, text=True, timeout=60, env=_env()
    )
    assert result.returncode == 0, result.stderr
    assert "INFO reconciler.app: database: sqlite:///" in result.stderr


def test_a_listen_host_that_cannot_be_used_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for listen in ("256.1.1.1:18097", "nosuchhost.invalid:18099"):
        (tmp_path / "config.toml").write_text(
            f'[reconciler]\ndatabase = "sqlite:///{tmp_path}/r.db"\n[server]\nlisten = "{listen}"\n'
        )
        result = subprocess.run(_cli(tmp_path, "run"), capture_output=True, text=True, timeout=60, env=_env())
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("reconciler:")]
        assert len(errors) == 1 and errors[0].startswith(f"reconciler: server.listen: cannot listen on {listen}: ")
