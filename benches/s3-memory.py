#!/usr/bin/env python3
"""Peak RSS and wall time of `lifeboatd run` uploading to a real S3 server (Ceph RGW) with Object Lock.

Complements backup-throughput.py (which uses the fs store): with S3 the uploader holds up to `parts_in_flight`
parts besides the one being filled and the one queued, so this is where the memory bound is tested.

    tests/infra/ceph-rgw-up.sh /tmp/ceph && set -a && . /tmp/ceph/env && set +a
    python3 benches/s3-memory.py [--size-mb 1000] [--data mixed] [--zstd-threads 1] [--runs 2]

Needs boto3 (installed with moto) to create the locked bucket.
"""
import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("bt", HERE / "backup-throughput.py")
bt = importlib.util.module_from_spec(spec)
sys.modules["bt"] = bt
spec.loader.exec_module(bt)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--data", choices=("pgbench", "mixed"), default="mixed")
    ap.add_argument("--zstd-threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    endpoint = os.environ.get("LIFEBOAT_TEST_CEPH_ENDPOINT")
    if not endpoint:
        ap.error("start Ceph first: tests/infra/ceph-rgw-up.sh DIR, then `set -a; . DIR/env; set +a`")
    import boto3  # noqa: PLC0415 (only needed here)

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=os.environ["LIFEBOAT_TEST_CEPH_ACCESS_KEY"],
                      aws_secret_access_key=os.environ["LIFEBOAT_TEST_CEPH_SECRET_KEY"])
    bucket = f"bench-{int(time.time())}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)

    bt.atexit.register(bt.run_cleanups)
    bindir = bt.build_binaries(args.no_build)
    base = Path(tempfile.mkdtemp(prefix="lifeboat-bench-", dir="/tmp"))
    bt._cleanups.append(lambda: shutil.rmtree(base, ignore_errors=True))
    pgbin = Path(bt.PG_BIN_DEFAULT)
    cl = bt.Cluster(pgbin, base)
    bt._cleanups.append(cl.stop)
    cl.start()
    bt.load_pgbench(cl, args.size_mb, args.data)
    key = base / "identity.txt"
    recipient = bt.sh([str(bindir / "lifeboat"), "keygen", "--output", str(key)],
                      capture_output=True, text=True).stdout.strip().splitlines()[-1]
    cfg = base / "lifeboat.toml"
    cfg.write_text(f"""[daemon]
pg_bin_dirs = ["{pgbin}"]
[encryption]
recipients = ["{recipient}"]
[stores.ceph]
kind = "s3"
endpoint = "{endpoint}"
region = "us-east-1"
bucket = "{bucket}"
path_style = true
lock_mode = "compliance"
retention = "1d"
access_key_id_env = "LIFEBOAT_TEST_CEPH_ACCESS_KEY"
secret_access_key_env = "LIFEBOAT_TEST_CEPH_SECRET_KEY"
[jobs.bench]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:{cl.port}/bench"
databases = ["bench"]
schedule = "0 3 * * *"
store = "ceph"
compression_threads = {args.zstd_threads}
""")
    env = bt.clean_env()
    env.update({k: v for k, v in os.environ.items() if k.startswith("LIFEBOAT_TEST_CEPH_")})
    env.setdefault("RUST_LOG", "warn")
    pm = cl.postmaster_pid()
    print("| run | wall s | lifeboatd peak RSS MiB |\n|---:|---:|---:|")
    for i in range(1, args.runs + 1):
        r = bt.measure([str(bindir / "lifeboatd"), "--config", str(cfg), "run", "bench"], env, pm,
                       bt.subprocess.DEVNULL, base / f"run{i}.err")
        print(f"| {i} | {r.wall:.2f} | {bt.fmt_mib(r.own_rss_kib)} |")
    objs = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    print(f"\n{len(objs)} objects in bucket {bucket}; largest {max(o['Size'] for o in objs) / 2**20:.1f} MiB; "
          f"data {args.data}, {args.size_mb} MB, compression_threads {args.zstd_threads}, part_size 16 MiB, "
          f"parts_in_flight 2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
