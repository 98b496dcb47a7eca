"""The dev overlay: one replica, no HPA, plaintext with RECOVERY_TRUST_ALL_CALLERS=true, and
every object marked development-only so nobody mistakes it for production."""

from __future__ import annotations

from common import deployment, objects, one, render, secret_looking, server_container, settings


def test_dev_runs_one_replica_without_hpa():
    docs = render("dev")
    assert deployment(docs)["spec"]["replicas"] == 1, "dev runs more than one replica"
    assert not objects(docs, "HorizontalPodAutoscaler"), "dev has an HPA"


def test_dev_is_plaintext_and_trusts_all_callers():
    docs = render("dev")
    env = settings(docs, server_container(deployment(docs)))
    assert env.get("RECOVERY_TRUST_ALL_CALLERS") == "true", "dev lacks RECOVERY_TRUST_ALL_CALLERS=true (plaintext on 0.0.0.0 would refuse to start)"
    for key in ("RECOVERY_TLS_CERT", "RECOVERY_TLS_KEY", "RECOVERY_TLS_CLIENT_CA", "RECOVERY_CALLERS"):
        assert key not in env, f"dev sets {key}, but it is the plaintext overlay"
    probes = [server_container(deployment(docs))[k]["grpc"]["port"] for k in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert probes == [50051] * 3, f"dev probes {probes}: plaintext, so the main port"


def test_dev_is_marked_dev_only_everywhere():
    docs = render("dev")
    for obj in docs:
        meta = obj["metadata"]
        what = f"{obj['kind']}/{meta['name']}"
        assert meta.get("labels", {}).get("environment") == "dev", f"{what} is not labelled environment=dev"
        assert meta.get("annotations", {}).get("identity.platform/dev-only") == "true", f"{what} is not annotated dev-only"
        assert meta.get("namespace", "identity-dev") == "identity-dev", f"{what} is in {meta.get('namespace')}, not identity-dev"
    dep = deployment(docs)
    assert dep["spec"]["template"]["metadata"]["labels"].get("environment") == "dev", "dev pods are not labelled"


def test_dev_commits_no_real_secret():
    docs = render("dev")
    import base64

    for secret in objects(docs, "Secret"):
        for key, value in (secret.get("data") or {}).items():
            text = base64.b64decode(value).decode()
            assert secret_looking(text) is None, f"Secret {secret['metadata']['name']}/{key}: {secret_looking(text)}"
    key_volume = [v for v in deployment(docs)["spec"]["template"]["spec"]["volumes"] if v["name"] == "key"][0]
    assert key_volume["secret"]["secretName"] == "recovery-service-key", "dev generates the secret key: it must be created by hand, never committed"
    one(docs, "StatefulSet", "recovery-postgres")
