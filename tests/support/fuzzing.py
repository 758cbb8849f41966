"""Shared settings and input strategies of the property-based fuzz tests (`tests/test_fuzz_*.py`).

Each boundary's test runs `examples(n)` generated inputs: a small, fixed number in the suite (so it stays fast
and repeatable: derandomized), many more when `bench/fuzz.py` sets RECONCILER_FUZZ_EXAMPLES for a deeper search
(then random, so that each run searches anew). The contract every fuzz test checks: only our own errors come
out, as one line, and nothing is left half-written.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

DEEP = int(os.environ.get("RECONCILER_FUZZ_EXAMPLES", "0"))


def examples(in_suite: int) -> settings:
    """Hypothesis settings: `in_suite` derandomized examples, or RECONCILER_FUZZ_EXAMPLES random ones."""
    return settings(
        max_examples=DEEP or in_suite,
        derandomize=not DEEP,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "Traceback" not in message


# --- inputs from outside ---------------------------------------------------------------------------------------

texts = st.text(max_size=40)
weird_text = st.one_of(
    texts,
    st.sampled_from(["", " ", "\x00", "²", "٣", "é", "http://[", "😀", "\n", "a" * 300]),
)
huge_numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([10**330, -(10**330), 2**63, 2**64, 4294967296]),
    st.floats(allow_nan=True, allow_infinity=True),
)
json_scalars = st.one_of(st.none(), st.booleans(), huge_numbers, weird_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)


def nested(depth: int, *, opener: str = "[") -> str:
    """JSON nested `depth` deep: legal, but deeper than a recursive parser survives."""
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return '{"a":' * depth + "1" + "}" * depth
    return opener * depth + closer * depth


def body(value: Any) -> bytes:
    try:
        return json.dumps(value).encode()
    except (ValueError, OverflowError):
        return repr(value).encode()


broken_bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [b"", b"null", b"[]", b'{"id": ', b"\xff\xfe", nested(3000).encode(), nested(3000, opener="{").encode()]
    ),
    json_values.map(body),
)
