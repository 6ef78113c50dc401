#!/usr/bin/env python3
"""Measures a no-change `cairn sync start --once` over a folder of many small files.

Usage: python3 benches/run_nochange.py [--files 100000] [--passes 3]

One server on loopback (release build), one device: a first pass uploads the folder (time and
peak RSS reported), then `--passes` passes with nothing changed, each timed as a whole process
(start-up, state load, scan against the scan cache, one head request, exit).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_sync import PASSWORD, ROOT, run, start_server, timed  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    run(["cargo", "build", "--release", "-q", "-p", "cairn-server", "-p", "cairn-cli"], cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    server_bin = os.path.join(target, "release", "cairn-server")
    cairn_bin = os.path.join(target, "release", "cairn")
    scratch = tempfile.mkdtemp(prefix="cairn-nochange-", dir="/var/tmp")
    folder = os.path.join(scratch, "folder")
    per_dir = 1000
    for i in range(args.files):
        d = os.path.join(folder, f"d{i // per_dir:03d}")
        if i % per_dir == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i:06d}.txt"), "w") as f:
            f.write(f"file {i}\n")
    server, url = start_server(server_bin, scratch)
    try:
        env = dict(os.environ, CAIRN_CONFIG_DIR=os.path.join(scratch, "config"), CAIRN_PASSWORD=PASSWORD)
        run([cairn_bin, "user", "register", "--server", url, "--username", "bench", "--email", "b@example.com"],
            env=env, capture_output=True)
        once = [cairn_bin, "--json", "sync", "start", "--folder", folder, "--once"]
        first, _, first_rss = timed(once, env=env)
        quiet = [timed(once, env=env) for _ in range(args.passes)]
        times = [q[0] for q in quiet]
        print(f"{args.files} files, loopback, release build.\n")
        print("| measure | result |\n|---|---|")
        print(f"| first pass (upload) | {first:.2f} s, peak RSS {first_rss:.0f} MiB |")
        print(f"| no-change pass, median of {args.passes} | {statistics.median(times):.3f} s, peak RSS "
              f"{max(q[2] for q in quiet):.0f} MiB |")
        print(f"\nRaw no-change passes (s): {[round(t, 3) for t in times]}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
