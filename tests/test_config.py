"""`config.load`: defaults, then the file, then the environment; every rejection one line naming the key path.

Each test writes a real `config.toml` under `tmp_path` and passes the environment explicitly, so the developer's
own environment never leaks in.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from reconciler import config, errors, model

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
TOKEN = "sekrit-awx-token-123"
ENV = {"AWX_TOKEN": TOKEN}
AWX = """
[awx.production]
url = "https://awx.example.org"
token_env = "AWX_TOKEN"
"""
WATCH = """
[[watch]]
name = "w"
image = "xchem/fragalysis-stack"
tag = "latest"
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None, database: str | None = None) -> config.Settings:
    return config.load(write(tmp_path, text), env=ENV if env is None else env, database=database)


def rejection(
    tmp_path: Path, text: str, env: dict[str, str] | None = None, database: str | None = None, *, in_file: bool = True
) -> str:
    """The ConfigError message for `text`, checked to be one line (that names the file, when the fault is in it)."""
    path = write(tmp_path, text)
    with pytest.raises(errors.ConfigError) as caught:
        config.load(path, env=ENV if env is None else env, database=database)
    message = str(caught.value)
    assert "\n" not in message, f"not one line: {message!r}"
    if in_file:
        assert message.startswith(f"{path}: "), message
    return message


def watch(body: str, action: str = "") -> str:
    """A `[[watch]]` with the given keys and, if given, its `[watch.action]` keys."""
    text = f"\n[[watch]]\n{body.strip()}\n"
    return text + (f"[watch.action]\n{action.strip()}\n" if action else "")


def awx_watch(action: str, name: str = "w") -> str:
    return watch(f'name = "{name}"\nimage = "xchem/fragalysis-stack"\ntag = "latest"', action)


# --- the repository's own config.toml -------------------------------------------------------------------------


def test_repository_config_loads_the_four_fragalysis_watches() -> None:
    settings = config.load(REPO_CONFIG, env={"AWX_TOKEN": "t"})

    assert [w.name for w in settings.watches] == ["stack-staging", "stack-production", "frontend", "backend"]
    by_name = {w.name: w for w in settings.watches}
    assert {name: str(w.image) for name, w in by_name.items()} == {
        "stack-staging": "docker.io/xchem/fragalysis-stack",
        "stack-production": "docker.io/xchem/fragalysis-stack",
        "frontend": "docker.io/xchem/fragalysis-frontend",
        "backend": "docker.io/xchem/fragalysis-backend",
    }
    assert settings.database == f"sqlite:///{REPO_CONFIG.resolve().parent / 'reconciler.db'}"
    assert settings.server.listen == "127.0.0.1:8080"


def test_repository_config_rolls_out_staging_through_awx_when_latest_changes() -> None:
    staging = config.load(REPO_CONFIG, env={"AWX_TOKEN": "t"}).watch("stack-staging")

    assert staging.selector == model.TagSelector("latest")
    assert staging.selector.describe() == "tag:latest"
    assert isinstance(staging.action, model.AwxAction)
    assert staging.action.server == "production"
    assert staging.action.template == "Staging Fragalysis Stack"
    assert dict(staging.action.extra_vars) == {"stack_image_tag": "{tag}"}


def test_repository_config_rolls_out_production_on_a_new_release_tag() -> None:
    production = config.load(REPO_CONFIG, env={"AWX_TOKEN": "t"}).watch("stack-production")

    assert isinstance(production.selector, model.ReleaseSelector)
    assert production.selector.describe() == "tags:release"
    assert isinstance(production.action, model.AwxAction)
    assert production.action.server == "production"
    assert production.action.template == "Production Fragalysis Stack"


@pytest.mark.parametrize(
    ("name", "tag_input"),
    [pytest.param("frontend", "fe_image_tag", id="frontend"), pytest.param("backend", "be_image_tag", id="backend")],
)
def test_repository_config_rebuilds_the_stack_on_a_new_frontend_or_backend(name: str, tag_input: str) -> None:
    """The seed's trigger-ci-action step, as one watch: the stack's `build main`, with the image's tag."""
    watch = config.load(REPO_CONFIG, env={"AWX_TOKEN": "t", "GITHUB_TOKEN": "g"}).watch(name)

    assert watch.selector == model.TagSelector("latest")
    assert watch.action == model.GithubAction(
        server="default",
        repository="xchem/fragalysis-stack",
        workflow="build main",
        ref="master",
        inputs={tag_input: "{tag}"},
    )


def test_repository_config_resolves_the_awx_token_from_the_environment() -> None:
    awx = config.load(REPO_CONFIG, env={"AWX_TOKEN": "t"}).awx["production"]

    assert awx.url == "https://awx.example.org"
    assert awx.token is not None and awx.token.reveal() == "t"
    assert awx.token.source == "$AWX_TOKEN"
    assert (awx.timeout, awx.poll) == (timedelta(minutes=45), timedelta(seconds=5))


def test_repository_config_without_its_tokens_loads_and_holds_back_only_the_watches_needing_them() -> None:
    settings = config.load(REPO_CONFIG, env={})

    held = {w.name: w.cannot_act for w in settings.watches}
    assert held == {
        "stack-staging": "AWX_TOKEN is not set (awx.production.token_env)",
        "stack-production": "AWX_TOKEN is not set (awx.production.token_env)",
        "frontend": "GITHUB_TOKEN is not set (github.default.token_env)",
        "backend": "GITHUB_TOKEN is not set (github.default.token_env)",
    }
    assert settings.awx["production"].token is None
    missing = [(m.key, m.variable, users) for m, users in settings.missing_secrets()]
    assert missing == [
        ("awx.production.token_env", "AWX_TOKEN", ["stack-staging", "stack-production"]),
        ("github.default.token_env", "GITHUB_TOKEN", ["frontend", "backend"]),
    ]
    settings.require_registry_secrets()  # no registry credentials are named: observing needs no secret


def test_a_registry_credential_named_but_unset_loads_yet_stops_the_commands_that_ask_the_registry(
    tmp_path: Path,
) -> None:
    settings = load(tmp_path, '[registries."docker.io"]\nusername_env = "HUB_USER"\npassword_env = "NOT_SET"\n', env={})
    assert settings.registries["docker.io"].username is None  # anonymous is never tried in their place
    with pytest.raises(errors.ConfigError) as caught:
        settings.require_registry_secrets()
    message = str(caught.value)
    assert 'registries."docker.io".username_env' in message and "HUB_USER" in message and "\n" not in message


# --- defaults, inheritance, environment --------------------------------------------------------------------------


def test_empty_file_gives_no_watches_and_the_documented_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, "", env={})

    assert settings.watches == ()
    assert settings.database == f"sqlite:///{tmp_path / 'reconciler.db'}"  # beside the file, wherever one stands
    assert settings.server.listen == "127.0.0.1:8080"
    assert settings.server.token is None
    assert settings.server.webhook_secret is None
    assert dict(settings.registries) == {}
    assert dict(settings.awx) == {}
    assert settings.kube_context is None
    assert settings.source == str(tmp_path / "config.toml")


def test_watch_without_schedule_keys_gets_the_documented_defaults(tmp_path: Path) -> None:
    (w,) = load(tmp_path, WATCH, env={}).watches

    assert w.interval == timedelta(minutes=5)
    assert w.jitter == timedelta(seconds=30)
    assert w.settle == timedelta(0)
    assert w.first_seen is model.FirstSeen.BASELINE
    assert w.max_attempts == 3
    assert w.action is None


SECTION_DEFAULTS = """
[reconciler]
interval = "10m"
jitter = "1m"
settle = "2m"
first_seen = "deploy"
max_attempts = 5
"""
INHERITED = {
    "interval": timedelta(minutes=10),
    "jitter": timedelta(minutes=1),
    "settle": timedelta(minutes=2),
    "first_seen": model.FirstSeen.DEPLOY,
    "max_attempts": 5,
}


def test_watches_inherit_the_reconciler_section(tmp_path: Path) -> None:
    (w,) = load(tmp_path, SECTION_DEFAULTS + WATCH).watches

    assert {key: getattr(w, key) for key in INHERITED} == INHERITED


@pytest.mark.parametrize(
    ("key", "literal", "expected"),
    [
        pytest.param("interval", '"90s"', timedelta(seconds=90), id="interval"),
        pytest.param("jitter", '"0s"', timedelta(0), id="jitter"),
        pytest.param("settle", '"1h30m"', timedelta(hours=1, minutes=30), id="settle"),
        pytest.param("first_seen", '"baseline"', model.FirstSeen.BASELINE, id="first_seen"),
        pytest.param("max_attempts", "1", 1, id="max_attempts"),
    ],
)
def test_a_watch_overrides_one_inherited_key_and_keeps_the_others(
    tmp_path: Path, key: str, literal: str, expected: object
) -> None:
    text = SECTION_DEFAULTS + WATCH + watch(f'name = "own"\nimage = "xchem/x"\ntag = "latest"\n{key} = {literal}')
    inheriting, overriding = load(tmp_path, text).watches

    assert getattr(overriding, key) == expected
    others = {k: v for k, v in INHERITED.items() if k != key}
    assert {k: getattr(overriding, k) for k in others} == others
    assert {k: getattr(inheriting, k) for k in INHERITED} == INHERITED


def test_environment_interval_overrides_the_file(tmp_path: Path) -> None:
    (w,) = load(tmp_path, SECTION_DEFAULTS + WATCH, env={"RECONCILER_INTERVAL": "2m"}).watches

    assert w.interval == timedelta(minutes=2)
    assert w.jitter == timedelta(minutes=1)  # the other file values stand


def test_environment_database_overrides_the_file(tmp_path: Path) -> None:
    text = '[reconciler]\ndatabase = "sqlite:///from-file.db"\n'

    settings = load(tmp_path, text, env={"RECONCILER_DATABASE_URL": "sqlite:///from-env.db"})

    assert settings.database == "sqlite:///from-env.db"


def test_database_argument_wins_over_environment_and_file(tmp_path: Path) -> None:
    text = '[reconciler]\ndatabase = "sqlite:///from-file.db"\n'

    settings = load(
        tmp_path, text, env={"RECONCILER_DATABASE_URL": "sqlite:///from-env.db"}, database="sqlite:///from-flag.db"
    )

    assert settings.database == "sqlite:///from-flag.db"


def test_without_an_explicit_env_the_process_environment_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_DATABASE_URL", "sqlite:///from-process.db")
    monkeypatch.setenv("AWX_TOKEN", TOKEN)

    settings = config.load(write(tmp_path, AWX), database=None)

    assert settings.database == "sqlite:///from-process.db"
    assert settings.awx["production"].token is not None
    assert settings.awx["production"].token.reveal() == TOKEN


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("RECONCILER_INTERVAL", "5", id="interval-without-unit"),
        pytest.param("RECONCILER_SETTLE", "soon", id="settle-not-a-duration"),
        pytest.param("RECONCILER_FIRST_SEEN", "sometimes", id="first-seen-unknown"),
        pytest.param("RECONCILER_MAX_ATTEMPTS", "three", id="max-attempts-not-a-number"),
    ],
)
def test_a_bad_environment_override_is_rejected_naming_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    # The file is fine; the user must be pointed at the environment variable, not at a key the file may not have.
    message = rejection(tmp_path, "", env={variable: value}, in_file=False)

    assert variable in message
    assert value in message


@pytest.mark.parametrize(
    ("where", "env", "database"),
    [
        pytest.param("--database", {}, "not a url", id="argument"),
        pytest.param("RECONCILER_DATABASE_URL", {"RECONCILER_DATABASE_URL": "not a url"}, None, id="environment"),
    ],
)
def test_a_bad_database_url_names_where_it_came_from(
    tmp_path: Path, where: str, env: dict[str, str], database: str | None
) -> None:
    message = rejection(tmp_path, "", env=env, database=database)

    assert where in message
    assert "database URL" in message


# --- durations ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("90s", timedelta(seconds=90), id="seconds"),
        pytest.param("5m", timedelta(minutes=5), id="minutes"),
        pytest.param("1h", timedelta(hours=1), id="hours"),
        pytest.param("1h30m", timedelta(hours=1, minutes=30), id="hours-and-minutes"),
        pytest.param("250ms", timedelta(milliseconds=250), id="milliseconds"),
    ],
)
def test_durations_with_units_parse(tmp_path: Path, text: str, expected: timedelta) -> None:
    (w,) = load(tmp_path, f'[reconciler]\ninterval = "{text}"\n' + WATCH).watches

    assert w.interval == expected


@pytest.mark.parametrize(
    ("where", "key_path"),
    [
        pytest.param("reconciler", "reconciler.interval", id="reconciler.interval"),
        pytest.param("watch", "watch[0].settle", id="watch.settle"),
    ],
)
@pytest.mark.parametrize(
    "literal",
    [
        pytest.param('"5"', id="number-in-a-string"),
        pytest.param("5", id="bare-number"),
        pytest.param('"5 minutes"', id="words"),
        pytest.param('""', id="empty"),
        pytest.param('"-1s"', id="negative"),
        pytest.param('"1x"', id="unknown-unit"),
    ],
)
def test_durations_without_a_unit_or_malformed_are_rejected(
    tmp_path: Path, where: str, key_path: str, literal: str
) -> None:
    if where == "reconciler":
        text = f"[reconciler]\ninterval = {literal}\n"
    else:
        text = watch(f'name = "w"\nimage = "xchem/x"\ntag = "latest"\nsettle = {literal}')

    message = rejection(tmp_path, text)

    assert key_path in message
    assert "duration" in message


# --- secrets -----------------------------------------------------------------------------------------------------


def test_secret_env_key_resolves_from_the_environment(tmp_path: Path) -> None:
    token = load(tmp_path, AWX).awx["production"].token

    assert token is not None
    assert token.reveal() == TOKEN
    assert token.source == "$AWX_TOKEN"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("from-a-file\n", id="trailing-newline"),
        pytest.param("from-a-file", id="no-newline"),
        pytest.param("from-a-file\r\n", id="crlf"),
    ],
)
def test_secret_file_key_reads_relative_to_the_config_directory(tmp_path: Path, content: str) -> None:
    # The config sits in its own directory, away from the working directory of the test run.
    (tmp_path / "etc" / "secrets").mkdir(parents=True)
    (tmp_path / "etc" / "secrets" / "awx-token").write_text(content, encoding="utf-8", newline="")
    path = write(
        tmp_path,
        '[awx.production]\nurl = "https://awx.example.org"\ntoken_file = "secrets/awx-token"\n',
        name="etc/config.toml",
    )

    token = config.load(path, env={}).awx["production"].token

    assert token is not None
    assert token.reveal() == "from-a-file"


def test_secret_file_key_accepts_an_absolute_path(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "token"
    secret.parent.mkdir()
    secret.write_text("absolute\n", encoding="utf-8")

    token = (
        load(tmp_path, f'[awx.production]\nurl = "https://awx.example.org"\ntoken_file = "{secret}"\n', env={})
        .awx["production"]
        .token
    )

    assert token is not None and token.reveal() == "absolute"


@pytest.mark.parametrize(
    ("text", "files", "key_path", "also"),
    [
        pytest.param(
            '[awx.production]\nurl = "https://awx.example.org"\ntoken_env = "AWX_TOKEN"\ntoken_file = "tok"\n',
            {"tok": "x\n"},
            "awx.production.token_env",
            "token_file",
            id="awx-token-env-and-file",
        ),
        pytest.param(
            '[server]\nwebhook_secret_file = "absent"\n',
            {},
            "server.webhook_secret_file",
            "absent",
            id="server-webhook-secret-file-missing",
        ),
        pytest.param(
            '[server]\ntoken_env = "X"\ntoken_file = "tok"\n',
            {"tok": "x\n"},
            "server.token_env",
            "token_file",
            id="server-token-env-and-file",
        ),
    ],
)
def test_unresolvable_secrets_are_rejected_naming_the_key_path(
    tmp_path: Path, text: str, files: dict[str, str], key_path: str, also: str
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")

    message = rejection(tmp_path, text, env={"AWX_TOKEN": TOKEN, "HUB_USER": "someone"})

    assert key_path in message
    assert also in message


@pytest.mark.parametrize(
    ("text", "files", "key_path", "also"),
    [
        pytest.param(
            '[awx.production]\nurl = "https://awx.example.org"\ntoken_file = "absent"\n',
            {},
            "awx.production.token_file",
            "absent",
            id="awx-token-file-missing",
        ),
        pytest.param(
            '[awx.production]\nurl = "https://awx.example.org"\ntoken_file = "empty"\n',
            {"empty": ""},
            "awx.production.token_file",
            "empty",
            id="awx-token-file-empty",
        ),
        pytest.param(
            '[awx.production]\nurl = "https://awx.example.org"\ntoken_file = "blank"\n',
            {"blank": "\n"},
            "awx.production.token_file",
            "empty",
            id="awx-token-file-only-a-newline",
        ),
    ],
)
def test_an_awx_secret_file_that_cannot_be_read_is_missing_not_refused(
    tmp_path: Path, text: str, files: dict[str, str], key_path: str, also: str
) -> None:
    """Like an unset variable: the configuration loads; the watches acting through that server do not act."""
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")

    [missing] = load(tmp_path, text, env={}).awx["production"].missing

    assert missing.key == key_path
    assert also in missing.what and "\n" not in str(missing)


def test_server_token_unset_is_not_an_error(tmp_path: Path) -> None:
    text = '[server]\ntoken_env = "RECONCILER_API_TOKEN"\nwebhook_secret_env = "RECONCILER_WEBHOOK_SECRET"\n'

    server = load(tmp_path, text, env={}).server

    assert server.token is None
    assert server.webhook_secret is None


def test_server_secrets_default_to_the_documented_variables(tmp_path: Path) -> None:
    env = {"RECONCILER_API_TOKEN": "api-token", "RECONCILER_WEBHOOK_SECRET": "hook-secret"}

    server = load(tmp_path, "", env=env).server

    assert server.token is not None and server.token.reveal() == "api-token"
    assert server.webhook_secret is not None and server.webhook_secret.reveal() == "hook-secret"


def test_secret_never_shows_its_value_in_repr_or_str(tmp_path: Path) -> None:
    settings = load(tmp_path, AWX)
    token = settings.awx["production"].token
    assert token is not None

    assert TOKEN not in repr(token)
    assert TOKEN not in str(token)
    assert "$AWX_TOKEN" in str(token)
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)


@pytest.mark.parametrize(
    ("text", "env"),
    [
        pytest.param(
            '[awx.production]\nurl = "https://awx.example.org"\ntoken_env = "AWX_TOKEN"\n'
            'username_env = "AWX_USER"\npassword_env = "AWX_PASSWORD"\n',
            {"AWX_TOKEN": TOKEN, "AWX_USER": "sekrit-user-1", "AWX_PASSWORD": "sekrit-password-2"},
            id="awx-token-and-password-both-given",
        ),
        pytest.param(
            '[awx.production]\nurl = "https://awx.example.org"\nusername_env = "AWX_USER"\n',
            {"AWX_USER": "sekrit-user-1"},
            id="awx-username-without-password",
        ),
        pytest.param(
            '[registries."docker.io"]\nusername_env = "HUB_USER"\n',
            {"HUB_USER": "sekrit-user-1"},
            id="registry-username-without-password",
        ),
        pytest.param(AWX + "[awx.production.extra]\nx = 1\n", ENV, id="later-error-in-the-same-section"),
        pytest.param(
            AWX + awx_watch('kind = "awx"\nawx = "production"\ntemplate = 0'),
            ENV,
            id="error-in-a-watch-using-the-secret",
        ),
    ],
)
def test_config_errors_never_show_a_secret_value(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    message = rejection(tmp_path, text, env=env)

    for value in env.values():
        assert value not in message


# --- rejections: one line, naming the key path ------------------------------------------------------------------


def _rejections() -> list[object]:
    p = pytest.param
    w = 'name = "w"\nimage = "xchem/fragalysis-stack"\n'
    awx_action = 'kind = "awx"\nawx = "production"\n'
    return [
        # syntax and unknown keys
        p('[reconciler]\ninterval = "5m"\njitter = 30s\n', "TOML syntax error", "line 3", id="toml-syntax-error"),
        p('colour = "blue"\n', "colour", "unknown key", id="unknown-top-level-key"),
        p('[reconciler]\nintervall = "5m"\n', "reconciler.intervall", "unknown key", id="unknown-key-in-reconciler"),
        p(watch(w + 'tag = "latest"\nsettel = "1m"'), "watch[0].settel", "unknown key", id="unknown-key-in-watch"),
        p(
            AWX + WATCH + awx_watch(awx_action + 'template = "T"\ntemplat = "T"', name="w2"),
            "watch[1].action.templat",
            "unknown key",
            id="unknown-key-in-action-beside-template",
        ),
        p(
            AWX + WATCH + awx_watch(awx_action + 'templat = "T"', name="w2"),
            "watch[1].action.templat",
            "unknown key",
            id="unknown-key-in-action-misspelling-template",
        ),
        p(AWX + "[awx.production.extra]\nx = 1\n", "awx.production.extra", "unknown key", id="unknown-key-in-awx"),
        p('[server]\nlistn = "127.0.0.1:80"\n', "server.listn", "unknown key", id="unknown-key-in-server"),
        p('[kubernetes]\ncontxt = "x"\n', "kubernetes.contxt", "unknown key", id="unknown-key-in-kubernetes"),
        p(
            watch(w + 'tags = { pattern = "^x$", rnage = ">=1" }'),
            "watch[0].tags.rnage",
            "unknown key",
            id="unknown-key-in-tags-table",
        ),
        # wrong types
        p("[reconciler]\ninterval = 5\n", "reconciler.interval", "duration", id="interval-a-number"),
        p('[reconciler]\nmax_attempts = "3"\n', "reconciler.max_attempts", "whole number", id="max-attempts-string"),
        p("[reconciler]\nmax_attempts = 0\n", "reconciler.max_attempts", "whole number", id="max-attempts-zero"),
        p("[reconciler]\nmax_attempts = true\n", "reconciler.max_attempts", "whole number", id="max-attempts-bool"),
        p(
            watch(w + 'tag = "latest"\nmax_attempts = 0'),
            "watch[0].max_attempts",
            "whole number",
            id="watch-max-attempts-zero",
        ),
        p(watch('name = 3\nimage = "xchem/x"\ntag = "latest"'), "watch[0].name", "string", id="name-a-number"),
        p('reconciler = "yes"\n', "reconciler", "table", id="reconciler-not-a-table"),
        p('watch = "w"\n', "watch", "[[watch]]", id="watch-not-an-array-of-tables"),
        p('[reconciler]\ninterval = "0s"\n', "reconciler.interval", "0s", id="interval-zero"),
        # selectors
        p(watch(w + 'tag = "latest"\ntags = "release"'), "watch[0]", "tags", id="both-tag-and-tags"),
        p(watch(w), "watch[0]", "tag", id="neither-tag-nor-tags"),
        p(watch(w + 'tags = "releases"'), "watch[0].tags", "release", id="tags-unknown-word"),
        p(watch(w + "tags = 3"), "watch[0].tags", "release", id="tags-a-number"),
        p(watch(w + 'tags = { pattern = "(" }'), "watch[0].tags", "pattern", id="tags-pattern-bad-regex"),
        p(watch(w + 'tags = { range = "not a range" }'), "watch[0].tags", "range", id="tags-range-bad"),
        p(watch(w + 'tags = { range = "" }'), "watch[0].tags.range", "string", id="tags-range-empty"),
        p(watch(w + 'tag = "-latest"'), "watch[0].tag", "tag", id="tag-starts-with-dash"),
        p(watch(w + 'tag = "has space"'), "watch[0].tag", "tag", id="tag-with-space"),
        p(watch(w + 'tag = ""'), "watch[0].tag", "string", id="tag-empty"),
        p(watch(w + f'tag = "{"x" * 129}"'), "watch[0].tag", "128", id="tag-too-long"),
        # images and names
        p(
            watch('name = "w"\nimage = "Xchem/UPPER"\ntag = "latest"'),
            "watch[0].image",
            "Xchem/UPPER",
            id="image-upper-case",
        ),
        p(
            watch('name = "w"\nimage = "xchem/stack:latest"\ntag = "latest"'),
            "watch[0].image",
            "tag",
            id="image-with-tag",
        ),
        p(
            watch(f'name = "w"\nimage = "xchem/stack@sha256:{"a" * 64}"\ntag = "latest"'),
            "watch[0].image",
            "digest",
            id="image-with-digest",
        ),
        p(watch('name = "w"\ntag = "latest"'), "watch[0].image", "required", id="image-missing"),
        p(watch('image = "xchem/x"\ntag = "latest"'), "watch[0].name", "required", id="name-missing"),
        p(
            watch('name = "has space"\nimage = "xchem/x"\ntag = "latest"'),
            "watch[0]",
            "has space",
            id="name-with-space",
        ),
        p(WATCH + WATCH, "watch[1].name", "'w'", id="duplicate-watch-names"),
        # actions
        p(AWX + awx_watch('kind = "helm"'), "watch[0].action.kind", "statefulset", id="action-kind-unknown"),
        p(
            AWX + awx_watch('awx = "production"\ntemplate = "T"'),
            "watch[0].action.kind",
            "required",
            id="action-kind-missing",
        ),
        p(
            AWX + awx_watch('kind = "awx"\nawx = "staging"\ntemplate = "T"'),
            "watch[0].action.awx",
            "[awx.staging]",
            id="action-awx-undefined",
        ),
        p(
            awx_watch('kind = "awx"\nawx = "production"\ntemplate = "T"'),
            "watch[0].action.awx",
            "[awx.production]",
            id="action-awx-without-any-awx-section",
        ),
        p(AWX + awx_watch(awx_action + "template = 0"), "watch[0].action.template", "template", id="template-zero"),
        p(AWX + awx_watch(awx_action + 'template = ""'), "watch[0].action.template", "template", id="template-empty"),
        p(AWX + awx_watch(awx_action + "template = 1.5"), "watch[0].action.template", "template", id="template-float"),
        p(AWX + awx_watch(awx_action + "template = true"), "watch[0].action.template", "template", id="template-bool"),
        p(
            AWX + awx_watch(awx_action + 'template = "T"\nextra_vars = { stack_image_tag = "{nope}" }'),
            "watch[0].action.extra_vars.stack_image_tag",
            "{nope}",
            id="extra-vars-unknown-placeholder",
        ),
        p(
            AWX + awx_watch(awx_action + 'template = "T"\nextra_vars = { stack_image_tag = "{tag" }'),
            "watch[0].action.extra_vars.stack_image_tag",
            "{tag",
            id="extra-vars-unclosed-brace",
        ),
        p(
            AWX + awx_watch(awx_action + 'template = "T"\nextra_vars = { stack_image_tag = "tag}" }'),
            "watch[0].action.extra_vars.stack_image_tag",
            "tag}",
            id="extra-vars-stray-closing-brace",
        ),
        p(
            AWX + awx_watch(awx_action + 'template = "T"\nextra_vars = { tags = ["a"] }'),
            "watch[0].action.extra_vars.tags",
            "string",
            id="extra-vars-array-value",
        ),
        p(
            awx_watch('kind = "statefulset"\nnamespace = "ns"\nname = "stack"'),
            "watch[0].action.container",
            "required",
            id="statefulset-container-missing",
        ),
        p(
            awx_watch('kind = "statefulset"\nnamespace = "ns"\nname = "s"\ncontainer = "c"\nmode = "bounce"'),
            "watch[0].action.mode",
            '"pin"',
            id="statefulset-mode-unknown",
        ),
        p(
            awx_watch('kind = "statefulset"\nnamespace = "ns"\nname = "s"\ncontainer = "c"\ntimeout = "15"'),
            "watch[0].action.timeout",
            "duration",
            id="statefulset-timeout-without-unit",
        ),
        # AWX servers, registries, server, database
        p('[awx.production]\nurl = "https://awx.example.org"\n', "awx.production", "token", id="awx-no-credentials"),
        p(
            '[awx.production]\nurl = "https://awx.example.org"\nusername_env = "AWX_TOKEN"\n',
            "awx.production",
            "password",
            id="awx-username-without-password",
        ),
        p('[awx.production]\ntoken_env = "AWX_TOKEN"\n', "awx.production.url", "required", id="awx-url-missing"),
        p(
            '[awx.production]\nurl = "ftp://awx.example.org"\ntoken_env = "AWX_TOKEN"\n',
            "awx.production.url",
            "http",
            id="awx-url-not-http",
        ),
        p(
            '[awx.production]\nurl = "awx.example.org"\ntoken_env = "AWX_TOKEN"\n',
            "awx.production.url",
            "http",
            id="awx-url-without-scheme",
        ),
        p(
            '[registries."docker.io"]\nusername_env = "AWX_TOKEN"\n',
            'registries."docker.io"',
            "password",
            id="registry-username-without-password",
        ),
        p(
            '[registries."ghcr.io"]\nurl = "127.0.0.1:5000"\n',
            'registries."ghcr.io".url',
            "http",
            id="registry-url-not-http",
        ),
        p('[server]\nlisten = "8080"\n', "server.listen", "host:port", id="listen-port-only"),
        p('[server]\nlisten = "localhost:70000"\n', "server.listen", "host:port", id="listen-port-too-large"),
        p('[server]\nlisten = "localhost:http"\n', "server.listen", "host:port", id="listen-port-not-a-number"),
        p('[reconciler]\ndatabase = "not a url"\n', "reconciler.database", "database URL", id="database-not-a-url"),
        p(
            '[reconciler]\ndatabase = "postgresql+psycopg://u:db-sekrit-pw@db:port/x"\n',
            "reconciler.database",
            "database URL",
            id="database-port-not-a-number",
        ),
        p(
            '[reconciler]\nfirst_seen = "sometimes"\n',
            "reconciler.first_seen",
            '"baseline", "deploy"',
            id="first-seen-unknown",
        ),
        p(
            watch(w + 'tag = "latest"\nfirst_seen = "sometimes"'),
            "watch[0].first_seen",
            '"baseline", "deploy"',
            id="watch-first-seen-unknown",
        ),
    ]


@pytest.mark.parametrize(("text", "key_path", "also"), _rejections())
def test_invalid_configuration_is_rejected_in_one_line_naming_the_key_path(
    tmp_path: Path, text: str, key_path: str, also: str
) -> None:
    try:
        message = rejection(tmp_path, text)
    except ValueError as exc:  # not a ConfigError: the CLI would print a traceback
        pytest.fail(f"{type(exc).__name__} instead of ConfigError: {exc}")

    assert f"{key_path}: " in message
    assert also in message
    assert "db-sekrit-pw" not in message


def test_an_unknown_key_with_a_newline_in_its_name_is_still_reported_on_one_line(tmp_path: Path) -> None:
    # TOML allows any quoted key; the message must not let it break the one-line contract (or the terminal).
    message = rejection(tmp_path, '"bad\\nkey" = 1\n')

    assert "unknown key" in message


# --- tags tables -------------------------------------------------------------------------------------------------


def test_tags_table_with_pattern_and_range_loads_and_describes_itself(tmp_path: Path) -> None:
    text = watch(
        'name = "w"\nimage = "xchem/x"\ntags = { pattern = "^v?\\\\d+\\\\.\\\\d+\\\\.\\\\d+$", '
        'range = ">=2026.1.0,<2027" }'
    )

    (w,) = load(tmp_path, text).watches

    assert isinstance(w.selector, model.ReleaseSelector)
    assert w.selector.pattern == r"^v?\d+\.\d+\.\d+$"
    assert w.selector.range == ">=2026.1.0,<2027"
    description = w.selector.describe()
    assert description.startswith("tags:")
    assert r"^v?\d+\.\d+\.\d+$" in description
    assert ">=2026.1.0,<2027" in description
    assert description != "tags:release"


def test_tags_table_with_only_a_pattern_describes_no_range(tmp_path: Path) -> None:
    (w,) = load(tmp_path, watch('name = "w"\nimage = "xchem/x"\ntags = { pattern = "^v[0-9]+$" }')).watches

    assert w.selector.describe().startswith("tags:")
    assert "^v[0-9]+$" in w.selector.describe()
    assert "range" not in w.selector.describe()


def test_tags_release_describes_as_tags_release(tmp_path: Path) -> None:
    (w,) = load(tmp_path, watch('name = "w"\nimage = "xchem/x"\ntags = "release"')).watches

    assert w.selector == model.ReleaseSelector()
    assert w.selector.describe() == "tags:release"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("xchem/fragalysis-stack", "docker.io/xchem/fragalysis-stack", id="hub-namespace"),
        pytest.param("busybox", "docker.io/library/busybox", id="hub-official"),
        pytest.param("index.docker.io/xchem/x", "docker.io/xchem/x", id="hub-alias"),
        pytest.param("ghcr.io/xchem/x", "ghcr.io/xchem/x", id="other-registry"),
        pytest.param("127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b", id="registry-with-port"),
    ],
)
def test_image_names_are_normalised(tmp_path: Path, image: str, expected: str) -> None:
    (w,) = load(tmp_path, watch(f'name = "w"\nimage = "{image}"\ntag = "latest"')).watches

    assert str(w.image) == expected


def test_statefulset_action_loads_with_its_defaults(tmp_path: Path) -> None:
    text = awx_watch('kind = "statefulset"\nnamespace = "staging-stack"\nname = "stack"\ncontainer = "stack"')

    (w,) = load(tmp_path, text).watches

    assert w.action == model.StatefulSetAction(
        namespace="staging-stack",
        name="stack",
        container="stack",
        mode=model.RolloutMode.RESTART,
        timeout=timedelta(minutes=15),
    )


def test_awx_template_may_be_a_numeric_id_and_extra_vars_use_every_placeholder(tmp_path: Path) -> None:
    placeholders = "{image} {tag} {digest} {previous_tag} {previous_digest} {watch} {{literal}}"
    text = AWX + awx_watch(
        f'kind = "awx"\nawx = "production"\ntemplate = 42\nextra_vars = {{ all = "{placeholders}", n = 1, b = true }}'
    )

    (w,) = load(tmp_path, text).watches

    assert isinstance(w.action, model.AwxAction)
    assert w.action.template == 42
    assert dict(w.action.extra_vars) == {"all": placeholders, "n": 1, "b": True}


# --- one database, wherever you stand -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('database = "sqlite:///state.db"', "sqlite:///{dir}/state.db"),
        ('database = "sqlite:///data/state.db"', "sqlite:///{dir}/data/state.db"),
        ('database = "sqlite:////srv/state.db"', "sqlite:////srv/state.db"),  # absolute: as given
        ('database = "sqlite:///:memory:"', "sqlite:///:memory:"),
        ('database = "postgresql+psycopg://u@db/reconciler"', "postgresql+psycopg://u@db/reconciler"),
    ],
)
def test_a_relative_sqlite_path_in_the_file_is_taken_from_the_files_directory(
    tmp_path: Path, text: str, expected: str
) -> None:
    settings = load(tmp_path, f"[reconciler]\n{text}\n", env={})
    assert settings.database == expected.format(dir=tmp_path)


def test_a_relative_sqlite_path_from_the_command_line_or_environment_is_the_users(tmp_path: Path) -> None:
    assert load(tmp_path, "", env={}, database="sqlite:///here.db").database == "sqlite:///here.db"
    env = {"RECONCILER_DATABASE_URL": "sqlite:///there.db"}
    assert load(tmp_path, "", env=env).database == "sqlite:///there.db"


@pytest.mark.parametrize(
    ("section", "where"),
    [
        ('[registries."docker.io"]\nurl = "https://bob:hunter2@registry.example.org"', 'registries."docker.io".url'),
        ('[awx.production]\nurl = "https://admin:hunter2@awx.example.org"\ntoken_env = "T"', "awx.production.url"),
        ('[awx.production]\nurl = "https://hunter2@awx.example.org/x"\ntoken_env = "T"', "awx.production.url"),
    ],
)
def test_a_url_carrying_credentials_is_refused_saying_where_they_go(tmp_path: Path, section: str, where: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        load(tmp_path, section, env={"T": "x"})
    message = str(caught.value)
    assert where in message and "hunter2" not in message and "\n" not in message
    assert "_env" in message  # says where credentials belong


def test_awx_marker_defaults_can_be_renamed_or_switched_off(tmp_path: Path) -> None:
    base = '[awx.a]\nurl = "https://awx.example.org"\ntoken_env = "T"\n'
    assert load(tmp_path, base, env={"T": "x"}).awx["a"].marker == "reconciler_action"
    assert load(tmp_path, base + 'marker = "deployed_by"\n', env={"T": "x"}).awx["a"].marker == "deployed_by"
    assert load(tmp_path, base + 'marker = ""\n', env={"T": "x"}).awx["a"].marker == ""
    with pytest.raises(errors.ConfigError, match="awx.a.marker"):
        load(tmp_path, base + 'marker = "not a name"\n', env={"T": "x"})


def test_a_workflow_job_template_is_an_awx_action(tmp_path: Path) -> None:
    text = """
[awx.a]
url = "https://awx.example.org"
token_env = "T"
[[watch]]
name = "w"
image = "xchem/x"
tag = "latest"
[watch.action]
kind = "awx"
awx = "a"
workflow_template = "Deploy everything"
"""
    action = load(tmp_path, text, env={"T": "x"}).watches[0].action
    assert isinstance(action, model.AwxAction) and action.workflow and action.template == "Deploy everything"
    with pytest.raises(errors.ConfigError, match="not both"):
        load(
            tmp_path,
            text.replace('workflow_template = "Deploy everything"', 'workflow_template = "a"\ntemplate = "b"'),
            env={"T": "x"},
        )


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_the_usual_postgresql_urls_mean_psycopg(tmp_path: Path, scheme: str) -> None:
    settings = load(tmp_path, f'[reconciler]\ndatabase = "{scheme}://u@db.example.org/reconciler"\n', env={})
    assert settings.database == "postgresql+psycopg://u@db.example.org/reconciler"


def test_a_database_whose_driver_is_not_installed_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="no database driver for 'mysql' is installed"):
        load(tmp_path, '[reconciler]\ndatabase = "mysql://db.example.org/reconciler"\n', env={})
