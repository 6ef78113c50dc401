#!/usr/bin/env python3
"""Two Syncthing instances on loopback, as a peer for benches/run_sync.py.

Usage as a module:
    pair = SyncthingPair(src_dir, dst_dir, work_dir)
    try:
        first = pair.start_and_wait_initial()   # {"seconds", "wire_bytes", ...}
        ...caller edits files in src_dir...
        inc = pair.rescan_and_wait(changed)     # changed: paths relative to src_dir
    finally:
        pair.stop()                             # {"peak_rss_mib_a", "peak_rss_mib_b", ...}

Self-test: python3 benches/syncthing_peer.py [--big-mib 10] [--small-files 200]

Device A shares src_dir as folder "bench" with device B, whose copy is dst_dir (empty at the start).
Both instances listen on tcp://127.0.0.1 only, know each other's address, and have discovery,
relays, NAT, usage and crash reporting, upgrades, the file watcher and periodic rescans off.
- initial: from starting both processes until B's /rest/db/status says B holds every file of A
  (A hashes the whole tree on its startup scan, then B pulls); B's tree is then compared with A's.
- incremental: A rescans its whole folder over REST (as its watcher or hourly rescan would) and
  B pulls; timed until B holds the changed files; their bytes are then compared with A's.
- wire bytes: BEP bytes Syncthing counts on B's connections (in + out), delta over the phase.
- peak RSS: VmHWM of each syncthing process, read just before stopping it.
Syncthing puts its marker directory .stfolder into both folders; it is left out of the comparisons.
"""

import argparse
import atexit
import ctypes
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

FOLDER = "bench"
MARKER = ".stfolder"
TIMEOUT = 600
POLL = 0.1

_live = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_syncthing():
    """Returns the syncthing binary, installing Debian's package if it is missing."""
    if not shutil.which("syncthing"):
        cmd = ["apt-get", "install", "-y", "-q", "syncthing"]
        if os.geteuid() != 0:
            cmd = ["sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive"] + cmd
        subprocess.run(cmd, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = shutil.which("syncthing")
    if not path:
        raise SystemExit("syncthing is not installed and `apt-get install syncthing` failed")
    return path


def describe():
    """One paragraph for the Markdown under the results: version and method."""
    version = subprocess.run([ensure_syncthing(), "--version"], capture_output=True, text=True).stdout.split(" (")[0]
    return (f"Syncthing: {version.strip()}, two daemons on loopback (TCP + TLS 1.3, compression of metadata only), "
            "discovery, relays and NAT off, no versioning, file watcher and periodic rescans off. "
            "Initial: from starting both daemons (start-up included, shown apart: database, ~0.5 s CPU benchmark) "
            "until B's /rest/db/status shows every file in sync and the files are on disk; "
            "incremental: `POST /rest/db/scan` of A's whole folder until B holds the changed files; "
            "bytes: BEP bytes counted on B's connection.")


def _die_with_parent():
    # PR_SET_PDEATHSIG: the syncthing processes get SIGTERM if this Python process dies.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except Exception:
        pass


def manifest(root):
    """({relative path: (size, mtime_ns)} of the regular files, directory count, symlink count) under
    root, without Syncthing's marker directory."""
    files, dirs, links = {}, 0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root and MARKER in dirnames:
            dirnames.remove(MARKER)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                links += 1
            elif stat.S_ISDIR(st.st_mode):
                dirs += 1
            elif stat.S_ISREG(st.st_mode):
                files[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return files, dirs, links


def tree(root):
    """(directories, symlinks, regular files) under root, relative, without Syncthing's marker."""
    dirs, links, files = set(), {}, set()
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root and MARKER in dirnames:
            dirnames.remove(MARKER)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                links[rel] = os.readlink(p)
            elif os.path.isdir(p):
                dirs.add(rel)
            else:
                files.add(rel)
    return dirs, links, files


def file_hash(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def same_files(a, b, paths):
    """The first path whose bytes differ between roots a and b, or None."""
    for rel in sorted(paths):
        pa, pb = os.path.join(a, rel), os.path.join(b, rel)
        if not os.path.isfile(pb) or os.path.getsize(pa) != os.path.getsize(pb) or file_hash(pa) != file_hash(pb):
            return rel
    return None


def trees_identical(a, b):
    """(True, "") if b holds exactly a's directories, symlinks and file bytes, else (False, why)."""
    ta, tb = tree(a), tree(b)
    for kind, x, y in zip(("directories", "symlinks", "files"), ta, tb):
        if x != y:
            xs, ys = set(x), set(y)
            return False, f"{kind} differ: only on A {sorted(xs - ys)[:3]}, only on B {sorted(ys - xs)[:3]}"
    bad = same_files(a, b, ta[2])
    return (False, f"{bad} differs") if bad else (True, "")


class _Instance:
    def __init__(self, name, home, folder):
        self.name = name
        self.home = home
        self.folder = folder
        self.gui_port = free_port()
        self.listen_port = free_port()
        self.api_key = f"cairn-bench-{name}-" + os.urandom(8).hex()
        self.log = os.path.join(home, "syncthing.log")
        self.device_id = None
        self.proc = None
        self.peak_rss_mib = None


class SyncthingPair:
    """Device A shares src_dir with device B, whose copy is dst_dir; homes go under work_dir."""

    def __init__(self, src_dir, dst_dir, work_dir, timeout=TIMEOUT):
        self.bin = ensure_syncthing()
        self.src = os.path.abspath(src_dir)
        self.dst = os.path.abspath(dst_dir)
        self.timeout = timeout
        if not os.path.isdir(self.src):
            raise SystemExit(f"syncthing peer: source {self.src} is not a directory")
        os.makedirs(self.dst, exist_ok=True)
        if os.listdir(self.dst):
            raise SystemExit(f"syncthing peer: target {self.dst} is not empty")
        self.a = _Instance("a", os.path.join(work_dir, "syncthing-a"), self.src)
        self.b = _Instance("b", os.path.join(work_dir, "syncthing-b"), self.dst)
        for inst in (self.a, self.b):
            shutil.rmtree(inst.home, ignore_errors=True)
            os.makedirs(inst.home)
            self._cli(["generate", f"--home={inst.home}", "--no-default-folder"])
            inst.device_id = self._cli(["serve", f"--home={inst.home}", "--device-id"]).strip()
        self._configure(self.a, self.b)
        self._configure(self.b, self.a)
        self.version = self._cli(["--version"]).split(" (")[0].strip()

    # Setup.

    def _cli(self, args):
        env = dict(os.environ, STNODEFAULTFOLDER="1", STNOUPGRADE="1")
        p = subprocess.run([self.bin] + args, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            last = (p.stderr.strip() or p.stdout.strip() or "no output").splitlines()[-1]
            raise SystemExit(f"syncthing {' '.join(args)} failed: {last}")
        return p.stdout

    def _configure(self, me, peer):
        path = os.path.join(me.home, "config.xml")
        root = ET.parse(path).getroot()
        # The version attribute stays as generated (36 for 1.19) so syncthing does not migrate it.
        gui = root.find("gui")
        gui.set("enabled", "true")
        gui.set("tls", "false")
        _text(gui, "address", f"127.0.0.1:{me.gui_port}")
        _text(gui, "apikey", me.api_key)
        opts = root.find("options")
        for el in opts.findall("listenAddress"):
            opts.remove(el)
        ET.SubElement(opts, "listenAddress").text = f"tcp://127.0.0.1:{me.listen_port}"
        for name, value in [
            ("globalAnnounceEnabled", "false"), ("localAnnounceEnabled", "false"),
            ("relaysEnabled", "false"), ("natEnabled", "false"), ("startBrowser", "false"),
            ("urAccepted", "-1"), ("urSeen", "3"), ("crashReportingEnabled", "false"),
            ("autoUpgradeIntervalH", "0"), ("stunKeepaliveStartS", "0"),
            # Syncthing renices itself by default; the other tools run at normal priority.
            ("setLowPriority", "false"),
            # The first dial may race the peer's listener; retry soon rather than after 60 s.
            ("reconnectionIntervalS", "1"),
            ("restartOnWakeup", "false"), ("progressUpdateIntervalS", "-1"),
        ]:
            _text(opts, name, value)
        _text(opts, "minHomeDiskFree", "0").set("unit", "%")
        defaults = root.find("defaults")
        # Both devices, each with its explicit loopback address.
        template = defaults.find("device")
        for inst in (me, peer):
            dev = root.find(f"device[@id='{inst.device_id}']")
            if dev is None:
                dev = _copy(template)
                root.insert(_last_index(root, "device") + 1, dev)
            dev.set("id", inst.device_id)
            dev.set("name", f"bench-{inst.name}")
            dev.set("compression", "metadata")
            for el in dev.findall("address"):
                dev.remove(el)
            addr = ET.Element("address")
            addr.text = "dynamic" if inst is me else f"tcp://127.0.0.1:{inst.listen_port}"
            dev.insert(0, addr)
        # The shared folder, from the defaults of this version, without versioning.
        folder = _copy(defaults.find("folder"))
        folder.set("id", FOLDER)
        folder.set("label", FOLDER)
        folder.set("path", me.folder)
        folder.set("type", "sendreceive")
        folder.set("rescanIntervalS", "86400")
        folder.set("fsWatcherEnabled", "false")
        for el in folder.findall("device"):
            folder.remove(el)
        for i, inst in enumerate((me, peer)):
            dev = ET.Element("device", {"id": inst.device_id, "introducedBy": ""})
            ET.SubElement(dev, "encryptionPassword").text = ""
            folder.insert(1 + i, dev)
        versioning = folder.find("versioning")
        if versioning is not None:
            versioning.attrib.pop("type", None)
            for el in versioning.findall("param"):
                versioning.remove(el)
        _text(folder, "minDiskFree", "0").set("unit", "%")
        for el in root.findall("folder"):
            root.remove(el)
        root.insert(0, folder)
        ET.ElementTree(root).write(path)

    # Processes and REST.

    def _spawn(self, inst):
        # STMONITORED: run the syncthing process itself, not a monitor process that starts it
        # (1.19 starts a monitor even with --no-restart); one process per device to time and kill.
        env = dict(os.environ, STNODEFAULTFOLDER="1", STNOUPGRADE="1", STNORESTART="1", STMONITORED="yes")
        if "STHASHING" not in env and os.uname().machine in ("x86_64", "aarch64"):
            # What 1.19 picks on these CPUs anyway; naming it skips a ~1 s SHA-256 benchmark at startup.
            env["STHASHING"] = "minio"
        with open(inst.log, "ab") as log:
            inst.proc = subprocess.Popen(
                [self.bin, "serve", f"--home={inst.home}", "--no-browser", "--no-restart", "--no-upgrade",
                 "--no-default-folder", "--logflags=3"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=_die_with_parent,
            )

    def _api(self, inst, path, method="GET", timeout=10):
        req = urllib.request.Request(f"http://127.0.0.1:{inst.gui_port}{path}", method=method,
                                     headers={"X-API-Key": inst.api_key})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body.strip() else None

    def _last_log(self, inst):
        try:
            with open(inst.log, errors="replace") as f:
                lines = [l.strip() for l in f if l.strip()]
            problems = [l for l in lines if ("WARNING:" in l or "FATAL:" in l) and "privileged" not in l]
            return (problems or lines or ["no log output"])[-1]
        except OSError:
            return "no log"

    def _check_alive(self):
        for inst in (self.a, self.b):
            if inst.proc is None or inst.proc.poll() is not None:
                code = None if inst.proc is None else inst.proc.returncode
                raise SystemExit(f"syncthing {inst.name} exited (status {code}): {self._last_log(inst)} (log {inst.log})")

    def _status(self, inst):
        return self._api(inst, f"/rest/db/status?folder={FOLDER}")

    def _wire(self):
        total = self._api(self.b, "/rest/system/connections")["total"]
        return total["inBytesTotal"], total["outBytesTotal"]

    def _fail(self, what, deadline_s):
        parts = [f"syncthing peer: {what} not done after {deadline_s:g} s"]
        for inst in (self.a, self.b):
            try:
                s = self._status(inst)
                parts.append(f"{inst.name}: state={s['state']} global={s['globalFiles']} local={s['localFiles']} "
                             f"need={s['needFiles']} err={s.get('error') or s.get('pullErrors')}")
            except Exception as e:
                parts.append(f"{inst.name}: no status ({e})")
            parts.append(f"{inst.name} log: {self._last_log(inst)}")
        raise SystemExit("; ".join(parts))

    def _wait(self, what, done, start):
        """Polls done() every POLL s until it returns true; returns seconds since start."""
        deadline = start + self.timeout
        while True:
            self._check_alive()
            try:
                if done():
                    return time.perf_counter() - start
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass  # REST not up yet, or restarting a request
            if time.perf_counter() > deadline:
                self._fail(what, self.timeout)
            time.sleep(POLL)

    def _complete(self, want, seen=None):
        """B's status shows A's folder (want: files, directories, symlinks) in sync with nothing needed."""
        s = self._status(self.b)
        if seen is not None:
            seen["status"] = s
        if s.get("state") == "error":
            raise SystemExit(f"syncthing peer: folder error on B: {s.get('error')}")
        files, dirs, links = want
        # Not globalBytes: Syncthing counts 128 bytes for each directory and symlink there.
        return (s["state"] == "idle" and s["needTotalItems"] == 0 and s["needBytes"] == 0
                and s["globalFiles"] == files and s["globalDirectories"] == dirs and s["globalSymlinks"] == links
                and s["localFiles"] == files and s["inSyncFiles"] == files and s["inSyncBytes"] == s["globalBytes"])

    def _on_disk(self, expected):
        """B's files have the sizes and modification times of A's (Syncthing carries mtimes over)."""
        for rel, meta in expected.items():
            try:
                st = os.lstat(os.path.join(self.dst, rel))
            except FileNotFoundError:
                return False
            # Within a second, for file systems with coarse timestamps.
            if st.st_size != meta[0] or abs(st.st_mtime_ns - meta[1]) >= 1_000_000_000:
                return False
        return True

    # The phases.

    def start_and_wait_initial(self):
        """Starts A (holding the data) and B (empty); times until B holds A's whole folder."""
        if self.a.proc is not None:
            raise SystemExit("syncthing peer: already started")
        expected, dirs, links = manifest(self.src)
        want = (len(expected), dirs, links)
        _live.append(self)
        start = time.perf_counter()
        self._spawn(self.a)
        self._spawn(self.b)
        # Process start-up (database open, a CPU benchmark of ~0.5 s) until both REST APIs answer.
        ready = self._wait("start-up", lambda: self._api(self.a, "/rest/system/ping") and self._api(self.b, "/rest/system/ping"), start)
        seconds = self._wait("initial sync", lambda: self._complete(want) and self._on_disk(expected), start)
        wire_in, wire_out = self._wire()
        ok, why = trees_identical(self.src, self.dst)
        if not ok:
            raise SystemExit(f"syncthing peer: B's tree differs from A's after the initial sync: {why}")
        return {"seconds": seconds, "ready_seconds": ready, "wire_bytes": wire_in + wire_out, "wire_in_b": wire_in,
                "wire_out_b": wire_out, "files": len(expected), "bytes": sum(v[0] for v in expected.values()),
                "identical": True}

    def rescan_and_wait(self, changed_paths=None, verify_tree=True):
        """After the caller changed files under src_dir, has A rescan its whole folder and times until
        B holds the new content. changed_paths: files relative to src_dir (None: every file)."""
        self._check_alive()
        expected, dirs, links = manifest(self.src)
        want = (len(expected), dirs, links)
        changed = sorted(expected) if changed_paths is None else sorted(changed_paths)
        missing = [p for p in changed if p not in expected]
        if missing:
            raise SystemExit(f"syncthing peer: changed path {missing[0]} is not a file under {self.src}")
        check = {p: expected[p] for p in changed}
        sequence_before = self._status(self.b)["sequence"]
        wire_in0, wire_out0 = self._wire()
        seen = {}
        start = time.perf_counter()
        try:
            # Returns when A's scan is over (A hashed the changed files).
            self._api(self.a, f"/rest/db/scan?folder={FOLDER}", method="POST", timeout=self.timeout)
        except urllib.error.HTTPError as e:
            raise SystemExit(f"syncthing peer: rescan on A failed: HTTP {e.code} {e.read().decode(errors='replace').strip()}")
        except OSError as e:
            raise SystemExit(f"syncthing peer: rescan on A failed: {e}; A log: {self._last_log(self.a)}")
        scan_seconds = time.perf_counter() - start
        # B is done when its changed files match A's on disk and its database has moved on and
        # shows the folder complete (it commits pulled files after renaming them into place).
        done = lambda: (self._on_disk(check) and self._complete(want, seen)
                        and seen["status"]["sequence"] > sequence_before)
        seconds = self._wait("incremental sync", done, start)
        wire_in, wire_out = self._wire()
        bad = same_files(self.src, self.dst, changed)
        if bad:
            raise SystemExit(f"syncthing peer: {bad} differs on B after the incremental sync")
        identical = None
        if verify_tree:
            identical, why = trees_identical(self.src, self.dst)
            if not identical:
                raise SystemExit(f"syncthing peer: B's tree differs from A's after the incremental sync: {why}")
        return {"seconds": seconds, "scan_seconds_a": scan_seconds,
                "wire_bytes": (wire_in - wire_in0) + (wire_out - wire_out0),
                "wire_in_b": wire_in - wire_in0, "wire_out_b": wire_out - wire_out0,
                "items_updated_b": seen["status"]["sequence"] - sequence_before, "identical": identical}

    def rescan_no_change(self):
        """Seconds A's running daemon takes to rescan its folder with nothing changed."""
        self._check_alive()
        start = time.perf_counter()
        try:
            self._api(self.a, f"/rest/db/scan?folder={FOLDER}", method="POST", timeout=self.timeout)
        except OSError as e:  # HTTPError and URLError too
            raise SystemExit(f"syncthing peer: rescan on A failed: {e}; A log: {self._last_log(self.a)}")
        return {"seconds": time.perf_counter() - start}

    def stop(self):
        """Stops both processes (idempotent); returns their peak RSS in MiB."""
        for inst in (self.a, self.b):
            if inst.proc is None:
                continue
            if inst.proc.poll() is None:
                inst.peak_rss_mib = _vmhwm_mib(inst.proc.pid)
                inst.proc.terminate()
                try:
                    inst.proc.wait(10)
                except subprocess.TimeoutExpired:
                    inst.proc.kill()
                    inst.proc.wait()
        if self in _live:
            _live.remove(self)
        return {"peak_rss_mib_a": self.a.peak_rss_mib, "peak_rss_mib_b": self.b.peak_rss_mib,
                "peak_rss_mib": max([v for v in (self.a.peak_rss_mib, self.b.peak_rss_mib) if v is not None], default=None)}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _text(parent, name, value):
    el = parent.find(name)
    if el is None:
        el = ET.SubElement(parent, name)
    el.text = value
    return el


def _copy(el):
    return ET.fromstring(ET.tostring(el))


def _last_index(root, tag):
    idx = -1
    for i, child in enumerate(list(root)):
        if child.tag == tag:
            idx = i
    return idx


def _vmhwm_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@atexit.register
def _stop_all():
    for pair in list(_live):
        try:
            pair.stop()
        except Exception:
            pass


# Self-test.

def _make_data(path, big_mib, small_files, rng):
    os.makedirs(path)
    with open(os.path.join(path, "big.bin"), "wb") as f:
        for _ in range(big_mib):
            f.write(rng.randbytes(1 << 20))
    for i in range(small_files):
        d = os.path.join(path, "small", f"d{i // 100:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05d}.dat"), "wb") as f:
            f.write(rng.randbytes(rng.randint(1, 100_000)))


def _edit_data(path, small_files, rng):
    changed = []
    for i in rng.sample(range(small_files), 2):
        rel = os.path.join("small", f"d{i // 100:03d}", f"f{i:05d}.dat")
        with open(os.path.join(path, rel), "r+b") as f:
            f.write(rng.randbytes(16))
        changed.append(rel)
    big = os.path.join(path, "big.bin")
    with open(big, "rb") as f:
        data = f.read()
    middle = len(data) // 2
    with open(big, "wb") as f:
        f.write(data[:middle] + rng.randbytes(100) + data[middle:])
    return changed + ["big.bin"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-mib", type=int, default=10)
    parser.add_argument("--small-files", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    rng = random.Random(7)
    scratch = tempfile.mkdtemp(prefix="syncthing-peer-test-", dir="/var/tmp")
    try:
        src, dst = os.path.join(scratch, "a"), os.path.join(scratch, "b")
        _make_data(src, args.big_mib, args.small_files, rng)
        pair = SyncthingPair(src, dst, scratch)
        try:
            initial = pair.start_and_wait_initial()
            no_change = pair.rescan_no_change()
            time.sleep(1.1)  # a later mtime second for the edits, whatever the file system's granularity
            changed = _edit_data(src, args.small_files, rng)
            incremental = pair.rescan_and_wait(changed)
        finally:
            rss = pair.stop()
        print(json.dumps({"syncthing": pair.version, "initial": initial, "no_change_rescan": no_change,
                          "incremental": incremental, "changed": changed, **rss}, indent=2))
    finally:
        if args.keep:
            print("kept", scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
