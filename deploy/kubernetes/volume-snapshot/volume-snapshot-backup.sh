#!/bin/sh
# Backs up a PVC from a CSI snapshot of it, in order, and always cleans up:
#   1. create the VolumeSnapshot and wait until it is readyToUse
#   2. create the PVC restored from it
#   3. create the Job running `lifeboatd run` on that PVC mounted read-only, wait until it completes or fails,
#      and copy its log here
#   then delete the Job, the PVC and the VolumeSnapshot, also after a failure, a timeout or SIGTERM.
# Leftovers of an interrupted run (same names) are deleted first.
#
# Usage: volume-snapshot-backup.sh [MANIFEST]    (default: volume-snapshot-backup.yaml next to this script)
# The manifest holds the three resources, told apart by the label app.kubernetes.io/component (volume-snapshot,
# volume-clone, volume-backup). The names below must match it; override them with the environment variables.
# Needs kubectl >= 1.23 (`kubectl wait --for=jsonpath`) and the permissions of the Role in
# volume-snapshot-backup-cronjob.yaml (or your own, when run by hand).
# Exit status: 0 when the backup Job completed, 1 otherwise (also when the cleanup failed).
set -eu

here=$(dirname "$0")
manifest=${1:-$here/volume-snapshot-backup.yaml}
namespace=${LIFEBOAT_NAMESPACE:-app}
snapshot=${LIFEBOAT_SNAPSHOT:-app-uploads-lifeboat}
clone=${LIFEBOAT_CLONE:-app-uploads-lifeboat-clone}
job=${LIFEBOAT_BACKUP_JOB:-lifeboat-backup-app-uploads}
# How long the storage system may take to cut the snapshot, and the backup Job to finish.
snapshot_timeout=${LIFEBOAT_SNAPSHOT_TIMEOUT:-30m}
backup_timeout_seconds=${LIFEBOAT_BACKUP_TIMEOUT_SECONDS:-22200}
poll_seconds=${LIFEBOAT_POLL_SECONDS:-10}

log() { echo "volume-snapshot-backup: $*" >&2; }
k() { kubectl --namespace "$namespace" "$@"; }
# Runs a command that may take long in the background and waits for it, so that SIGTERM (the pod being stopped)
# interrupts the wait and the cleanup still runs within the pod's grace period.
long() {
    "$@" &
    wait "$!"
}

[ -r "$manifest" ] || { log "cannot read the manifest $manifest"; exit 1; }

# Deletes what this script creates, the Job first (its pod holds the clone), then the clone, then the snapshot.
cleanup() {
    failed=0
    k delete job "$job" --ignore-not-found --cascade=foreground --wait=true || failed=1
    k delete persistentvolumeclaim "$clone" --ignore-not-found --wait=true || failed=1
    k delete volumesnapshot "$snapshot" --ignore-not-found --wait=true || failed=1
    if [ "$failed" -ne 0 ]; then
        log "cleanup FAILED: delete job/$job, persistentvolumeclaim/$clone and volumesnapshot/$snapshot in namespace $namespace by hand"
    fi
    return "$failed"
}

result=1
on_exit() {
    trap - EXIT INT TERM
    cleanup || result=1
    if [ "$result" -eq 0 ]; then
        log "backup completed; snapshot, clone and job deleted"
    else
        log "backup FAILED"
    fi
    exit "$result"
}

log "deleting leftovers of an earlier run, if any"
cleanup
trap on_exit EXIT
trap 'exit 1' INT TERM

log "1/3 VolumeSnapshot $snapshot"
k create --filename "$manifest" --selector app.kubernetes.io/component=volume-snapshot
long k wait volumesnapshot/"$snapshot" --for=jsonpath='{.status.readyToUse}'=true --timeout="$snapshot_timeout"

log "2/3 PersistentVolumeClaim $clone from the snapshot"
k create --filename "$manifest" --selector app.kubernetes.io/component=volume-clone

log "3/3 Job $job: lifeboatd run on the clone"
k create --filename "$manifest" --selector app.kubernetes.io/component=volume-backup
deadline=$(($(date +%s) + backup_timeout_seconds))
while :; do
    state=$(k get job "$job" --output \
        'jsonpath={range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')
    case " $state " in
    *" Complete "*)
        result=0
        break
        ;;
    *" Failed "*)
        log "job/$job failed"
        break
        ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        log "job/$job did not finish within ${backup_timeout_seconds}s"
        break
    fi
    long sleep "$poll_seconds"
done
# The backup's own log (the snapshot id, warnings about changed or skipped files) into this one's.
k logs job/"$job" --all-containers=true || log "could not read the log of job/$job"
