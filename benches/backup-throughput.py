#!/usr/bin/env python3
"""Lifeboat backup throughput benchmark (Python 3.11, standard library only).

Compares, on one throw-away PostgreSQL 15 cluster filled by pgbench, in the same run and database:

  a. pg_dump -Fc -Z0 -d bench > /dev/null                       (the floor: the dump alone)
  b. pg_dump -Fc -Z0 -d bench | zstd -3 -q | age -r R > FILE    (the same chain as a shell pipeline)
  c. lifeboatd --config CFG run bench                           (the real thing, into an fs store)

each --runs times (interleaved a, b, c, a, b, c, ... after one warm-up pg_dump), and prints to stdout a
Markdown table (median and min wall time, payload MB/s, peak RSS, CPU), the target checks (lifeboatd wall
<= 1.15 x pg_dump wall, lifeboatd peak RSS < 100 MiB), the compression ratio from the newest manifest.json,
and machine facts, ready to paste into docs/performance.md. Progress goes to stderr.

    python3 benches/backup-throughput.py [--size-mb 1000] [--runs 3] [--zstd-threads 0] [--data pgbench|mixed]

Run it as root (the cluster then runs as the `postgres` user through runuser) or as a user that may run
initdb. Everything it creates lives in one /tmp/lifeboat-bench-* dir, removed at exit (also on Ctrl-C and
SIGTERM; only a SIGKILL of this script leaves it, and a running cluster, behind).

How things are measured:
- wall: time.monotonic() around the whole command, from spawn until it is reaped.
- peak RSS: VmHWM from /proc/PID/status of each process of the command's tree, sampled every 20 ms
  (VmHWM is the kernel's own high-water mark, so sampling only misses growth in a process's last 20 ms).
  wait4()'s ru_maxrss is not used: on Linux it also counts the forked Python parent's RSS from before
  exec, a ~18 MiB floor that hides small processes.
- client CPU: user+sys from wait4() of the command (it includes every child the command waited for);
  per-process CPU is sampled from /proc/PID/stat. server CPU: the PostgreSQL cluster's processes.
See benches/README.md and docs/performance.md.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PG_BIN_DEFAULT = "/usr/lib/postgresql/15/bin"
MB = 1_000_000  # throughput is in decimal MB/s of payload
MIB = 1024 * 1024
SAMPLE_INTERVAL = 0.020  # VmHWM sampling of known processes
SCAN_INTERVAL = 0.100  # rescans of /proc for new descendants (costs ~1-2 ms, so less often)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- cleanup

_cleanups: list = []  # callables, run last-in first-out, each at most once
_current_child: subprocess.Popen | None = None


def run_cleanups() -> None:
    global _current_child
    if _current_child is not None and _current_child.returncode is None:
        try:
            os.killpg(_current_child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _current_child = None
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            log(f"cleanup step failed: {e}")


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------- /proc helpers


def proc_status(pid: int) -> tuple[str, int] | None:
    """(Name, VmHWM in KiB) of a live process, None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    name, hwm = "?", None
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else "?"
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return None if hwm is None else (name, hwm)


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 = state, 1 = ppid, 11 = utime, ...)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rfind(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = proc_stat(int(entry))
        if st is not None:
            out.setdefault(int(st[1]), []).append(int(entry))
    return out


def descendants(root: int, cmap: dict[int, list[int]] | None = None) -> list[int]:
    cmap = children_map() if cmap is None else cmap
    out, todo = [], [root]
    while todo:
        for c in cmap.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def tree_cpu_seconds(root: int) -> float:
    """CPU of `root` (incl. its reaped children) plus its live descendants, in seconds."""
    total = 0
    st = proc_stat(root)
    if st is None:
        return 0.0
    total += sum(int(x) for x in st[11:15])  # utime stime cutime cstime
    for pid in descendants(root):
        s = proc_stat(pid)
        if s is not None:
            total += int(s[11]) + int(s[12])
    return total / CLK_TCK


class Sampler(threading.Thread):
    """Samples a process and its descendants until stopped: each pid's peak VmHWM and last-seen CPU time.

    VmHWM only grows, so a 20 ms period loses at most the growth of a process's last 20 ms; CPU times
    are the last sample before exit, so they can miss up to 20 ms (per thread) at the end.
    """

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root = root
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (name, VmHWM KiB)
        self.cpu: dict[int, float] = {}  # pid -> utime+stime seconds, last seen
        self.known: list[int] = [root]
        self.stop_event = threading.Event()

    def run(self) -> None:
        last_scan = 0.0
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now - last_scan >= SCAN_INTERVAL:
                last_scan = now
                for pid in descendants(self.root):
                    if pid not in self.known:
                        self.known.append(pid)
            for pid in self.known:
                s = proc_status(pid)
                if s is None:
                    continue
                prev = self.peaks.get(pid, (s[0], 0))
                self.peaks[pid] = (s[0], max(prev[1], s[1]))
                st = proc_stat(pid)
                if st is not None:
                    self.cpu[pid] = (int(st[11]) + int(st[12])) / CLK_TCK
            self.stop_event.wait(SAMPLE_INTERVAL)

    def peak_of(self, pid: int) -> int:
        return self.peaks.get(pid, ("?", 0))[1]

    def by_name(self) -> dict[str, tuple[int, float]]:
        """Descendants (not the root) by process name: (largest VmHWM KiB, summed CPU s)."""
        out: dict[str, tuple[int, float]] = {}
        for pid, (name, hwm) in self.peaks.items():
            if pid == self.root:
                continue
            rss, cpu = out.get(name, (0, 0.0))
            out[name] = (max(rss, hwm), cpu + self.cpu.get(pid, 0.0))
        return out


# ---------------------------------------------------------------- measured runs


@dataclass
class Run:
    wall: float  # seconds, time.monotonic around spawn .. reaped
    client_cpu: float  # user+sys of the process and every descendant it waited for (wait4)
    server_cpu: float  # CPU the PostgreSQL cluster (postmaster tree) used meanwhile
    # wait4 ru_maxrss: the largest process of the tree, but on Linux it also counts the forked Python
    # parent's RSS from before exec (~18 MiB floor), so it is kept in --json only, not reported.
    tree_max_rss_kib: int
    own_rss_kib: int  # sampled VmHWM of the spawned process itself
    own_cpu: float = 0.0  # sampled CPU of the spawned process itself
    # sampled descendants by name: [peak VmHWM KiB, CPU s]
    children: dict[str, tuple[int, float]] = field(default_factory=dict)


def measure(cmd: list[str], env: dict, postmaster: int, stdout, stderr_path: Path) -> Run:
    global _current_child
    server_before = tree_cpu_seconds(postmaster)
    with open(stderr_path, "wb") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=err, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        _current_child = p
        sampler = Sampler(p.pid)
        sampler.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        _current_child = None
        sampler.stop_event.set()
        sampler.join()
    time.sleep(0.3)  # let the postmaster reap the finished backend, so its CPU lands in cutime
    server_after = tree_cpu_seconds(postmaster)
    if p.returncode != 0:
        tail = stderr_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{shlex.join(cmd)} exited with {p.returncode}:\n{tail}")
    return Run(
        wall=wall,
        client_cpu=ru.ru_utime + ru.ru_stime,
        server_cpu=max(0.0, server_after - server_before),
        tree_max_rss_kib=ru.ru_maxrss,
        own_rss_kib=sampler.peak_of(p.pid),
        own_cpu=sampler.cpu.get(p.pid, 0.0),
        children=sampler.by_name(),
    )


# ---------------------------------------------------------------- setup steps


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """subprocess.run that raises RuntimeError with the command's stderr (if captured) on failure."""
    r = subprocess.run(cmd, **kw)
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace") if isinstance(r.stderr, bytes) else (r.stderr or "")
        raise RuntimeError(f"{shlex.join(cmd)} exited with {r.returncode}" + (f":\n{err.strip()}" if err else ""))
    return r


def build_binaries(skip: bool) -> Path:
    if not skip:
        log("building release binaries: cargo build --release --locked --bins")
        sh(["cargo", "build", "--release", "--locked", "--bins"], cwd=REPO, stdout=sys.stderr)
    meta = sh(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO,
              capture_output=True, text=True)
    bindir = Path(json.loads(meta.stdout)["target_directory"]) / "release"
    for b in ("lifeboatd", "lifeboat"):
        if not (bindir / b).is_file():
            raise RuntimeError(f"{bindir / b} not found (build failed, or run without --no-build)")
    return bindir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throw-away PostgreSQL cluster: socket in its own dir, TCP on 127.0.0.1:port, fsync off."""

    def __init__(self, pgbin: Path, base: Path):
        self.pgbin = pgbin
        self.dir = base / "pg"
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_pg: list[str] = []
        self.started = False
        self.dir.mkdir()
        if os.geteuid() == 0:
            os.chmod(base, 0o711)  # postgres must reach its dir through base
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_pg = ["runuser", "-u", "postgres", "--"]

    def start(self) -> None:
        log(f"initdb + start PostgreSQL ({self.pgbin}) in {self.dir}, port {self.port}")
        sh(self.as_pg + [str(self.pgbin / "initdb"), "-D", str(self.data), "-U", "postgres",
                         "--auth=trust", "-E", "UTF8", "--no-sync"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c autovacuum=off "
                "-c shared_buffers=128MB -c max_wal_size=4GB")
        self.started = True
        sh(self.as_pg + [str(self.pgbin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                         "-w", "-o", opts, "start"], stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.started:
            self.started = False
            subprocess.run(self.as_pg + [str(self.pgbin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                         "-w", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def conn_args(self, db: str = "postgres") -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db]

    def psql(self, sql: str, db: str = "postgres") -> str:
        return sh([str(self.pgbin / "psql"), "-X", "-qAt", *self.conn_args(db), "-c", sql],
                  capture_output=True, text=True, env=clean_env()).stdout.strip()


def clean_env() -> dict:
    """The environment without libpq variables, so only explicit arguments pick the server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


MIXED_ACCOUNTS_SQL = """
INSERT INTO pgbench_branches (bid, bbalance) SELECT b, 0 FROM generate_series(1, {scale}) b;
INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT t, (t - 1) / 10 + 1, 0 FROM generate_series(1, {scale} * 10) t;
INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
SELECT a, (a - 1) / 100000 + 1, (random() * 200000)::int - 100000,
       md5(random()::text)
       || ' status=' || (ARRAY['pending', 'paid', 'shipped', 'delivered', 'returned'])[1 + floor(random() * 5)::int]
       || ' region=' || (ARRAY['eu-central-1', 'us-east-1', 'ap-south-1'])[1 + floor(random() * 3)::int]
  FROM generate_series(1, {scale} * 100000) a;
"""


def load_pgbench(cl: Cluster, size_mb: int, data: str) -> tuple[int, int]:
    scale = max(1, round(size_mb / 16))
    cl.psql("CREATE DATABASE bench")
    pgbench = [str(cl.pgbin / "pgbench"), "-q", "-i", "-s", str(scale),
               "-h", "127.0.0.1", "-p", str(cl.port), "-U", "postgres"]
    quiet = {"env": clean_env(), "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    t0 = time.monotonic()
    if data == "pgbench":
        log(f"pgbench -i -s {scale} -I dtGvp (server-side generation, ~{scale * 16} MB)")
        sh(pgbench + ["-I", "dtGvp", "bench"], **quiet)
    else:
        log(f"pgbench -i -s {scale} -I dt, mixed filler text by SQL, then -I vp (~{scale * 16} MB)")
        sh(pgbench + ["-I", "dt", "bench"], **quiet)
        cl.psql(MIXED_ACCOUNTS_SQL.format(scale=scale), db="bench")
        sh(pgbench + ["-I", "vp", "bench"], **quiet)
    cl.psql("CHECKPOINT")
    size = int(cl.psql("SELECT pg_database_size('bench')"))
    log(f"loaded in {time.monotonic() - t0:.1f} s; database size {size / MB:.0f} MB")
    return scale, size


def write_config(path: Path, recipient: str, store: Path, port: int, pgbin: Path, threads: int) -> None:
    path.write_text(f"""# Written by benches/backup-throughput.py
[daemon]
pg_bin_dirs = [{json.dumps(str(pgbin))}]

[encryption]
recipients = [{json.dumps(recipient)}]

[stores.local]
kind = "fs"
path = {json.dumps(str(store))}
lock_mode = "compliance"
retention = "1d"

[jobs.bench]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:{port}/bench"
databases = ["bench"]
schedule = "0 3 * * *"
store = "local"
compression_threads = {threads}
""")


def newest_manifest(store: Path) -> dict:
    manifests = sorted(store.glob("snapshots/bench/*/manifest.json"))  # ids sort by time
    if not manifests:
        raise RuntimeError(f"no manifest.json under {store}/snapshots/bench")
    return json.loads(manifests[-1].read_text())


def version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return f"git {rev}{' + uncommitted changes' if dirty else ''}" if rev else "no git"
    except OSError:
        return "no git"


def machine_facts(cl: Cluster, bindir: Path) -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / MIB:.1f} GiB"
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "postgresql": cl.psql("SHOW server_version"),
        "pg_dump": version_of([str(cl.pgbin / "pg_dump"), "--version"]),
        "lifeboatd": version_of([str(bindir / "lifeboatd"), "--version"]),
        "zstd": next((w for w in version_of(["zstd", "--version"]).split() if w.startswith("v")), "?").rstrip(","),
        "git": git_rev(),
        "age": version_of(["age", "--version"]),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


# ---------------------------------------------------------------- report


def fmt_mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def summarize(runs: list[Run]) -> dict:
    walls = [r.wall for r in runs]
    return {
        "median_wall": statistics.median(walls),
        "min_wall": min(walls),
        "median_client_cpu": statistics.median(r.client_cpu for r in runs),
        "median_server_cpu": statistics.median(r.server_cpu for r in runs),
        "own_rss_kib": max(r.own_rss_kib for r in runs),
        "median_own_cpu": statistics.median(r.own_cpu for r in runs),
        # per child name: (largest peak RSS over the runs, median CPU s)
        "children": {n: (max(r.children.get(n, (0, 0.0))[0] for r in runs),
                         statistics.median(r.children.get(n, (0, 0.0))[1] for r in runs))
                     for n in sorted({n for r in runs for n in r.children})},
    }


def cpu_line(payload: int, a: dict, b: dict, c: dict) -> str:
    def cpu(summary: dict, name: str) -> float:
        return summary["children"].get(name, (0, 0.0))[1]

    def rate(seconds: float) -> str:
        return f"{payload / MB / seconds:.0f} MB/CPU-s" if seconds > 0 else "n/a"

    zstd, own = cpu(b, "zstd"), c["median_own_cpu"]
    need = payload / MB / (1.15 * a["median_wall"])
    return (f"- CPU by process (medians, sampled): pipeline: pg_dump {cpu(b, 'pg_dump'):.2f} s, zstd {zstd:.2f} s "
            f"({rate(zstd)}), age {cpu(b, 'age'):.2f} s; lifeboatd: its own process {own:.2f} s ({rate(own)}: "
            f"zstd + age + two SHA-256 + copies), its pg_dump {cpu(c, 'pg_dump'):.2f} s; pg_dump alone "
            f"{a['median_client_cpu']:.2f} s plus {a['median_server_cpu']:.2f} s in the server. To finish within "
            f"1.15× of pg_dump alone, lifeboatd has to encode at ≥ {need:.0f} MB/s.")


def report(args, facts, scale, db_size, payload, stored, pipe_bytes, results, zstd_flags) -> str:
    a, b, c = (summarize(results[k]) for k in ("pg_dump", "pipeline", "lifeboatd"))
    pipe_procs = {n: k for n, (k, _) in b["children"].items() if n != "bash"}
    pipe_max = max(pipe_procs.items(), key=lambda kv: kv[1], default=("?", 0))
    rows = [
        ("`pg_dump -Fc -Z0 > /dev/null`", a, a["own_rss_kib"]),
        (f"`pg_dump -Fc -Z0 \\| zstd -3 -q{zstd_flags} \\| age -r … > file`", b, pipe_max[1]),
        (f"`lifeboatd run bench` (fs store, compression_threads = {args.zstd_threads})", c, c["own_rss_kib"]),
    ]
    ratio_med = c["median_wall"] / a["median_wall"]
    ratio_min = c["min_wall"] / a["min_wall"]
    all_p, all_s = stored["all"]
    db_p, db_s = stored["db"]
    data = ("pgbench's own rows (blank filler)" if args.data == "pgbench"
            else "pgbench schema, mixed filler text (`--data mixed`)")
    out = [
        f"Payload: database `bench`, pgbench scale {scale}, {data}, {db_size / MB:,.0f} MB on disk; its "
        f"`pg_dump -Fc -Z0` archive is {payload / MB:,.1f} MB ({payload:,} bytes, from the manifest). "
        f"{args.runs} run(s) of each command, interleaved, after one warm-up pg_dump; MB = 10^6 bytes.",
        "",
        "| Command | median wall s | min wall s | MB/s (payload, median) | peak RSS MiB | "
        "client CPU s (median) | server CPU s (median) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s, rss in rows:
        out.append(f"| {label} | {s['median_wall']:.2f} | {s['min_wall']:.2f} | "
                   f"{payload / MB / s['median_wall']:.0f} | {fmt_mib(rss)} | "
                   f"{s['median_client_cpu']:.2f} | {s['median_server_cpu']:.2f} |")
    life_children = ", ".join(f"{n} {fmt_mib(k)}" for n, (k, _) in c["children"].items()) or "none seen"
    out += [
        "",
        "Peak RSS is VmHWM sampled every 20 ms, the maximum over the runs, of: pg_dump row: the pg_dump "
        f"process; pipeline row: its largest single process ({pipe_max[0]}; all: "
        + ", ".join(f"{n} {fmt_mib(k)}" for n, k in pipe_procs.items())
        + f"); lifeboatd row: the lifeboatd process alone (its children, sampled separately: {life_children}). "
        "Client CPU is user+sys of the command and every process it waited for (wait4); server CPU is what the "
        "PostgreSQL cluster used meanwhile (lifeboatd's includes its exact row counts, `count(*)` per table).",
        "",
        f"- lifeboatd wall / pg_dump wall: **{ratio_med:.2f}×** (medians), {ratio_min:.2f}× (minimums); "
        "target ≤ 1.15×: " + ("met." if ratio_med <= 1.15 else f"**missed** (by {ratio_med - 1.15:.2f}×)."),
        f"- lifeboatd peak RSS: **{fmt_mib(c['own_rss_kib'])} MiB**; target < 100 MiB: "
        + ("met." if c["own_rss_kib"] < 100 * 1024 else "**missed**."),
        f"- Stored / payload (newest manifest.json, objects[]): {all_s:,} / {all_p:,} bytes = "
        f"**{all_s / all_p * 100:.2f} %** (compression ratio {all_p / all_s:.1f}:1); bench.dump alone "
        f"{db_s / db_p * 100:.2f} %. The shell pipeline's file is {pipe_bytes:,} bytes "
        f"({pipe_bytes / db_s * 100:.1f} % of lifeboatd's bench.dump object).",
        cpu_line(payload, a, b, c),
        "",
        f"Machine: {facts['nproc']} CPUs ({facts['usable_cpus']} usable), {facts['cpu']}, {facts['memory']} RAM, "
        f"Linux {facts['kernel']}; PostgreSQL {facts['postgresql']}; {facts['pg_dump']}; {facts['lifeboatd']} "
        f"({facts['git']}); zstd {facts['zstd']}; age {facts['age']}; {facts['date']}; load average "
        f"{' '.join(facts['loadavg_start'])} at start, {' '.join(facts['loadavg_end'])} at end.",
        f"Command: `python3 benches/backup-throughput.py --size-mb {args.size_mb} --runs {args.runs} "
        f"--zstd-threads {args.zstd_threads}" + ("" if args.data == "pgbench" else f" --data {args.data}") + "`",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Lifeboat backup throughput benchmark: pg_dump alone vs. a pg_dump|zstd|age shell "
                    "pipeline vs. lifeboatd run, on a throw-away PostgreSQL cluster loaded by pgbench.")
    ap.add_argument("--size-mb", type=int, default=1000,
                    help="approximate database size in MB (pgbench scale = size/16; default 1000)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each command (default 3)")
    ap.add_argument("--zstd-threads", type=int, default=0,
                    help="lifeboatd compression_threads, and zstd -T for the pipeline (0 = one "
                         "compression thread: lifeboatd compresses inline, the zstd CLI uses its default -T1)")
    ap.add_argument("--data", choices=("pgbench", "mixed"), default="pgbench",
                    help="pgbench: pgbench's own rows (blank filler: the dump compresses >100:1, zstd has little "
                         "to do); mixed: same schema and size, filler = random hex + a few repeated words "
                         "(compresses ~3.5:1, closer to real data). Default pgbench")
    ap.add_argument("--pg-bin", default=PG_BIN_DEFAULT, help=f"PostgreSQL binaries (default {PG_BIN_DEFAULT})")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build; use the existing release binaries")
    ap.add_argument("--json", metavar="FILE", help="also write every raw measurement to FILE")
    args = ap.parse_args()
    if args.runs < 1 or args.size_mb < 1 or not 0 <= args.zstd_threads <= 64:
        ap.error("--runs and --size-mb must be ≥ 1, --zstd-threads 0..64")
    for tool in ("zstd", "age", "bash"):
        if shutil.which(tool) is None:
            ap.error(f"`{tool}` is not on PATH")
    pgbin = Path(args.pg_bin)
    if not (pgbin / "initdb").is_file():
        ap.error(f"no initdb in {pgbin}")

    atexit.register(run_cleanups)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    try:
        bindir = build_binaries(args.no_build)
        base = Path(tempfile.mkdtemp(prefix="lifeboat-bench-", dir="/tmp"))
        _cleanups.append(lambda: shutil.rmtree(base, ignore_errors=True))
        cl = Cluster(pgbin, base)
        _cleanups.append(cl.stop)
        cl.start()
        scale, db_size = load_pgbench(cl, args.size_mb, args.data)

        work = base / "work"
        work.mkdir()
        store = work / "store"
        key = work / "identity.txt"
        recipient = sh([str(bindir / "lifeboat"), "keygen", "--output", str(key)],
                       capture_output=True, text=True).stdout.strip().splitlines()[-1]
        if not recipient.startswith("age1"):
            raise RuntimeError(f"lifeboat keygen printed {recipient!r}, expected an age1… public key")
        cfg = work / "lifeboat.toml"
        write_config(cfg, recipient, store, cl.port, pgbin, args.zstd_threads)
        pipe_out = work / "pipeline.dump.zst.age"

        env = clean_env()
        env.setdefault("RUST_LOG", "warn")
        pg_dump = [str(pgbin / "pg_dump"), "-Fc", "-Z0", *cl.conn_args("bench")]
        zstd_flags = "" if args.zstd_threads == 0 else f" -T{args.zstd_threads}"
        pipeline = (f"{shlex.join(pg_dump)} | zstd -3 -q{zstd_flags} | age -r {shlex.quote(recipient)} "
                    f"> {shlex.quote(str(pipe_out))}")
        commands = {
            "pg_dump": (pg_dump, subprocess.DEVNULL),
            "pipeline": (["bash", "-o", "pipefail", "-c", pipeline], subprocess.DEVNULL),
            "lifeboatd": ([str(bindir / "lifeboatd"), "--config", str(cfg), "run", "bench"], subprocess.DEVNULL),
        }
        facts = machine_facts(cl, bindir)
        pm = cl.postmaster_pid()

        log("warm-up: one pg_dump (not counted)")
        measure(pg_dump, env, pm, subprocess.DEVNULL, work / "warmup.err")
        results: dict[str, list[Run]] = {k: [] for k in commands}
        for i in range(1, args.runs + 1):
            for name, (cmd, out) in commands.items():
                r = measure(cmd, env, pm, out, work / f"{name}.{i}.err")
                results[name].append(r)
                log(f"run {i}/{args.runs} {name:9s} wall {r.wall:6.2f} s  client CPU {r.client_cpu:6.2f} s  "
                    f"server CPU {r.server_cpu:5.2f} s  own RSS {fmt_mib(r.own_rss_kib)} MiB  "
                    "children " + ", ".join(f"{n} {fmt_mib(k)} MiB {c:.2f} s" for n, (k, c) in r.children.items()))
        facts["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]

        manifest = newest_manifest(store)
        objs = manifest["objects"]
        db_objs = [o for o in objs if o.get("kind") == "pg_dump_custom" and o.get("database") == "bench"]
        if len(db_objs) != 1:
            raise RuntimeError(f"expected one pg_dump_custom object for bench in the manifest, got {objs}")
        payload = db_objs[0]["payload_bytes"]
        stored = {
            "all": (sum(o["payload_bytes"] for o in objs), sum(o["stored_bytes"] for o in objs)),
            "db": (payload, db_objs[0]["stored_bytes"]),
        }
        pipe_bytes = pipe_out.stat().st_size

        text = report(args, facts, scale, db_size, payload, stored, pipe_bytes, results, zstd_flags)
        print(text)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "args": vars(args), "facts": facts, "pgbench_scale": scale, "database_bytes": db_size,
                "payload_bytes": payload, "stored": stored, "pipeline_file_bytes": pipe_bytes,
                "runs": {k: [r.__dict__ for r in v] for k, v in results.items()},
            }, indent=2))
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(f"error: {e}")
        return 1
    except (KeyboardInterrupt, SystemExit):
        log("interrupted: stopping the cluster and removing the temp dir")
        raise
    finally:
        run_cleanups()


if __name__ == "__main__":
    sys.exit(main())
