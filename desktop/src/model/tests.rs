use cairn_client::daemon::PassReport;

use super::*;

fn status(state: &str) -> DaemonStatus {
    let mut s = DaemonStatus::starting(std::path::Path::new("/home/me/Cairn"), "http://s:8000");
    s.state = state.into();
    s
}

#[test]
fn a_form_never_shows_its_password() {
    let form = SetupForm {
        password: "hunter2-hunter2".into(),
        username: "ann".into(),
        ..SetupForm::default()
    };
    let shown = format!("{form:?}");
    assert!(
        shown.contains("ann") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn a_fresh_form_is_not_all_red_but_cannot_be_sent() {
    let form = SetupForm::default();
    assert!(form.problems(false).is_empty());
    let fields: Vec<Field> = form.problems(true).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        vec![
            Field::Server,
            Field::Username,
            Field::Password,
            Field::Folder
        ]
    );
    assert!(!form.ready());
}

#[test]
fn the_form_validates_as_you_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut form = SetupForm {
        server: "not a url".into(),
        username: "a".into(),
        email: "me".into(),
        password: "short".into(),
        folder: "relative/path".into(),
        register: true,
    };
    let problems: HashMap<Field, String> = form.problems(false).into_iter().collect();
    assert_eq!(problems.len(), 5, "{problems:?}");
    assert!(problems[&Field::Username].contains("3 to 64"));
    assert!(problems[&Field::Password].contains("8 characters"));
    form.server = "http://127.0.0.1:8000".into();
    form.username = "alice".into();
    form.email = "alice@example.com".into();
    form.password = "correct horse".into();
    form.folder = dir.path().join("Cairn").display().to_string();
    assert!(form.ready(), "{:?}", form.problems(true));
    // Logging in needs no email and accepts any non-empty password.
    form.register = false;
    form.email.clear();
    form.password = "x".into();
    assert!(form.ready());
    // A file is not a folder; a folder whose parent is missing cannot be created.
    std::fs::write(dir.path().join("file"), "x").expect("write");
    form.folder = dir.path().join("file").display().to_string();
    assert_eq!(form.problems(false)[0].0, Field::Folder);
    form.folder = dir.path().join("no/such/dir").display().to_string();
    assert_eq!(form.problems(false)[0].0, Field::Folder);
    form.username = "bad name!".into();
    assert!(form.problems(false)[0].1.contains("only letters"));
}

#[test]
fn login_errors_say_what_to_do() {
    assert!(explain_login_error("wrong_credentials", "x").contains("do not match"));
    assert!(
        explain_login_error("unreachable", "refused").contains("Cannot reach the server (refused)")
    );
    assert_eq!(explain_login_error("other", "the message"), "the message");
}

#[test]
fn the_dashboard_follows_status_and_progress() {
    let mut d = Dashboard::default();
    assert_eq!(d.headline(), "Starting…");
    let mut s = status("syncing");
    s.phase = Some("uploading".into());
    d.apply_status(&s);
    assert_eq!(d.connection, Connection::Online);
    assert_eq!(d.headline(), "Uploading…");
    d.apply_event(
        &FeedEvent::Progress {
            direction: "upload".into(),
            done: 1_000_000,
            total: 4_000_000,
        },
        10.0,
    );
    d.apply_event(
        &FeedEvent::File {
            path: "a".into(),
            what: "uploaded".into(),
        },
        10.5,
    );
    d.apply_event(
        &FeedEvent::Progress {
            direction: "upload".into(),
            done: 2_000_000,
            total: 4_000_000,
        },
        11.0,
    );
    let (text, fraction) = d.transfer_text().expect("transfer");
    assert_eq!(
        text,
        "Uploading — 2.0 MB of 4.0 MB, 1 file done, 1.0 MB/s, about 2 s left"
    );
    assert!((fraction - 0.5).abs() < 1e-9);
    d.apply_event(
        &FeedEvent::Summary(PassReport {
            seq: 3,
            in_sync: true,
            uploaded: 1,
            ..PassReport::default()
        }),
        12.0,
    );
    assert!(d.transfer.is_none());
    assert_eq!(d.headline(), "Up to date");
    let mut idle = status("idle");
    idle.last_pass_unix = 1000;
    d.apply_status(&idle);
    assert_eq!(d.last_sync_text(1000 + 180), "Last synced 3 minutes ago");
    assert_eq!(d.icon(), "emblem-ok-symbolic");
}

#[test]
fn the_rate_is_averaged_over_recent_samples_only() {
    let mut d = Dashboard::default();
    d.apply_status(&status("syncing"));
    for (t, done) in [(0.0, 0), (1.0, 100), (20.0, 200), (21.0, 1200)] {
        d.apply_event(
            &FeedEvent::Progress {
                direction: "download".into(),
                done,
                total: 10_000,
            },
            t,
        );
    }
    let rate = d.transfer.as_ref().and_then(|t| t.rate).expect("rate");
    assert!((rate - 1000.0).abs() < 1e-9, "{rate}");
}

#[test]
fn paths_that_cannot_be_synced_are_named_not_shown_as_syncing() {
    let mut d = Dashboard::default();
    let mut s = status("out_of_sync");
    s.problem_count = 5;
    s.problems = (0..5)
        .map(|i| cairn_client::engine::PathProblem {
            path: format!("locked/{i}.db"),
            message: "Permission denied (os error 13); retried next pass".into(),
        })
        .collect();
    d.apply_status(&s);
    assert_eq!(d.headline(), "Can't sync 5 files");
    assert_eq!(d.icon(), "dialog-warning-symbolic");
    let (heading, list) = d.problems_text().expect("problems");
    assert_eq!(heading, "5 files could not be synced");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(
        lines[0],
        "locked/0.db — Permission denied (os error 13); retried next pass"
    );
    assert_eq!(lines.len(), PROBLEMS_SHOWN + 2, "{list}");
    assert_eq!(lines[PROBLEMS_SHOWN], "…and 2 more.");
    // A later pass that synced everything clears them.
    d.apply_status(&status("idle"));
    assert!(d.problems_text().is_none());
    assert_eq!(d.headline(), "Up to date");
}

#[test]
fn errors_come_with_advice_and_offline_is_shown() {
    let mut d = Dashboard::default();
    let mut s = status("error");
    s.last_error = Some("connecting to 127.0.0.1:8443: no answer within 15 s".into());
    d.apply_status(&s);
    let (message, advice) = d.error.clone().expect("error");
    assert!(message.contains("no answer"));
    assert!(advice.contains("cannot be reached"));
    assert_eq!(d.headline(), "Sync problem");
    d.apply_reachability(Err("connection refused".into()));
    assert!(d.headline().starts_with("Offline"));
    assert_eq!(d.icon(), "network-offline-symbolic");
    d.apply_reachability(Ok((1_500_000_000, 10_000_000_000)));
    assert_eq!(d.connection, Connection::Online);
    let (text, fraction) = d.usage_text().expect("usage");
    assert_eq!(text, "1.5 GB of 10 GB used");
    assert!((fraction - 0.15).abs() < 1e-9);
    assert!(advice_for("this sync would delete 200 of 300 files locally").contains("protect"));
    assert!(
        advice_for(
            "the server at https://h is not trusted: invalid peer certificate: UnknownIssuer; if …"
        )
        .contains("SSL_CERT_FILE")
    );
    assert!(advice_for("the server's certificate changed").contains("identity"));
    assert!(advice_for("over quota").contains("storage is full"));
}

#[test]
fn the_feed_says_what_happened_newest_first() {
    let mut feed = Feed::default();
    feed.apply(
        &FeedEvent::File {
            path: "notes.txt".into(),
            what: "uploaded".into(),
        },
        1,
    );
    feed.apply(
        &FeedEvent::File {
            path: "photo.jpg".into(),
            what: "downloaded".into(),
        },
        2,
    );
    let item = feed
        .apply(
            &FeedEvent::Conflict {
                path: "plan.odt".into(),
                copy: Some("plan (conflict from laptop 2026-11-24 101500).odt".into()),
                reason: "both_edited".into(),
            },
            3,
        )
        .expect("item")
        .clone();
    assert_eq!(item.kind, FeedKind::Conflict);
    assert!(item.text.contains("yours is kept as plan (conflict"));
    assert!(
        feed.apply(
            &FeedEvent::Progress {
                direction: "upload".into(),
                done: 1,
                total: 2
            },
            4
        )
        .is_none()
    );
    assert!(
        feed.apply(&FeedEvent::Summary(PassReport::default()), 5)
            .is_none(),
        "a pass that moved nothing is not news"
    );
    let kinds: Vec<FeedKind> = feed.items.iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        vec![FeedKind::Conflict, FeedKind::Download, FeedKind::Upload]
    );
    assert_eq!(
        feed.items[1].text,
        "Downloaded photo.jpg (changed on another device)"
    );
    for i in 0..(FEED_ITEMS_MAX as u64 + 10) {
        feed.apply(
            &FeedEvent::Warning {
                message: format!("w{i}"),
            },
            i,
        );
    }
    assert_eq!(feed.items.len(), FEED_ITEMS_MAX);
    assert_eq!(
        feed.items.front().map(|i| i.text.as_str()),
        Some(format!("w{}", FEED_ITEMS_MAX + 9).as_str())
    );
}

#[test]
fn file_statuses_follow_the_last_sync_and_live_events() {
    let mut live = LiveStatus::default();
    let synced = PathFacts {
        synced_as: Some((5, 100)),
        on_disk: (5, 100),
        ..PathFacts::default()
    };
    assert_eq!(live.status("a.txt", &synced), FileStatus::Synced);
    let edited = PathFacts {
        on_disk: (6, 200),
        ..synced.clone()
    };
    assert_eq!(live.status("a.txt", &edited), FileStatus::Pending);
    live.apply(&FeedEvent::Phase {
        phase: "uploading".into(),
    });
    assert_eq!(live.status("a.txt", &edited), FileStatus::Syncing);
    live.apply(&FeedEvent::Problem {
        path: "dir/b.txt".into(),
        message: "permission denied".into(),
    });
    assert_eq!(live.status("dir/b.txt", &edited), FileStatus::Error);
    let dir = PathFacts {
        is_dir: true,
        synced_as: Some((0, 0)),
        ..PathFacts::default()
    };
    assert_eq!(live.status("dir", &dir), FileStatus::Error);
    live.apply(&FeedEvent::File {
        path: "dir/b.txt".into(),
        what: "uploaded".into(),
    });
    live.apply(&FeedEvent::Summary(PassReport::default()));
    assert_eq!(live.status("dir", &dir), FileStatus::Synced);
    let pending_dir = PathFacts {
        dir_has_pending: true,
        ..dir.clone()
    };
    assert_eq!(live.status("dir", &pending_dir), FileStatus::Pending);
    live.set_conflicts(&[ConflictRecord {
        path: "dir/c.txt".into(),
        copy: Some("dir/c (conflict).txt".into()),
        kept: None,
        reason: "both_edited".into(),
        winner: "remote".into(),
        at: 1,
        seq: 1,
    }]);
    assert_eq!(
        live.status("dir/c (conflict).txt", &synced),
        FileStatus::Conflict
    );
    assert_eq!(live.status("dir", &dir), FileStatus::Conflict);
    let ignored = PathFacts {
        ignored: true,
        ..edited
    };
    assert_eq!(live.status("x.swp", &ignored), FileStatus::Ignored);
    live.apply_state("idle");
    assert!(!live.syncing);
}

#[test]
fn listings_put_directories_first() {
    let row = |name: &str, is_dir: bool| FileRow {
        name: name.into(),
        path: name.into(),
        facts: PathFacts {
            is_dir,
            ..PathFacts::default()
        },
    };
    let mut rows = vec![
        row("b", false),
        row("Z", true),
        row("a", false),
        row("c", true),
    ];
    sort_rows(&mut rows);
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["c", "Z", "a", "b"]);
    assert_eq!(parent_of("a/b/c"), "a/b");
    assert_eq!(parent_of("a"), "");
}

#[test]
fn history_rows_read_well() {
    let version = |v: u64, size: u64, deleted: bool| VersionInfo {
        version: v,
        size,
        hash: String::new(),
        created_at: "2026-11-24T14:03:07.123Z".into(),
        deleted,
        device: "laptop".into(),
    };
    let rows = version_rows(&[
        version(3, 0, true),
        version(2, 1_200_000, false),
        version(1, 10, false),
    ]);
    assert_eq!(rows[0].title, "Version 3 · deleted");
    assert!(rows[0].current && rows[0].deleted);
    assert_eq!(rows[1].title, "Version 2 · 1.2 MB");
    assert_eq!(rows[1].subtitle, "2026-11-24 14:03 UTC · from laptop");
    assert!(!rows[2].current);
    assert_eq!(copy_name("docs/plan.odt", 2), "docs/plan (version 2).odt");
    assert_eq!(copy_name("Makefile", 4), "Makefile (version 4)");
    assert_eq!(copy_name(".bashrc", 1), ".bashrc (version 1)");
}

#[test]
fn conflict_rows_offer_what_applies() {
    let rows = conflict_rows(&[
        ConflictRecord {
            path: "a.txt".into(),
            copy: Some("a (conflict).txt".into()),
            kept: None,
            reason: "both_edited".into(),
            winner: "remote".into(),
            at: 1,
            seq: 1,
        },
        ConflictRecord {
            path: "b.txt".into(),
            copy: None,
            kept: None,
            reason: "edited_vs_deleted".into(),
            winner: "local".into(),
            at: 1,
            seq: 1,
        },
        ConflictRecord {
            path: "c.txt".into(),
            copy: None,
            kept: Some("ab".repeat(32)),
            reason: "both_edited".into(),
            winner: "remote".into(),
            at: 1,
            seq: 1,
        },
    ]);
    assert!(rows[2].has_copy && rows[2].subtitle.contains("in the version history"));
    assert!(rows[0].has_copy && rows[0].subtitle.contains("yours at a (conflict).txt"));
    assert!(!rows[1].has_copy && rows[1].subtitle.contains("the edit was kept"));
    assert_eq!(rows[1].index, 1);
}

#[test]
fn settings_helpers() {
    let entry = autostart_entry(std::path::Path::new("/usr/bin/cairn-desktop"));
    assert!(entry.starts_with("[Desktop Entry]\n"));
    assert!(entry.contains("Exec=\"/usr/bin/cairn-desktop\" --background\n"));
    assert_eq!(parse_limit(""), Ok(None));
    assert_eq!(parse_limit("0"), Ok(None));
    assert_eq!(parse_limit(" 512 "), Ok(Some(512)));
    assert!(parse_limit("fast").is_err());
}

#[test]
fn numbers_for_people() {
    assert_eq!(bytes(0), "0 B");
    assert_eq!(bytes(999), "999 B");
    assert_eq!(bytes(1_234), "1.2 kB");
    assert_eq!(bytes(34_000_000), "34 MB");
    assert_eq!(duration(4.4), "4 s");
    assert_eq!(duration(190.0), "3 min");
    assert_eq!(ago(3), "just now");
    assert_eq!(ago(3600), "1 hour ago");
    assert_eq!(ago(2 * 86_400 + 5), "2 days ago");
    assert_eq!(clock(86_400 + 3600 * 14 + 3 * 60 + 7), "14:03:07");
}
