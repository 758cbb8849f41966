"""A real distribution 2.8.2 registry for tests, and plain-`requests` helpers that push images into it.

Owns: starting `docker-registry serve` as a direct child on a free loopback port (optionally with token auth),
and pushing Docker schema-2 images, OCI indexes and many distinct tags with plain `requests`.
Must not: import `reconciler`, or fake any registry behaviour; facts come from running distribution 2.8.2 itself.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT_ALL = f"{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_LIST}, {DOCKER_MANIFEST}"
TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """The registry's `auth.token` section."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalRegistry:
    """`docker-registry serve` on 127.0.0.1:<free port>; config, `data/` and log under `directory`."""

    def __init__(
        self,
        directory: Path | str,
        *,
        token: TokenConfig | None = None,
        htpasswd: Path | None = None,
        binary: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.token = token
        self.htpasswd = htpasswd  # bcrypt htpasswd file: Basic auth instead of anonymous
        self.binary = binary or shutil.which("docker-registry") or "/usr/bin/docker-registry"
        self.log_path = self.directory / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._use_port(free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.base = f"http://{self.host}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("registry not started")
        return self._proc.pid

    def config(self) -> dict[str, Any]:
        storage = {
            "filesystem": {"rootdirectory": str(self.directory / "data")},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        }
        cfg: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": storage,
            "http": {"addr": self.host, "secret": "test-only-secret"},
        }
        if self.token is not None:
            cfg["auth"] = {"token": dataclasses.asdict(self.token)}
        elif self.htpasswd is not None:
            cfg["auth"] = {"htpasswd": {"realm": "basic-realm", "path": str(self.htpasswd)}}
        return cfg

    def start(self) -> LocalRegistry:
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}  # they override the file
        for attempt in range(3):  # another process may grab the free port before the registry binds it
            cfg_path = self.directory / "config.yml"
            cfg_path.write_text(json.dumps(self.config(), indent=2))  # JSON is valid YAML
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [self.binary, "serve", str(cfg_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            try:
                self._wait_ready()
                return self
            except BaseException as exc:
                self.stop()
                port_taken = isinstance(exc, RuntimeError) and "address already in use" in str(exc)
                if attempt == 2 or not port_taken:
                    raise
                self._use_port(free_port())
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float = 10.0) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.base}/v2/", timeout=1).status_code in (200, 401):
                    return
            except requests.RequestException:  # not listening yet, or someone else's socket
                pass
            time.sleep(0.01)
        raise RuntimeError(f"docker-registry not ready on {self.base} after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _layer() -> tuple[bytes, str]:
    """A deterministic gzip'd tar holding one file; returns (blob, diff_id)."""
    buf, content = io.BytesIO(), b"hello from the test registry\n"
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(content), 0
        tar.addfile(info, io.BytesIO(content))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0), _digest(raw)


def _image_config(label: str, arch: str, diff_id: str) -> bytes:
    return _dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": {"test.label": label}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    )


def _session(session: requests.Session | None) -> AbstractContextManager[requests.Session]:
    """The caller's session (left open), or a new one closed after use."""
    return nullcontext(session) if session is not None else requests.Session()


def _check(resp: requests.Response, what: str) -> requests.Response:
    if resp.status_code >= 300:
        raise RuntimeError(f"{what}: HTTP {resp.status_code} {resp.text[:500]}")
    return resp


def _upload_blob(s: requests.Session, base: str, repo: str, data: bytes) -> dict[str, Any]:
    """Monolithic upload (POST, then PUT to the absolute Location); returns a descriptor without mediaType."""
    digest = _digest(data)
    started = _check(s.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT), f"POST upload {repo}")
    location = started.headers["Location"]
    _check(
        s.put(
            f"{location}&digest={digest}",
            data=data,
            timeout=TIMEOUT,
            headers={"Content-Type": "application/octet-stream"},
        ),
        f"PUT blob {repo}",
    )
    return {"digest": digest, "size": len(data)}


def _put_manifest(s: requests.Session, base: str, repo: str, ref: str, body: bytes, media_type: str) -> str:
    resp = s.put(f"{base}/v2/{repo}/manifests/{ref}", data=body, headers={"Content-Type": media_type}, timeout=TIMEOUT)
    return str(_check(resp, f"PUT manifest {repo}:{ref}").headers["Docker-Content-Digest"])


def _image_manifest(
    s: requests.Session, base: str, repo: str, *, label: str, arch: str, docker: bool
) -> tuple[bytes, str]:
    layer, diff_id = _layer()
    config = _upload_blob(s, base, repo, _image_config(label, arch, diff_id))
    blob = _upload_blob(s, base, repo, layer)
    if docker:
        config["mediaType"] = "application/vnd.docker.container.image.v1+json"
        blob["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip"
        media_type = DOCKER_MANIFEST
    else:
        config["mediaType"] = "application/vnd.oci.image.config.v1+json"
        blob["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        media_type = OCI_MANIFEST
    body = {"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": [blob]}
    return _dumps(body), media_type


def push_schema2(base: str, repo: str, tag: str, *, label: str, session: requests.Session | None = None) -> str:
    """Push a Docker schema-2 image (config + one layer) as `repo:tag`; returns the manifest digest."""
    with _session(session) as s:
        body, media_type = _image_manifest(s, base, repo, label=label, arch="amd64", docker=True)
        return _put_manifest(s, base, repo, tag, body, media_type)


def push_oci_index(base: str, repo: str, tag: str, *, label: str, session: requests.Session | None = None) -> str:
    """Push linux/amd64 + linux/arm64 OCI manifests by digest, then an OCI index; returns its digest."""
    children = []
    with _session(session) as s:
        for arch in ("amd64", "arm64"):
            body, media_type = _image_manifest(s, base, repo, label=label, arch=arch, docker=False)
            digest = _put_manifest(s, base, repo, _digest(body), body, media_type)
            children.append(
                {
                    "mediaType": media_type,
                    "digest": digest,
                    "size": len(body),
                    "platform": {"architecture": arch, "os": "linux"},
                }
            )
        index = _dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
        return _put_manifest(s, base, repo, tag, index, OCI_INDEX)


def push_many(
    base: str, repo: str, tags: Sequence[str], *, label: str, threads: int = 16, session: requests.Session | None = None
) -> dict[str, str]:
    """Push a distinct OCI manifest per tag (same two blobs, an annotation varies); returns tag -> digest.

    A given `session` is shared by all threads, so its auth handler must be thread-safe.
    """
    with _session(session) as s:
        if session is None:
            s.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=threads))
        template = json.loads(_image_manifest(s, base, repo, label=label, arch="amd64", docker=False)[0])

        def push(tag: str) -> tuple[str, str]:
            body = _dumps({**template, "annotations": {"test.label": label, "test.tag": tag}})
            return tag, _put_manifest(s, base, repo, tag, body, OCI_MANIFEST)

        with ThreadPoolExecutor(max_workers=threads) as pool:
            return dict(pool.map(push, tags))
