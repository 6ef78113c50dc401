//! End-to-end checks of the `cairn-bench` binary: it generates data, ingests it and reports the
//! contract fields, with one JSON object on stdout.

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
}

#[test]
fn gen_then_ingest_reports_the_contract_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let status = bench()
        .args(["gen"])
        .arg(&data)
        .args(["--size", "8MiB", "--kind", "mixed"])
        .status()
        .expect("run gen");
    assert!(status.success());
    let out = bench()
        .arg("ingest")
        .arg(&data)
        .arg("--json")
        .arg("--store-parent")
        .arg(dir.path())
        .output()
        .expect("run ingest");
    let report = json_report(&out);
    for field in [
        "files",
        "bytes",
        "blocks",
        "unique_blocks",
        "stored_bytes",
        "seconds",
        "hash_only_seconds",
    ] {
        assert!(
            report.get(field).is_some_and(|v| v.is_number()),
            "missing {field}: {report}"
        );
    }
    let on_disk: u64 = walk_size(&data);
    assert_eq!(report["bytes"].as_u64(), Some(on_disk));
    // The mixed set holds a duplicated file, so some blocks are deduplicated.
    assert!(
        report["unique_blocks"].as_u64() < report["blocks"].as_u64(),
        "{report}"
    );
    assert_eq!(report["problems"].as_u64(), Some(0));

    // The collector's ordered sweep deletes every object of the same data (it fails otherwise).
    let out = bench()
        .arg("gc-cost")
        .arg(&data)
        .arg("--json")
        .arg("--store-parent")
        .arg(dir.path())
        .output()
        .expect("run gc-cost");
    let gc = json_report(&out);
    let unique = report["unique_blocks"].as_u64().expect("unique blocks");
    let objects = gc["objects"].as_u64().expect("objects");
    let nodes = gc["nodes"].as_u64().expect("nodes");
    assert_eq!(objects, unique + nodes, "{gc}");
    assert!(nodes > report["files"].as_u64().expect("files"), "{gc}");
}

#[test]
fn bad_input_is_one_line_and_a_failure() {
    let out = bench()
        .args(["ingest", "/nonexistent/cairn-bench-data"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("cairn-bench: listing '/nonexistent/cairn-bench-data'"),
        "{stderr}"
    );
    let out = bench()
        .args(["edit-cost", "--size", "12XB"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

/// The one JSON object a successful `--json` run printed.
fn json_report(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn walk_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("entry");
            let kind = e.file_type().expect("type");
            if kind.is_dir() {
                walk_size(&e.path())
            } else {
                e.metadata().expect("meta").len()
            }
        })
        .sum()
}
