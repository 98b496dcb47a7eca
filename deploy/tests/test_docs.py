"""docs/operating.md keeps the exact operator lines the issue asks for, and the names it uses
exist in the production render."""

from __future__ import annotations

import re

from common import ROOT, deployment, one, render

GUIDE = ROOT / "docs" / "operating.md"
MTLS = "grpcurl -cacert ca.crt -cert operator.crt -key operator.key"


def test_grpcurl_over_mtls_lines():
    text = GUIDE.read_text()
    for method in ("GetRecoveryStatus", "ListAuditEvents", "RevokeRecoveryCode"):
        lines = [l for l in text.splitlines() if l.startswith(MTLS) and l.endswith(f"identity.recovery.v1.RecoveryService/{method}")]
        assert lines, f"no `{MTLS} … {method}` line"
        for line in lines:
            assert "-plaintext" not in line
            address = re.search(r"(\S+:50051)", line).group(1)
            assert address in ("recovery-service.identity.svc:50051", "127.0.0.1:50051"), f"{method}: address {address}"
    assert "chainValid" in text and "firstBrokenEventId" in text


def test_names_in_the_guide_exist():
    docs = render("production")
    text = GUIDE.read_text()
    dep = deployment(docs)
    assert f"deployment/{dep['metadata']['name']}" in text
    assert f"job/{one(docs, 'Job')['metadata']['name']}" in text
    assert f"-n {dep['metadata']['namespace']} " in text
    for path in set(re.findall(r"`((?:deploy|docs)/[\w./-]+)`", text)):
        assert (ROOT / path).exists(), f"docs/operating.md names {path}, which does not exist"


def test_key_rotation_is_described():
    text = GUIDE.read_text()
    section = text.split("## Rotate the secret key", 1)[1].split("\n## ", 1)[0]
    for needle in ("ID:HEX", "hash_key_id", "mac_key_id", "v1.OLD_ID.", "re-hashed", "When the old key may be removed"):
        assert needle in section, f"the key rotation section does not mention {needle!r}"
