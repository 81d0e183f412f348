#!/usr/bin/env bash
# Start a moto S3 server (moto >= 5.2.5) on a free loopback port, in the
# background, with its pid file and log inside WORKDIR, and write WORKDIR/env
# with the LIFEBOAT_TEST_MOTO_* variables the test harness reads.
#
#   tests/infra/moto-up.sh WORKDIR          # WORKDIR must not exist or be empty
#   set -a; . WORKDIR/env; set +a           # exports LIFEBOAT_TEST_MOTO_*
#   tests/infra/moto-down.sh WORKDIR
#
# Tunables: LIFEBOAT_MOTO_PYTHON (default python3), LIFEBOAT_MOTO_TIMEOUT (default 30 s).
# moto accepts any credentials and keeps everything in memory; see README.md for
# what it does and does not enforce.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
PY=${LIFEBOAT_MOTO_PYTHON:-python3}
TIMEOUT=${LIFEBOAT_MOTO_TIMEOUT:-30}
REGION=us-east-1
ACCESS=LIFEBOATMOTOTESTKEY0
SECRET=lifeboat-moto-test-secret-key-0000000000

mkdir -p "$1"
W=$(cd "$1" && pwd -P)
if [[ -n "$(ls -A "$W")" ]]; then
    echo "moto-up: $W is not empty (a server already there? run moto-down.sh first)" >&2
    exit 1
fi
if ! command -v curl >/dev/null 2>&1; then
    echo "moto-up: missing curl (apt-get install -y curl)" >&2
    exit 1
fi
# moto < 5.2.5 answers CompleteMultipartUpload with the wrong XML root.
if ! "$PY" - <<'PYEOF'
import sys
try:
    import moto, flask  # flask comes with moto[server]
except ImportError as e:
    sys.exit(f"moto-up: {e}")
v = tuple(int(x) for x in moto.__version__.split(".")[:3] if x.isdigit())
if v < (5, 2, 5):
    sys.exit(f"moto-up: moto {moto.__version__} is too old (need >= 5.2.5)")
PYEOF
then
    echo "moto-up: install it with: $PY -m pip install 'moto[server]==5.2.5'" >&2
    exit 1
fi

# shellcheck source=lib-stop.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-stop.sh"
trap 'stop_workdir_processes "$W"; exit 1' INT TERM
START=$(date +%s%N)
log() { echo "moto-up: [$((($(date +%s%N) - START) / 1000000))ms] $*" >&2; }

# A free port below the ephemeral range (so no outgoing connection grabs it).
pick_port() {
    "$PY" - <<'PYEOF'
import random, socket
lo = max(int(open('/proc/sys/net/ipv4/ip_local_port_range').read().split()[0]), 12000)
for _ in range(1000):
    p = random.randrange(10000, lo)
    s = socket.socket()
    try:
        s.bind(('127.0.0.1', p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
PYEOF
}

for _attempt in 1 2 3 4 5; do
    PORT=$(pick_port)
    # cwd = WORKDIR and the log inside it: moto-down.sh finds the process by either.
    (cd "$W" && exec setsid "$PY" -m moto.server -H 127.0.0.1 -p "$PORT" \
        >>"$W/moto.log" 2>&1 </dev/null) &
    echo $! >"$W/moto.pid"
    deadline=$((SECONDS + TIMEOUT))
    while ! curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/moto-api/" 2>/dev/null; do
        if ! kill -0 "$(cat "$W/moto.pid")" 2>/dev/null; then
            log "moto exited (port $PORT taken?), retrying"
            continue 2
        fi
        if ((SECONDS >= deadline)); then
            echo "moto-up: moto does not answer on 127.0.0.1:$PORT after ${TIMEOUT}s; log:" >&2
            tail -n 20 "$W/moto.log" >&2 || true
            stop_workdir_processes "$W"
            exit 1
        fi
        sleep 0.1
    done
    cat >"$W/env.tmp" <<ENVEOF
LIFEBOAT_TEST_MOTO_ENDPOINT=http://127.0.0.1:$PORT
LIFEBOAT_TEST_MOTO_REGION=$REGION
LIFEBOAT_TEST_MOTO_ACCESS_KEY=$ACCESS
LIFEBOAT_TEST_MOTO_SECRET_KEY=$SECRET
ENVEOF
    mv "$W/env.tmp" "$W/env"
    log "ready: $W/env (endpoint http://127.0.0.1:$PORT)"
    exit 0
done
echo "moto-up: moto did not start; log:" >&2
tail -n 20 "$W/moto.log" >&2 || true
exit 1
