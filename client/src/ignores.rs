//! Which paths a folder never syncs: the rules of `.cairnignore` at the folder's top (gitignore
//! syntax, through the `ignore` crate) plus built-in patterns for the temporary and lock files
//! of common editors and systems. An ignored path is never uploaded, downloaded or deleted on
//! either side: the engine leaves it out of the local scan and out of the remote tree it plans
//! against.
//!
//! `.cairnignore` itself is an ordinary file and syncs, so every device shares the rules.

use std::borrow::Cow;
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use cairn_protocol::path::RelPath;

use crate::plan::{Entry, Kind, Tree};

/// The name of the rules file at a folder's top.
pub const FILE_NAME: &str = ".cairnignore";

/// Patterns ignored in every folder: editor swap and backup files, office lock files, OS
/// metadata. (The engine's own temporary files are skipped before any rule is asked.)
pub const BUILT_IN: &[&str] = &[
    // vim, emacs, gedit, kate
    "*.swp",
    "*.swo",
    "*.swx",
    ".*.sw?",
    "*~",
    ".#*",
    "\\#*#",
    // Microsoft Office and LibreOffice lock files
    "~$*",
    ".~lock.*#",
    // macOS, Windows
    ".DS_Store",
    "._*",
    ".Spotlight-V100",
    ".Trashes",
    "Thumbs.db",
    "desktop.ini",
    "$RECYCLE.BIN/",
    // partial downloads of browsers and of `cairn files get`
    "*.crdownload",
    "*.part",
    ".*.cairn-part-*",
];

/// Whether a file named `name` is metadata a desktop leaves in directories it showed
/// (Finder's `.DS_Store` and `._*` resource forks, Explorer's `Thumbs.db` and `desktop.ini`):
/// ignored, never synced, and removed with a directory deleted on another device, which it
/// would otherwise keep alive on this one forever.
pub fn is_disposable(name: &str) -> bool {
    matches!(name, ".DS_Store" | "Thumbs.db" | "desktop.ini") || name.starts_with("._")
}

/// The compiled rules of one folder.
#[derive(Debug, Clone)]
pub struct Ignores {
    rules: Gitignore,
    /// A problem with `.cairnignore` (it is then ignored itself, and only built-ins apply).
    pub problem: Option<String>,
    /// The BLAKE3 hash of `.cairnignore` as read (`None`: there is none, or it was unreadable).
    fingerprint: Option<[u8; 32]>,
}

impl Ignores {
    /// The built-in rules plus those of `root/.cairnignore`, if there is one. A file that
    /// cannot be read or has a bad line is reported in [`Ignores::problem`]; its good lines
    /// still apply.
    pub fn load(root: &Path) -> Ignores {
        let mut builder = GitignoreBuilder::new(root);
        for pattern in BUILT_IN {
            // Built-ins are valid (a unit test checks); a failure would only drop one.
            let _ = builder.add_line(None, pattern);
        }
        let file = root.join(FILE_NAME);
        let mut problem = None;
        let mut fingerprint = None;
        if file.is_file() {
            fingerprint = std::fs::read(&file)
                .ok()
                .map(|bytes| *blake3::hash(&bytes).as_bytes());
            if let Some(err) = builder.add(&file) {
                problem = Some(format!("{FILE_NAME}: {err}"));
            }
        }
        let rules = builder.build().unwrap_or_else(|err| {
            problem = Some(format!("{FILE_NAME}: {err}"));
            Gitignore::empty()
        });
        Ignores {
            rules,
            problem,
            fingerprint,
        }
    }

    /// Which rules these are, beyond the built-in ones: the hash of `.cairnignore` as read.
    /// The engine keeps the remote tree without the paths the rules ignore, so a change of
    /// rules makes it read that tree again whole (see `Engine::scan_trusting`).
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        self.fingerprint
    }

    /// Only the built-in rules.
    pub fn built_in() -> Ignores {
        Ignores::load(Path::new("/nonexistent-cairn-root"))
    }

    /// Whether `rel` (a `/`-separated path in the folder) is ignored, itself or through an
    /// ignored parent directory.
    pub fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        self.rules
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
    }

    /// `tree` without its ignored paths.
    pub fn filter<'t>(&self, tree: &'t Tree) -> Cow<'t, Tree> {
        let kept = |(path, entry): &(&RelPath, &Entry)| {
            !self.is_ignored(path.as_str(), entry.kind == Kind::Dir)
        };
        if tree.iter().all(|item| kept(&item)) {
            // The usual case: no copy of a large tree.
            return Cow::Borrowed(tree);
        }
        Cow::Owned(
            tree.iter()
                .filter(kept)
                .map(|(path, entry)| (path.clone(), entry.clone()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_cover_editor_and_system_droppings() {
        let rules = Ignores::built_in();
        assert!(rules.problem.is_none(), "{:?}", rules.problem);
        for ignored in [
            ".report.txt.swp",
            "notes.txt~",
            "~$budget.xlsx",
            ".~lock.budget.ods#",
            "photos/.DS_Store",
            "a/b/Thumbs.db",
            "download.crdownload",
            "#autosave#",
        ] {
            assert!(
                rules.is_ignored(ignored, false),
                "{ignored} should be ignored"
            );
        }
        for kept in [
            "report.txt",
            "swp.txt",
            "budget.xlsx",
            "a/b/c.md",
            ".bashrc",
        ] {
            assert!(!rules.is_ignored(kept, false), "{kept} should sync");
        }
    }

    #[test]
    fn cairnignore_rules_apply_to_paths_and_their_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(FILE_NAME),
            "# build output\ntarget/\n*.log\n!keep.log\n/top-only.txt\n",
        )
        .expect("write");
        let rules = Ignores::load(dir.path());
        assert!(rules.problem.is_none(), "{:?}", rules.problem);
        assert!(rules.is_ignored("target", true));
        assert!(
            rules.is_ignored("target/debug/app", false),
            "children of an ignored dir"
        );
        assert!(rules.is_ignored("logs/x.log", false));
        assert!(!rules.is_ignored("logs/keep.log", false), "negation");
        assert!(rules.is_ignored("top-only.txt", false));
        assert!(!rules.is_ignored("sub/top-only.txt", false), "anchored");
        assert!(
            !rules.is_ignored(FILE_NAME, false),
            "the rules file itself syncs"
        );
    }
}
