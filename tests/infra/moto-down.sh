#!/usr/bin/env bash
# Stop the moto server started by moto-up.sh WORKDIR and remove WORKDIR.
# Idempotent: succeeds when the server is already down or WORKDIR gone.
#
#   tests/infra/moto-down.sh WORKDIR
set -uo pipefail
if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
# shellcheck source=lib-stop.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-stop.sh"
stop_workdir "$1"
exit 0
