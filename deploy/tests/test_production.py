"""Every property the production overlay promises, asserted on the RENDERED
YAML (target/k8s/production.yaml), so an edit to the base or the overlay cannot silently drop
one. Each `check_*` takes the rendered objects and raises AssertionError naming what is wrong;
`test_mutations` proves the checks catch the edits they guard against."""

from __future__ import annotations

import re
from pathlib import Path

from common import (
    ROOT,
    deployment,
    duration_seconds,
    labels_match,
    objects,
    one,
    port_of,
    render,
    secret_looking,
    server_container,
    settings,
)

READY_SERVICE = "identity.recovery.v1.RecoveryService"
# Measured (README / the issue): idle RSS and the argon2 block buffer each hashing thread holds.
IDLE_RSS_MIB = 19.0
# Secrets, by the setting that names their file. TLS settings are paths by definition.
SECRET_FILE_SETTINGS = {
    "RECOVERY_DATABASE_URL_FILE",
    "RECOVERY_SECRET_KEY_FILE",
    "RECOVERY_SMTP_PASSWORD_FILE",
    "RECOVERY_TLS_CERT",
    "RECOVERY_TLS_KEY",
    "RECOVERY_TLS_CLIENT_CA",
    "RECOVERY_EVENTS_CREDENTIALS_FILE",
}
# Their literal forms must never appear.
SECRET_LITERAL_SETTINGS = {"RECOVERY_DATABASE_URL", "RECOVERY_SECRET_KEY", "RECOVERY_SMTP_PASSWORD"}


def pod_spec(docs):
    return deployment(docs)["spec"]["template"]["spec"]


def env_of(docs):
    return settings(docs, server_container(deployment(docs)))


def memory_mib(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?", str(text))
    assert m, f"memory quantity {text!r}"
    factor = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20, None: 1 / 2**20}
    return float(m.group(1)) * factor[m.group(2)]


def cpu_cores(text) -> float:
    text = str(text)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# --- the checks -----------------------------------------------------------------------------


def check_replicas_at_least_two(docs):
    replicas = deployment(docs)["spec"].get("replicas", 1)
    assert replicas >= 2, f"Deployment replicas {replicas} < 2"


def check_hpa_on_cpu_3_to_10(docs):
    hpas = objects(docs, "HorizontalPodAutoscaler")
    assert len(hpas) == 1, f"expected one HorizontalPodAutoscaler, found {len(hpas)}"
    hpa = hpas[0]
    assert hpa["apiVersion"] == "autoscaling/v2", hpa["apiVersion"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "recovery-service"), f"HPA targets {target}"
    assert hpa["spec"].get("minReplicas") == 3, f"HPA minReplicas {hpa['spec'].get('minReplicas')} != 3"
    assert hpa["spec"]["maxReplicas"] == 10, f"HPA maxReplicas {hpa['spec']['maxReplicas']} != 10"
    cpu = [
        m for m in hpa["spec"].get("metrics", [])
        if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
    ]
    assert cpu, "the HPA has no CPU Resource metric"
    assert cpu[0]["resource"]["target"]["type"] == "Utilization", "CPU target is not a utilization"


def check_rolling_update_max_unavailable_zero(docs):
    strategy = deployment(docs)["spec"].get("strategy", {})
    assert strategy.get("type") == "RollingUpdate", f"strategy {strategy.get('type')}"
    unavailable = strategy.get("rollingUpdate", {}).get("maxUnavailable")
    assert unavailable in (0, "0", "0%"), f"maxUnavailable is {unavailable!r}, must be 0"
    surge = strategy["rollingUpdate"].get("maxSurge", "25%")
    assert surge not in (0, "0", "0%"), "maxSurge 0 with maxUnavailable 0 cannot roll"


def check_native_grpc_probes(docs):
    c = server_container(deployment(docs))
    env = env_of(docs)
    ports = {p["containerPort"]: p.get("name") for p in c.get("ports", [])}
    health_addr = env.get("RECOVERY_HEALTH_LISTEN_ADDR")
    assert health_addr, "RECOVERY_HEALTH_LISTEN_ADDR is not set: with mutual TLS the kubelet's gRPC probes need the plaintext health port"
    health_port = port_of(health_addr)
    assert ports.get(health_port) == "health", f"container port {health_port} named `health` missing (ports: {ports})"
    main_port = port_of(env["RECOVERY_LISTEN_ADDR"])
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        assert probe, f"{kind} missing"
        assert "grpc" in probe, f"{kind} is not a native gRPC probe: {sorted(probe)}"
        assert set(probe) & {"exec", "tcpSocket", "httpGet"} == set(), f"{kind} mixes handlers"
        port = probe["grpc"]["port"]
        assert port == health_port, f"{kind} asks port {port}, not the plaintext health port {health_port}"
        assert port != main_port, f"{kind} asks the mutual-TLS port {main_port}, which the kubelet cannot"
    ready = c["readinessProbe"]["grpc"].get("service", "")
    assert ready == READY_SERVICE, f"readiness asks service {ready!r}, want {READY_SERVICE!r} (NOT_SERVING while the database is down)"
    for kind in ("livenessProbe", "startupProbe"):
        svc = c[kind]["grpc"].get("service", "")
        assert svc == "liveness", (
            f"{kind} asks service {svc!r}: '' and {READY_SERVICE} go NOT_SERVING while the "
            "database is down, and a liveness probe on them would restart every replica on a "
            "PostgreSQL failover; ask `liveness`"
        )
    assert c["startupProbe"].get("failureThreshold", 3) * c["startupProbe"].get("periodSeconds", 10) >= 60, \
        "startupProbe allows less than 60 s for connecting and migrating"


def check_resources_sized_from_measurements(docs):
    c = server_container(deployment(docs))
    res = c.get("resources", {})
    for side in ("requests", "limits"):
        for what in ("cpu", "memory"):
            assert what in res.get(side, {}), f"resources.{side}.{what} missing"
    env = env_of(docs)
    threads = int(env.get("RECOVERY_HASH_THREADS", "0"))
    assert threads >= 1, "RECOVERY_HASH_THREADS is not pinned (it defaults to the node's cores)"
    assert threads == cpu_cores(res["limits"]["cpu"]), (
        f"RECOVERY_HASH_THREADS={threads} is not the CPU limit {res['limits']['cpu']}"
    )
    kib = int(env.get("RECOVERY_HASH_MEMORY_KIB", "19456"))
    need = IDLE_RSS_MIB + threads * kib / 1024
    assert memory_mib(res["requests"]["memory"]) >= need, f"memory request below idle + threads x hashing memory ({need:.1f} MiB)"
    assert memory_mib(res["limits"]["memory"]) >= 1.5 * need, f"memory limit leaves no headroom over {need:.1f} MiB"
    assert cpu_cores(res["requests"]["cpu"]) <= cpu_cores(res["limits"]["cpu"]), "CPU request above limit"


def check_security_context(docs):
    spec = pod_spec(docs)
    pod = spec.get("securityContext", {})
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        eff = lambda key: sc.get(key, pod.get(key))  # noqa: E731 - container overrides pod
        assert eff("runAsNonRoot") is True, f"{c['name']}: runAsNonRoot is not true"
        user = eff("runAsUser")
        assert isinstance(user, int) and not isinstance(user, bool) and user > 0, f"{c['name']}: runAsUser {user!r} is not a numeric non-root uid"
        assert sc.get("readOnlyRootFilesystem") is True, f"{c['name']}: readOnlyRootFilesystem is not true"
        assert sc.get("allowPrivilegeEscalation") is False, f"{c['name']}: allowPrivilegeEscalation is not false"
        assert sc.get("privileged", False) is False, f"{c['name']}: privileged"
        drop = sc.get("capabilities", {}).get("drop", [])
        assert "ALL" in drop, f"{c['name']}: capabilities.drop lacks ALL ({drop})"
        assert not sc.get("capabilities", {}).get("add"), f"{c['name']}: adds capabilities"
        seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        assert seccomp == "RuntimeDefault", f"{c['name']}: seccompProfile {seccomp!r}"
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), "host namespaces"


def check_service_account(docs):
    spec = pod_spec(docs)
    assert spec.get("automountServiceAccountToken") is False, "pod automountServiceAccountToken is not false"
    name = spec.get("serviceAccountName")
    assert name and name != "default", f"serviceAccountName {name!r}: use a dedicated ServiceAccount"
    sa = one(docs, "ServiceAccount", name)
    assert sa.get("automountServiceAccountToken") is False, "the ServiceAccount mounts its token by default"


def check_termination_grace_above_drain(docs):
    spec = pod_spec(docs)
    c = server_container(deployment(docs))
    grace = duration_seconds(env_of(docs).get("RECOVERY_SHUTDOWN_GRACE", "30s"))
    pre_stop = c.get("lifecycle", {}).get("preStop", {})
    assert "sleep" in pre_stop, "no preStop sleep: endpoints would still route to a stopping replica"
    drain = grace + pre_stop["sleep"]["seconds"]
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    assert tgps > drain, f"terminationGracePeriodSeconds {tgps} <= drain {drain:g} s (preStop + RECOVERY_SHUTDOWN_GRACE)"


def check_zone_spread(docs):
    spec = pod_spec(docs)
    labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    zone = [t for t in spec.get("topologySpreadConstraints", []) if t["topologyKey"] == "topology.kubernetes.io/zone"]
    assert zone, "no topologySpreadConstraints on topology.kubernetes.io/zone"
    assert zone[0]["maxSkew"] == 1, f"zone maxSkew {zone[0]['maxSkew']}"
    assert labels_match(zone[0]["labelSelector"], labels), "zone spread's labelSelector does not select the pods"


def check_configmap_for_settings(docs):
    c = server_container(deployment(docs))
    refs = [s["configMapRef"]["name"] for s in c.get("envFrom", []) if "configMapRef" in s]
    assert refs, "settings do not come from a ConfigMap (envFrom)"
    data = one(docs, "ConfigMap", refs[0]).get("data", {})
    for key in ("RECOVERY_LISTEN_ADDR", "RECOVERY_SHUTDOWN_GRACE", "RECOVERY_HASH_THREADS", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        assert key in data, f"{key} is not in the ConfigMap"
    literal_env = [e["name"] for e in c.get("env", []) if e["name"].startswith("RECOVERY_")]
    assert not literal_env, f"RECOVERY_* settings in env instead of the ConfigMap: {literal_env}"


def check_secrets_are_mounted_files(docs):
    spec = pod_spec(docs)
    c = server_container(deployment(docs))
    env = env_of(docs)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = []
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        if "secret" in v:
            assert m.get("readOnly") is True, f"secret mount {m['mountPath']} is not readOnly"
            assert "subPath" not in m, f"secret mount {m['mountPath']} uses subPath (no updates)"
            files = [i["path"] for i in v["secret"].get("items", [])] or None
            mounts.append((m["mountPath"].rstrip("/"), v["secret"]["secretName"], files))
    missing = SECRET_FILE_SETTINGS - set(env)
    assert not missing, f"secret settings missing: {sorted(missing)}"
    for key in sorted(SECRET_FILE_SETTINGS):
        path = env[key]
        assert path and path.startswith("/"), f"{key}={path!r} is not an absolute path"
        owner = [(mp, s, files) for mp, s, files in mounts if path.startswith(mp + "/")]
        assert owner, f"{key}={path} is not on a mounted Secret volume"
        mp, secret, files = owner[0]
        rel = path[len(mp) + 1:]
        assert files is None or rel in files, f"{key}: Secret {secret} mounted at {mp} does not project {rel}"
    for key in SECRET_LITERAL_SETTINGS:
        assert key not in env, f"{key} is set: secrets only as *_FILE"
    for e in c.get("env", []):
        ref = e.get("valueFrom", {})
        assert "secretKeyRef" not in ref, f"{e['name']} takes a Secret into the environment"
    assert not [s for s in c.get("envFrom", []) if "secretRef" in s], "envFrom a Secret"
    assert not objects(docs, "Secret"), "the production render carries a Secret: secrets are created outside git"


def check_no_secret_looking_values(docs):
    env = env_of(docs)
    for key, value in env.items():
        if value is None:
            continue
        what = secret_looking(value)
        assert what is None, f"{key} looks like it holds a secret ({what})"
    for cm in objects(docs, "ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            what = secret_looking(str(value))
            assert what is None, f"ConfigMap {cm['metadata']['name']}: {key} looks like a secret ({what})"


def check_mutual_tls_and_no_trust_all(docs):
    env = env_of(docs)
    assert env.get("RECOVERY_TLS_CLIENT_CA"), "no client CA: production must use mutual TLS"
    assert env.get("RECOVERY_CALLERS"), "RECOVERY_CALLERS missing"
    assert env.get("RECOVERY_TRUST_ALL_CALLERS", "false").lower() != "true", "production trusts every caller"


def check_otlp_endpoint_is_the_collector(docs):
    value = env_of(docs).get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    m = re.fullmatch(r"https?://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)", value)
    assert m, f"OTEL_EXPORTER_OTLP_ENDPOINT={value!r} is not a collector Service"
    name, namespace, port = m.group(1), m.group(2), int(m.group(3))
    assert "collector" in name, f"OTEL_EXPORTER_OTLP_ENDPOINT points at {name}, not a collector"
    assert (namespace, port) in egress_destinations(docs), f"the NetworkPolicy does not let the replicas reach {namespace}:{port}"


def check_pdb(docs):
    pdbs = objects(docs, "PodDisruptionBudget")
    assert len(pdbs) == 1, f"expected one PodDisruptionBudget, found {len(pdbs)}"
    spec = pdbs[0]["spec"]
    assert labels_match(spec["selector"], deployment(docs)["spec"]["template"]["metadata"]["labels"]), "the PDB does not select the replicas"
    if "minAvailable" in spec:
        assert isinstance(spec["minAvailable"], int) and spec["minAvailable"] < 3, "minAvailable blocks every drain at 3 replicas"
    else:
        assert spec.get("maxUnavailable") in (1, "1"), f"maxUnavailable {spec.get('maxUnavailable')!r}"


def server_policy(docs):
    labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    found = [p for p in objects(docs, "NetworkPolicy") if labels_match(p["spec"]["podSelector"], labels)]
    assert len(found) == 1, f"expected one NetworkPolicy selecting the replicas, found {len(found)}"
    assert found[0]["spec"]["podSelector"].get("matchLabels"), "the NetworkPolicy selects every pod"
    return found[0]


def peer_namespace(peer: dict, own: str) -> str:
    if "namespaceSelector" in peer:
        ns = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name")
        assert ns, f"namespaceSelector without kubernetes.io/metadata.name: {peer}"
        return ns
    assert "ipBlock" not in peer or peer["ipBlock"]["cidr"] not in ("0.0.0.0/0", "::/0"), f"open ipBlock {peer}"
    return peer.get("ipBlock", {}).get("cidr", own)


def egress_destinations(docs) -> set[tuple[str, int]]:
    policy = server_policy(docs)
    own = policy["metadata"].get("namespace", "identity")
    out = set()
    for rule in policy["spec"].get("egress", []):
        assert rule.get("to"), f"an egress rule to anywhere: {rule}"
        assert rule.get("ports"), f"an egress rule on every port: {rule}"
        for peer in rule["to"]:
            for port in rule["ports"]:
                out.add((peer_namespace(peer, own), port["port"]))
                out.add((peer_namespace(peer, own), f"{port['port']}/{port.get('protocol', 'TCP')}"))
    return out


def check_network_policy(docs):
    policy = server_policy(docs)
    spec = policy["spec"]
    assert set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}, f"policyTypes {spec.get('policyTypes')}"
    env = env_of(docs)
    grpc_port = port_of(env["RECOVERY_LISTEN_ADDR"])
    sources = set()
    for rule in spec.get("ingress", []):
        assert rule.get("from"), f"an ingress rule from anywhere: {rule}"
        ports = rule.get("ports")
        assert ports and all(p["port"] in (grpc_port, "grpc") for p in ports), f"ingress beyond the gRPC port: {ports}"
        for peer in rule["from"]:
            assert "podSelector" not in peer or "namespaceSelector" in peer, f"ingress from this namespace's pods: {peer}"
            sources.add(peer_namespace(peer, ""))
    assert sources == {"auth", "operators"}, f"ingress from {sorted(sources)}, want the auth and operators namespaces only"
    dest = egress_destinations(docs)
    smtp_port = int(re.search(r":(\d+)", env["RECOVERY_SMTP_URL"].split("@")[-1]).group(1))
    nats = re.fullmatch(r"(?:tls|nats)://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)", env["RECOVERY_EVENTS_URL"])
    assert nats, f"RECOVERY_EVENTS_URL={env['RECOVERY_EVENTS_URL']!r}"
    want = {
        "PostgreSQL": ("databases", 5432),
        "SMTP": (policy["metadata"]["namespace"], smtp_port),
        "NATS": (nats.group(2), int(nats.group(3))),
        "the collector": ("observability", 4317),
        "DNS over UDP": ("kube-system", "53/UDP"),
        "DNS over TCP": ("kube-system", "53/TCP"),
    }
    for what, target in want.items():
        assert target in dest, f"no egress to {what} {target}"
    allowed = {t for t in want.values()} | {(ns, int(p.split('/')[0])) for ns, p in want.values() if isinstance(p, str)}
    allowed |= {(ns, f"{p}/TCP") for ns, p in want.values() if isinstance(p, int)}
    extra = dest - allowed
    assert not extra, f"egress beyond PostgreSQL, SMTP, NATS, the collector and DNS: {sorted(map(str, extra))}"


def check_migration_job_ordered_before_rollout(docs):
    job = one(docs, "Job", "recovery-service-migrate")
    dep = deployment(docs)
    jc = job["spec"]["template"]["spec"]["containers"][0]
    assert jc.get("args") == ["migrate"], f"the Job runs {jc.get('args')}, not `migrate`"
    assert jc["image"] == server_container(dep)["image"], "the Job and the Deployment run different images"
    notes = job["metadata"].get("annotations", {})
    assert notes.get("argocd.argoproj.io/hook") in ("PreSync", "Sync"), "no Argo CD hook on the Job"
    assert notes.get("argocd.argoproj.io/hook-delete-policy") == "BeforeHookCreation", "the Job is not recreated per sync"
    job_wave = int(notes.get("argocd.argoproj.io/sync-wave", "0"))
    dep_wave = int(dep["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))
    assert dep_wave > job_wave, f"Deployment sync wave {dep_wave} is not after the Job's {job_wave}"
    assert dep["metadata"]["labels"].get("app.kubernetes.io/component") == "server", \
        "the Deployment lacks the label the documented `kubectl apply -l` sequence excludes"
    assert job["metadata"]["labels"].get("app.kubernetes.io/component") != "server"
    guide = (ROOT / "docs" / "operating.md").read_text()
    assert "kubectl -n identity wait --for=condition=complete" in guide and "job/recovery-service-migrate" in guide, \
        "docs/operating.md does not document waiting for the migration Job"
    spec = job["spec"]["template"]["spec"]
    assert spec.get("restartPolicy") in ("Never", "OnFailure")
    assert spec.get("automountServiceAccountToken") is False, "the Job mounts a token"
    sc = jc.get("securityContext", {})
    assert sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
    assert "ALL" in sc.get("capabilities", {}).get("drop", []), "the Job keeps capabilities"
    assert spec.get("securityContext", {}).get("runAsNonRoot") is True, "the Job may run as root"
    migrate_policies = [p for p in objects(docs, "NetworkPolicy") if labels_match(p["spec"]["podSelector"], job["spec"]["template"]["metadata"]["labels"])]
    assert migrate_policies, "no NetworkPolicy confines the migration Job"


def check_service_publishes_only_grpc(docs):
    svc = one(docs, "Service", "recovery-service")
    ports = [p["port"] for p in svc["spec"]["ports"]]
    assert ports == [50051], f"the Service publishes {ports}; the health-only port must stay private"


def check_image_pinned(docs):
    image = server_container(deployment(docs))["image"]
    assert "@sha256:" in image or re.search(r":[\w.-]+$", image.split("/")[-1]), f"image {image} has no tag"
    assert not image.endswith(":latest"), f"image {image} is :latest"


CHECKS = [v for k, v in sorted(globals().items()) if k.startswith("check_")]

for _check in CHECKS:
    def _test(check=_check):
        check(render("production"))
    _test.__name__ = "test_" + _check.__name__[len("check_"):]
    globals()[_test.__name__] = _test
del _check, _test


# --- the checks catch what they guard against -----------------------------------------------


def _container(docs):
    return server_container(deployment(docs))


def _set_config(docs, key, value):
    ref = _container(docs)["envFrom"][0]["configMapRef"]["name"]
    one(docs, "ConfigMap", ref)["data"][key] = value


MUTATIONS = [
    ("replicas 1", lambda d: deployment(d)["spec"].update(replicas=1), check_replicas_at_least_two),
    ("HPA removed", lambda d: d.remove(one(d, "HorizontalPodAutoscaler")), check_hpa_on_cpu_3_to_10),
    ("HPA max 5", lambda d: one(d, "HorizontalPodAutoscaler")["spec"].update(maxReplicas=5), check_hpa_on_cpu_3_to_10),
    ("maxUnavailable 1", lambda d: deployment(d)["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1), check_rolling_update_max_unavailable_zero),
    ("startupProbe dropped", lambda d: _container(d).pop("startupProbe"), check_native_grpc_probes),
    ("readiness by exec", lambda d: _container(d).update(readinessProbe={"exec": {"command": ["recovery-service", "healthcheck"]}}), check_native_grpc_probes),
    ("probe on the mTLS port", lambda d: _container(d)["livenessProbe"]["grpc"].update(port=50051), check_native_grpc_probes),
    ("liveness tied to the database", lambda d: _container(d)["livenessProbe"]["grpc"].update(service=""), check_native_grpc_probes),
    ("memory limit dropped", lambda d: _container(d)["resources"]["limits"].pop("memory"), check_resources_sized_from_measurements),
    ("hash threads above CPU limit", lambda d: _set_config(d, "RECOVERY_HASH_THREADS", "8"), check_resources_sized_from_measurements),
    ("writable root", lambda d: _container(d)["securityContext"].update(readOnlyRootFilesystem=False), check_security_context),
    ("capabilities kept", lambda d: _container(d)["securityContext"].pop("capabilities"), check_security_context),
    ("user by name", lambda d: [pod_spec(d)["securityContext"].update(runAsUser="nonroot"), _container(d)["securityContext"].pop("runAsUser")], check_security_context),
    ("seccomp dropped", lambda d: pod_spec(d)["securityContext"].pop("seccompProfile"), check_security_context),
    ("token mounted", lambda d: pod_spec(d).update(automountServiceAccountToken=True), check_service_account),
    ("default ServiceAccount", lambda d: pod_spec(d).pop("serviceAccountName"), check_service_account),
    ("grace 30 s", lambda d: pod_spec(d).update(terminationGracePeriodSeconds=30), check_termination_grace_above_drain),
    ("drain longer", lambda d: _set_config(d, "RECOVERY_SHUTDOWN_GRACE", "1m"), check_termination_grace_above_drain),
    ("no zone spread", lambda d: pod_spec(d).pop("topologySpreadConstraints"), check_zone_spread),
    ("secret key literal", lambda d: _set_config(d, "RECOVERY_SECRET_KEY", "00" * 32), check_secrets_are_mounted_files),
    ("secret via env", lambda d: _container(d)["env"].append({"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}), check_secrets_are_mounted_files),
    ("TLS key off the secret mount", lambda d: _set_config(d, "RECOVERY_TLS_KEY", "/tmp/tls.key"), check_secrets_are_mounted_files),
    ("NATS credentials unmounted", lambda d: _container(d)["volumeMounts"].__setitem__(slice(None), [m for m in _container(d)["volumeMounts"] if m["name"] != "nats"]), check_secrets_are_mounted_files),
    ("password in a URL", lambda d: _set_config(d, "RECOVERY_SMTP_URL", "smtp://recovery:hunter2@mail:587"), check_no_secret_looking_values),
    ("trust all callers", lambda d: _set_config(d, "RECOVERY_TRUST_ALL_CALLERS", "true"), check_mutual_tls_and_no_trust_all),
    ("collector elsewhere", lambda d: _set_config(d, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"), check_otlp_endpoint_is_the_collector),
    ("PDB removed", lambda d: d.remove(one(d, "PodDisruptionBudget")), check_pdb),
    ("ingress from anywhere", lambda d: server_policy(d)["spec"]["ingress"].append({"ports": [{"port": 50051}]}), check_network_policy),
    ("egress to anywhere", lambda d: server_policy(d)["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 443}]}), check_network_policy),
    ("no DNS egress", lambda d: server_policy(d)["spec"].update(egress=server_policy(d)["spec"]["egress"][:-1]), check_network_policy),
    ("Job unordered", lambda d: deployment(d)["metadata"]["annotations"].pop("argocd.argoproj.io/sync-wave"), check_migration_job_ordered_before_rollout),
    ("health port published", lambda d: one(d, "Service", "recovery-service")["spec"]["ports"].append({"name": "health", "port": 8081}), check_service_publishes_only_grpc),
]


def test_mutations():
    """Each edit in MUTATIONS, applied to the real render, makes its check fail."""
    base = render("production")
    check = None
    for what, mutate, check in MUTATIONS:
        check(render("production"))  # passes unmutated
        docs = render("production")
        mutate(docs)
        try:
            check(docs)
        except (AssertionError, KeyError):
            continue
        raise AssertionError(f"{check.__name__} did not notice: {what}")
    assert base and check is not None
