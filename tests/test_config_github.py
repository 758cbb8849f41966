"""`[github.NAME]` and `kind = "github"` actions: what loads, what is refused (one sentence naming the key), and a
token that is not set holding back only the watches that dispatch through it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from reconciler import config, errors, model

TOKEN = "ghp_secret_token_0123456789"
BASE = """
[github.default]
token_env = "GITHUB_TOKEN"

[[watch]]
name = "frontend"
image = "xchem/fragalysis-frontend"
tag = "latest"
[watch.action]
kind = "github"
github = "default"
repository = "xchem/fragalysis-stack"
workflow = "build main"
ref = "master"
inputs = { fe_image_tag = "{tag}", fe_namespace = "xchem" }
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> config.Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return config.load(path, env={"GITHUB_TOKEN": TOKEN} if env is None else env)


def test_a_github_action_loads_with_its_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, BASE)
    hub = settings.github["default"]
    assert (hub.url, hub.timeout, hub.poll) == ("https://api.github.com", timedelta(minutes=45), timedelta(seconds=15))
    assert hub.token is not None and hub.token.reveal() == TOKEN and TOKEN not in str(hub.token)
    action = settings.watches[0].action
    assert isinstance(action, model.GithubAction)
    assert (action.repository, action.workflow, action.ref) == ("xchem/fragalysis-stack", "build main", "master")
    assert dict(action.inputs) == {"fe_image_tag": "{tag}", "fe_namespace": "xchem"}
    assert settings.watches[0].cannot_act is None


def test_a_token_not_set_holds_back_only_its_watches(tmp_path: Path) -> None:
    settings = load(tmp_path, BASE, env={})
    assert settings.watches[0].cannot_act == "GITHUB_TOKEN is not set (github.default.token_env)"
    [(missing, users)] = settings.missing_secrets()
    assert missing.variable == "GITHUB_TOKEN"
    assert users == ["frontend"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (('github = "default"', 'github = "other"'), "watch[0].action.github: no [github.other] section"),
        (('workflow = "build main"', "workflow = 0"), "watch[0].action.workflow: expected the workflow's name"),
        (('repository = "xchem/fragalysis-stack"', 'repository = "fragalysis-stack"'), "must be owner/name"),
        (('ref = "master"', ""), "watch[0].action.ref: required"),
        (('token_env = "GITHUB_TOKEN"', 'token_env = "GITHUB_TOKEN"\nurl = "ftp://x"'), "github.default.url"),
        (('token_env = "GITHUB_TOKEN"', 'tokn_env = "GITHUB_TOKEN"'), "github.default.tokn_env: unknown key"),
        (('kind = "github"', 'kind = "gitlab"'), 'expected "awx", "github" or "statefulset"'),
    ],
)
def test_mistakes_are_one_sentence_naming_the_key(tmp_path: Path, change: tuple[str, str], says: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        load(tmp_path, BASE.replace(*change))
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_more_than_25_inputs_are_refused_as_github_would(tmp_path: Path) -> None:
    many = ", ".join(f"i{n} = 'x'" for n in range(26))
    text = BASE.replace('inputs = { fe_image_tag = "{tag}", fe_namespace = "xchem" }', f"inputs = {{ {many} }}")
    with pytest.raises(errors.ConfigError, match="at most 25 inputs"):
        load(tmp_path, text)


def test_a_workflow_by_id_or_file_name(tmp_path: Path) -> None:
    by_id = load(tmp_path, BASE.replace('workflow = "build main"', "workflow = 1234")).watches[0].action
    by_file = load(tmp_path, BASE.replace('"build main"', '"build-main.yaml"')).watches[0].action
    assert isinstance(by_id, model.GithubAction) and by_id.workflow == 1234
    assert isinstance(by_file, model.GithubAction) and by_file.workflow == "build-main.yaml"


@pytest.mark.parametrize("key", ["timeout", "poll"])
def test_a_zero_timeout_or_poll_is_refused(tmp_path: Path, key: str) -> None:
    text = BASE.replace('token_env = "GITHUB_TOKEN"', f'token_env = "GITHUB_TOKEN"\n{key} = "0s"')
    with pytest.raises(errors.ConfigError, match=f"github.default.{key}: must be longer than 0s"):
        load(tmp_path, text)


def test_a_missing_ref_is_named_once(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        load(tmp_path, BASE.replace('ref = "master"\n', ""))
    assert str(caught.value).count("watch[0].action") == 1


def test_a_token_whose_variable_ends_in_a_newline_is_taken_without_it(tmp_path: Path) -> None:
    """A Kubernetes secret made with --from-file often ends in one; sent in a header, it would be refused."""
    hub = load(tmp_path, BASE, env={"GITHUB_TOKEN": TOKEN + "\n"}).github["default"]
    assert hub.token is not None and hub.token.reveal() == TOKEN
    only_newline = load(tmp_path, BASE, env={"GITHUB_TOKEN": "\r\n"})
    assert only_newline.watches[0].cannot_act == "GITHUB_TOKEN is not set (github.default.token_env)"
