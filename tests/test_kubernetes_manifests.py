"""The Kubernetes manifests under deploy/kubernetes/: valid objects and least privilege.

Every YAML document is validated offline, in strict mode (unknown fields rejected), against the real Kubernetes
JSON schemas shipped by `kubernetes-validate`. The RBAC objects are then checked for the exact verbs reconciler
needs (protocols.md §3.5, without `watch`), for the absence of wildcards and cluster-wide grants, and for
RoleBindings that point at objects that exist. Broken manifests must be rejected by the same validation, so the
test can fail.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33"  # shipped by kubernetes-validate >= 1.33 (one schema set per minor version)
NAMESPACE = "staging-stack"
SERVICE_ACCOUNT = "reconciler"
RBAC_GROUP = "rbac.authorization.k8s.io"
BASE_FILE = "rbac.yaml"
ON_DELETE_FILE = "rbac-on-delete.yaml"

# (apiGroup, resource) -> verbs: exactly these, nothing more, nothing less.
BASE_RULES: dict[tuple[str, str], frozenset[str]] = {
    ("apps", "statefulsets"): frozenset({"get", "list", "patch"}),
    ("", "pods"): frozenset({"get", "list"}),
    ("coordination.k8s.io", "leases"): frozenset({"get", "create", "update"}),
}
ON_DELETE_RULES: dict[tuple[str, str], frozenset[str]] = {
    ("", "pods"): frozenset({"delete"}),
}

Doc = dict[str, Any]


def _documents() -> list[tuple[str, Doc]]:
    """(file name relative to deploy/kubernetes, object) for every non-empty YAML document there."""
    found: list[tuple[str, Doc]] = []
    for path in sorted([*MANIFESTS.rglob("*.yaml"), *MANIFESTS.rglob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{path}: a YAML document that is not a mapping"
            found.append((path.relative_to(MANIFESTS).as_posix(), doc))
    return found


DOCUMENTS = _documents()


def _id(entry: tuple[str, Doc]) -> str:
    name, doc = entry
    return f"{name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _validate(doc: Doc) -> str:
    """Validate one object against the Kubernetes schemas in strict mode; return the schema version used.

    Raises `kubernetes_validate.ValidationError` for an invalid object and `SchemaNotFoundError` for an unknown
    kind or apiVersion (both make a test fail: nothing is skipped).
    """
    version: str = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    return version


def _of_kind(kind: str) -> list[tuple[str, Doc]]:
    return [(name, doc) for name, doc in DOCUMENTS if doc["kind"] == kind]


def _rules(role: Doc) -> dict[tuple[str, str], frozenset[str]]:
    """A Role's rules as (apiGroup, resource) -> verbs; a pair granted twice is refused (hard to review)."""
    table: dict[tuple[str, str], frozenset[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {sorted(rule)}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) not in table, f"{group}/{resource} granted twice"
                table[(group, resource)] = frozenset(rule["verbs"])
    return table


def _strings(value: Any) -> Iterator[str]:
    """Every string in a nested structure, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _role(file: str, name: str) -> Doc:
    matches = [doc for f, doc in _of_kind("Role") if f == file and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one Role {name!r} in {file}, found {len(matches)}"
    return matches[0]


# --- schema validation -------------------------------------------------------------------------------------------


def test_the_manifests_exist() -> None:
    files = {name for name, _ in DOCUMENTS}
    assert {BASE_FILE, ON_DELETE_FILE} <= files
    assert (MANIFESTS / "README.md").is_file()


@pytest.mark.parametrize("entry", DOCUMENTS, ids=[_id(e) for e in DOCUMENTS])
def test_every_document_is_a_valid_kubernetes_object(entry: tuple[str, Doc]) -> None:
    _, doc = entry
    assert _validate(doc) == KUBERNETES_VERSION  # validated against the pinned schemas, not an older fallback
    assert doc["metadata"]["namespace"] == NAMESPACE  # every object here is namespaced, all in the example namespace


def test_objects_are_unique() -> None:
    keys = [(doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"]) for _, doc in DOCUMENTS]
    assert len(keys) == len(set(keys)), f"duplicate objects: {keys}"


# --- least privilege ---------------------------------------------------------------------------------------------


def test_the_base_role_grants_exactly_what_a_rollout_needs() -> None:
    assert _rules(_role(BASE_FILE, "reconciler")) == BASE_RULES


def test_pod_delete_is_only_in_the_optional_role() -> None:
    assert _rules(_role(ON_DELETE_FILE, "reconciler-delete-pods")) == ON_DELETE_RULES
    roles = _of_kind("Role")
    assert {(f, doc["metadata"]["name"]) for f, doc in roles} == {
        (BASE_FILE, "reconciler"),
        (ON_DELETE_FILE, "reconciler-delete-pods"),
    }
    deleting = [
        (f, doc["metadata"]["name"])
        for f, doc in roles
        if any({"delete", "deletecollection"} & verbs for verbs in _rules(doc).values())
    ]
    assert deleting == [(ON_DELETE_FILE, "reconciler-delete-pods")]


def test_no_wildcards_and_nothing_cluster_wide() -> None:
    kinds = {doc["kind"] for _, doc in DOCUMENTS}
    assert kinds <= {"ServiceAccount", "Role", "RoleBinding"}, f"unexpected kinds: {sorted(kinds)}"
    for name, doc in DOCUMENTS:
        assert "*" not in "".join(_strings(doc)), f"{_id((name, doc))}: a wildcard"
    for _, role in _of_kind("Role"):
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_every_verb_is_explained_by_a_comment() -> None:
    """Each verb sits on its own line of a block list, with a comment that says why it is there."""
    for name in (BASE_FILE, ON_DELETE_FILE):
        granted = {
            verb for f, role in _of_kind("Role") if f == name for verbs in _rules(role).values() for verb in verbs
        }
        lines = (MANIFESTS / name).read_text(encoding="utf-8").splitlines()
        explained: set[str] = set()
        for line in lines:
            code, _, comment = line.partition("#")
            item = code.strip().removeprefix("- ").strip()
            if code.strip().startswith("- ") and item in granted:
                assert comment.strip(), f"{name}: verb {item!r} without a reason"
                explained.add(item)
        assert explained == granted, f"{name}: verbs not on a commented line of their own: {granted - explained}"


def test_every_role_binding_binds_an_existing_role_to_the_service_account() -> None:
    accounts = {(doc["metadata"]["namespace"], doc["metadata"]["name"]) for _, doc in _of_kind("ServiceAccount")}
    assert accounts == {(NAMESPACE, SERVICE_ACCOUNT)}
    roles = {(doc["metadata"]["namespace"], doc["metadata"]["name"]) for _, doc in _of_kind("Role")}
    bindings = _of_kind("RoleBinding")
    bound: set[tuple[str, str]] = set()
    for _, binding in bindings:
        namespace = binding["metadata"]["namespace"]
        ref = binding["roleRef"]
        assert ref["apiGroup"] == RBAC_GROUP
        assert ref["kind"] == "Role", "a RoleBinding to a ClusterRole would grant more than this file shows"
        assert (namespace, ref["name"]) in roles, f"RoleBinding {binding['metadata']['name']} -> missing Role"
        bound.add((namespace, ref["name"]))
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]
    assert bound == roles, f"Roles bound by no RoleBinding: {sorted(roles - bound)}"
    # the optional Role is bound only by the optional file, so applying rbac.yaml alone never grants delete
    base_refs = {doc["roleRef"]["name"] for f, doc in bindings if f == BASE_FILE}
    assert base_refs == {"reconciler"}


# --- the validation can fail -------------------------------------------------------------------------------------


def _broken_role_unknown_field(role: Doc) -> None:
    role["rules"][0]["verb"] = role["rules"][0].pop("verbs")  # a typo: `verb`


def _broken_role_verbs_string(role: Doc) -> None:
    role["rules"][0]["verbs"] = "get"


def _broken_role_top_level_field(role: Doc) -> None:
    role["spec"] = {"rules": role.pop("rules")}  # Roles have no spec


def _broken_role_metadata_field(role: Doc) -> None:
    role["metadata"]["namepsace"] = role["metadata"].pop("namespace")


@pytest.mark.parametrize(
    "breakage",
    [_broken_role_unknown_field, _broken_role_verbs_string, _broken_role_top_level_field, _broken_role_metadata_field],
    ids=["rule-unknown-field", "verbs-as-string", "top-level-unknown-field", "metadata-unknown-field"],
)
def test_a_broken_role_is_rejected(breakage: Callable[[Doc], None]) -> None:
    role = copy.deepcopy(_role(BASE_FILE, "reconciler"))
    _validate(role)  # the intact copy passes
    breakage(role)
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(role)


def test_a_role_binding_without_a_role_name_is_rejected() -> None:
    binding = copy.deepcopy(next(doc for f, doc in _of_kind("RoleBinding") if f == BASE_FILE))
    del binding["roleRef"]["name"]
    with pytest.raises(kubernetes_validate.ValidationError, match="name"):
        _validate(binding)


def test_strict_mode_is_what_rejects_unknown_fields() -> None:
    """The lax schemas accept the typo that strict mode catches: the tests above depend on strict=True."""
    role = copy.deepcopy(_role(BASE_FILE, "reconciler"))
    role["rules"][0]["verbz"] = ["delete"]
    kubernetes_validate.validate(role, KUBERNETES_VERSION, strict=False)
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(role)


def test_an_unknown_kind_or_api_version_is_an_error_not_a_skip() -> None:
    role = copy.deepcopy(_role(BASE_FILE, "reconciler"))
    role["apiVersion"] = "rbac.authorization.k8s.io/v1alpha0"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        _validate(role)
