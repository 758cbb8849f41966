"""The Kubernetes manifests under deploy/kubernetes/: valid objects, least privilege, a hardened daemon.

Every YAML document (but kustomization.yaml, which is not a Kubernetes object and is checked on its own) is
validated offline, in strict mode (unknown fields rejected), against the real Kubernetes JSON schemas shipped by
`kubernetes-validate`. The RBAC objects are then checked for the exact verbs reconciler needs (its client calls',
without `watch`), for the absence of wildcards and cluster-wide grants, and for RoleBindings that point at objects
that exist. The Deployment is checked for its probes, its locked-down security context and its references to the
Secret, the ConfigMap and the ServiceAccount; the ConfigMap's config.toml is loaded by reconciler's own loader.
Broken manifests must be rejected by the same validation, so the test can fail.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from reconciler import config

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33"  # shipped by kubernetes-validate >= 1.33 (one schema set per minor version)
NAMESPACE = "staging-stack"
SERVICE_ACCOUNT = "reconciler"
RBAC_GROUP = "rbac.authorization.k8s.io"
BASE_FILE = "rbac.yaml"
ON_DELETE_FILE = "rbac-on-delete.yaml"
DEPLOYMENT_FILE = "deployment.yaml"
CONFIGMAP_FILE = "configmap.yaml"
SERVICE_FILE = "service.yaml"
KUSTOMIZATION_FILE = "kustomization.yaml"  # not a Kubernetes object: checked apart from the schema loop
APP = "reconciler"  # the name of the Deployment, its Secret, ConfigMap and Service
UID = 10001  # the Dockerfile's USER
CONFIG_PATH = "/etc/reconciler/config.toml"
PORT = 8080

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
        if path.relative_to(MANIFESTS).as_posix() == KUSTOMIZATION_FILE:
            continue
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
    assert {BASE_FILE, ON_DELETE_FILE, DEPLOYMENT_FILE, CONFIGMAP_FILE, SERVICE_FILE} <= files
    assert (MANIFESTS / KUSTOMIZATION_FILE).is_file()
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
    allowed = {"ServiceAccount", "Role", "RoleBinding", "Deployment", "ConfigMap", "Service"}
    assert kinds <= allowed, f"unexpected kinds: {sorted(kinds)}"
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


# --- kustomization.yaml ------------------------------------------------------------------------------------------


def _kustomization() -> Doc:
    doc = yaml.safe_load((MANIFESTS / KUSTOMIZATION_FILE).read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_the_kustomization_lists_existing_files_in_the_namespace() -> None:
    kust = _kustomization()
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kust["kind"] == "Kustomization"
    assert set(kust) <= {"apiVersion", "kind", "namespace", "resources", "images", "labels", "commonLabels"}
    assert kust["namespace"] == NAMESPACE
    resources = kust["resources"]
    assert len(resources) == len(set(resources)), "a resource listed twice"
    for resource in resources:
        assert (MANIFESTS / resource).is_file(), f"{KUSTOMIZATION_FILE}: {resource} does not exist"
    # every manifest is applied by `kubectl apply -k`, except the optional pod-delete grant
    assert set(resources) == {name for name, _ in DOCUMENTS} - {ON_DELETE_FILE}
    assert ON_DELETE_FILE not in resources


def test_the_kustomization_image_is_the_deployments() -> None:
    images = {entry["name"]: entry for entry in _kustomization().get("images", [])}
    container = _container()
    name, _, tag = container["image"].rpartition(":")
    assert set(images) == {name}
    assert images[name].get("newTag", tag) == tag


# --- the Deployment ----------------------------------------------------------------------------------------------


def _one(kind: str, file: str) -> Doc:
    matches = [doc for f, doc in _of_kind(kind) if f == file and doc["metadata"]["name"] == APP]
    assert len(matches) == 1, f"expected one {kind} {APP!r} in {file}, found {len(matches)}"
    return matches[0]


def _deployment() -> Doc:
    return _one("Deployment", DEPLOYMENT_FILE)


def _pod_spec() -> Doc:
    spec: Doc = _deployment()["spec"]["template"]["spec"]
    return spec


def _container() -> Doc:
    containers = _pod_spec()["containers"]
    assert [c["name"] for c in containers] == [APP]
    assert "initContainers" not in _pod_spec()
    container: Doc = containers[0]
    return container


def _env(container: Doc) -> dict[str, Doc]:
    entries = container["env"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"an environment variable set twice: {names}"
    return {entry["name"]: entry for entry in entries}


def _project_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    version: str = data["project"]["version"]
    return version


def test_the_deployment_runs_one_daemon_at_a_time() -> None:
    deployment = _deployment()
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # never an old and a new pod acting side by side
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"] == {"matchLabels": labels}
    pod = _pod_spec()
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert pod.get("automountServiceAccountToken", True) is True  # the in-cluster config reads the token
    assert pod.get("terminationGracePeriodSeconds", 30) > 10  # reconciler needs up to 10 s after SIGTERM
    # Service `reconciler` would otherwise inject RECONCILER_SERVICE_HOST, RECONCILER_PORT=tcp://… into the pod,
    # in the namespace of reconciler's own RECONCILER_* settings
    assert pod["enableServiceLinks"] is False
    container = _container()
    assert container["args"] == ["--log-format", "json", "run"]
    assert "command" not in container  # the image's ENTRYPOINT ["reconciler"]
    assert container["image"] == f"xchem/reconciler:{_project_version()}"  # the documented placeholder
    assert container["ports"] == [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]


def test_the_service_account_is_the_one_rbac_yaml_binds() -> None:
    accounts = {(f, doc["metadata"]["name"]) for f, doc in _of_kind("ServiceAccount")}
    assert (BASE_FILE, _pod_spec()["serviceAccountName"]) in accounts


def test_the_probes_hit_healthz_and_readyz_on_the_container_port() -> None:
    container = _container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == PORT, probe
        assert get.get("scheme", "HTTP") == "HTTP", probe


def test_the_container_is_locked_down() -> None:
    pod_context = _pod_spec()["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert pod_context["runAsUser"] == UID
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    context = _container()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == UID
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in context or context["privileged"] is False
    pod = _pod_spec()
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(field, False), field


def test_the_resources_are_small_and_bounded() -> None:
    resources = _container()["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert resources["limits"]["memory"] == "256Mi"


def test_the_secrets_come_from_the_secret_reconciler() -> None:
    env = _env(_container())
    required = {"RECONCILER_DATABASE_URL", "AWX_TOKEN", "RECONCILER_API_TOKEN", "RECONCILER_WEBHOOK_SECRET"}
    optional = {"GITHUB_TOKEN", "DOCKERHUB_USERNAME", "DOCKERHUB_TOKEN"}
    refs = {name: entry["valueFrom"]["secretKeyRef"] for name, entry in env.items() if "valueFrom" in entry}
    assert set(refs) == required | optional
    for name, ref in refs.items():
        assert ref["name"] == APP, name
        assert re.fullmatch(r"[a-z][a-z0-9-]*", ref["key"]), f"{name}: key {ref['key']!r}"
        assert ref.get("optional", False) is (name in optional), name
    assert len({ref["key"] for ref in refs.values()}) == len(refs), "two variables read the same key"
    # no literal secret anywhere: every other variable is plain configuration
    assert {name for name, entry in env.items() if "value" in entry} == {"RECONCILER_CONFIG"}
    assert env["RECONCILER_CONFIG"]["value"] == CONFIG_PATH
    assert "envFrom" not in _container()
    assert not [doc for _, doc in DOCUMENTS if doc["kind"] == "Secret"], "a Secret in git"


def test_the_readme_creates_every_secret_key_the_deployment_reads() -> None:
    readme = (MANIFESTS / "README.md").read_text(encoding="utf-8")
    assert f"kubectl create secret generic {APP}" in readme
    for entry in _env(_container()).values():
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert f"--from-literal={ref['key']}=" in readme, f"README.md does not create the key {ref['key']!r}"


def test_the_config_map_is_mounted_where_reconciler_config_points() -> None:
    container = _container()
    volumes = {volume["name"]: volume for volume in _pod_spec()["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    directory, _, file = CONFIG_PATH.rpartition("/")
    mount = mounts[directory]
    assert mount.get("readOnly") is True
    source = volumes[mount["name"]]["configMap"]
    assert source["name"] == APP
    assert [item["path"] for item in source.get("items", [{"path": file}])] == [file]
    assert file in _config_map()["data"]
    # the one writable place, since the root filesystem is read-only
    tmp = mounts["/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    assert not tmp.get("readOnly", False)


# --- the ConfigMap -----------------------------------------------------------------------------------------------


def _config_map() -> Doc:
    return _one("ConfigMap", CONFIGMAP_FILE)


def test_the_config_map_holds_toml_that_listens_on_every_interface() -> None:
    data = tomllib.loads(_config_map()["data"]["config.toml"])
    assert data["server"]["listen"] == f"0.0.0.0:{PORT}"
    assert "database" not in data["reconciler"], "the database URL is a secret: it comes from the environment"


def test_the_config_map_loads_with_reconcilers_loader(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(_config_map()["data"]["config.toml"], encoding="utf-8")
    settings = config.load(path, env={"AWX_TOKEN": "x"})
    assert settings.server.listen == f"0.0.0.0:{PORT}"
    # nothing in the file: $RECONCILER_DATABASE_URL decides (else the default, beside the mounted file)
    assert settings.database == f"sqlite:///{tmp_path / 'reconciler.db'}"
    url = "postgresql+psycopg://reconciler:pw@postgres:5432/reconciler"
    assert config.load(path, env={"AWX_TOKEN": "x", "RECONCILER_DATABASE_URL": url}).database == url
    # the Fragalysis watches, exactly as the repository's config.toml has them
    fragalysis = config.load(ROOT / "config.toml", env={"AWX_TOKEN": "x"})
    assert settings.watches == fragalysis.watches
    assert settings.awx == fragalysis.awx


def test_the_config_map_is_the_compose_configuration() -> None:
    """One container configuration, kept in two places; they must not drift apart."""
    compose = ROOT / "deploy" / "compose" / "config.toml"
    assert tomllib.loads(_config_map()["data"]["config.toml"]) == tomllib.loads(compose.read_text(encoding="utf-8"))


# --- the Service -------------------------------------------------------------------------------------------------


def test_the_service_reaches_the_daemons_port() -> None:
    service = _one("Service", SERVICE_FILE)
    spec = service["spec"]
    assert spec.get("type", "ClusterIP") == "ClusterIP"
    labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= labels.items()
    ports = {port["name"]: port["containerPort"] for port in _container()["ports"]}
    [port] = spec["ports"]
    assert port["port"] == PORT
    assert ports.get(port["targetPort"], port["targetPort"]) == PORT


# --- a broken Deployment is rejected -----------------------------------------------------------------------------


def _broken_deployment_probe_typo(deployment: Doc) -> None:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessprobe"] = container.pop("livenessProbe")


def _broken_deployment_security_context_typo(deployment: Doc) -> None:
    context = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")


def _broken_deployment_port_as_string(deployment: Doc) -> None:
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"


def _broken_deployment_secret_ref_typo(deployment: Doc) -> None:
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = next(entry for entry in env if "valueFrom" in entry)["valueFrom"]
    ref["secretRef"] = ref.pop("secretKeyRef")


@pytest.mark.parametrize(
    "breakage",
    [
        _broken_deployment_probe_typo,
        _broken_deployment_security_context_typo,
        _broken_deployment_port_as_string,
        _broken_deployment_secret_ref_typo,
    ],
    ids=["probe-typo", "security-context-typo", "port-as-string", "secret-ref-typo"],
)
def test_a_broken_deployment_is_rejected(breakage: Callable[[Doc], None]) -> None:
    deployment = copy.deepcopy(_deployment())
    _validate(deployment)
    breakage(deployment)
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
