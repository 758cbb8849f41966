"""Which tag a release watch follows: the newest release under the watch's rule, compared as versions."""

from __future__ import annotations

import itertools

import pytest

from reconciler import errors, model, policy

DEFAULT = model.ReleaseSelector()


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        pytest.param(["2026.08.2", "2026.08.3"], "2026.08.3", id="calver-patch-bump"),
        pytest.param(["2026.08.3", "2026.09.0"], "2026.09.0", id="calver-month-bump"),
        pytest.param(["2026.12.0", "2027.01.0"], "2027.01.0", id="calver-year-bump"),
        pytest.param(["1.0.9", "1.0.10"], "1.0.10", id="numeric-not-lexical-patch"),
        pytest.param(["1.9.0", "1.10.0"], "1.10.0", id="numeric-not-lexical-minor"),
        pytest.param(["9.0.0", "10.0.0"], "10.0.0", id="numeric-not-lexical-major"),
        pytest.param(["0.0.1"], "0.0.1", id="single-release"),
        pytest.param(["1.0.0", "latest", "stable", "1.0.1-rc.1", "v2.0.0"], "1.0.0", id="non-releases-ignored"),
    ],
)
def test_newest_release_wins(tags: list[str], expected: str) -> None:
    assert policy.newest(tags, DEFAULT) == expected


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param("2.6.6.1", id="four-components"),
        pytest.param("2022.11.2-rc.1", id="release-candidate"),
        pytest.param("2023.11.1-1", id="build-suffix"),
        pytest.param("v1.1.0", id="v-prefix"),
        pytest.param("latest", id="latest"),
        pytest.param("stable", id="stable"),
        pytest.param("1.0", id="two-components"),
        pytest.param("1.0.0.0", id="four-zero-components"),
    ],
)
def test_not_a_release_under_the_default_rule(tag: str) -> None:
    assert policy.newest([tag], DEFAULT) is None
    # Even when it would sort above a real release, it is never chosen.
    assert policy.newest([tag, "0.0.1"], DEFAULT) == "0.0.1"


@pytest.mark.parametrize(
    "tags",
    [
        pytest.param([], id="no-tags"),
        pytest.param(["latest", "stable", "edge", "main"], id="only-named-tags"),
        pytest.param(["1.0", "2.6.6.1", "v1.1.0", "2022.11.2-rc.1"], id="only-near-misses"),
    ],
)
def test_no_release_gives_none(tags: list[str]) -> None:
    assert policy.newest(tags, DEFAULT) is None


def test_input_order_does_not_matter() -> None:
    # Docker Hub lists tags unsorted; every order must give the same answer.
    tags = ["1.0.10", "latest", "1.0.9", "1.0.2", "2.6.6.1", "0.9.99"]
    answers = {policy.newest(order, DEFAULT) for order in itertools.permutations(tags)}
    assert answers == {"1.0.10"}


def test_accepts_any_iterable_once() -> None:
    assert policy.newest(iter(["1.0.0", "1.0.1"]), DEFAULT) == "1.0.1"


def test_releases_are_listed_oldest_first() -> None:
    found = policy.releases(["1.0.10", "latest", "1.0.9", "0.1.0"], DEFAULT)
    assert [tag for _, tag in found] == ["0.1.0", "1.0.9", "1.0.10"]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        pytest.param(["v1.1.0", "1.0.9"], "v1.1.0", id="v-prefix-admitted"),
        pytest.param(["v1.0.10", "1.0.9"], "v1.0.10", id="mixed-prefix-compared-as-versions"),
        pytest.param(["v1.1.0", "v1.1.0-rc.1", "v1.2"], "v1.1.0", id="still-three-components"),
        pytest.param(["latest"], None, id="nothing-admitted"),
    ],
)
def test_custom_pattern(tags: list[str], expected: str | None) -> None:
    selector = model.ReleaseSelector(pattern=r"^v?\d+\.\d+\.\d+$")
    assert policy.newest(tags, selector) == expected


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        pytest.param(["2025.12.1", "2026.3.0", "2027.1.0"], "2026.3.0", id="newest-inside-range"),
        pytest.param(["2026.1.0"], "2026.1.0", id="lower-bound-inclusive"),
        pytest.param(["2027.1.0", "2025.12.1"], None, id="above-and-below-excluded"),
        pytest.param(["2027.0.0"], None, id="upper-bound-exclusive"),
        pytest.param(["2026.12.31", "2027.1.0", "2028.1.0"], "2026.12.31", id="newer-outside-range-ignored"),
    ],
)
def test_range(tags: list[str], expected: str | None) -> None:
    selector = model.ReleaseSelector(range=">=2026.1.0,<2027")
    assert policy.newest(tags, selector) == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"pattern": "("}, "not a usable regular expression", id="unbalanced-paren"),
        pytest.param({"pattern": "[0-9"}, "not a usable regular expression", id="unterminated-set"),
        pytest.param({"pattern": "*1"}, "not a usable regular expression", id="nothing-to-repeat"),
        pytest.param({"range": "2026"}, "not a version range", id="no-operator"),
        pytest.param({"range": ">=2026.1.0;<2027"}, "not a version range", id="wrong-separator"),
        pytest.param({"range": "newest"}, "not a version range", id="word"),
    ],
)
def test_invalid_rule_is_refused_at_construction(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(errors.ConfigError, match=match):
        model.ReleaseSelector(**kwargs)


@pytest.mark.parametrize(
    ("selector", "tags", "expected"),
    [
        # `$` also matches just before a trailing newline, so search/match would admit "9.9.9\n".
        pytest.param(DEFAULT, ["9.9.9\n", "1.0.0"], "1.0.0", id="default-trailing-newline"),
        pytest.param(
            model.ReleaseSelector(pattern=r"^v?\d+\.\d+\.\d+$"), ["v9.9.9\n", "v1.0.0"], "v1.0.0", id="custom-newline"
        ),
        pytest.param(model.ReleaseSelector(pattern=r"\d+\.\d+\.\d+"), ["v9.9.9", "1.0.0"], "1.0.0", id="unanchored"),
        pytest.param(
            model.ReleaseSelector(pattern=r"\d+\.\d+\.\d+"), ["9.9.9-rc1", "1.0.0"], "1.0.0", id="prefix-only"
        ),
        pytest.param(
            model.ReleaseSelector(pattern=r"1\.\d+\.\d+|2\.0\.0"), ["2.0.0", "1.5.0"], "2.0.0", id="alternation"
        ),
    ],
)
def test_the_pattern_must_match_the_whole_tag(selector: model.ReleaseSelector, tags: list[str], expected: str) -> None:
    assert policy.newest(tags, selector) == expected
