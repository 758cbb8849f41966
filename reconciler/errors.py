"""The one exception tree of reconciler.

Every message a user sees says what failed, where (watch, URL, key path) and what to do.
Third-party errors are mapped once, at the boundary that calls them, with ``raise … from exc``.

    ReconcilerError
    ├── ConfigError(ValueError)        bad configuration or usage: exit 2
    ├── RegistryError                  a watch could not be checked: exit 3
    │   ├── RegistryAuthError          401/403 from the registry or its token server
    │   ├── RegistryRateLimited        429 after the retries ran out
    │   └── TagNotFound(LookupError)   no such tag, or no tag matches the watch's rule
    ├── ActuatorError                  an action could not be carried out: the watch stays drifted, retried
    │   ├── ActuatorUnavailable        nothing reached the system (refused, DNS, TLS, a 500 rolled back): an outage,
    │   │                              backed off without using up an attempt
    │   ├── ActionRefused              refused in a way a retry cannot change (an OnDelete StatefulSet): held until
    │   │                              the watch's action changes or `reconciler retry`
    │   ├── AwxError                   AWX refused or failed (401, 403, 404, 400 …)
    │   │   └── AwxUnavailable(ActuatorUnavailable)
    │   ├── GitHubError                GitHub refused or failed (401, 403 naming actions:write, 404 …)
    │   │   ├── GitHubRefused(ActionRefused)  422: an unknown input, no workflow_dispatch, an unknown ref
    │   │   └── GitHubUnavailable(ActuatorUnavailable)  5xx, a rate limit or unreachable: nothing was dispatched
    │   ├── KubeError                  Kubernetes refused or failed (403 naming the verb, 404, 422, a stalled roll-out)
    │   │   ├── KubeConflict           409: the object changed under us; the patch is tried again
    │   │   └── KubeUnavailable(ActuatorUnavailable)  5xx, 429 or unreachable: asked again, never a failed roll-out
    │   └── LaunchOutcomeUnknown       the launch may or may not have happened (timeout, a gateway's 502/503/504)
    ├── NotifyError                    a notification was not delivered (it stays in its outbox, retried)
    ├── NotWaiting                     approve/reject of a digest that does not wait for approval: exit 1
    ├── StoreError                     the database refused or is unreachable
    ├── LockHeld                       another instance holds the lease: exit 4
    │   └── LeaseLost                  this instance lost the lease while acting, and stopped
    └── Stopped                        the daemon is shutting down: open actions are left to be resumed
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error reconciler raises on purpose."""


class ConfigError(ReconcilerError, ValueError):
    """The configuration or the command line is wrong; the message names the key path."""


class RegistryError(ReconcilerError):
    """A registry could not answer what a watch points at."""


class RegistryAuthError(RegistryError):
    """The registry or its token server refused our credentials."""


class RegistryRateLimited(RegistryError):
    """The registry kept answering 429 after the retries ran out."""


class TagNotFound(RegistryError, LookupError):
    """The tag does not exist, or no tag matches the watch's rule."""


class ActuatorError(ReconcilerError):
    """An action could not be carried out; its message says what AWX or Kubernetes answered."""


class ActuatorUnavailable(ActuatorError):
    """Nothing reached the system that carries out the action (connection refused, DNS, TLS, a 500 that AWX rolled
    back): an outage, not a failed deployment, so it backs off without using up one of `max_attempts`."""


class ActionRefused(ActuatorError):
    """The system refused the action in a way a retry cannot change until a person changes something: not retried
    for that image until the watch's action changes or `reconciler retry` is run."""


class AwxError(ActuatorError):
    """AWX refused the request (401, 403, 404, 400 …) or answered what cannot be read."""


class AwxUnavailable(AwxError, ActuatorUnavailable):
    """AWX could not be reached, or answered 500 with its own error body (it rolls the request back)."""


class GitHubError(ActuatorError):
    """GitHub refused the request (401, 403, 404) or answered what cannot be read; the message names the repository
    or the permission it needs."""


class GitHubRefused(GitHubError, ActionRefused):
    """422: the workflow cannot be dispatched as configured (an input it does not declare, no workflow_dispatch
    trigger, a ref it does not know): not retried for that image until the watch's action changes."""


class GitHubUnavailable(GitHubError, ActuatorUnavailable):
    """GitHub could not be reached, failed (5xx) or rate-limited the request: nothing was dispatched. `retry_after`
    is how long GitHub asked to wait, when it said."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class KubeError(ActuatorError):
    """The Kubernetes API refused or failed; the message names the verb, resource and namespace."""


class KubeConflict(KubeError):
    """409 Conflict: the object changed while we patched it."""


class KubeUnavailable(KubeError, ActuatorUnavailable):
    """The API server failed (5xx), throttled (429) or could not be reached; worth asking again."""


class LaunchOutcomeUnknown(ActuatorError):
    """The launch request was sent but its outcome is unknown: look for its effect before launching again.

    `answered` is True when the server did answer (a 5xx): whatever it did is visible at once. Otherwise (a
    timeout, a dropped connection) it may still act later, so the action must stay open a while.
    """

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


class NotifyError(ReconcilerError):
    """A notification target did not take a notification; the message names the target, never its URL."""


class NotWaiting(ReconcilerError):
    """`approve`/`reject` named a digest that waits for no approval (superseded, decided, unknown): nothing changed."""


class StoreError(ReconcilerError):
    """The database could not be read or written."""


class LockHeld(ReconcilerError):
    """Another instance holds the lease, so this one must not act."""


class LeaseLost(LockHeld):
    """This instance's lease expired and another took it: stop acting, leave open actions to be resumed."""


class Stopped(ReconcilerError):
    """The process was asked to stop (SIGTERM): stop acting and leave open actions to be resumed."""
