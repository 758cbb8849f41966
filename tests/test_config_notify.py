"""`[[notify]]` tables and a watch's `environment`: loading them, every rejection one line naming the key path, no
Apprise URL or signing secret ever echoed (in an error, a repr, or `config check`), and a secret that is not set
disabling only its own target.

Each test writes a real `config.toml` under `tmp_path` and passes the environment explicitly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler import config, errors, model

SLACK_URL = "slack://T0KENA/B0KENB/sekrit-slack-token-987/#deployments"
PROD_URL = "slack://T0KENA/B0KENB/sekrit-prod-token-654"
HOOK_SECRET = "sekrit-hook-secret-321"
HOOK_URL = "https://hooks.example.org/reconciler?key=sekrit-hook-url-111"
ENV = {"SLACK_STAGING_URL": SLACK_URL, "SLACK_PRODUCTION_URL": PROD_URL, "RECONCILER_NOTIFY_SECRET": HOOK_SECRET}
SECRETS = (SLACK_URL, PROD_URL, HOOK_SECRET, HOOK_URL, "sekrit")
WATCHES = """
[[watch]]
name = "stack-staging"
image = "xchem/fragalysis-stack"
tag = "latest"

[[watch]]
name = "stack-production"
image = "xchem/fragalysis-stack"
tags = "release"
"""
SPEC_EXAMPLE = (
    WATCHES
    + """
[[notify]]
name = "slack-staging"
url_env = "SLACK_STAGING_URL"
events = ["started", "succeeded", "failed", "gave_up"]
watches = ["stack-staging"]

[[notify]]
name = "audit"
kind = "webhook"
url = "https://hooks.example.org/reconciler"
secret_env = "RECONCILER_NOTIFY_SECRET"
"""
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> config.Settings:
    return config.load(write(tmp_path, text), env=ENV if env is None else env)


def notify(body: str) -> str:
    return WATCHES + f"\n[[notify]]\n{body.strip()}\n"


def rejection(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """The ConfigError message for `text`: one line, naming the file, and echoing no secret."""
    path = write(tmp_path, text)
    with pytest.raises(errors.ConfigError) as caught:
        config.load(path, env=ENV if env is None else env)
    message = str(caught.value)
    assert "\n" not in message, f"not one line: {message!r}"
    assert message.startswith(f"{path}: "), message
    for secret in SECRETS:
        assert secret not in message, message
    return message


# --- good configurations ------------------------------------------------------------------------------------------


def test_an_apprise_target_takes_its_url_from_the_environment_with_the_defaults(tmp_path: Path) -> None:
    [target] = load(tmp_path, notify('name = "slack"\nurl_env = "SLACK_STAGING_URL"')).notify

    assert target.name == "slack"
    assert target.kind is model.NotifyKind.APPRISE
    assert target.url is not None and target.url.reveal() == SLACK_URL
    assert target.url.source == "$SLACK_STAGING_URL"
    assert target.shown == "$SLACK_STAGING_URL"
    assert target.secret is None
    assert target.route == model.Route(target="slack", events=model.DEFAULT_EVENTS, watches=None)
    assert target.route.events == frozenset(model.Event) - {model.Event.DRIFT}
    assert target.timeout == timedelta(seconds=10)
    assert target.missing == ()


def test_the_specifications_example_loads(tmp_path: Path) -> None:
    settings = load(tmp_path, SPEC_EXAMPLE)

    slack, audit = settings.notify
    assert slack.route.events == {model.Event(e) for e in ("started", "succeeded", "failed", "gave_up")}
    assert slack.route.watches == frozenset({"stack-staging"})
    assert audit.kind is model.NotifyKind.WEBHOOK
    assert audit.url == config.Secret("https://hooks.example.org/reconciler", source="notify[1].url")
    assert audit.shown == "https://hooks.example.org/reconciler"
    assert audit.secret is not None and audit.secret.reveal() == HOOK_SECRET
    assert audit.secret.source == "$RECONCILER_NOTIFY_SECRET"
    assert audit.route == model.Route(target="audit")
    assert settings.notify_target("audit") is audit


def test_no_notify_tables_means_no_targets(tmp_path: Path) -> None:
    assert load(tmp_path, WATCHES).notify == ()


def test_urls_and_secrets_may_come_from_files_shown_as_written(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "slack").write_text(SLACK_URL + "\n", encoding="utf-8")
    (tmp_path / "secrets" / "hook-url").write_text(HOOK_URL + "\n", encoding="utf-8")
    (tmp_path / "secrets" / "hook-secret").write_text(HOOK_SECRET + "\n", encoding="utf-8")
    text = notify('name = "slack"\nurl_file = "secrets/slack"') + (
        '[[notify]]\nname = "hook"\nkind = "webhook"\n'
        'url_file = "secrets/hook-url"\nsecret_file = "secrets/hook-secret"\n'
    )

    slack, hook = load(tmp_path, text).notify

    assert slack.url is not None and slack.url.reveal() == SLACK_URL and slack.shown == "secrets/slack"
    assert hook.url is not None and hook.url.reveal() == HOOK_URL and hook.shown == "secrets/hook-url"
    assert hook.secret is not None and hook.secret.reveal() == HOOK_SECRET


def test_a_webhook_url_may_be_a_secret_and_the_timeout_and_events_set(tmp_path: Path) -> None:
    text = notify(
        'name = "hook"\nkind = "webhook"\nurl_env = "HOOK_URL"\nsecret_env = "RECONCILER_NOTIFY_SECRET"\n'
        'events = ["drift", "test", "drift"]\ntimeout = "5m"'
    )

    [hook] = load(tmp_path, text, env={**ENV, "HOOK_URL": HOOK_URL}).notify

    assert hook.url is not None and hook.url.reveal() == HOOK_URL and hook.shown == "$HOOK_URL"
    assert hook.route.events == frozenset({model.Event.DRIFT, model.Event.TEST})
    assert hook.timeout == timedelta(minutes=5)


def test_nothing_secret_is_in_a_targets_repr(tmp_path: Path) -> None:
    settings = load(tmp_path, SPEC_EXAMPLE)
    for secret in (SLACK_URL, HOOK_SECRET):
        assert secret not in repr(settings)


# --- a secret that is not set disables only its target ------------------------------------------------------------


def test_a_variable_that_is_not_set_disables_only_its_target(tmp_path: Path) -> None:
    settings = load(tmp_path, SPEC_EXAMPLE, env={"RECONCILER_NOTIFY_SECRET": HOOK_SECRET})

    slack, audit = settings.notify
    assert slack.url is None and slack.shown == "$SLACK_STAGING_URL"
    assert [str(m) for m in slack.missing] == ["SLACK_STAGING_URL is not set (notify[0].url_env)"]
    assert audit.missing == () and audit.secret is not None


def test_a_signing_secret_that_is_not_set_is_missing_too(tmp_path: Path) -> None:
    [audit] = load(tmp_path, SPEC_EXAMPLE, env={"SLACK_STAGING_URL": SLACK_URL}).notify[1:]

    assert audit.secret is None
    assert audit.url is not None  # the plain URL is there; the target is disabled all the same
    assert [m.key for m in audit.missing] == ["notify[1].secret_env"]


def test_a_file_that_cannot_be_read_is_missing_not_an_error(tmp_path: Path) -> None:
    [target] = load(tmp_path, notify('name = "slack"\nurl_file = "nowhere/slack-url"')).notify

    assert target.url is None and target.shown == "nowhere/slack-url"
    [missing] = target.missing
    assert missing.key == "notify[0].url_file" and "cannot read 'nowhere/slack-url'" in missing.what


# --- rejections ---------------------------------------------------------------------------------------------------

SLACK = 'url_env = "SLACK_STAGING_URL"'
HOOK = 'kind = "webhook"\nurl = "https://hooks.example.org/x"\nsecret_env = "RECONCILER_NOTIFY_SECRET"'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            f'name = "a"\nkind = "teams"\n{SLACK}',
            'notify[0].kind: expected one of "apprise", "webhook", got',
            id="unknown-kind",
        ),
        pytest.param(f'name = "a"\nkind = 3\n{SLACK}', "notify[0].kind: expected one of", id="kind-not-a-string"),
        pytest.param(SLACK, "notify[0].name: required", id="no-name"),
        pytest.param(f'name = "a b"\n{SLACK}', "notify[0].name: 'a b' must be letters, digits", id="bad-name"),
        pytest.param(f'name = "a"\n{SLACK}\nurls = []', "notify[0].urls: unknown key", id="unknown-key"),
        pytest.param('name = "a"', "notify[0].url_env: required; give url_env (or url_file)", id="missing-url"),
        pytest.param(
            f'name = "a"\n{SLACK}\nurl_file = "x"', "notify[0].url_env: give url_env or url_file, not both", id="both"
        ),
        pytest.param(
            f'name = "a"\n{SLACK}\nsecret_env = "RECONCILER_NOTIFY_SECRET"',
            "notify[0].secret_env: only a webhook",
            id="secret-on-apprise",
        ),
        pytest.param(
            f'name = "a"\n{SLACK}\nevents = ["started", "deployed"]',
            "notify[0].events: unknown event 'deployed' (known: drift, awaiting_approval, started,",
            id="unknown-event",
        ),
        pytest.param(
            f'name = "a"\n{SLACK}\nevents = "started"', "notify[0].events: expected an array", id="events-string"
        ),
        pytest.param(
            f'name = "a"\n{SLACK}\nevents = []', "notify[0].events: expected an array of event names", id="empty-events"
        ),
        pytest.param(
            f'name = "a"\n{SLACK}\nwatches = ["stack-staging", "stack-dev"]',
            "notify[0].watches: no [[watch]] named 'stack-dev' (watches: stack-staging, stack-production)",
            id="unknown-watch",
        ),
        pytest.param(f'name = "a"\n{SLACK}\nwatches = []', "notify[0].watches: expected an array", id="empty-watches"),
        pytest.param(
            'name = "a"\nkind = "webhook"\nurl = "https://hooks.example.org/x"',
            "notify[0].secret_env: required for a webhook, which is never sent unsigned; give secret_env",
            id="unsigned-webhook",
        ),
        pytest.param(
            'name = "a"\nkind = "webhook"\nsecret_env = "RECONCILER_NOTIFY_SECRET"',
            "notify[0].url_env: required",
            id="webhook-without-url",
        ),
        pytest.param(
            f'name = "a"\n{HOOK}\nurl_env = "HOOK_URL"',
            "notify[0].url: give url or url_env (or url_file), not both",
            id="webhook-url-and-url-env",
        ),
        pytest.param(
            f'name = "a"\n{HOOK.replace("https://hooks", "ftp://hooks")}',
            "notify[0].url: a webhook needs an http:// or https:// URL",
            id="webhook-not-http",
        ),
        pytest.param(
            f'name = "a"\n{HOOK.replace("https://hooks", "https://user:sekrit@hooks")}',
            "notify[0].url: the URL must not carry a user name or password",
            id="webhook-url-with-credentials",
        ),
        pytest.param(
            f'name = "a"\n{SLACK}\ntimeout = "0s"', "notify[0].timeout: must be longer than 0s", id="zero-timeout"
        ),
        pytest.param(
            f'name = "a"\n{SLACK}\ntimeout = "6m"',
            "notify[0].timeout: must be longer than 0s and at most 5m",
            id="long-timeout",
        ),
        pytest.param(
            f'name = "a"\n{SLACK}\ntimeout = "10"', "notify[0].timeout: expected a duration", id="bare-timeout"
        ),
    ],
)
def test_a_bad_notify_table_is_refused_naming_the_key(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in rejection(tmp_path, notify(body))


def test_notify_must_be_an_array_of_tables(tmp_path: Path) -> None:
    assert "notify: expected [[notify]] tables" in rejection(tmp_path, 'notify = "slack"\n' + WATCHES)


def test_a_name_used_twice_names_both_targets(tmp_path: Path) -> None:
    text = (
        notify(f'name = "slack"\n{SLACK}') + f'[[notify]]\nname = "hook"\n{HOOK}\n[[notify]]\nname = "slack"\n{SLACK}\n'
    )

    assert rejection(tmp_path, text).endswith("notify[2].name: 'slack' is already the name of notify[0]")


def test_a_plain_url_on_an_apprise_target_says_to_use_url_env_without_echoing_it(tmp_path: Path) -> None:
    message = rejection(tmp_path, notify(f'name = "slack"\nurl = "{SLACK_URL}"'))

    assert "notify[0].url: an Apprise URL carries" in message and "url_env" in message
    assert "T0KENA" not in message and "slack://" not in message


def test_a_webhook_given_an_apprise_url_does_not_echo_it(tmp_path: Path) -> None:
    message = rejection(tmp_path, notify(f'name = "a"\n{HOOK.replace("https://hooks.example.org/x", SLACK_URL)}'))

    assert "notify[0].url: a webhook needs an http:// or https:// URL" in message
    assert "T0KENA" not in message


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        pytest.param("apprise", "sekrit-not-a-url", "SLACK_URL does not hold an Apprise URL", id="apprise"),
        pytest.param("webhook", "slack://sekrit/token", "SLACK_URL does not hold an http://", id="webhook"),
    ],
)
def test_a_secret_url_of_the_wrong_form_disables_its_target_naming_the_variable_not_the_value(
    tmp_path: Path, kind: str, value: str, expected: str
) -> None:
    """The value is not this file's mistake, and one target's wrong variable must not stop the others (nor the
    deployments): the target stands aside, like one whose variable is not set."""
    secret = '\nsecret_env = "RECONCILER_NOTIFY_SECRET"' if kind == "webhook" else ""
    text = notify(f'name = "a"\nkind = "{kind}"\nurl_env = "SLACK_URL"{secret}')

    [target] = load(tmp_path, text, env={**ENV, "SLACK_URL": value}).notify

    assert target.url is None
    [why] = target.missing
    assert why.key == "notify[0].url_env" and str(why).startswith(expected)
    assert value not in str(why)


# --- finding a target by name -------------------------------------------------------------------------------------


def test_an_unknown_target_is_named_with_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, SPEC_EXAMPLE)
    settings = config.load(path, env=ENV)

    with pytest.raises(errors.ConfigError) as caught:
        settings.notify_target("teams")
    assert str(caught.value) == f"no notify target named 'teams' in {path} (targets: slack-staging, audit)"


def test_without_targets_the_error_says_to_add_one(tmp_path: Path) -> None:
    settings = load(tmp_path, WATCHES)

    with pytest.raises(errors.ConfigError, match=r"\(targets: none; add a \[\[notify\]\] table\)$"):
        settings.notify_target("slack")


# --- a watch's environment ----------------------------------------------------------------------------------------


def test_a_watchs_environment_defaults_to_the_last_part_of_its_name(tmp_path: Path) -> None:
    text = WATCHES.replace('tags = "release"', 'tags = "release"\nenvironment = "PRODUCTION"') + (
        '[[watch]]\nname = "backend"\nimage = "xchem/fragalysis-backend"\ntag = "latest"\n'
    )

    settings = load(tmp_path, text)

    assert [w.environment for w in settings.watches] == ["staging", "PRODUCTION", "backend"]


@pytest.mark.parametrize("value", ['""', '"  "', "1"])
def test_an_empty_environment_is_refused(tmp_path: Path, value: str) -> None:
    text = WATCHES.replace('tags = "release"', f'tags = "release"\nenvironment = {value}')

    assert "watch[1].environment: expected a non-empty string" in rejection(tmp_path, text)


# --- config check ---------------------------------------------------------------------------------------------------


def check(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`reconciler config check` in a real process, in a clean environment plus `env` (as test_cli_config.py)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "AWX_", "DOCKERHUB_", "SLACK_"))}
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "--config", str(tmp_path / "config.toml"), "config", "check"],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_check_shows_targets_without_their_secrets(tmp_path: Path) -> None:
    (tmp_path / "hook-url").write_text(HOOK_URL, encoding="utf-8")
    text = SPEC_EXAMPLE.replace('tags = "release"', 'tags = "release"\nenvironment = "PRODUCTION"') + (
        '[[notify]]\nname = "secret-hook"\nkind = "webhook"\nurl_file = "hook-url"\nsecret_env = "UNSET_SECRET"\n'
        'timeout = "1m30s"\nwatches = ["stack-production", "stack-staging"]\n'
    )
    write(tmp_path, text)

    result = check(tmp_path, ENV)

    assert result.returncode == 0, result.stderr
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert [w["environment"] for w in document["watch"]] == ["staging", "PRODUCTION"]
    slack, audit, secret_hook = document["notify"]
    assert slack == {
        "name": "slack-staging",
        "kind": "apprise",
        "url": "<redacted, from $SLACK_STAGING_URL>",
        "secret": None,
        "events": ["failed", "gave_up", "started", "succeeded"],
        "watches": ["stack-staging"],
        "timeout": "10s",
        "missing": [],
    }
    assert audit["url"] == "https://hooks.example.org/reconciler"
    assert audit["secret"] == "<redacted, from $RECONCILER_NOTIFY_SECRET>"
    assert audit["events"] == sorted(e.value for e in model.DEFAULT_EVENTS) and audit["watches"] is None
    assert secret_hook["url"] == "<redacted, from hook-url>"
    assert secret_hook["secret"] is None
    assert secret_hook["missing"] == ["UNSET_SECRET is not set (notify[2].secret_env)"]
    assert secret_hook["watches"] == ["stack-production", "stack-staging"] and secret_hook["timeout"] == "1m30s"


def test_config_check_accepts_a_target_whose_url_is_not_set(tmp_path: Path) -> None:
    write(tmp_path, SPEC_EXAMPLE)

    result = check(tmp_path, {"RECONCILER_NOTIFY_SECRET": HOOK_SECRET})

    assert result.returncode == 0, result.stderr
    slack = json.loads(result.stdout)["notify"][0]
    assert slack["url"] is None
    assert slack["missing"] == ["SLACK_STAGING_URL is not set (notify[0].url_env)"]
    assert HOOK_SECRET not in result.stdout + result.stderr
