#!/usr/bin/env python3
"""Benchmarks cairn-server over loopback against plain baselines in the same run.

Usage: python3 benches/run_server.py [--runs 3] [--data /var/tmp/cairn-bench] [--load-seconds 60]

- REST upload of a 1 GiB file (curl -F) vs `cairn-bench ingest` of the same file.
- REST download (curl) vs curl of the same file from a plain file server (python3 -m http.server).
- 200 concurrent clients doing heartbeats + 4 KiB uploads: errors, p50/p99, server RSS.
- 100,000 small files uploaded, then GET /files/ latency (first page, and all pages).
Prints Markdown for BENCHMARKS.md.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def post_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"{}")


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def curl_seconds(args):
    out = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", *args], capture_output=True, text=True).stdout
    code, seconds = out.split()
    if not code.startswith("2"):
        raise SystemExit(f"curl {args[-1]} answered {code}")
    return float(seconds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", default="/var/tmp/cairn-bench")
    parser.add_argument("--load-seconds", type=int, default=60)
    parser.add_argument("--fill-files", type=int, default=100_000)
    parser.add_argument("--transfers-only", action="store_true", help="skip the load and the fill")
    parser.add_argument("--server-bin", help="a cairn-server binary to measure instead of this tree's release build")
    args = parser.parse_args()
    run(["cargo", "build", "--release", "-q", "-p", "cairn-server", "-p", "cairn-bench"], cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    server_bin = args.server_bin or os.path.join(target, "release", "cairn-server")
    bench_bin = os.path.join(target, "release", "cairn-bench")
    os.makedirs(args.data, exist_ok=True)
    # One file per run, each with its own seed: a second upload of the same bytes would be
    # deduplicated by the server and measure nothing.
    big_dirs = []
    for idx in range(args.runs):
        big_dir = os.path.join(args.data, f"bigfile-1GiB-seed{idx + 1}")
        if not os.path.isdir(big_dir):
            run([bench_bin, "gen", big_dir, "--size", "1GiB", "--kind", "big-file", "--seed", str(idx + 1)])
        big_dirs.append(big_dir)

    scratch = tempfile.mkdtemp(prefix="cairn-server-bench-", dir=args.data)
    port, plain_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([server_bin, "--data-dir", os.path.join(scratch, "data"), "--listen", f"127.0.0.1:{port}",
                               "--quota", str(1 << 40)], stderr=subprocess.DEVNULL)
    plain = subprocess.Popen([sys.executable, "-m", "http.server", str(plain_port), "--bind", "127.0.0.1", "--directory", args.data],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"{base}/health")
        wait_for(f"http://127.0.0.1:{plain_port}/")
        post_json(f"{base}/auth/register", {"username": "bench", "email": "bench@example.com", "password": "benchmark password"})
        token = post_json(f"{base}/auth/login", {"username": "bench", "password": "benchmark password"})["access_token"]
        auth = ["-H", f"Authorization: Bearer {token}"]

        ingest, upload, download, plain_dl = [], [], [], []
        for idx in range(args.runs):
            print(f"transfer run {idx + 1}/{args.runs}", file=sys.stderr)
            big_dir = big_dirs[idx]
            big = os.path.join(big_dir, "big.bin")
            report = json.loads(run([bench_bin, "ingest", big_dir, "--json", "--store-parent", scratch], capture_output=True, text=True).stdout)
            ingest.append(report["seconds"])
            upload.append(curl_seconds([*auth, "-F", f"path=big-{idx}.bin", "-F", f"file=@{big}", f"{base}/files/upload"]))
            files = json.loads(urllib.request.urlopen(urllib.request.Request(f"{base}/files/", headers={"Authorization": f"Bearer {token}"})).read())
            file_id = [f["id"] for f in files["files"] if f["path"] == f"big-{idx}.bin"][0]
            download.append(curl_seconds([*auth, f"{base}/files/{file_id}/download"]))
            plain_dl.append(curl_seconds([f"http://127.0.0.1:{plain_port}/{os.path.basename(big_dir)}/big.bin"]))
        size_mib = os.path.getsize(big) / 2**20
        rss_transfers = peak_rss_mib(server.pid)
        # Each phase's raw figures go to stderr as it ends, so a late failure loses nothing.
        print(f"transfers: ingest {ingest} upload {upload} download {download} plain {plain_dl} "
              f"rss {rss_transfers:.0f} MiB", file=sys.stderr)

        if args.transfers_only:
            ratio_up = statistics.median([ingest[i] / upload[i] for i in range(args.runs)])
            ratio_down = statistics.median([plain_dl[i] / download[i] for i in range(args.runs)])
            print(f"upload {statistics.median(upload):.2f} s ({ratio_up:.2f}x of ingest "
                  f"{statistics.median(ingest):.2f} s); download {statistics.median(download):.2f} s "
                  f"({ratio_down:.2f}x of plain {statistics.median(plain_dl):.2f} s)")
            return
        print("load", file=sys.stderr)
        env = dict(os.environ, CAIRN_TOKEN=token)
        load = json.loads(run([bench_bin, "http-load", "--server", base, "--clients", "200", "--seconds", str(args.load_seconds), "--json"],
                              capture_output=True, text=True, env=env).stdout)
        rss_load = peak_rss_mib(server.pid)
        print(f"load: {json.dumps(load)} rss {rss_load:.0f} MiB", file=sys.stderr)
        print("fill", file=sys.stderr)
        fill_env = dict(env, CAIRN_PASSWORD="benchmark password")
        fill = json.loads(run([bench_bin, "http-fill", "--server", base, "--files", str(args.fill_files), "--json",
                               "--username", "bench"],
                              capture_output=True, text=True, env=fill_env).stdout)
        rss_fill = peak_rss_mib(server.pid)
        print(f"fill: {json.dumps(fill)} rss {rss_fill:.0f} MiB", file=sys.stderr)
    finally:
        server.terminate()
        plain.terminate()
        server.wait()
        plain.wait()
        shutil.rmtree(scratch, ignore_errors=True)

    med = statistics.median
    ratio_up = med([ingest[i] / upload[i] for i in range(args.runs)])
    ratio_down = med([plain_dl[i] / download[i] for i in range(args.runs)])
    print(f"""### Server over loopback ({time.strftime('%Y-%m-%d')})

Command: `python3 benches/run_server.py --runs {args.runs}` · same machine as above · medians of {args.runs} runs.

| what | median | throughput | same-run ratio |
|---|---|---|---|
| `cairn-bench ingest` of a 1 GiB random file | {med(ingest):.2f} s | {size_mib / med(ingest):.0f} MiB/s | 1.00 |
| REST upload of the same file (`curl -F`) | {med(upload):.2f} s | {size_mib / med(upload):.0f} MiB/s | {ratio_up:.2f}x of ingest |
| REST download (`curl`) | {med(download):.2f} s | {size_mib / med(download):.0f} MiB/s | {ratio_down:.2f}x of the plain server |
| the same file from `python3 -m http.server` (`curl`) | {med(plain_dl):.2f} s | {size_mib / med(plain_dl):.0f} MiB/s | 1.00 |

Load: {load['clients']} concurrent clients for {load['seconds']:.0f} s, each alternating a heartbeat and a
4 KiB upload: {load['requests']} requests ({load['requests_per_second']:.0f}/s), **{load['errors']} errors**;
heartbeat p50 {load['heartbeat_p50_ms']:.1f} ms / p99 {load['heartbeat_p99_ms']:.1f} ms; upload p50
{load['upload_p50_ms']:.1f} ms / p99 {load['upload_p99_ms']:.1f} ms.

Listing: {fill['files']} small files uploaded at {fill['uploads_per_second']:.0f}/s ({fill['errors']} errors); `GET /files/?limit=1000`
(first page) {fill['first_page_ms']:.1f} ms; all {fill['listed']} files in {fill['pages']} pages of 10,000:
{fill['full_listing_ms']:.0f} ms.

Server peak RSS: {rss_transfers:.0f} MiB after the 1 GiB transfers, {rss_load:.0f} MiB after the load, {rss_fill:.0f} MiB after
the 100k-file fill.
""")


if __name__ == "__main__":
    main()
