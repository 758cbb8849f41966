"""What carrying out an action needs from the rest: an `Actuator` per kind of side effect (implemented in
`reconciler.actuators`), the actions `Outbox` (implemented in `reconciler.store.outbox`), and how a long wait
reports its progress. Protocols only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set
from datetime import datetime
from typing import Any, Protocol

from reconciler import model

Progress = Callable[[str, str, datetime], None]  # (what is waited for, its state, since when), at every poll


class Actuator(Protocol):
    """One kind of side effect (an AWX job template, a StatefulSet roll-out)."""

    def request(self, spec: Any, target: model.Target) -> dict[str, Any]: ...

    def mark(self, spec: Any, request: Mapping[str, Any], marker: str) -> dict[str, Any]: ...

    def launch(self, spec: Any, request: Mapping[str, Any], *, keep_alive: Callable[[], None]) -> model.Launch: ...

    def find(
        self, spec: Any, record: model.ActionRecord, *, exclude: Set[str] = frozenset()
    ) -> model.Launch | None: ...

    def wait(
        self, spec: Any, record: model.ActionRecord, *, keep_alive: Callable[[], None], progress: Progress
    ) -> model.Finish | model.Unfinished: ...


Tell = Callable[[model.ActionRecord], Sequence[model.Notice]]  # the notices an action's new status gives rise to


class Outbox(Protocol):
    def open_actions(self) -> list[model.ActionRecord]: ...

    def refs(self) -> set[str]: ...

    def plan(
        self,
        *,
        target: model.Target,
        kind: model.ActionKind,
        attempt: int,
        request: Callable[[int], Mapping[str, Any]],
        now: datetime,
        fingerprint: str | None = None,
        outages: int = 0,
        needs_approval: bool = False,
        approval: model.ActionRecord | None = None,
        tell: Tell | None = None,
    ) -> model.ActionRecord | None: ...

    def release(self, action_id: int, now: datetime) -> model.ActionRecord | None: ...

    def launched(
        self, action_id: int, launch: model.Launch, now: datetime, *, tell: Tell | None = None
    ) -> model.ActionRecord: ...

    def note(self, action_id: int, detail: str) -> model.ActionRecord: ...

    def superseded(self, action_id: int, detail: str, now: datetime) -> model.ActionRecord: ...

    def withdrawn(self, action_id: int, detail: str, now: datetime) -> model.ActionRecord | None: ...

    def failed(
        self,
        action_id: int,
        detail: str,
        now: datetime,
        *,
        retry_at: datetime | None,
        failure: model.Failure = ...,
        tell: Tell | None = None,
    ) -> model.ActionRecord: ...

    def succeeded(
        self, action: model.ActionRecord, detail: str, now: datetime, *, tell: Tell | None = None
    ) -> model.ActionRecord: ...
