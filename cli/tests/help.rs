//! Snapshot of `cairn --help` and every subcommand's help (insta): a change to the command
//! line, which scripts depend on, shows up in review as a diff of `snapshots/help__help.snap`.

use std::process::Command;

/// Every command path, as typed after `cairn`.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["user"],
    &["user", "register"],
    &["user", "login"],
    &["user", "logout"],
    &["user", "whoami"],
    &["files"],
    &["files", "ls"],
    &["files", "add"],
    &["files", "get"],
    &["files", "rm"],
    &["files", "versions"],
    &["files", "restore"],
    &["sync"],
    &["sync", "start"],
    &["sync", "status"],
    &["sync", "stop"],
    &["conflicts"],
    &["backup"],
    &["snapshots"],
    &["restore"],
    &["config"],
    &["config", "get"],
    &["config", "set"],
    &["completions"],
];

#[test]
fn help_texts() {
    let mut all = String::new();
    for path in COMMANDS {
        let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(*path)
            .arg("--help")
            .env("COLUMNS", "100")
            .output()
            .expect("cairn runs");
        assert!(output.status.success(), "cairn {path:?} --help failed");
        assert!(output.stderr.is_empty(), "help writes to stdout only");
        let typed: Vec<&str> = std::iter::once("cairn")
            .chain(path.iter().copied())
            .chain(std::iter::once("--help"))
            .collect();
        all.push_str(&format!("$ {}\n", typed.join(" ")));
        all.push_str(&String::from_utf8(output.stdout).expect("utf-8"));
        all.push('\n');
    }
    insta::assert_snapshot!("help", all);
}
