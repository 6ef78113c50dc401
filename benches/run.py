#!/usr/bin/env python3
"""Runs Cairn's store benchmarks and the baselines on the same data in the same run.

Usage: python3 benches/run.py [--runs 5] [--data /var/tmp/cairn-bench]

Prints a Markdown report (medians and same-run ratios) for BENCHMARKS.md. It installs restic
from Debian's packages when missing. Data sets are generated deterministically by
`cairn-bench gen` and kept in --data between runs.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def bench_bin():
    run(["cargo", "build", "--release", "-q", "-p", "cairn-bench"], cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "cairn-bench")


def ensure_restic():
    if shutil.which("restic"):
        return
    print("installing restic from Debian's packages", file=sys.stderr)
    run(["apt-get", "update", "-qq"])
    run(["apt-get", "install", "-y", "-qq", "restic"], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def dataset(binary, data, name, *args):
    path = os.path.join(data, name)
    if not os.path.isdir(path):
        run([binary, "gen", path, *args])
    return path


def cairn_json(binary, *args):
    out = run([binary, *args, "--json"], capture_output=True, text=True).stdout
    return json.loads(out)


def restic_backup(path, scratch):
    repo = tempfile.mkdtemp(prefix="restic-", dir=scratch)
    env = dict(os.environ, RESTIC_PASSWORD="cairn-bench", RESTIC_REPOSITORY=repo)
    try:
        run(["restic", "init", "-q"], env=env, stdout=subprocess.DEVNULL)
        started = time.perf_counter()
        run(["restic", "backup", "-q", path], env=env, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        size = int(run(["du", "-sb", repo], capture_output=True, text=True).stdout.split()[0])
        return seconds, size
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def disk_write(size_bytes, scratch):
    """Seconds to write `size_bytes` sequentially and fsync: the disk's ceiling for a store."""
    path = os.path.join(scratch, "dd-baseline")
    started = time.perf_counter()
    run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={max(1, size_bytes >> 20)}", "conv=fsync"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    os.remove(path)
    return seconds


def median(values):
    return statistics.median(values)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data", default="/var/tmp/cairn-bench")
    args = parser.parse_args()
    os.makedirs(args.data, exist_ok=True)
    ensure_restic()
    binary = bench_bin()
    mixed = dataset(binary, args.data, "mixed-1GiB", "--size", "1GiB", "--kind", "mixed")
    big = dataset(binary, args.data, "bigfile-4GiB", "--size", "4GiB", "--kind", "big-file")

    fs_runs, null_runs, restic_runs, dd_runs = [], [], [], []
    for idx in range(args.runs):
        print(f"run {idx + 1}/{args.runs}", file=sys.stderr)
        fs_runs.append(cairn_json(binary, "ingest", mixed, "--store-parent", args.data))
        null_runs.append(cairn_json(binary, "ingest", mixed, "--sink", "null"))
        restic_runs.append(restic_backup(mixed, args.data))
        dd_runs.append(disk_write(fs_runs[-1]["stored_bytes"], args.data))
    big_run = cairn_json(binary, "ingest", big, "--store-parent", args.data)
    edit = cairn_json(binary, "edit-cost", "--size", "64MiB", "--insert", "100", "--positions", "32")
    dirc = cairn_json(binary, "dir-change", "--entries", "100000")

    first = fs_runs[0]
    ingest_s = median([r["seconds"] for r in fs_runs])
    hash_s = median([r["hash_only_seconds"] for r in fs_runs])
    null_s = median([r["seconds"] for r in null_runs])
    null_hash_s = median([r["hash_only_seconds"] for r in null_runs])
    restic_s = median([s for s, _ in restic_runs])
    dd_s = median(dd_runs)
    same_run_dd = median([dd_runs[i] / fs_runs[i]["seconds"] for i in range(args.runs)])
    restic_size = restic_runs[0][1]
    same_run_hash_ratio = median([r["hash_only_seconds"] / r["seconds"] for r in fs_runs])
    same_run_null_ratio = median([r["hash_only_seconds"] / r["seconds"] for r in null_runs])
    same_run_restic = median([restic_runs[i][0] / fs_runs[i]["seconds"] for i in range(args.runs)])
    mib = first["bytes"] / 2**20

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    restic_version = run(["restic", "version"], capture_output=True, text=True).stdout.strip()
    print(f"""### Store ingest ({time.strftime('%Y-%m-%d')})

Command: `python3 benches/run.py --runs {args.runs}` · machine: {os.cpu_count()} cores ({cpu}),
{platform.system()} {platform.release()} · {restic_version} · medians of {args.runs} runs, baselines run
interleaved with Cairn on the same data.

Data: `cairn-bench gen --kind mixed --size 1GiB`: {first['files']} files, {mib:.0f} MiB
({first['blocks']} blocks, {first['unique_blocks']} unique).

| what | median | throughput | same-run ratio |
|---|---|---|---|
| BLAKE3 alone over the files (same thread pool) | {hash_s:.3} s | {mib / hash_s:.0f} MiB/s | 1.00 |
| Cairn chunk + hash (null sink) | {null_s:.3} s | {mib / null_s:.0f} MiB/s | {same_run_null_ratio:.2f}x of hash-only |
| Cairn ingest (chunk + hash + zstd + durable store) | {ingest_s:.3} s | {mib / ingest_s:.0f} MiB/s | {same_run_hash_ratio:.2f}x of hash-only |
| `dd conv=fsync` of as many bytes as Cairn stored (the disk's ceiling) | {dd_s:.3} s | {first['stored_bytes'] / 2**20 / dd_s:.0f} MiB/s written | Cairn at {same_run_dd:.2f}x of it |
| `restic backup` (fresh repo) | {restic_s:.3} s | {mib / restic_s:.0f} MiB/s | Cairn {same_run_restic:.2f}x faster |

Stored: Cairn {first['stored_bytes'] / 2**20:.0f} MiB (of which tree nodes {first['node_bytes'] / 2**20:.1f} MiB),
restic repository {restic_size / 2**20:.0f} MiB. Peak RSS of the Cairn ingest: {first['peak_rss_bytes'] / 2**20:.1f} MiB.

Large file: 4 GiB of random bytes ingested in {big_run['seconds']:.2f} s
({big_run['bytes'] / 2**20 / big_run['seconds']:.0f} MiB/s) with a peak RSS of
{big_run['peak_rss_bytes'] / 2**20:.1f} MiB.

Edit cost: a {edit['insert_bytes']}-byte insert into a 64 MiB file at {edit['positions']} positions adds
median {edit['new_bytes_median']} bytes ({edit['median_in_avg_blocks']:.2f} average blocks), mean
{edit['mean_in_avg_blocks']:.2f} average blocks, max {edit['new_bytes_max']} bytes.

Huge directory: {dirc['entries']} entries in {dirc['nodes']} nodes ({dirc['whole_dir_bytes']} bytes); new node
bytes after one change: edit {dirc['edit_new_bytes']}, insert {dirc['insert_new_bytes']}, remove
{dirc['remove_new_bytes']}; re-chunking the directory took {dirc['rechunk_seconds'] * 1000:.1f} ms.
""")
    print(f"raw: {json.dumps({'fs': fs_runs, 'null': null_runs, 'restic': restic_runs, 'big': big_run}, sort_keys=True)}", file=sys.stderr)


if __name__ == "__main__":
    main()
