#!/usr/bin/env python3
"""Benchmarks `cairn backup` against `restic backup` on the same data in the same run.

Usage: python3 benches/run_backup.py [--runs 3] [--data /var/tmp/cairn-backup-bench] [--small-files 20000]

Two datasets: N small files (random sizes, mean 16 KiB, in 40 directories) and one 1 GiB file
of random bytes. Per run and dataset, with a fresh server (loopback, release build) and a fresh
restic repository on the same disk:
- first backup: `cairn backup DIR --remote NAME` vs `restic backup DIR`;
- second backup after 1% changed (1% of the small files rewritten; for the big file, 1% of its
  bytes overwritten in ten places): both again;
- unchanged backup: both a third time with nothing changed.
Prints Markdown for BENCHMARKS.md: medians and the restic/Cairn time ratio (above 1: Cairn is
faster).
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_sync import ROOT, PASSWORD, free_port, median, run, timed, wait_for  # noqa: E402


def make_small(path, count, seed=1):
    marker = os.path.join(path, ".complete")
    if os.path.exists(marker):
        return
    shutil.rmtree(path, ignore_errors=True)
    rng = random.Random(seed)
    for i in range(count):
        d = os.path.join(path, f"d{i % 40:02d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05d}.dat"), "wb") as f:
            f.write(rng.randbytes(rng.randint(1, 32 << 10)))
    open(marker, "w").close()


def make_big(path, seed=2):
    marker = os.path.join(path, ".complete")
    if os.path.exists(marker):
        return
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    rng = random.Random(seed)
    with open(os.path.join(path, "big.bin"), "wb") as f:
        for _ in range(1024):
            f.write(rng.randbytes(1 << 20))
    open(marker, "w").close()


def change_small(path, count, seed):
    rng = random.Random(seed)
    for i in rng.sample(range(count), count // 100):
        p = os.path.join(path, f"d{i % 40:02d}", f"f{i:05d}.dat")
        with open(p, "wb") as f:
            f.write(rng.randbytes(rng.randint(1, 32 << 10)))


def change_big(path, seed):
    rng = random.Random(seed)
    big = os.path.join(path, "big.bin")
    size = os.path.getsize(big)
    with open(big, "r+b") as f:
        for _ in range(10):
            f.seek(rng.randrange(size - (1 << 20)))
            f.write(rng.randbytes((size // 100) // 10))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", default="/var/tmp/cairn-backup-bench")
    parser.add_argument("--small-files", type=int, default=20_000)
    args = parser.parse_args()
    run(["cargo", "build", "--release", "-q", "-p", "cairn-server", "-p", "cairn-cli"], cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    server_bin = os.path.join(target, "release", "cairn-server")
    cairn_bin = os.path.join(target, "release", "cairn")
    if not shutil.which("restic"):
        raise SystemExit("restic is not installed (apt-get install restic)")
    make_small(os.path.join(args.data, "small"), args.small_files)
    make_big(os.path.join(args.data, "big"))
    results = {}

    def record(key, value):
        results.setdefault(key, []).append(value)

    for r in range(args.runs):
        for name, change in (("small", lambda p: change_small(p, args.small_files, 100 + r)),
                             ("big", lambda p: change_big(p, 200 + r))):
            scratch = tempfile.mkdtemp(prefix="cairn-backup-bench-", dir="/var/tmp")
            source = os.path.join(scratch, "source")
            run(["cp", "-a", os.path.join(args.data, name), source])
            os.remove(os.path.join(source, ".complete"))
            port = free_port()
            server = subprocess.Popen(
                [server_bin, "--listen", f"127.0.0.1:{port}", "--quic-listen", f"127.0.0.1:{free_port()}",
                 "--data-dir", os.path.join(scratch, "server"), "--quota", str(1 << 40)],
                stderr=subprocess.DEVNULL,
            )
            try:
                url = f"http://127.0.0.1:{port}"
                wait_for(f"{url}/health")
                env = dict(os.environ, CAIRN_CONFIG_DIR=os.path.join(scratch, "config"), CAIRN_PASSWORD=PASSWORD)
                run([cairn_bin, "user", "register", "--server", url, "--username", "bench", "--email", "b@example.com"],
                    env=env, capture_output=True)
                repo = os.path.join(scratch, "restic-repo")
                renv = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=repo)
                run(["restic", "init", "-q"], env=renv, capture_output=True)
                backup = [cairn_bin, "--json", "-q", "backup", source, "--remote", "bench"]
                restic = ["restic", "backup", "-q", source]
                for phase in ("first", "1% changed", "unchanged"):
                    if phase == "1% changed":
                        change(source)
                    seconds, out, rss = timed(backup, env=env)
                    report = json.loads(out)
                    record(f"{name} {phase} cairn", seconds)
                    record(f"{name} {phase} cairn MiB sent", report["bytes_sent"] / 2**20)
                    record(f"{name} {phase} cairn RSS", rss)
                    seconds, _, _ = timed(restic, env=renv)
                    record(f"{name} {phase} restic", seconds)
            finally:
                server.terminate()
                server.wait()
                shutil.rmtree(scratch, ignore_errors=True)

    m = {k: median(v) for k, v in results.items()}
    print(f"Runs: {args.runs}; loopback server, release build; medians (seconds).\n")
    print("| data | backup | cairn backup (s) | sent (MiB) | peak RSS (MiB) | restic backup (s) | restic / cairn |")
    print("|---|---|---|---|---|---|---|")
    for name, label in (("small", f"{args.small_files} small files"), ("big", "one 1 GiB file")):
        for phase in ("first", "1% changed", "unchanged"):
            c = m[f"{name} {phase} cairn"]
            rs = m[f"{name} {phase} restic"]
            print(f"| {label} | {phase} | {c:.2f} | {m[f'{name} {phase} cairn MiB sent']:.1f} | "
                  f"{m[f'{name} {phase} cairn RSS']:.0f} | {rs:.2f} | {rs / c:.2f}× |")
    print("\nRaw:", json.dumps(results))


if __name__ == "__main__":
    main()
