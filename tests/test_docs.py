"""The user documentation stands on its own and agrees with the code.

- Every relative Markdown link, and every backticked path that names a file of the repository, in README.md,
  docs/*.md, deploy/**/README.md and bench/README.md (and every such path in the comments of the configuration
  files) resolves to a file or directory inside the repository. Anchors (`#…`) and http(s) links are not followed.
- No file of the repository cites a document that is not in it (the team's specification, architecture and
  protocol notes) or a path outside it.
- docs/configuration.md names, in backticks, every key the configuration loader accepts: the arguments of every
  `.expect(…)` call in reconciler/config/, read with `ast` and, where they are not plain strings, evaluated in
  their module (`*watches.SCHEDULE_KEYS`, a generator of `<secret>_env`/`_file` names).
- The README's first bash block installs and runs the daemon, with no secret to fill in; its test command is the
  one `.ci/run` runs.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
DOCS = ROOT / "docs"
CONFIG_PACKAGE = ROOT / "reconciler" / "config"
CONFIG_FILES = (ROOT / "config.toml", ROOT / "deploy" / "compose" / "config.toml")
RUN_COMMAND = "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/reconciler run"
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
# What must not be cited: documents that live outside the repository, and paths that lead out of it.
OUTSIDE = ("SPEC.md", "ARCHITECTURE.md", "protocols.md", "TESTING.md", "style-anchors", "../shared", "/work/")
# The extensions of the repository's own files that a bare name in backticks (`rbac.yaml`) is taken to refer to.
FILE_EXTENSIONS = (".md", ".py", ".toml", ".yaml", ".yml", ".ini", ".cfg", ".sh", ".mako", ".txt")
_FENCE = re.compile(r"^ *```[^\n]*\n.*?^ *```[ \t]*$", re.MULTILINE | re.DOTALL)
_BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_PATH_CHARS = re.compile(r"[A-Za-z0-9_.*/-]+")


def _repository_files() -> list[Path]:
    """The files of the repository: tracked, and new ones git does not ignore (the documentation being written)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        names = [n for n in listed.split("\0") if n]
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout: every file but the usual clutter
        skip = {".git", ".venv", "venv", "__pycache__", "build", "dist", ".mypy_cache", ".ruff_cache", ".hypothesis"}
        names = []
        for top, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info") and d != ".pytest_cache"]
            names += [os.path.relpath(os.path.join(top, f), ROOT) for f in files]
    return sorted(ROOT / n for n in set(names) if (ROOT / n).is_file())


def _top_level() -> set[str]:
    return {p.relative_to(ROOT).parts[0] for p in _repository_files()}


def _documents() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "bench" / "README.md", *DOCS.glob("*.md")]
    return sorted({p for p in [*found, *(ROOT / "deploy").rglob("README.md")] if p.is_file()})


def _prose(text: str) -> str:
    """Markdown without its fenced code blocks (whose text is neither links nor inline code)."""
    return _FENCE.sub("", text)


def _inside(path: Path) -> bool:
    try:
        path.resolve().relative_to(ROOT)
    except ValueError:
        return False
    return True


def _exists(reference: str, base: Path) -> bool:
    """Whether a relative path (a glob if it has `*`) names something in the repository, from `base` or the top."""
    for start in dict.fromkeys((base, ROOT)):
        if "*" in reference:
            if any(_inside(p) for p in start.glob(reference)):
                return True
        elif (start / reference).exists() and _inside(start / reference):
            return True
    return False


def _path_like(span: str, top_level: set[str]) -> bool:
    """Whether inline code (or a word of a comment) names a repository path: `deploy/kubernetes/rbac.yaml`,
    `tests/test_fuzz_*.py`, `.ci/run`, or a bare file name such as `rbac.yaml`. Not URLs, absolute or home paths,
    variables, images (`xchem/fragalysis-stack`), annotations (`kubectl.kubernetes.io/restartedAt`) or commands."""
    if not _PATH_CHARS.fullmatch(span) or span.startswith(("/", "-")) or "//" in span:
        return False
    if "/" in span:
        return span.split("/", 1)[0] in top_level
    return span.endswith(FILE_EXTENSIONS) and not span.startswith(".")


def _broken_references(document: Path, top_level: set[str]) -> list[str]:
    text = _prose(document.read_text(encoding="utf-8"))
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http(s), mailto: … and anchors in the same page are not followed
        path = target.split("#", 1)[0]
        if not (document.parent / path).exists() or not _inside(document.parent / path):
            broken.append(f"link ({target})")
    for span in (s.strip() for s in _CODE_SPAN.findall(text)):
        if _path_like(span, top_level) and not _exists(span.rstrip("/"), document.parent):
            broken.append(f"`{span}`")
    return broken


def _comment_words(path: Path) -> Iterator[str]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if "#" in line:
            for word in line.split("#", 1)[1].split():
                yield word.strip("()[]{}\"',;:.!?`")


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_path_in_the_documentation_resolves(document: Path) -> None:
    broken = _broken_references(document, _top_level())
    assert not broken, f"{document.relative_to(ROOT)} refers to what the repository does not hold: {broken}"


@pytest.mark.parametrize("config", [p for p in CONFIG_FILES if p.is_file()], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_in_the_comments_of_a_configuration_file_resolves(config: Path) -> None:
    top_level = _top_level()
    named = [w for w in _comment_words(config) if w and _path_like(w, top_level)]
    broken = [w for w in named if not _exists(w.rstrip("/"), config.parent)]
    assert not broken, f"the comments of {config.relative_to(ROOT)} name what the repository does not hold: {broken}"


def test_the_documentation_checks_look_where_they_should() -> None:
    """The checks above find the documents and the paths they are meant to check (or they would pass on nothing)."""
    names = {str(p.relative_to(ROOT)) for p in _documents()}
    assert {"README.md", "docs/configuration.md", "docs/operations.md", "docs/how-it-works.md"} <= names
    assert "deploy/kubernetes/README.md" in names and "bench/README.md" in names
    top_level = _top_level()
    for path in ("deploy/kubernetes/rbac.yaml", "tests/test_fuzz_*.py", ".ci/run", "rbac.yaml", "docs/"):
        assert _path_like(path, top_level), path
    others = ("xchem/fragalysis-stack", "kubectl.kubernetes.io/restartedAt", "/healthz", "~/.kube/config", "$A/b.md")
    for other in others:
        assert not _path_like(other, top_level), other
    assert _broken_references(DOCS / "configuration.md", top_level) == []
    assert "docs/configuration.md" in set(_comment_words(ROOT / "config.toml"))


def test_no_file_cites_a_document_or_path_outside_the_repository() -> None:
    found = []
    for path in _repository_files():
        if path == THIS:  # names them, to look for them
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary
        for number, line in enumerate(text.splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{number}: {name}" for name in OUTSIDE if name in line]
    assert not found, "cited, but not in the repository (cite the upstream source instead):\n" + "\n".join(found)


def _expected_keys() -> set[str]:
    """Every name passed to `.expect(…)` in reconciler/config/*.py: the keys the loader accepts."""
    keys: set[str] = set()
    for source in sorted(CONFIG_PACKAGE.glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        module = importlib.import_module(f"reconciler.config.{source.stem}") if source.stem != "__init__" else None
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "expect"):
                continue
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    keys.add(arg.value)
                    continue
                assert module is not None, f"{source.name}:{arg.lineno}: cannot evaluate {ast.unparse(arg)}"
                expression = arg.value if isinstance(arg, ast.Starred) else arg
                code = compile(ast.Expression(expression), str(source), "eval")
                value = eval(code, vars(module))  # the module's own names: watches.SCHEDULE_KEYS and the like
                names = list(value) if isinstance(arg, ast.Starred) else [value]
                assert all(isinstance(n, str) for n in names), f"{source.name}:{arg.lineno}: {ast.unparse(arg)}"
                keys.update(names)
    return keys


def test_the_configuration_reference_names_every_key_the_loader_accepts() -> None:
    keys = _expected_keys()
    # The collection itself works: a key of each section, and the ones that are not plain strings in the code.
    assert {"reconciler", "database", "lease", "listen", "url", "token_env", "password_file", "marker"} <= keys
    assert {"interval", "first_seen", "max_attempts", "on_delete", "workflow_template", "pattern", "range"} <= keys
    spans = [s.strip() for s in _CODE_SPAN.findall(_prose((DOCS / "configuration.md").read_text(encoding="utf-8")))]
    # A key that is a table is named by its header: `[reconciler]`, `[[watch]]`, `[registries."HOST"]`.
    documented = set(spans) | {m[1] for s in spans if (m := re.match(r"\[\[?([A-Za-z0-9_-]+)[.\]]", s))}
    missing = sorted(keys - documented)
    assert not missing, f"docs/configuration.md does not name these keys in backticks: {missing}"


def test_the_readme_begins_with_running_the_daemon_without_a_secret_then_the_tests() -> None:
    blocks = [b.strip() for b in _BASH_BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))]
    assert blocks, "README.md has no ```bash block"
    assert blocks[0] == RUN_COMMAND, f"the README's first command is not the install-and-run command: {blocks[0]!r}"
    assert "TOKEN=" not in blocks[0]
    assert TEST_COMMAND in blocks, "the README's test command changed; .ci/run runs it"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND.replace("pip install -e", "pip install -q -e") in ci, ".ci/run no longer runs the test command"
