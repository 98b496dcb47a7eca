"""Shared helpers of the deploy tests: the repository root, rendered manifests, small parsers.

The tests are plain functions named `test_*` with plain asserts, run by `run.py` (no pytest
needed; pytest runs them as they are too). They read the renders that deploy/check.sh writes
to target/k8s/NAME.yaml, and render with `kubectl kustomize` themselves when a render is
missing.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
RENDERS = ROOT / "target" / "k8s"

_cache: dict[str, list[dict]] = {}


def render(name: str) -> list[dict]:
    """The rendered objects of `base` or of overlay `name` (a fresh copy each call)."""
    if name not in _cache:
        path = RENDERS / f"{name}.yaml"
        if path.exists():
            text = path.read_text()
        else:
            if shutil.which("kubectl") is None:
                raise AssertionError(f"{path} is missing and kubectl is not installed to render it")
            source = K8S / "base" if name == "base" else K8S / "overlays" / name
            text = subprocess.run(
                ["kubectl", "kustomize", str(source)], check=True, capture_output=True, text=True
            ).stdout
        _cache[name] = [doc for doc in yaml.safe_load_all(text) if doc]
    return copy.deepcopy(_cache[name])


def objects(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in objects(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}{' ' + name if name else ''}, found {len(found)}"
    return found[0]


def deployment(docs: list[dict]) -> dict:
    return one(docs, "Deployment", "recovery-service")


def server_container(dep: dict) -> dict:
    containers = dep["spec"]["template"]["spec"]["containers"]
    found = [c for c in containers if c["name"] == "recovery-service"]
    assert len(found) == 1, "the Deployment has no container named recovery-service"
    return found[0]


def settings(docs: list[dict], container: dict) -> dict[str, str]:
    """Every environment variable the container gets with a literal value: the ConfigMaps of
    envFrom, then env (which wins). valueFrom entries map to None."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref is not None, f"envFrom other than a ConfigMap: {source}"
        cm = one(docs, "ConfigMap", ref["name"])
        prefix = source.get("prefix", "")
        for key, value in (cm.get("data") or {}).items():
            env[prefix + key] = value
    for item in container.get("env", []):
        env[item["name"]] = item.get("value") if "valueFrom" not in item else None
    return env


def labels_match(selector: dict, labels: dict) -> bool:
    """Whether a matchLabels selector selects an object with these labels."""
    assert "matchExpressions" not in selector, "matchExpressions are not checked here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def duration_seconds(text: str) -> float:
    """`30s`, `1m30s`, `500ms`, `2m` -> seconds (humantime's common forms)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", text.strip())
    joined = "".join(f"{n}{u}" for n, u in parts)
    assert parts and joined == re.sub(r"\s+", "", text.strip()), f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def port_of(addr: str) -> int:
    """`0.0.0.0:8081`, `[::]:8081` -> 8081."""
    m = re.fullmatch(r"(?:\[[^\]]*\]|[^:]+):(\d+)", addr)
    assert m, f"not IP:PORT: {addr!r}"
    return int(m.group(1))


# What a secret looks like when it sits where only a path or a plain setting belongs.
SECRET_LOOKING = [
    (re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]+:[^/@\s]+@", re.I), "a URL with a password"),
    (re.compile(r"(?<![0-9a-f])[0-9a-f]{32,}(?![0-9a-f])", re.I), "a long hex string (a key?)"),
    (re.compile(r"-----BEGIN [A-Z ]+-----"), "a PEM block"),
    (re.compile(r"[A-Za-z0-9+/_-]{40,}={0,2}"), "a long base64-like token"),
    (re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)\s*[=:]\s*\S"), "a credential assignment"),
    (re.compile(r"\bSU[A-Z2-7]{40,}"), "an nkey seed"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), "a JWT"),
]


def secret_looking(value: str) -> str | None:
    for pattern, what in SECRET_LOOKING:
        if pattern.search(value):
            return what
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class Skip(Exception):
    """The test cannot run here (a tool is missing); fails instead under CI=true."""


def need(ok: bool, why: str) -> None:
    if ok:
        return
    if in_ci():
        raise AssertionError(f"{why} (required under CI=true)")
    raise Skip(why)
