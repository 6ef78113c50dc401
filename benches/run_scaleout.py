#!/usr/bin/env python3
"""Benchmarks the scale-out topology on one machine: two cairn-server instances sharing
PostgreSQL, Redis, RabbitMQ and an S3-compatible store (s3s-fs, else moto_server).

Usage: python3 benches/run_scaleout.py [--runs 3] [--samples 500] [--load-seconds 30]

- Cross-instance event latency: uploads through instance A, one at a time; the time until the
  `file_changed` event reaches a WebSocket client of A (local) and of B (through Redis). Blocks
  stay in each instance's directory here: s3s-fs's HTTP server leaves Nagle on (no
  TCP_NODELAY), so every S3 response with a body stalls ~40 ms on loopback and an upload
  would be timed mostly waiting on the test store.
- Throughput of 200 concurrent clients doing 4 KiB uploads: all on A (1 instance) vs spread
  over A and B (2 instances), alternating, same data set, same run.
Needs release binaries: cargo build --release -p cairn-server -p cairn-bench.
Prints Markdown for BENCHMARKS.md.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
PG = "postgres://postgres@127.0.0.1:5432"
S3_KEY, S3_SECRET = "cairn-bench-key", "cairn-bench-secret-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def wait_port(port, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} did not open")


def post_json(url, body, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"{}")


def bench(*args):
    out = subprocess.run([os.path.join(BIN, "cairn-bench"), *args, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


class Topology:
    """Two instances on a fresh database, Redis namespace and RabbitMQ prefix; blocks in s3s-fs
    (store="s3") or in each instance's own directory (store="local": only for runs where every
    commit goes through instance A)."""

    def __init__(self, tmp, store):
        self.tag = f"cairn_bench_{os.getpid()}_{store}"
        self.tmp = os.path.join(tmp, store)
        self.procs = []
        os.makedirs(self.tmp)
        subprocess.run(["psql", f"{PG}/postgres", "-qAtc", f"CREATE DATABASE {self.tag}"], check=True)
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": f"{PG}/{self.tag}",
            "REDIS_URL": "redis://127.0.0.1:6379",
            "CAIRN_REDIS_NAMESPACE": self.tag,
            "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/%2f",
            "CAIRN_RABBITMQ_PREFIX": self.tag,
            "JWT_SECRET": "scale-out-benchmark-secret-0123456789",
            "CAIRN_LOG": "warn",
        })
        if store == "s3":
            if not shutil.which("s3s-fs"):
                raise SystemExit("s3s-fs is missing: cargo install s3s-fs --version 0.14.1 --locked --features binary")
            s3_port = free_port()
            os.makedirs(os.path.join(self.tmp, "s3", "cairn"))
            self.procs.append(subprocess.Popen(["s3s-fs", "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", S3_KEY, "--secret-key", S3_SECRET, os.path.join(self.tmp, "s3")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(s3_port)
            env.update({"CAIRN_S3_URL": f"http://127.0.0.1:{s3_port}/cairn/{self.tag}", "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET})
        self.bases = []
        for name in ["a", "b"]:
            port = free_port()
            instance_env = dict(env, CAIRN_LISTEN=f"127.0.0.1:{port}", CAIRN_QUIC_LISTEN="off", CAIRN_DATA_DIR=os.path.join(self.tmp, name))
            log = open(os.path.join(self.tmp, f"{name}.log"), "w")
            self.procs.append(subprocess.Popen([os.path.join(BIN, "cairn-server")], env=instance_env, stdout=log, stderr=log))
            self.bases.append(f"http://127.0.0.1:{port}")
            wait_for(f"{self.bases[-1]}/ready")
        a, b = self.bases
        post_json(f"{a}/auth/register", {"username": "bench", "email": "bench@example.com", "password": "benchmark password"})
        self.token = post_json(f"{b}/auth/login", {"username": "bench", "password": "benchmark password"})["access_token"]
        os.environ["CAIRN_TOKEN"] = self.token
        print(f"two instances up (blocks: {store}; PostgreSQL, Redis, RabbitMQ)", flush=True)

    def close(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["psql", f"{PG}/postgres", "-qAtc", f"DROP DATABASE IF EXISTS {self.tag} WITH (FORCE)"], check=False)
        for queue in [f"{self.tag}.jobs", f"{self.tag}.jobs.retry", f"{self.tag}.jobs.dead"]:
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", queue], check=False, capture_output=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--load-seconds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=200)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="cairn-scaleout-")
    med = lambda rows, key: statistics.median(r[key] for r in rows)
    try:
        # Event latency: every upload goes through A, so each instance may keep its own blocks.
        topo = Topology(tmp, "local")
        try:
            a, b = topo.bases
            latency = []
            for run in range(args.runs):
                r = bench("event-latency", "--publish", a, "--subscribe", b, "--samples", str(args.samples))
                print(f"latency run {run + 1}: {r}", flush=True)
                latency.append(r)
        finally:
            topo.close()
        print()
        print(f"Event latency, {args.samples} uploads per run, medians of {args.runs} runs:")
        print("| event reaches | p50 | p99 |")
        print("|---|---|---|")
        print(f"| a client of the instance that committed (A) | {med(latency, 'local_p50_ms'):.2f} ms | {med(latency, 'local_p99_ms'):.2f} ms |")
        print(f"| a client of the other instance (B, through Redis) | {med(latency, 'remote_p50_ms'):.2f} ms | {med(latency, 'remote_p99_ms'):.2f} ms |")
        print(f"| the hop (B's arrival minus A's, per upload) | {med(latency, 'hop_p50_ms'):.2f} ms | {med(latency, 'hop_p99_ms'):.2f} ms |", flush=True)

        # Throughput: uploads through both instances need shared blocks.
        topo = Topology(tmp, "s3")
        try:
            a, b = topo.bases
            one, two = [], []
            for run in range(args.runs):
                for servers, into in [(a, one), (f"{a},{b}", two)]:
                    r = bench("http-load", "--server", servers, "--clients", str(args.clients), "--seconds", str(args.load_seconds), "--uploads-only")
                    print(f"load run {run + 1} on {r['instances']} instance(s): {r}", flush=True)
                    into.append(r)
        finally:
            topo.close()
        print()
        print(f"{args.clients} clients, 4 KiB uploads for {args.load_seconds} s, medians of {args.runs} runs:")
        print("| instances | uploads/s | errors | upload p50 | upload p99 |")
        print("|---|---|---|---|---|")
        for label, rows in [("1 (A)", one), ("2 (A + B)", two)]:
            print(f"| {label} | {med(rows, 'uploads_per_second'):.0f} | {max(r['errors'] for r in rows)} | {med(rows, 'upload_p50_ms'):.0f} ms | {med(rows, 'upload_p99_ms'):.0f} ms |")
        print(f"\n2 vs 1 instance: {med(two, 'uploads_per_second') / med(one, 'uploads_per_second'):.2f}x uploads/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
