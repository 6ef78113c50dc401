#!/usr/bin/env python3
"""Measures the sync daemon: change→visible latency between two daemons, and idle cost.

Usage: python3 benches/run_daemon.py [--changes 20] [--files 100000] [--idle-seconds 120]

- Latency: two `cairn sync start` daemons (devices A and B, one server on loopback, release
  build). A file is written in A's folder; the time until B's copy has the new content is one
  sample (A's watcher → pass → commit; the server's push to B → pass → download). Writes are spaced so
  each is a separate change.
- Idle: a daemon on a folder of N small files (after its first pass): CPU time used and RSS
  over an idle period (the safety-net rescan runs every 10 minutes while the folder is watched).
Prints Markdown for BENCHMARKS.md.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_sync import ROOT, PASSWORD, free_port, run, wait_for  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def status(cairn, env):
    import json
    out = subprocess.run([cairn, "--json", "sync", "status"], env=env, capture_output=True, text=True)
    return json.loads(out.stdout)


def wait_idle(cairn, env, seconds=600):
    deadline = time.time() + seconds
    while time.time() < deadline:
        s = status(cairn, env)
        if s["running"] and s["status"]["state"] == "idle":
            return
        time.sleep(0.5)
    raise SystemExit("the daemon did not become idle")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--idle-seconds", type=int, default=120)
    args = parser.parse_args()
    run(["cargo", "build", "--release", "-q", "-p", "cairn-server", "-p", "cairn-cli"], cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    server_bin = os.path.join(target, "release", "cairn-server")
    cairn = os.path.join(target, "release", "cairn")
    scratch = tempfile.mkdtemp(prefix="cairn-daemon-bench-", dir="/var/tmp")
    port = free_port()
    server = subprocess.Popen(
        [server_bin, "--listen", f"127.0.0.1:{port}", "--quic-listen", f"127.0.0.1:{free_port()}",
         "--data-dir", os.path.join(scratch, "server"), "--quota", str(1 << 40)],
        stderr=subprocess.DEVNULL,
    )
    daemons = []
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/health")
        envs = {}
        for name in ("a", "b", "c"):
            envs[name] = dict(os.environ, CAIRN_CONFIG_DIR=os.path.join(scratch, name), CAIRN_PASSWORD=PASSWORD)
            os.makedirs(os.path.join(scratch, f"folder-{name}"))
        run([cairn, "user", "register", "--server", url, "--username", "bench", "--email", "b@example.com"],
            env=envs["a"], capture_output=True)
        for name in ("b", "c"):
            run([cairn, "user", "login", "--server", url, "--username", "bench"], env=envs[name], capture_output=True)

        def start(name, remote):
            proc = subprocess.Popen(
                [cairn, "sync", "start", "--folder", os.path.join(scratch, f"folder-{name}"), "--remote", remote],
                env=envs[name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            daemons.append(proc)
            return proc

        start("a", "default")
        start("b", "default")
        wait_idle(cairn, envs["a"])
        wait_idle(cairn, envs["b"])
        samples = []
        for i in range(args.changes):
            content = f"change {i} at {time.time()}".encode()
            source = os.path.join(scratch, "folder-a", f"note-{i}.txt")
            target = os.path.join(scratch, "folder-b", f"note-{i}.txt")
            started = time.perf_counter()
            with open(source, "wb") as f:
                f.write(content)
            while True:
                try:
                    with open(target, "rb") as f:
                        if f.read() == content:
                            break
                except FileNotFoundError:
                    pass
                if time.perf_counter() - started > 60:
                    raise SystemExit(f"change {i} never arrived")
                time.sleep(0.005)
            samples.append(time.perf_counter() - started)
            time.sleep(1.5)
        samples.sort()
        p50 = statistics.median(samples)
        p90 = samples[int(len(samples) * 0.9) - 1]

        # Idle cost with many watched files (its own folder on the server).
        folder = os.path.join(scratch, "folder-c")
        for i in range(args.files):
            d = os.path.join(folder, f"d{i // 1000:03d}")
            if i % 1000 == 0:
                os.makedirs(d)
            with open(os.path.join(d, f"f{i:06d}.txt"), "wb") as f:
                f.write(b"x" * (i % 100))
        first = time.perf_counter()
        proc = start("c", "many")
        wait_idle(cairn, envs["c"], seconds=3600)
        first = time.perf_counter() - first
        time.sleep(2)
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(args.idle_seconds)
        cpu1, t1 = cpu_seconds(proc.pid), time.perf_counter()
        idle_cpu = 100 * (cpu1 - cpu0) / (t1 - t0)
        rss = rss_mib(proc.pid)

        print(f"Loopback server, release build; {args.changes} changes, {args.files} watched files.\n")
        print("| measure | result | goal |")
        print("|---|---|---|")
        print(f"| change on A → visible on B, p50 | {p50 * 1000:.0f} ms | < 1 s |")
        print(f"| change on A → visible on B, p90 | {p90 * 1000:.0f} ms | |")
        print(f"| first pass of {args.files} files (upload) | {first:.1f} s | |")
        print(f"| idle CPU, {args.files} watched files, over {args.idle_seconds} s | {idle_cpu:.2f}% of one core | < 1% |")
        print(f"| idle RSS, {args.files} watched files | {rss:.0f} MiB | < 100 MB |")
        print("\nRaw latencies (s):", [round(s, 3) for s in samples])
    finally:
        for proc in daemons:
            proc.terminate()
        for proc in daemons:
            proc.wait()
        server.terminate()
        server.wait()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
