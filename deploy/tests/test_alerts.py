"""deploy/alerts/recovery-service.rules.yaml: well-formed rules whose PromQL parses (PyPI
`promql-parser`), that name only metrics the service exports (after the OTLP -> Prometheus
translation), that cover what the issue asks to alert on, and that docs/operating.md explains."""

from __future__ import annotations

import re

import yaml

from common import ROOT, need

RULES = ROOT / "deploy" / "alerts" / "recovery-service.rules.yaml"
METRICS_RS = ROOT / "crates" / "recovery-service" / "src" / "metrics.rs"

# Exported instruments: (OpenTelemetry name, kind, unit).
EXPORTED = {
    "rpc.server.duration": ("histogram", "ms"),
    "recovery.hash.pool.in_use": ("gauge", None),
    "recovery.hash.pool.waiting": ("gauge", None),
    "recovery.hash.pool.rejected": ("counter", None),
    "recovery.hash.pool.skipped": ("counter", None),
    "recovery.hash.pool.abandoned": ("counter", None),
    "recovery.outbox.backlog": ("gauge", None),
    "recovery.outbox.oldest_age": ("gauge", "ms"),
    "recovery.outbox.dead": ("gauge", None),
    "recovery.mail.sent": ("counter", None),
    "recovery.mail.dead_letters": ("counter", None),
    "recovery.rate_limit.rejections": ("counter", None),
    "recovery.lockouts": ("counter", None),
    "recovery.events.backlog": ("gauge", None),
    "recovery.events.oldest_age": ("gauge", "ms"),
    "recovery.events.published": ("counter", None),
}
# Announced, not in metrics.rs yet.
COMING: dict = {}
UNIT_SUFFIX = {"ms": "_milliseconds", "s": "_seconds", None: ""}


def prometheus_names(name: str, kind: str, unit: str | None) -> set[str]:
    """The OTLP -> Prometheus translation (underscores, unit suffix, _total, histogram series)."""
    base = name.replace(".", "_") + UNIT_SUFFIX[unit]
    if kind == "counter":
        return {base + "_total"}
    if kind == "histogram":
        return {base + s for s in ("_bucket", "_sum", "_count")}
    return {base}


def known_metrics() -> set[str]:
    out = set()
    for name, (kind, unit) in {**EXPORTED, **COMING}.items():
        out |= prometheus_names(name, kind, unit)
    return out


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    assert doc["kind"] == "PrometheusRule" and doc["apiVersion"] == "monitoring.coreos.com/v1"
    return [r for group in doc["spec"]["groups"] for r in group["rules"]]


def test_exported_names_match_metrics_rs():
    source = METRICS_RS.read_text()
    for name in EXPORTED:
        assert f'"{name}"' in source, f"{name} is no longer in metrics.rs: update the alerts and docs/operating.md"
    declared = set(re.findall(r'_(?:histogram|counter|gauge)\(\s*"([^"]+)"', source))
    new = declared - set(EXPORTED) - set(COMING)
    assert not new, f"metrics.rs exports {sorted(new)}, which deploy/tests/test_alerts.py and docs/operating.md do not describe"


def test_rules_are_well_formed():
    seen = set()
    for rule in rules():
        name = rule.get("alert")
        assert name and re.fullmatch(r"Recovery[A-Za-z]+", name), f"alert name {name!r}"
        assert name not in seen, f"{name} twice"
        seen.add(name)
        assert rule.get("expr"), f"{name}: no expr"
        assert rule.get("labels", {}).get("severity") in ("info", "warning", "critical"), f"{name}: severity"
        assert rule.get("annotations", {}).get("summary"), f"{name}: no summary"
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), f"{name}: for {rule['for']!r}"


def test_expressions_parse_and_name_exported_metrics():
    try:
        import promql_parser
    except ImportError:
        promql_parser = None
    need(promql_parser is not None, "promql-parser not installed (pip install promql-parser)")
    known = known_metrics()
    for rule in rules():
        try:
            expr = promql_parser.parse(rule["expr"])
        except ValueError as err:
            raise AssertionError(f"{rule['alert']}: {err}") from None
        names: list[str] = []

        def visit(node, names=names):
            if isinstance(node, promql_parser.VectorSelector):
                names.append(node.name)

        promql_parser.walk(expr, visit)
        assert names, f"{rule['alert']} reads no metric"
        unknown = set(names) - known
        assert not unknown, f"{rule['alert']} reads {sorted(unknown)}, which the service does not export under that name"
        for gauge in ("recovery_outbox_backlog", "recovery_outbox_oldest_age_milliseconds", "recovery_outbox_dead", "recovery_events_backlog", "recovery_events_oldest_age_milliseconds"):
            assert not re.search(rf"sum\s*(by\s*\([^)]*\)\s*)?\(\s*{gauge}\b", rule["expr"]), \
                f"{rule['alert']} sums {gauge}: every replica reports the same shared table, take max"


def test_required_alerts_are_there():
    exprs = {r["alert"]: r["expr"] for r in rules()}
    wanted = {
        "outbox backlog": "recovery_outbox_backlog",
        "outbox oldest age": "recovery_outbox_oldest_age_milliseconds",
        "dead letters": "recovery_mail_dead_letters_total",
        "overload rejections": "recovery_hash_pool_rejected_total",
        "lockouts": "recovery_lockouts_total",
        "events backlog": "recovery_events_backlog",
    }
    for what, metric in wanted.items():
        assert any(re.search(rf"\b{metric}\b", e) for e in exprs.values()), f"no alert on {what} ({metric})"


def test_every_alert_is_explained_in_the_guide():
    guide = (ROOT / "docs" / "operating.md").read_text()
    for rule in rules():
        assert rule["alert"] in guide, f"docs/operating.md does not explain {rule['alert']}"
