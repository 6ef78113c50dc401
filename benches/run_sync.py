#!/usr/bin/env python3
"""Benchmarks a Cairn sync over loopback against rsync (daemon mode), restic and Syncthing on the same data.

Usage: python3 benches/run_sync.py [--runs 3] [--data /var/tmp/cairn-sync-bench] [--small-files 20000] [--no-syncthing]

Data: one 500 MiB file of random bytes and N small files (random sizes, 524 MiB in all).
Per run, with a fresh server and fresh client state:
- initial sync: `cairn sync start --once` on device A (upload) then on device B (download);
  and, with a second server and fresh devices, both running as Syncthing's daemons do: B's
  daemon (`cairn sync start`) and A's `--once` started together, timed until B's daemon reports
  a pass at A's last commit with nothing left over (A commits finished files during a long upload);
  rsync -a to an rsync daemon on loopback; restic backup into a fresh local repository;
  Syncthing (benches/syncthing_peer.py): two daemons on loopback sharing a copy of the data, timed
  from starting both until device B holds the whole folder.
- incremental: 1% of the small files edited and 100 bytes inserted in the middle of the big file;
  Cairn A then B (bytes of blocks sent/received from the pass summary) vs rsync (bytes sent) vs
  Syncthing (A rescans over REST until B holds the changes; BEP bytes counted on B's connection).
- no change: a second `--once` on device A with nothing changed (Syncthing: a rescan of the running A).
- client peak RSS of each `cairn` process (from wait4); of each syncthing daemon (VmHWM).
Prints Markdown for BENCHMARKS.md.
"""

import argparse
import atexit
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

import syncthing_peer

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
    """Runs cmd; returns (seconds, stdout, peak RSS MiB).

    Output goes to temporary files, not pipes: a `--json` sync prints a line per file, and a
    pipe nobody reads while waiting would fill up and stall the process.
    """
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out_f, stderr=err_f, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out_f.seek(0)
        err_f.seek(0)
        out = out_f.read()
        err = err_f.read()
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
    """Edits the data in place; returns the paths changed, relative to path."""
    rng = random.Random(seed)
    changed = []
    for i in rng.sample(range(small_files), small_files // 100):
        rel = os.path.join("small", f"d{i // 500:03d}", f"f{i:05d}.dat")
        with open(os.path.join(path, rel), "r+b") as f:
            f.write(rng.randbytes(16))
        changed.append(rel)
    # The insert is streamed through a temp file: reading the 500 MiB file into this process
    # would raise its high-water RSS, which every child forked afterwards reports as its own
    # (Linux copies it into the child's ru_maxrss), and the Cairn RSS figures with it.
    big = os.path.join(path, "big.bin")
    middle = os.path.getsize(big) // 2
    temp = big + ".edit"
    with open(big, "rb") as src, open(temp, "wb") as dst:
        remaining = middle
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            dst.write(chunk)
            remaining -= len(chunk)
        dst.write(rng.randbytes(100))
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(temp, big)
    return changed + ["big.bin"]


def rsync_daemon(dest, scratch):
    port = free_port()
    conf = os.path.join(scratch, "rsyncd.conf")
    with open(conf, "w") as f:
        # Run as root, the daemon would otherwise write as nobody into root's directory.
        ids = "uid = root\ngid = root\n" if os.geteuid() == 0 else ""
        f.write(f"use chroot = no\n{ids}[bench]\npath = {dest}\nread only = no\n")
    proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--port={port}", f"--config={conf}"])
    time.sleep(0.5)
    return proc, f"rsync://127.0.0.1:{port}/bench/"


def rsync_sent_bytes(stats):
    for line in stats.splitlines():
        if line.startswith("Total bytes sent:"):
            return int(line.split(":")[1].strip().replace(",", ""))
    return 0


def start_server(server_bin, scratch, name="server"):
    """A fresh server on loopback (data in scratch/NAME, 1 TiB quota), once it answers; (process, URL)."""
    port = free_port()
    server = subprocess.Popen(
        [server_bin, "--listen", f"127.0.0.1:{port}", "--quic-listen", f"127.0.0.1:{free_port()}",
         "--data-dir", os.path.join(scratch, name), "--quota", str(1 << 40)],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/health")
    return server, url


def both_running(cairn_bin, env_a, env_b, source, dest, timeout=600):
    """Device B's daemon (`cairn sync start`, no --once) and device A's `--once` started together,
    as Syncthing's two daemons are; seconds until B's daemon reports a pass at A's last commit (or
    later) with nothing left for the next pass (the caller then compares the trees). A commits the files it has finished during a long upload, so B downloads
    while A still uploads. Returns (seconds, A's seconds)."""
    with tempfile.TemporaryFile("w+") as b_out, tempfile.TemporaryFile("w+") as a_out:
        start = time.perf_counter()
        daemon = subprocess.Popen([cairn_bin, "--json", "sync", "start", "--folder", dest], env=env_b,
                                  stdout=b_out, stderr=subprocess.DEVNULL, text=True)
        try:
            a = subprocess.Popen([cairn_bin, "--json", "sync", "start", "--folder", source, "--once"],
                                 env=env_a, stdout=a_out, stderr=subprocess.PIPE, text=True)
            target = None
            a_seconds = None
            offset = 0
            pending = ""
            seen = []  # B's passes in sync: (seq, when the line was read)
            while True:
                now = time.perf_counter() - start
                if now > timeout:
                    raise SystemExit("both running: device B did not catch up")
                if target is None and a.poll() is not None:
                    a_seconds = now
                    if a.returncode != 0:
                        raise SystemExit(f"both running: device A failed: {a.stderr.read().strip()}")
                    a_out.seek(0)
                    target = json.loads(a_out.read().strip().splitlines()[-1])["seq"]
                if daemon.poll() is not None:
                    raise SystemExit("both running: device B's daemon exited")
                b_out.seek(offset)
                chunk = b_out.read()
                offset = b_out.tell()
                lines = (pending + chunk).split("\n")
                pending = lines.pop()
                for line in lines:
                    event = json.loads(line) if line.startswith("{") else {}
                    if event.get("kind") == "missed":
                        raise SystemExit("both running: device B's feed dropped lines")
                    # A pass that downloaded reports in_sync false (its changes are confirmed
                    # by the next pass); one at A's commit with nothing left over is the end.
                    if event.get("kind") == "summary" and event.get("problems") == 0:
                        seen.append((event["seq"], now))
                if target is not None:
                    done = [when for seq, when in seen if seq >= target]
                    if done:
                        return done[0], a_seconds
                time.sleep(0.01)
        finally:
            daemon.terminate()
            daemon.wait()


def sign_up(cairn_bin, url, scratch, a, b):
    """Registers user `bench` on the server at url from device A and logs device B in as it;
    the devices' config dirs are scratch/a and scratch/b. Returns their environments."""
    env_a = dict(os.environ, CAIRN_CONFIG_DIR=os.path.join(scratch, a), CAIRN_PASSWORD=PASSWORD)
    env_b = dict(os.environ, CAIRN_CONFIG_DIR=os.path.join(scratch, b), CAIRN_PASSWORD=PASSWORD)
    run([cairn_bin, "user", "register", "--server", url, "--username", "bench", "--email", "b@example.com"], env=env_a, capture_output=True)
    run([cairn_bin, "user", "login", "--server", url, "--username", "bench"], env=env_b, capture_output=True)
    return env_a, env_b


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", default="/var/tmp/cairn-sync-bench")
    parser.add_argument("--small-files", type=int, default=20_000)
    parser.add_argument("--syncthing", action=argparse.BooleanOptionalAction, default=True,
                        help="also time two Syncthing daemons on loopback (benches/syncthing_peer.py)")
    args = parser.parse_args()
    run(["cargo", "build", "--release", "-q", "-p", "cairn-server", "-p", "cairn-cli"], cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    server_bin = os.path.join(target, "release", "cairn-server")
    cairn_bin = os.path.join(target, "release", "cairn")
    if not shutil.which("restic"):
        run(["sudo", "-n", "apt-get", "install", "-y", "-q", "restic"] if os.geteuid() != 0 else ["apt-get", "install", "-y", "-q", "restic"])
    if args.syncthing:
        syncthing_peer.ensure_syncthing()
    results = {}
    # Scratch dirs are removed only after the last run. On an ext4 without a journal (these
    # machines), the kernel skips inodes freed in the last 1-5 minutes when it allocates new
    # ones, so creating 20,000 files right after a run's 100,000 were deleted cost up to ~10 s
    # of system time, charged to whichever tool ran first: Cairn's download.
    scratches = []
    atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in scratches])

    def record(key, value):
        results.setdefault(key, []).append(value)

    for r in range(args.runs):
        scratch = tempfile.mkdtemp(prefix="cairn-sync-bench-", dir="/var/tmp")
        scratches.append(scratch)
        source = os.path.join(scratch, "source")
        dataset = os.path.join(args.data, "dataset")
        make_dataset(dataset, args.small_files)
        run(["cp", "-a", dataset, source])
        server, url = start_server(server_bin, scratch)
        try:
            env_a, env_b = sign_up(cairn_bin, url, scratch, "a", "b")
            dest_b = os.path.join(scratch, "device-b")
            os.makedirs(dest_b)
            once = lambda folder: [cairn_bin, "--json", "sync", "start", "--folder", folder, "--once"]
            up, out, rss_a = timed(once(source), env=env_a)
            down, out_b, rss_b = timed(once(dest_b), env=env_b)
            record("cairn initial upload (A)", up)
            record("cairn initial download (B)", down)
            record("cairn initial A→B", up + down)
            record("cairn client peak RSS MiB", max(rss_a, rss_b))
            record("cairn initial upload peak RSS MiB (A)", rss_a)
            record("cairn initial download peak RSS MiB (B)", rss_b)
            quiet, out, _ = timed(once(source), env=env_a)
            record("cairn no-change pass", quiet)
            # Both devices running, as Syncthing's two daemons are: a second server, fresh devices.
            server2, url2 = start_server(server_bin, scratch, "server-both")
            try:
                env_a2, env_b2 = sign_up(cairn_bin, url2, scratch, "a2", "b2")
                dest_b2 = os.path.join(scratch, "device-b-both")
                os.makedirs(dest_b2)
                seconds, a_seconds = both_running(cairn_bin, env_a2, env_b2, source, dest_b2)
                record("cairn initial A→B, both running", seconds)
                record("cairn initial A done, both running", a_seconds)
                same = subprocess.run(["diff", "-r", "-q", source, dest_b2], capture_output=True)
                record("cairn both-running replicas identical", 1 if same.returncode == 0 else 0)
            finally:
                server2.terminate()
                server2.wait()
            # rsync daemon and restic on the same data.
            rsync_dest = os.path.join(scratch, "rsync-dest")
            os.makedirs(rsync_dest)
            daemon, rsync_url = rsync_daemon(rsync_dest, scratch)
            pair = None
            try:
                seconds, _, _ = timed(["rsync", "-a", source + "/", rsync_url])
                record("rsync initial", seconds)
                repo = os.path.join(scratch, "restic-repo")
                renv = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=repo)
                run(["restic", "init", "-q"], env=renv, capture_output=True)
                seconds, _, _ = timed(["restic", "backup", "-q", source], env=renv)
                record("restic backup initial", seconds)
                if args.syncthing:
                    # A copy of its own: Syncthing adds its .stfolder marker to the folders it shares.
                    st_source = os.path.join(scratch, "syncthing-a-data")
                    run(["cp", "-a", dataset, st_source])
                    pair = syncthing_peer.SyncthingPair(st_source, os.path.join(scratch, "syncthing-b-data"), scratch)
                    initial = pair.start_and_wait_initial()
                    record("syncthing initial A→B", initial["seconds"])
                    record("syncthing start-up", initial["ready_seconds"])
                    record("syncthing initial wire bytes", initial["wire_bytes"])
                    record("syncthing no-change rescan", pair.rescan_no_change()["seconds"])
                # Incremental.
                changed = edit_dataset(source, args.small_files, seed=100 + r)
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
                if pair:
                    # The same edits, byte for byte and with the same mtimes, on Syncthing's copy.
                    for rel in changed:
                        shutil.copy2(os.path.join(source, rel), os.path.join(st_source, rel))
                    inc = pair.rescan_and_wait(changed)
                    record("syncthing incremental A→B", inc["seconds"])
                    record("syncthing incremental bytes in (B)", inc["wire_in_b"])
                    record("syncthing incremental bytes (B, both ways)", inc["wire_bytes"])
                    record("syncthing replicas identical", 1 if inc["identical"] else 0)
                    record("syncthing peak RSS MiB", pair.stop()["peak_rss_mib"])
                same = subprocess.run(["diff", "-r", "-q", source, dest_b], capture_output=True)
                record("cairn replicas identical", 1 if same.returncode == 0 else 0)
            finally:
                if pair:
                    pair.stop()
                daemon.terminate()
                daemon.wait()
        finally:
            server.terminate()
            server.wait()

    m = {k: median(v) for k, v in results.items()}
    with_syncthing = args.syncthing

    def row(measure, cairn, rsync, restic, vs_rsync, syncthing=lambda: "", vs_syncthing=lambda: ""):
        # The Syncthing cells are functions: their figures exist only with --syncthing.
        cells = [measure, cairn, rsync, restic] + ([syncthing()] if with_syncthing else []) + [vs_rsync] + ([vs_syncthing()] if with_syncthing else [])
        print("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")

    print(f"Runs: {args.runs}; data: 500 MiB file + {args.small_files} small files (1 GiB); loopback; medians.\n")
    row("measure", "Cairn", "rsync (daemon)", "restic backup", "Cairn vs rsync", lambda: "Syncthing (2 daemons)", lambda: "Cairn vs Syncthing")
    print("|" + "---|" * (7 if with_syncthing else 5))
    row("initial sync A→B (s)",
        f"{m['cairn initial A→B']:.2f} (up {m['cairn initial upload (A)']:.2f} + down {m['cairn initial download (B)']:.2f})",
        f"{m['rsync initial']:.2f}", f"{m['restic backup initial']:.2f}",
        f"{m['rsync initial'] / m['cairn initial A→B']:.2f}×",
        lambda: f"{m['syncthing initial A→B']:.2f} (start-up {m['syncthing start-up']:.2f})",
        lambda: f"{m['syncthing initial A→B'] / m['cairn initial A→B']:.2f}×")
    row("initial sync A→B, both running (s)",
        f"{m['cairn initial A→B, both running']:.2f} (A done at {m['cairn initial A done, both running']:.2f})",
        "", "", f"{m['rsync initial'] / m['cairn initial A→B, both running']:.2f}×",
        lambda: f"{m['syncthing initial A→B']:.2f}",
        lambda: f"{m['syncthing initial A→B'] / m['cairn initial A→B, both running']:.2f}×")
    row("incremental A→B (s)", f"{m['cairn incremental A→B']:.2f}", f"{m['rsync incremental']:.2f}",
        f"{m['restic backup incremental']:.2f}", f"{m['rsync incremental'] / m['cairn incremental A→B']:.2f}×",
        lambda: f"{m['syncthing incremental A→B']:.2f}",
        lambda: f"{m['syncthing incremental A→B'] / m['cairn incremental A→B']:.2f}×")
    row("incremental bytes",
        f"up {m['cairn incremental bytes up'] / 2**20:.1f} MiB, down {m['cairn incremental bytes down'] / 2**20:.1f} MiB",
        f"sent {m['rsync incremental bytes sent'] / 2**20:.1f} MiB", "", "",
        lambda: f"B received {m['syncthing incremental bytes in (B)'] / 2**20:.1f} MiB ({m['syncthing incremental bytes (B, both ways)'] / 2**20:.1f} MiB both ways)")
    row("no-change pass (s, whole `cairn` process)", f"{m['cairn no-change pass']:.2f}", "", "", "",
        lambda: f"{m['syncthing no-change rescan']:.2f} (rescan by the running daemon A)")
    row("client peak RSS (MiB)", f"{m['cairn client peak RSS MiB']:.0f}", "", "", "",
        lambda: f"{m['syncthing peak RSS MiB']:.0f} (larger of the two daemons)")
    # Counted over the runs, not a median (a median of 0s and 1s would hide a failed run).
    tally = lambda key: f"{sum(results.get(key, []))} of {len(results.get(key, []))}"
    row("replicas identical after incremental", tally("cairn replicas identical"), "", "", "",
        lambda: tally("syncthing replicas identical"))
    row("replicas identical after initial, both running", tally("cairn both-running replicas identical"), "", "", "")
    if with_syncthing:
        print(f"\n{syncthing_peer.describe()}")
    print("\nRaw:", json.dumps(results))


if __name__ == "__main__":
    main()
