#!/usr/bin/env bash
# Start a throw-away one-node Ceph cluster (mon + memstore OSD + radosgw/beast)
# entirely inside WORKDIR, without systemd and without a mgr, and write
# WORKDIR/env with the LIFEBOAT_TEST_CEPH_* variables the test harness reads.
#
#   tests/infra/ceph-rgw-up.sh WORKDIR      # WORKDIR must not exist or be empty
#   set -a; . WORKDIR/env; set +a           # exports LIFEBOAT_TEST_CEPH_*
#   tests/infra/ceph-rgw-down.sh WORKDIR    # stop everything, remove WORKDIR
#
# Every port is picked here (mon, messenger range, HTTP) so several clusters can
# run side by side. Tunables (environment):
#   LIFEBOAT_CEPH_MEMSTORE_BYTES  OSD capacity (default 6 GiB); RAM is used only as data
#                                 is stored, ~1.6 bytes of OSD RSS per byte stored
#   LIFEBOAT_CEPH_TIMEOUT         seconds to wait for each stage (default 60)
#   LIFEBOAT_CEPH_EXTRA_CONF      extra "key = value" lines for the [global] section
# See tests/infra/README.md for timings and the tier's known quirks.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
for bin in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool curl /usr/bin/python3; do
    if ! command -v "$bin" >/dev/null 2>&1; then
        echo "ceph-rgw-up: missing $bin; install: apt-get install -y ceph-mon ceph-osd radosgw ceph-common curl" >&2
        exit 1
    fi
done

mkdir -p "$1"
W=$(cd "$1" && pwd -P)
if [[ -n "$(ls -A "$W")" ]]; then
    echo "ceph-rgw-up: $W is not empty (a cluster already there? run ceph-rgw-down.sh first)" >&2
    exit 1
fi
# Unix socket paths (admin sockets) must fit in sun_path (108 bytes).
if (( ${#W} > 60 )); then
    echo "ceph-rgw-up: WORKDIR path too long for admin sockets (${#W} > 60 chars): $W" >&2
    exit 1
fi

MEMSTORE_BYTES=${LIFEBOAT_CEPH_MEMSTORE_BYTES:-$((6 * 1024 * 1024 * 1024))}
TIMEOUT=${LIFEBOAT_CEPH_TIMEOUT:-60}
REGION=us-east-1
ADMIN_UID=lifeboat-admin
ADMIN_ACCESS=LIFEBOATADMINTESTKEY
ADMIN_SECRET=lifeboat-admin-test-secret-key-000000000
OTHER_UID=lifeboat-other
OTHER_ACCESS=LIFEBOATOTHERTESTKEY
OTHER_SECRET=lifeboat-other-test-secret-key-000000000

# shellcheck source=lib-stop.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-stop.sh"
CONF=$W/ceph.conf
START=$(date +%s.%N)
elapsed() { /usr/bin/python3 -c "import sys,time; print('%.1f' % (time.time() - float(sys.argv[1])))" "$START"; }
log() { echo "ceph-rgw-up: [$(elapsed)s] $*" >&2; }
die() {
    echo "ceph-rgw-up: [$(elapsed)s] FAILED: $*" >&2
    for f in "$W"/log/*; do
        [[ -f "$f" ]] || continue
        echo "---- last lines of $f" >&2
        tail -n 15 "$f" >&2 || true
    done
    LIFEBOAT_STOP_GRACE=0 stop_workdir_processes "$W"
    echo "ceph-rgw-up: daemons stopped, logs kept in $W/log; remove with ceph-rgw-down.sh $W" >&2
    exit 1
}
trap 'die "interrupted"' INT TERM

# ---- ports: mon, rgw, and a messenger range, all free, below the ephemeral range
# (so an outgoing connection cannot grab one between this check and the bind).
read -r MON_PORT RGW_PORT MS_MIN MS_MAX < <(/usr/bin/python3 - <<'EOF'
import random, socket
lo = int(open('/proc/sys/net/ipv4/ip_local_port_range').read().split()[0])
lo = max(lo, 12000)
def free(ports):
    socks = []
    try:
        for p in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(('127.0.0.1', p))
            socks.append(s)
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()
for _ in range(1000):
    # 2 single ports + a 20-port messenger range, one random block of 22 ports.
    base = random.randrange(10000, lo - 22)
    ports = list(range(base, base + 22))
    if free(ports):
        print(base, base + 1, base + 2, base + 21)
        break
else:
    raise SystemExit("no free port block found")
EOF
)
[[ -n "${MS_MAX:-}" ]] || die "could not pick free ports"

mkdir -p "$W"/{run,log,mon,osd,rgw,tmp}
FSID=$(uuidgen 2>/dev/null || cat /proc/sys/kernel/random/uuid)
OSD_UUID=$(uuidgen 2>/dev/null || cat /proc/sys/kernel/random/uuid)

cat >"$CONF" <<EOF
# Throw-away one-node test cluster written by tests/infra/ceph-rgw-up.sh.
[global]
fsid = $FSID
mon host = [v1:127.0.0.1:$MON_PORT]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr2 = false
ms bind port min = $MS_MIN
ms bind port max = $MS_MAX
auth cluster required = none
auth service required = none
auth client required = none
keyring = $W/keyring
run dir = $W/run
pid file = $W/run/\$name.pid
log file = $W/log/\$name.log
log to stderr = false
err to stderr = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
osd crush update on start = false
osd class update on start = false
paxos propose interval = 0.1
paxos min wait = 0.01
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
# the mon shuts down below mon_data_avail_crit (5 %) free disk; its store is tiny here
mon data avail crit = 1
mon data avail warn = 2
${LIFEBOAT_CEPH_EXTRA_CONF:-}

[mon]
mon data = $W/mon/\$cluster-\$id
admin socket = $W/run/\$cluster-\$name.asok

[osd]
osd data = $W/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
admin socket = $W/run/\$cluster-\$name.asok

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $W/rgw
admin socket = $W/run/\$cluster-\$name.asok
EOF

CEPH_ARGS_=(-c "$CONF")
ceph_() { timeout 30 ceph "${CEPH_ARGS_[@]}" --connect-timeout 10 "$@" 2>>"$W/log/cli.err"; }
# Retry a mon command until it succeeds (a client's first command can race the monmap).
retry() {
    local deadline=$((SECONDS + TIMEOUT))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}
# Has daemon $1, started at $2 (SECONDS) with exit status $3, died? Its pid file can lag
# its start a little, and a daemon that exits on an error removes it: missing for 5 s
# counts as dead.
died() {
    local f=$W/run/$1.pid
    if (($3 != 0)); then
        return 0
    elif [[ -f "$f" ]]; then
        ! kill -0 "$(cat "$f" 2>/dev/null)" 2>/dev/null
    else
        ((SECONDS - $2 >= 5))
    fi
}

# ---- monitor
ceph-authtool --create-keyring "$W/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$W/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mgr 'allow *' >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v1:127.0.0.1:$MON_PORT]" "$W/tmp/monmap" >/dev/null
ceph-mon "${CEPH_ARGS_[@]}" -i a --mkfs --monmap "$W/tmp/monmap" --keyring "$W/keyring" \
    >>"$W/log/mkfs.out" 2>&1 || die "ceph-mon --mkfs"
ceph-mon "${CEPH_ARGS_[@]}" -i a >>"$W/log/daemons.out" 2>&1 || die "ceph-mon did not start"
retry ceph_ -s >/dev/null || die "mon does not answer on port $MON_PORT"
log "mon.a up on 127.0.0.1:$MON_PORT"

# ---- OSD (placed in the CRUSH map by hand; automatic placement races at start)
OSD_ID=$(retry ceph_ osd new "$OSD_UUID") || die "ceph osd new"
[[ "$OSD_ID" == 0 ]] || die "expected osd id 0, got '$OSD_ID'"
retry ceph_ osd crush add osd.0 1.0 root=default >/dev/null 2>&1 || die "ceph osd crush add"
mkdir -p "$W/osd/ceph-0"
ceph-osd "${CEPH_ARGS_[@]}" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$W/log/mkfs.out" 2>&1 || die "ceph-osd --mkfs"
start_osd() { ceph-osd "${CEPH_ARGS_[@]}" -i 0 >>"$W/log/daemons.out" 2>&1; }
osd_up() { ceph_ osd stat -f json | grep -q '"num_up_osds":1'; }
rc=0
start_osd || rc=$?
starts=1
started=$SECONDS
deadline=$((SECONDS + TIMEOUT))
until osd_up; do
    ((SECONDS < deadline)) || die "osd.0 not up after ${TIMEOUT}s"
    if died osd.0 "$started" "$rc"; then
        ((starts < 5)) || die "osd.0 keeps dying at start"
        log "osd.0 died while starting; restarting it"
        starts=$((starts + 1))
        started=$SECONDS
        rc=0
        start_osd || rc=$?
    fi
    sleep 0.2
done
log "osd.0 up (memstore, $MEMSTORE_BYTES bytes)"

# ---- radosgw (creates its pools on first start)
start_rgw() { radosgw "${CEPH_ARGS_[@]}" -n client.rgw.a >>"$W/log/daemons.out" 2>&1; }
rgw_http() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$RGW_PORT/" 2>/dev/null; }
rc=0
start_rgw || rc=$?
starts=1
started=$SECONDS
deadline=$((SECONDS + TIMEOUT))
until rgw_http; do
    ((SECONDS < deadline)) || die "radosgw does not answer on 127.0.0.1:$RGW_PORT after ${TIMEOUT}s"
    if died client.rgw.a "$started" "$rc"; then
        ((starts < 5)) || die "radosgw keeps dying at start"
        log "radosgw died while starting; restarting it"
        starts=$((starts + 1))
        started=$SECONDS
        rc=0
        start_rgw || rc=$?
    fi
    sleep 0.2
done
log "radosgw answers on http://127.0.0.1:$RGW_PORT"

# ---- users with fixed test keys
make_user() {
    local uid=$1 name=$2 access=$3 secret=$4
    if timeout 30 radosgw-admin "${CEPH_ARGS_[@]}" user info --uid "$uid" >/dev/null 2>>"$W/log/cli.err"; then
        return 0
    fi
    timeout 30 radosgw-admin "${CEPH_ARGS_[@]}" user create --uid "$uid" --display-name "$name" \
        --access-key "$access" --secret-key "$secret" >/dev/null 2>>"$W/log/cli.err"
}
retry make_user "$ADMIN_UID" "Lifeboat test admin (bucket owner)" "$ADMIN_ACCESS" "$ADMIN_SECRET" \
    || die "radosgw-admin user create $ADMIN_UID"
retry make_user "$OTHER_UID" "Lifeboat test second principal" "$OTHER_ACCESS" "$OTHER_SECRET" \
    || die "radosgw-admin user create $OTHER_UID"
log "users $ADMIN_UID and $OTHER_UID created"

# ---- wait until a signed S3 PUT works, then clean the probe up
probe="http://127.0.0.1:$RGW_PORT/lifeboat-ready-probe"
s3() { curl -fsS -o /dev/null --max-time 10 --aws-sigv4 "aws:amz:$REGION:s3" \
    --user "$ADMIN_ACCESS:$ADMIN_SECRET" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@" 2>>"$W/log/cli.err"; }
put_works() {
    s3 -X PUT "$probe" || true # fails when a previous attempt created it; the next PUT tells
    s3 -X PUT --data-binary ready "$probe/ready"
}
retry put_works || die "S3 PUT does not work"
s3 -X DELETE "$probe/ready" || true
s3 -X DELETE "$probe" || true
log "S3 PUT works"

cat >"$W/env.tmp" <<EOF
LIFEBOAT_TEST_CEPH_ENDPOINT=http://127.0.0.1:$RGW_PORT
LIFEBOAT_TEST_CEPH_REGION=$REGION
LIFEBOAT_TEST_CEPH_ACCESS_KEY=$ADMIN_ACCESS
LIFEBOAT_TEST_CEPH_SECRET_KEY=$ADMIN_SECRET
LIFEBOAT_TEST_CEPH_OTHER_ACCESS_KEY=$OTHER_ACCESS
LIFEBOAT_TEST_CEPH_OTHER_SECRET_KEY=$OTHER_SECRET
LIFEBOAT_TEST_CEPH_CONF=$CONF
EOF
mv "$W/env.tmp" "$W/env"
log "ready: $W/env (endpoint http://127.0.0.1:$RGW_PORT, mon $MON_PORT, ms $MS_MIN-$MS_MAX)"
