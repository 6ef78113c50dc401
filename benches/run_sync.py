#!/usr/bin/env python3
"""Benchmarks a Cairn sync over loopback against rsync (daemon mode) and restic on the same data.

Usage: python3 benches/run_sync.py [--runs 3] [--data /var/tmp/cairn-sync-bench] [--small-files 20000]

Data: one 500 MiB file of random bytes and N small files (random sizes, 524 MiB in all).
Per run, with a fresh server and fresh client state:
- initial sync: `cairn sync start --once` on device A (upload) then on device B (download);
  rsync -a to an rsync daemon on loopback; restic backup into a fresh local repository.
- incremental: 1% of the small files edited and 100 bytes inserted in the middle of the big file;
  Cairn A then B (bytes of blocks sent/received from the pass summary) vs rsync (bytes sent).
- no change: a second `--once` on device A with nothing changed.
- client peak RSS of each `cairn` process (from wait4).
Prints Markdown for BENCHMARKS.md.
"""

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "benchmark password"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def timed(cmd, env=None, cwd=None):
    """Runs cmd; returns (seconds, stdout, peak RSS MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out = proc.stdout.read()
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed: {err.strip()}")
    return seconds, out, usage.ru_maxrss / 1024


def make_dataset(path, small_files, seed=1):
    marker = os.path.join(path, ".complete")
    if os.path.exists(marker):
        return
    shutil.rmtree(path, ignore_errors=True)
    rng = random.Random(seed)
    os.makedirs(path)
    with open(os.path.join(path, "big.bin"), "wb") as f:
        for _ in range(500):
            f.write(rng.randbytes(1 << 20))
    budget = 524 << 20
    mean = budget // small_files
    for i in range(small_files):
        d = os.path.join(path, "small", f"d{i // 500:03d}")
        os.makedirs(d, exist_ok=True)
        size = rng.randint(1, 2 * mean)
        with open(os.path.join(d, f"f{i:05d}.dat"), "wb") as f:
            f.write(rng.randbytes(size))
    open(marker, "w").close()


def edit_dataset(path, small_files, seed):
    rng = random.Random(seed)
    for i in rng.sample(range(small_files), small_files // 100):
        p = os.path.join(path, "small", f"d{i // 500:03d}", f"f{i:05d}.dat")
        with open(p, "r+b") as f:
            f.write(rng.randbytes(16))
    big = os.path.join(path, "big.bin")
    with open(big, "rb") as f:
        data = f.read()
    middle = len(data) // 2
    with open(big, "wb") as f:
        f.write(data[:middle] + rng.randbytes(100) + data[middle:])


def rsync_daemon(dest, scratch):
    port = free_port()
    conf = os.path.join(scratch, "rsyncd.conf")
    with open(conf, "w") as f:
        f.write(f"use chroot = no\n[bench]\npath = {dest}\nread only = no\n")
    proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--port={port}", f"--config={conf}"])
    time.sleep(0.5)
    return proc, f"rsync://127.0.0.1:{port}/bench/"


def rsync_sent_bytes(stats):
    for line in stats.splitlines():
        if line.startswith("Total bytes sent:"):
            return int(line.split(":")[1].strip().replace(",", ""))
    return 0


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", default="/var/tmp/cairn-sync-bench")
    parser.add_argument("--small-files", type=int, default=20_000)
    args = parser.parse_args()
    run(["cargo", "build", "--release", "-q", "-p", "cairn-server", "-p", "cairn-cli"], cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    server_bin = os.path.join(target, "release", "cairn-server")
    cairn_bin = os.path.join(target, "release", "cairn")
    if not shutil.which("restic"):
        run(["sudo", "-n", "apt-get", "install", "-y", "-q", "restic"] if os.geteuid() != 0 else ["apt-get", "install", "-y", "-q", "restic"])
    results = {}

    def record(key, value):
        results.setdefault(key, []).append(value)

    for r in range(args.runs):
        scratch = tempfile.mkdtemp(prefix="cairn-sync-bench-", dir="/var/tmp")
        source = os.path.join(scratch, "source")
        dataset = os.path.join(args.data, "dataset")
        make_dataset(dataset, args.small_files)
        run(["cp", "-a", dataset, source])
        port = free_port()
        server = subprocess.Popen(
            [server_bin, "--listen", f"127.0.0.1:{port}", "--quic-listen", f"127.0.0.1:{free_port()}",
             "--data-dir", os.path.join(scratch, "server"), "--quota", str(1 << 40)],
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(f"{url}/health")
            env_a = dict(os.environ, CAIRN_CONFIG_DIR=os.path.join(scratch, "a"), CAIRN_PASSWORD=PASSWORD)
            env_b = dict(os.environ, CAIRN_CONFIG_DIR=os.path.join(scratch, "b"), CAIRN_PASSWORD=PASSWORD)
            run([cairn_bin, "user", "register", "--server", url, "--username", "bench", "--email", "b@example.com"], env=env_a, capture_output=True)
            run([cairn_bin, "user", "login", "--server", url, "--username", "bench"], env=env_b, capture_output=True)
            dest_b = os.path.join(scratch, "device-b")
            os.makedirs(dest_b)
            once = lambda folder: [cairn_bin, "--json", "sync", "start", "--folder", folder, "--once"]
            up, out, rss_a = timed(once(source), env=env_a)
            down, out_b, rss_b = timed(once(dest_b), env=env_b)
            record("cairn initial upload (A)", up)
            record("cairn initial download (B)", down)
            record("cairn initial A→B", up + down)
            record("cairn client peak RSS MiB", max(rss_a, rss_b))
            quiet, out, _ = timed(once(source), env=env_a)
            record("cairn no-change pass", quiet)
            # rsync daemon and restic on the same data.
            rsync_dest = os.path.join(scratch, "rsync-dest")
            os.makedirs(rsync_dest)
            daemon, rsync_url = rsync_daemon(rsync_dest, scratch)
            try:
                seconds, _, _ = timed(["rsync", "-a", source + "/", rsync_url])
                record("rsync initial", seconds)
                repo = os.path.join(scratch, "restic-repo")
                renv = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=repo)
                run(["restic", "init", "-q"], env=renv, capture_output=True)
                seconds, _, _ = timed(["restic", "backup", "-q", source], env=renv)
                record("restic backup initial", seconds)
                # Incremental.
                edit_dataset(source, args.small_files, seed=100 + r)
                up, out, _ = timed(once(source), env=env_a)
                summary_a = json.loads(out.strip().splitlines()[-1])
                down, out, _ = timed(once(dest_b), env=env_b)
                summary_b = json.loads(out.strip().splitlines()[-1])
                record("cairn incremental A→B", up + down)
                record("cairn incremental bytes up", summary_a["bytes_up"])
                record("cairn incremental bytes down", summary_b["bytes_down"])
                seconds, out, _ = timed(["rsync", "-a", "--stats", source + "/", rsync_url])
                record("rsync incremental", seconds)
                record("rsync incremental bytes sent", rsync_sent_bytes(out))
                seconds, _, _ = timed(["restic", "backup", "-q", source], env=renv)
                record("restic backup incremental", seconds)
                same = subprocess.run(["diff", "-r", "-q", source, dest_b], capture_output=True)
                record("cairn replicas identical", 1 if same.returncode == 0 else 0)
            finally:
                daemon.terminate()
                daemon.wait()
        finally:
            server.terminate()
            server.wait()
            shutil.rmtree(scratch, ignore_errors=True)

    m = {k: median(v) for k, v in results.items()}
    print(f"Runs: {args.runs}; data: 500 MiB file + {args.small_files} small files (1 GiB); loopback; medians.\n")
    print("| measure | Cairn | rsync (daemon) | restic backup | Cairn vs rsync |")
    print("|---|---|---|---|---|")
    print(f"| initial sync A→B (s) | {m['cairn initial A→B']:.2f} (up {m['cairn initial upload (A)']:.2f} + down {m['cairn initial download (B)']:.2f}) | {m['rsync initial']:.2f} | {m['restic backup initial']:.2f} | {m['rsync initial'] / m['cairn initial A→B']:.2f}× |")
    print(f"| incremental A→B (s) | {m['cairn incremental A→B']:.2f} | {m['rsync incremental']:.2f} | {m['restic backup incremental']:.2f} | {m['rsync incremental'] / m['cairn incremental A→B']:.2f}× |")
    print(f"| incremental bytes | up {m['cairn incremental bytes up'] / 2**20:.1f} MiB, down {m['cairn incremental bytes down'] / 2**20:.1f} MiB | sent {m['rsync incremental bytes sent'] / 2**20:.1f} MiB | | |")
    print(f"| no-change pass (s, whole `cairn` process) | {m['cairn no-change pass']:.2f} | | | |")
    print(f"| client peak RSS (MiB) | {m['cairn client peak RSS MiB']:.0f} | | | |")
    print(f"| replicas identical after incremental | {int(m['cairn replicas identical'])} of 1 | | | |")
    print("\nRaw:", json.dumps(results))


if __name__ == "__main__":
    main()
