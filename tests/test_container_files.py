"""The container files: Dockerfile, .dockerignore, docker-compose.yml and deploy/compose/config.toml.

No Docker engine runs here, so nothing is built: the files are checked statically. docker-compose.yml is validated
against the Compose Specification JSON schema vendored by `check-jsonschema` (a broken file must be rejected by the
same validation), and its `${VAR}` interpolation is checked with a small interpreter of Compose's syntax. The
Dockerfile is parsed into instructions and checked for the base image, the non-root numeric USER, the health check,
the entry point, and a final stage without build tools; its HEALTHCHECK command is run against a loopback server.
deploy/compose/config.toml is loaded with reconciler's own configuration loader.
"""

from __future__ import annotations

import copy
import fnmatch
import http.server
import importlib.resources
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from reconciler import config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_CONFIG = ROOT / "deploy" / "compose" / "config.toml"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment.yaml"
BASE_IMAGE = "python:3.11-slim"
PORT = 8080
CONFIG_PATH = "/etc/reconciler/config.toml"
DATABASE_URL = "postgresql+psycopg://reconciler:${POSTGRES_PASSWORD}@postgres:5432/reconciler"
REQUIRED_VARIABLES = {"POSTGRES_PASSWORD"}  # compose refuses to start without it
# Unset, these stay unset: the endpoints they guard are disabled; without AWX_TOKEN (GITHUB_TOKEN), the AWX (GitHub)
# watches only observe.
OPTIONAL_SECRETS = {
    "RECONCILER_API_TOKEN",
    "RECONCILER_WEBHOOK_SECRET",
    "DOCKERHUB_USERNAME",
    "DOCKERHUB_TOKEN",
    "AWX_TOKEN",
    "GITHUB_TOKEN",
}

Doc = dict[str, Any]


# --- the Dockerfile ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, USER, ...
    args: str  # the rest of the instruction, continuation lines joined
    stage: int  # 0-based index of the build stage it belongs to (-1 before the first FROM)


def _instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions: comment lines dropped (also inside continuations), `\\` continuations joined."""
    found: list[Instruction] = []
    stage = -1
    pending = ""
    for line in text.splitlines():
        if line.strip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if not whole:
            continue
        keyword, _, args = whole.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        found.append(Instruction(keyword, " ".join(args.split()), stage))
    assert not pending, "the Dockerfile ends in a continuation"
    return found


INSTRUCTIONS = _instructions(DOCKERFILE.read_text(encoding="utf-8"))
FINAL_STAGE = max(i.stage for i in INSTRUCTIONS)


def _final(keyword: str) -> list[Instruction]:
    return [i for i in INSTRUCTIONS if i.stage == FINAL_STAGE and i.keyword == keyword]


def _only(keyword: str) -> Instruction:
    matches = _final(keyword)
    assert len(matches) == 1, f"expected one {keyword} in the final stage, found {len(matches)}"
    return matches[0]


def _exec_form(instruction: Instruction) -> list[str]:
    """The JSON array of an exec-form instruction (a shell-form string would run under /bin/sh -c)."""
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"{instruction.keyword} is not in exec form: {instruction.args}"
    assert all(isinstance(item, str) for item in value)
    return value


def _env_of_final_stage() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in _final("ENV"):
        for word in shlex.split(instruction.args):
            key, sep, value = word.partition("=")
            assert sep, f"ENV in the legacy `ENV key value` form: {instruction.args}"
            env[key] = value
    return env


def _healthcheck_command() -> list[str]:
    args = _only("HEALTHCHECK").args
    options, sep, command = args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args}"
    assert all(option.startswith("--") for option in options.split()), options
    return _exec_form(Instruction("HEALTHCHECK", command, FINAL_STAGE))


def _uid() -> int:
    user = _only("USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER must be numeric (runAsNonRoot can only verify a number): {user}"
    assert not gid or gid.isdigit(), user
    return int(uid)


def test_every_stage_starts_from_python_311_slim() -> None:
    froms = [i for i in INSTRUCTIONS if i.keyword == "FROM"]
    assert len(froms) >= 2, "a multi-stage build: the wheel is built apart from the final image"
    assert INSTRUCTIONS[0].keyword == "FROM"
    for instruction in froms:
        image, *alias = instruction.args.split()
        assert image == BASE_IMAGE, instruction.args
        assert alias == [] or (len(alias) == 2 and alias[0].upper() == "AS"), instruction.args


def test_a_wheel_is_built_in_a_stage_and_installed_in_the_final_one() -> None:
    build = [i for i in INSTRUCTIONS if i.stage < FINAL_STAGE and i.keyword == "RUN"]
    assert any(re.search(r"\bpip wheel\b", i.args) for i in build), "no `pip wheel` in a build stage"
    final_runs = " ".join(i.args for i in _final("RUN"))
    # only the wheels built in the first stage: --no-index, nothing fetched or built here
    assert re.search(r"pip\"? install --no-index --find-links=/wheels reconciler\b", final_runs), final_runs
    assert re.search(r"--mount=type=bind,from=build\S*target=/wheels", final_runs) or any(
        "--from=build" in i.args for i in _final("COPY")
    ), "the wheels do not come from the build stage"


def test_the_final_stage_has_no_build_tools_and_no_source_tree() -> None:
    final_runs = " ".join(i.args for i in _final("RUN"))
    assert "apt-get install" not in final_runs and "apk add" not in final_runs, final_runs
    for tool in ("gcc", "g++", "build-essential", "make ", "git ", "curl", "wget"):
        assert tool not in final_runs, f"{tool.strip()} in the final stage"
    assert "pip wheel" not in final_runs
    for copy_ in _final("COPY"):
        sources = copy_.args.split()[:-1]
        assert "." not in sources and "reconciler" not in sources, f"the source tree copied: {copy_.args}"


def test_the_final_stage_runs_as_a_numeric_non_root_user_before_the_entrypoint() -> None:
    final = [i for i in INSTRUCTIONS if i.stage == FINAL_STAGE]
    keywords = [i.keyword for i in final]
    assert _uid() > 0
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert "RUN" not in keywords[keywords.index("USER") :], "a RUN after USER would run as the user, or undo it"


def test_the_user_is_the_one_kubernetes_runs_as() -> None:
    deployment = yaml.safe_load(DEPLOYMENT.read_text(encoding="utf-8"))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == _uid()
    assert pod["containers"][0]["securityContext"]["runAsUser"] == _uid()


def test_the_entrypoint_is_reconciler_and_the_command_runs_the_daemon() -> None:
    assert _exec_form(_only("ENTRYPOINT")) == ["reconciler"]
    assert _exec_form(_only("CMD")) == ["--log-format", "json", "run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "reconciler" in scripts  # the console script the wheel installs


def test_workdir_expose_and_environment() -> None:
    assert _only("WORKDIR").args == "/app"
    assert _only("EXPOSE").args in {str(PORT), f"{PORT}/tcp"}
    env = _env_of_final_stage()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env.get("RECONCILER_CONFIG") == CONFIG_PATH
    # The default database lives in the writable working directory (compose and Kubernetes override it), not
    # beside the mounted, read-only configuration where a relative SQLite path in it would put it.
    assert env.get("RECONCILER_DATABASE_URL") == "sqlite:////app/reconciler.db"


def test_the_healthcheck_asks_healthz_with_urllib() -> None:
    command = _healthcheck_command()
    assert command[:2] == ["python", "-c"], command
    code = command[2]
    assert "urllib.request" in code
    assert "ProxyHandler({})" in code  # the loopback request never goes through $HTTP_PROXY
    assert f"http://127.0.0.1:{PORT}/healthz" in code
    assert "curl" not in code and "wget" not in code


def test_the_default_config_baked_into_the_image_is_the_compose_one() -> None:
    copies = [i.args.split() for i in _final("COPY")]
    assert ["deploy/compose/config.toml", CONFIG_PATH] in copies


class _Health(http.server.BaseHTTPRequestHandler):
    """Answers every GET with `status` and remembers the paths asked for (a subclass per server)."""

    status = 200
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # the base class names it `format`
        pass


@contextmanager
def _serving(status: int) -> Iterator[tuple[int, list[str]]]:
    """A loopback HTTP server answering `status`: yields its port and the list of paths it was asked for."""
    paths: list[str] = []
    handler = type("Handler", (_Health,), {"status": status, "paths": paths})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _run_healthcheck(port: int, proxy: str | None = None) -> int:
    """The image's HEALTHCHECK command, run by this interpreter against 127.0.0.1:<port> instead of :8080."""
    _, flag, code = _healthcheck_command()
    code = code.replace(f"127.0.0.1:{PORT}", f"127.0.0.1:{port}")
    env = {k: v for k, v in os.environ.items() if k.lower() not in {"http_proxy", "https_proxy", "no_proxy"}}
    if proxy is not None:
        env |= {"HTTP_PROXY": proxy, "http_proxy": proxy}
    return subprocess.run([sys.executable, flag, code], capture_output=True, timeout=30, env=env).returncode


def test_the_healthcheck_command_passes_on_200_and_fails_otherwise() -> None:
    with _serving(200) as (port, paths):
        assert _run_healthcheck(port) == 0
    assert paths == ["/healthz"]
    with _serving(503) as (port, paths):
        assert _run_healthcheck(port) != 0
    assert paths == ["/healthz"]
    assert _run_healthcheck(port) != 0  # nothing listens any more: connection refused


def test_the_healthcheck_ignores_a_proxy_set_for_the_registry() -> None:
    with _serving(200) as (port, paths), _serving(502) as (proxy_port, proxied):
        assert _run_healthcheck(port, proxy=f"http://127.0.0.1:{proxy_port}") == 0
    assert paths == ["/healthz"]
    assert proxied == []


# --- .dockerignore -----------------------------------------------------------------------------------------------


def _ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip().lstrip("/") for line in lines if line.strip() and not line.strip().startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; a match on a parent directory excludes the path."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!")
        regex = fnmatch.translate(body.replace("**/", "\0")).replace("\0", "(?:.*/)?")
        if any(re.match(regex, candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = _ignore_patterns()
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "reconciler.db",
        ".pytest_cache/v/x",
        ".mypy_cache/3.11/x",
        ".ruff_cache/x",
        "reconciler/__pycache__/cli.cpython-311.pyc",
        "build/lib/reconciler/cli.py",
        "reconciler.egg-info/PKG-INFO",
        ".env",
    ):
        assert _ignored(path, patterns), f"{path} is sent to the Docker daemon"


def test_dockerignore_keeps_everything_the_dockerfile_copies() -> None:
    patterns = _ignore_patterns()
    sources = [
        source
        for i in INSTRUCTIONS
        if i.keyword in {"COPY", "ADD"} and "--from=" not in i.args
        for source in i.args.split()[:-1]
        if not source.startswith("--")
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for module in (ROOT / "reconciler").rglob("*.py"):
        relative = module.relative_to(ROOT).as_posix()
        if "__pycache__" not in relative:
            assert not _ignored(relative, patterns), relative
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["readme"]
    assert readme in sources  # the wheel's metadata needs it


# --- docker-compose.yml: the Compose Specification schema --------------------------------------------------------


def _compose_schema() -> Doc:
    resource = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema: Doc = json.loads(resource.read_text(encoding="utf-8"))
    return schema


# The draft named by the schema's $schema: 2020-12 in check-jsonschema 0.39, draft-07 (written without the trailing
# `#`, which jsonschema's own look-up misses) in older releases.
_DRAFTS: dict[str, Any] = {
    "json-schema.org/draft-07/schema": jsonschema.Draft7Validator,
    "json-schema.org/draft/2019-09/schema": jsonschema.Draft201909Validator,
    "json-schema.org/draft/2020-12/schema": jsonschema.Draft202012Validator,
}


def _compose_validator() -> Any:
    schema = _compose_schema()
    draft = re.sub(r"^https?://", "", schema["$schema"]).rstrip("#")
    assert draft in _DRAFTS, f"compose-spec.json: an unexpected $schema {schema['$schema']!r}"
    cls = _DRAFTS[draft]
    cls.check_schema(schema)
    return cls(schema)


def _compose() -> Doc:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _schema_errors(doc: Doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _compose_validator().iter_errors(doc)]


def test_the_vendored_schema_is_the_compose_specification() -> None:
    schema = _compose_schema()
    assert schema["title"] == "Compose Specification"
    assert schema["properties"]["services"]
    assert schema["additionalProperties"] is False  # unknown top-level keys are refused, so the tests below bite


def test_docker_compose_yml_is_a_valid_compose_file() -> None:
    assert _schema_errors(_compose()) == []


def test_docker_compose_yml_is_valid_after_interpolation() -> None:
    env = dict.fromkeys(REQUIRED_VARIABLES | OPTIONAL_SECRETS, "s3cret")
    assert _schema_errors(_interpolate(_compose(), env)) == []


def _unknown_service_key(doc: Doc) -> None:
    doc["services"]["reconciler"]["healthchek"] = {"test": ["NONE"]}


def _unknown_top_level_key(doc: Doc) -> None:
    doc["servics"] = doc.pop("services")


def _unknown_depends_on_condition(doc: Doc) -> None:
    doc["services"]["reconciler"]["depends_on"]["postgres"]["conditon"] = "service_healthy"


def _depends_on_as_a_string(doc: Doc) -> None:
    doc["services"]["reconciler"]["depends_on"] = "postgres"  # a list or a mapping


def _unknown_volume_mount_key(doc: Doc) -> None:
    doc["services"]["reconciler"]["volumes"][0]["readonly"] = True


@pytest.mark.parametrize(
    "breakage",
    [
        _unknown_service_key,
        _unknown_top_level_key,
        _unknown_depends_on_condition,
        _depends_on_as_a_string,
        _unknown_volume_mount_key,
    ],
    ids=["service-key", "top-level-key", "depends-on-key", "depends-on-string", "mount-key"],
)
def test_a_broken_compose_file_is_rejected(breakage: Callable[[Doc], None]) -> None:
    doc = copy.deepcopy(_compose())
    assert _schema_errors(doc) == []
    breakage(doc)
    assert _schema_errors(doc), "the schema accepted a broken compose file"


def test_extension_keys_are_allowed() -> None:
    """The schema is not simply refusing everything new: `x-` keys are the Compose way to add one."""
    doc = copy.deepcopy(_compose())
    doc["x-note"] = {"anything": True}
    doc["services"]["reconciler"]["x-note"] = "fine"
    assert _schema_errors(doc) == []


# --- docker-compose.yml: interpolation ---------------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[?-])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    pass


def _interpolate_string(value: str, env: Mapping[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}` and `$$`."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op in {":?", "?"}:
            raise MissingVariable(f"{name}: {arg}")
        if op in {":-", "-"}:
            return arg
        return ""

    return _VARIABLE.sub(substitute, value)


def _interpolate(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _interpolate_string(value, env)
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    return value


def _variables(value: Any) -> Iterator[re.Match[str]]:
    if isinstance(value, str):
        yield from (m for m in _VARIABLE.finditer(value) if m.group(0) != "$$")
    elif isinstance(value, dict):
        for item in value.values():
            yield from _variables(item)
    elif isinstance(value, list):
        for item in value:
            yield from _variables(item)


def test_the_interpolation_interpreter_follows_compose() -> None:
    assert _interpolate_string("a${X:-d}b", {}) == "adb"
    assert _interpolate_string("${X:-d}", {"X": ""}) == "d"
    assert _interpolate_string("${X-d}", {"X": ""}) == ""
    assert _interpolate_string("$$X ${X}", {"X": "v"}) == "$X v"
    with pytest.raises(MissingVariable, match="X: tell me"):
        _interpolate_string("${X:?tell me}", {"X": ""})


def test_exactly_the_database_password_is_required() -> None:
    required = {m.group("name") for m in _variables(_compose()) if m.group("op") in {":?", "?"}}
    assert required == REQUIRED_VARIABLES
    for m in _variables(_compose()):
        assert m.group("bare") is None, f"{m.group(0)}: write ${{VAR}} (with a message where required)"
        if m.group("op") == ":?":
            assert m.group("arg").strip().startswith(f"set {m.group('name')}"), "a message that says what to set"
    for name in REQUIRED_VARIABLES:
        env = dict.fromkeys(REQUIRED_VARIABLES - {name}, "x")
        with pytest.raises(MissingVariable, match=name):
            _interpolate(_compose(), env)
        with pytest.raises(MissingVariable, match=name):
            _interpolate(_compose(), {**env, name: ""})  # `:?` refuses an empty value too


def test_no_secret_is_written_in_the_file() -> None:
    services = _compose()["services"]
    secrets = REQUIRED_VARIABLES | OPTIONAL_SECRETS
    for service in services.values():
        for name, value in service.get("environment", {}).items():
            if name in secrets:
                assert re.fullmatch(rf"\$\{{{name}(:[?-][^}}]*)?\}}", value), f"{name}: {value!r}"
    env = services["reconciler"]["environment"]
    for name in OPTIONAL_SECRETS:  # unset, they stay unset: the endpoints they guard are disabled
        assert env[name] == f"${{{name}:-}}"
    assert "RECONCILER_DATABASE_URL" in env
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


# --- docker-compose.yml: the services ----------------------------------------------------------------------------


def test_the_reconciler_service() -> None:
    service = _compose()["services"]["reconciler"]
    assert service["build"] == "."
    assert service["restart"] == "unless-stopped"
    assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert service["ports"] == [f"127.0.0.1:{PORT}:{PORT}"]  # the host's loopback only
    assert "command" not in service and "entrypoint" not in service  # the image's own
    interpolated = _interpolate(service, dict.fromkeys(REQUIRED_VARIABLES, "pw"))["environment"]
    assert interpolated["RECONCILER_DATABASE_URL"] == _interpolate_string(DATABASE_URL, {"POSTGRES_PASSWORD": "pw"})
    assert interpolated["RECONCILER_CONFIG"] == CONFIG_PATH
    assert service.get("read_only") is True
    assert service.get("cap_drop") == ["ALL"]


def test_the_configuration_is_mounted_read_only_where_reconciler_config_points() -> None:
    service = _compose()["services"]["reconciler"]
    mounts = [m for m in service["volumes"] if isinstance(m, dict) and m.get("target") == CONFIG_PATH]
    assert len(mounts) == 1
    mount = mounts[0]
    assert mount["type"] == "bind"
    assert mount["read_only"] is True
    assert (ROOT / mount["source"]).resolve() == COMPOSE_CONFIG
    assert service["environment"]["RECONCILER_CONFIG"] == mount["target"]


def test_the_postgres_service() -> None:
    doc = _compose()
    service = doc["services"]["postgres"]
    assert service["image"] == "postgres:16"
    env = service["environment"]
    assert env["POSTGRES_USER"] == "reconciler"
    assert env["POSTGRES_DB"] == "reconciler"
    test = service["healthcheck"]["test"]
    assert test[0] in {"CMD", "CMD-SHELL"}
    assert "pg_isready" in " ".join(test[1:])
    assert "ports" not in service  # reachable by reconciler on the compose network only
    named = [m.split(":", 1)[0] for m in service["volumes"] if isinstance(m, str)]
    assert named and all(name in doc["volumes"] for name in named), "the data sits in a named volume"
    assert any(m.endswith(":/var/lib/postgresql/data") for m in service["volumes"])
    # the user and database in the URL are the ones postgres creates
    url = doc["services"]["reconciler"]["environment"]["RECONCILER_DATABASE_URL"]
    assert url.startswith(f"postgresql+psycopg://{env['POSTGRES_USER']}:")
    assert url.endswith(f"@postgres:5432/{env['POSTGRES_DB']}")


# --- deploy/compose/config.toml ----------------------------------------------------------------------------------


def test_the_compose_config_loads_with_reconcilers_loader() -> None:
    settings = config.load(COMPOSE_CONFIG, env={"AWX_TOKEN": "x"})
    assert settings.server.listen == f"0.0.0.0:{PORT}"  # reachable through the published port
    fragalysis = config.load(ROOT / "config.toml", env={"AWX_TOKEN": "x"})
    assert settings.watches == fragalysis.watches
    assert settings.awx == fragalysis.awx


def test_the_compose_config_leaves_the_database_to_the_environment() -> None:
    assert "database" not in tomllib.loads(COMPOSE_CONFIG.read_text(encoding="utf-8"))["reconciler"]
    url = _interpolate_string(DATABASE_URL, {"POSTGRES_PASSWORD": "pw"})
    settings = config.load(COMPOSE_CONFIG, env={"AWX_TOKEN": "x", "RECONCILER_DATABASE_URL": url})
    assert settings.database == url


def test_the_compose_config_loads_without_secrets_and_names_the_awx_token_it_lacks() -> None:
    bare = config.load(COMPOSE_CONFIG, env={})
    assert {w.cannot_act for w in bare.watches if w.action is not None} == {
        "AWX_TOKEN is not set (awx.production.token_env)",
        "GITHUB_TOKEN is not set (github.default.token_env)",
    }
    awx_only = config.load(COMPOSE_CONFIG, env={"AWX_TOKEN": "x"})
    assert {w.cannot_act for w in awx_only.watches if w.action is not None} == {
        None,
        "GITHUB_TOKEN is not set (github.default.token_env)",
    }
    tokens = {"AWX_TOKEN": "x", "GITHUB_TOKEN": "g"}
    settings = config.load(COMPOSE_CONFIG, env=tokens)
    assert all(w.cannot_act is None for w in settings.watches)
    assert settings.server.token is None and settings.server.webhook_secret is None  # optional: endpoints disabled
    both = {**tokens, "RECONCILER_API_TOKEN": "t", "RECONCILER_WEBHOOK_SECRET": "w"}
    settings = config.load(COMPOSE_CONFIG, env=both)
    assert settings.server.token is not None and settings.server.webhook_secret is not None
