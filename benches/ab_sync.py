#!/usr/bin/env python3
"""A/B of two server builds on the sync path: one `cairn` client, the two servers alternating.

Usage: python3 benches/ab_sync.py --a OLD_SERVER --b NEW_SERVER --cairn CAIRN [--rounds 6]
       [--data /var/tmp/cairn-sync-bench] [--small-files 20000]

Per round and server (the order alternates between rounds): a fresh server, device A uploads the
sync benchmark's data (`cairn sync start --once`), then device B downloads it. Scratch dirs are
removed only at the end (see run_sync.py: on these machines freshly freed inodes slow the next
run's file creation). Prints each run and the medians. Build the two servers first, e.g. with a
`git worktree` of the older commit sharing this tree's target dir.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_sync import make_dataset, run, sign_up, start_server, timed  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", required=True, help="the first cairn-server binary")
    parser.add_argument("--b", required=True, help="the second cairn-server binary")
    parser.add_argument("--cairn", required=True, help="the cairn client binary both use")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--data", default="/var/tmp/cairn-sync-bench")
    parser.add_argument("--small-files", type=int, default=20_000)
    args = parser.parse_args()
    servers = {"a": args.a, "b": args.b}
    dataset = os.path.join(args.data, "dataset")
    make_dataset(dataset, args.small_files)
    results = {name: {"up": [], "down": []} for name in servers}
    scratches = []
    try:
        for r in range(args.rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                scratch = tempfile.mkdtemp(prefix="cairn-ab-", dir="/var/tmp")
                scratches.append(scratch)
                source = os.path.join(scratch, "source")
                run(["cp", "-a", dataset, source])
                server, url = start_server(servers[name], scratch)
                try:
                    env_a, env_b = sign_up(args.cairn, url, scratch, "a", "b")
                    dest = os.path.join(scratch, "device-b")
                    os.makedirs(dest)
                    once = lambda folder: [args.cairn, "--json", "sync", "start", "--folder", folder, "--once"]
                    up, _, _ = timed(once(source), env=env_a)
                    down, _, _ = timed(once(dest), env=env_b)
                finally:
                    server.terminate()
                    server.wait()
                results[name]["up"].append(up)
                results[name]["down"].append(down)
                print(f"round {r} {name}: upload {up:.2f} s, download {down:.2f} s", flush=True)
    finally:
        for d in scratches:
            shutil.rmtree(d, ignore_errors=True)
    print("\n| server | upload A (median, s) | download B (median, s) | uploads | downloads |")
    print("|---|---|---|---|---|")
    for name, got in results.items():
        fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
        print(f"| {name} | {statistics.median(got['up']):.2f} | {statistics.median(got['down']):.2f} "
              f"| {fmt(got['up'])} | {fmt(got['down'])} |")


if __name__ == "__main__":
    main()
