"""The two database URLs most configurations use, read without SQLAlchemy (whose import alone costs a reading
command more than its answer): `sqlite:///PATH` and `postgresql+psycopg://…`. Any other spelling (options after
`?`, escapes, another driver) is not "plain": `parse` says None, and SQLAlchemy reads it, as it reads every URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_URL = re.compile(r"(?P<backend>[a-z0-9]+)(?:\+(?P<driver>[a-z0-9_]+))?://(?P<rest>[^\s]*)\Z")
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")
# user[:password]@host[:port]/database, each spelled as libpq and SQLAlchemy read it alike: no escapes (`%`), no
# options (`?`), hosts by name, IPv4 or [IPv6]. libpq reads a bad escape differently, and echoes the URL in its error.
_PLAIN_POSTGRESQL = re.compile(
    r"(?:[A-Za-z0-9._~-]+(?::[A-Za-z0-9._~!$&'()*+,;=-]*)?@)?"
    r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:/[A-Za-z0-9._-]*)?"
)


@dataclass(frozen=True, slots=True)
class PlainURL:
    backend: str  # "sqlite" or "postgresql"
    path: str | None = None  # SQLite: the file (None: in memory)
    conninfo: str = ""  # PostgreSQL: the same URL as libpq reads it (a postgresql:// URI)


def hidden(url: str) -> str:
    """The URL with its password (if any, or a `password=` option) shown as ***, as SQLAlchemy shows it."""
    return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1***@", url))


def parse(url: str) -> PlainURL | None:
    found = _URL.match(url)
    if found is None:
        return None
    backend, driver, rest = found["backend"], found["driver"], found["rest"]
    if backend == "sqlite" and driver in (None, "pysqlite"):
        if any(c in rest for c in "?%~") or (rest and not rest.startswith("/")):
            return None  # options, escapes, a home directory or a host: SQLAlchemy's to read
        path = rest[1:]
        return PlainURL("sqlite", path=None if path in ("", ":memory:") else path)
    if backend == "postgresql" and driver == "psycopg" and _PLAIN_POSTGRESQL.fullmatch(rest):
        return PlainURL("postgresql", conninfo=f"postgresql://{rest}")
    return None
