//! `cairn conflicts [--resolve PATH --keep local|remote]`: the conflicts every synced folder of
//! this config dir recorded, and ending one. Resolving changes only local files; the next sync
//! pass carries the choice to the server (and both contents stay in its version history).

use std::path::Path;

use cairn_client::conflicts::{self, FolderConflicts};
use serde_json::json;

use crate::args::{ConflictsArgs, Keep};
use crate::output::{Report, fail};

/// Every folder's conflicts, with their state dirs; records whose copy the user already deleted
/// are dropped (and the drop saved).
fn all(dir: &Path) -> anyhow::Result<Vec<(std::path::PathBuf, FolderConflicts)>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("folders")) else {
        return Ok(found);
    };
    for entry in entries.flatten() {
        let state_dir = entry.path();
        let Some(mut list) = conflicts::load(&state_dir).map_err(|e| fail("state", e))? else {
            continue;
        };
        if conflicts::prune_handled(&mut list) {
            conflicts::save(&state_dir, &list).map_err(|e| fail("state", e))?;
        }
        if !list.conflicts.is_empty() {
            found.push((state_dir, list));
        }
    }
    found.sort_by(|a, b| a.1.folder.cmp(&b.1.folder));
    Ok(found)
}

/// Runs `cairn conflicts`.
pub(crate) fn run(args: &ConflictsArgs, dir: &Path) -> anyhow::Result<Report> {
    let mut found = all(dir)?;
    let (Some(path), Some(keep)) = (&args.resolve, args.keep) else {
        return list(&found);
    };
    let matches: Vec<(usize, usize)> = found
        .iter()
        .enumerate()
        .flat_map(|(f, (_, list))| {
            list.conflicts
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    c.path == path.trim_matches('/') || list.folder.join(&c.path) == Path::new(path)
                })
                .map(move |(i, _)| (f, i))
        })
        .collect();
    let (f, i) = match matches.as_slice() {
        [one] => *one,
        [] => {
            return Err(fail(
                "not_found",
                format!("no conflict is recorded at '{path}'; see `cairn conflicts`"),
            ));
        }
        _ => {
            return Err(fail(
                "ambiguous",
                format!("'{path}' has conflicts in several folders; give its absolute path"),
            ));
        }
    };
    let (state_dir, list) = &mut found[f];
    let record = list.conflicts[i].clone();
    let keep = match keep {
        Keep::Remote => conflicts::Keep::Remote,
        Keep::Local => conflicts::Keep::Local,
        Keep::Both => conflicts::Keep::Both,
    };
    let kept = if record.kept.is_some() && keep != conflicts::Keep::Remote {
        // This device's version is only in the server's history: fetch it.
        let (config, session) = crate::files::session(dir)?;
        crate::runtime()?
            .block_on(conflicts::resolve_fetching(
                &session,
                state_dir,
                list,
                i,
                keep,
                &config.device,
            ))
            .map_err(|e| fail("server", e))?
    } else {
        conflicts::resolve(state_dir, list, i, keep).map_err(|e| fail("local", e))?
    };
    let what = match kept {
        "both" => "both contents (the copy stays as a file of its own)",
        "local" => "the local content",
        "remote" => "the remote content",
        _ => "the edit",
    };
    Report::new(
        format!(
            "resolved '{}' in {}: kept {what}; the next sync pass sends it",
            record.path,
            list.folder.display()
        ),
        &json!({
            "resolved": record.path,
            "folder": list.folder.display().to_string(),
            "kept": kept,
        }),
    )
}

fn list(found: &[(std::path::PathBuf, FolderConflicts)]) -> anyhow::Result<Report> {
    let mut human = String::new();
    let mut items = Vec::new();
    for (_, list) in found {
        for c in &list.conflicts {
            let line = match (&c.copy, c.reason.as_str()) {
                (Some(copy), "type_clash") => format!(
                    "{}: a directory and a file met; the directory is kept, the file is at '{copy}'",
                    c.path
                ),
                (Some(copy), _) => format!(
                    "{}: changed here and on another device; theirs is at the path, yours at '{copy}'",
                    c.path
                ),
                (None, "both_edited") => format!(
                    "{}: changed here and on another device; theirs is at the path, yours is in the version history",
                    c.path
                ),
                (None, _) => format!(
                    "{}: edited on one side, deleted on the other; the edit was kept",
                    c.path
                ),
            };
            human.push_str(&format!("{}  {line}\n", list.folder.display()));
            items.push(json!({
                "folder": list.folder.display().to_string(),
                "path": c.path,
                "copy": c.copy,
                "in_history": c.kept.is_some(),
                "reason": c.reason,
                "winner": c.winner,
                "recorded_at": c.at,
                "seq": c.seq,
            }));
        }
    }
    if items.is_empty() {
        human.push_str("no conflicts");
    } else {
        human.push_str(&format!(
            "{} conflicts; end one with `cairn conflicts --resolve PATH --keep local|remote|both`",
            items.len()
        ));
    }
    Report::new(human, &json!({ "conflicts": items }))
}
