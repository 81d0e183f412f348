#!/usr/bin/env bash
# Stop the throw-away Ceph cluster started by ceph-rgw-up.sh WORKDIR and remove
# WORKDIR. Idempotent: succeeds when the cluster is already down or WORKDIR gone.
#
#   tests/infra/ceph-rgw-down.sh WORKDIR
set -uo pipefail
if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
# shellcheck source=lib-stop.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-stop.sh"
# Memstore data is discarded anyway: no graceful shutdown (radosgw takes ~5 s on SIGTERM).
LIFEBOAT_STOP_GRACE=${LIFEBOAT_STOP_GRACE:-0} stop_workdir "$1"
exit 0
