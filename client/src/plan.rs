//! The sync planner: a pure three-way merge of the last-synced tree (base), the local tree and
//! the remote tree.
//!
//! The client keeps three flattened [`Tree`]s per folder. [`plan`] compares them path by path
//! and returns the tree both sides must end up with ([`Plan::merged`]), the actions that turn
//! the local tree into it and the actions that turn the remote tree into it, the conflicts the
//! user must hear about, and the names that would collide on a case-insensitive or
//! normalising filesystem.
//!
//! The model, in the order [`plan`] runs it:
//!
//! 1. **Per path**, content (kind + content hash, including presence) and mode are merged
//!    separately, each three-way: local unchanged → take remote; remote unchanged → take
//!    local; both changed alike → take it; else a conflict. The remote side wins a content
//!    conflict because the server already accepted it; client mtimes never order edits. The
//!    local loser is kept under a [`conflict_name`]. An edit beats a delete, both ways. In a
//!    file-versus-directory clash the directory wins and the file becomes the copy.
//! 2. **Hierarchy**: every ancestor of a merged entry must be a directory. A missing one is
//!    restored (a deleted directory whose subtree gained an edit survives); a file or symlink
//!    in the way is moved to a conflict copy.
//! 3. **Copies** get free names beside their path, then **actions** are the difference
//!    between each side and the merged tree, ordered so an executor can run them top-down.
//!
//! Deliberately absent: IO, the clock (the caller passes `now_utc`), randomness and panics.
//! The planner never decides *how* a change is carried out (download, chmod, copy); it only
//! says what each side must hold. Nothing here reads mtimes to pick a winner.

use std::collections::{BTreeMap, BTreeSet};

use cairn_protocol::limits::{PATH_BYTES_MAX, PATH_COMPONENT_BYTES_MAX};
use cairn_protocol::path::RelPath;
use cairn_store::NodeId;
use unicode_normalization::UnicodeNormalization;

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (stored, never followed).
    Symlink,
}

/// One entry of a flattened tree. Two entries have the same *content* when kind and content
/// are equal (directories always have the same content as each other).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File, directory or symlink.
    pub kind: Kind,
    /// Identity of the content: for files a hash of the ordered block list, for symlinks of
    /// the target, for directories all zero.
    pub content: [u8; 32],
    /// The store node of this entry on the side it came from (file or symlink node; unused
    /// for directories). In [`Plan::merged`] it is the node of the side the content came
    /// from, so when the merged `mode` differs from that side's the executor re-encodes it.
    pub node: NodeId,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time in nanoseconds since the Unix epoch; carried, never compared for
    /// ordering.
    pub mtime_ns: i64,
}

/// A flattened tree: every file, symlink and directory by path. Directories appear
/// explicitly, including all ancestors of every entry.
pub type Tree = BTreeMap<RelPath, Entry>;

/// A UTC wall-clock time `(year, month, day, hour, minute, second)`, passed in so the planner
/// never reads the clock.
pub type UtcTime = (i32, u8, u8, u8, u8, u8);

/// Everything [`plan`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The last-synced tree: the merge base.
    pub base: &'a Tree,
    /// What is on disk now.
    pub local: &'a Tree,
    /// The server's current head.
    pub remote: &'a Tree,
    /// This device's name, used in conflict copy names.
    pub device: &'a str,
    /// The current time, used in conflict copy names.
    pub now_utc: UtcTime,
    /// Whether a local file that loses a [`ConflictReason::BothEdited`] conflict is kept as a
    /// copy beside the path (the default). Without copies it is overwritten and kept only in
    /// the version history: the plan gives it in [`Conflict::kept`], and the caller must
    /// commit it as a kept version before anything overwrites it. Symlink losers and type
    /// clashes always get a copy, because the history holds only files.
    pub conflict_copies: bool,
}

/// What a sync pass must do, as decided by [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The tree both sides must end up with. It is always a valid tree: every ancestor of an
    /// entry is a directory in it.
    pub merged: Tree,
    /// Actions that turn the local tree into `merged`, in an order that can run top-down:
    /// renames whose target directory already exists; deletes of files and symlinks; puts of
    /// directories, parents first; the remaining renames; deletes of directories, children
    /// first (each is empty by then); puts of files and symlinks.
    pub local: Vec<Action>,
    /// Actions that turn the remote tree into `merged` (the entries of `merged` that differ
    /// from the remote tree), in the same order. Never contains a [`Action::Rename`].
    pub remote: Vec<Action>,
    /// The conflicts the user must be told about, sorted by path.
    pub conflicts: Vec<Conflict>,
    /// Groups of paths in `merged` that are equal after Unicode NFC normalisation and
    /// lowercasing but differ as strings. Each group is sorted; groups are sorted by their
    /// first path. Reported only: every path stays in `merged`.
    pub collisions: Vec<Vec<RelPath>>,
}

/// One change to one side's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make `path` hold `entry`: create, replace a file or symlink, or (when only the mode
    /// differs) chmod. A put never replaces a directory by a non-directory or the reverse:
    /// the plan deletes the old entry first.
    Put {
        /// Where.
        path: RelPath,
        /// What the path must hold afterwards.
        entry: Entry,
    },
    /// Remove `path`. For a directory, only once it is empty (the plan removes its contents
    /// first).
    Delete {
        /// What to remove.
        path: RelPath,
    },
    /// Move the file or symlink at `from` to `to` (absent until then), then give it `entry`'s
    /// metadata. Local side only. Emitted for a remote rename (remote deleted `from`, which is
    /// unchanged locally, and added `to` with the same content), so nothing is downloaded, and
    /// for a local conflict loser moving to its copy name, so its content is kept before the
    /// winner is written over `from`.
    Rename {
        /// The existing path.
        from: RelPath,
        /// The new path.
        to: RelPath,
        /// What `to` must hold afterwards (same content as `from`).
        entry: Entry,
    },
}

/// A path where the two sides disagreed in a way the user must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The path both sides changed.
    pub path: RelPath,
    /// Where the losing content is kept, if a copy was made: the local side's content, or in
    /// a [`ConflictReason::TypeClash`] the file or symlink that lost to a directory.
    pub copy: Option<RelPath>,
    /// What kind of disagreement.
    pub reason: ConflictReason,
    /// The losing local file when no copy is made (see [`PlanInput::conflict_copies`]): it must
    /// reach the version history before the winner overwrites it.
    pub kept: Option<Entry>,
}

/// Why a [`Conflict`] was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictReason {
    /// Both sides changed (or added) the content differently; the remote content is at the
    /// path and the local content at the copy.
    BothEdited,
    /// One side deleted what the other edited; the edit is kept and no copy is made. Also
    /// recorded for a deleted directory restored because its subtree gained an entry.
    EditedVsDeleted,
    /// A directory and a file or symlink met at one path; the directory is kept and the other
    /// entry goes to the copy.
    TypeClash,
}

/// Mode of a directory the planner has to create without any side having one: `rwxr-xr-x`.
pub const DIR_MODE_DEFAULT: u32 = 0o755;

/// Longest device name used in a conflict copy name, in bytes: 64, so that the whole
/// " (conflict from DEVICE YYYY-MM-DD HHMMSS N)" tag stays under 125 bytes and leaves over
/// half of a 255-byte name for the original name.
// Belongs in a client `limits.rs`; it lives here until the crate has one.
const DEVICE_NAME_BYTES_MAX: usize = 64;

// The rest of the tag is at most 58 bytes (" (conflict from ", a date with out-of-range fields,
// " 4294967295", ")"), so the tag always fits in one name: the top-level fallback of
// `conflict_name` always exists.
const _: () = assert!(DEVICE_NAME_BYTES_MAX + 58 < PATH_COMPONENT_BYTES_MAX);

/// Plans one sync pass: the merged tree, the actions for each side, conflicts and collisions.
///
/// Pure and total: the same input always gives the same plan, and no input makes it panic
/// (trees that are not valid, such as a file with children, are merged into a valid tree).
/// Runs in O(n log n) in the number of paths.
#[must_use]
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let (mut merged, mut pending) = merge_paths(input.base, input.local, input.remote);
    complete_hierarchy(&mut merged, &mut pending, input);
    let conflicts = place_copies(&mut merged, pending, input);
    let local = local_actions(input, &merged, &conflicts);
    let remote = order(&diff(input.remote, &merged), &[], input.remote, &merged);
    let collisions = collisions(&merged);
    Plan {
        merged,
        local,
        remote,
        conflicts,
        collisions,
    }
}

/// The name of the `n`th conflict copy of `path`:
/// `name (conflict from DEVICE YYYY-MM-DD HHMMSS).ext`, with ` n` before the `)` when `n > 1`.
///
/// The extension starts at the last `.` of the file name when the stem before it is not
/// empty (`.bashrc` has none; `a.tar.gz` gives `a.tar (conflict …).gz`). `/`, `\`, NUL and
/// control characters in `device` become `_`, and it is cut to 64 bytes. When the name would
/// be too long, the stem is shortened, then the extension dropped; the stem is cut the same
/// way for every `n`, so distinct `n` give distinct names. If even the tag does not fit
/// beside `path` (its directory is nearly 4,096 bytes long), the copy goes to the folder's
/// top level instead.
#[must_use]
pub fn conflict_name(path: &RelPath, device: &str, now_utc: UtcTime, n: u32) -> RelPath {
    let device = sanitize_device(device);
    let tag = conflict_tag(&device, now_utc, n);
    let reserve = conflict_tag(&device, now_utc, u32::MAX).len();
    let (parent, name) = match path.as_str().rsplit_once('/') {
        Some((parent, name)) => (Some(parent), name),
        None => (None, path.as_str()),
    };
    let beside = parent.map_or(PATH_COMPONENT_BYTES_MAX, |parent| {
        PATH_COMPONENT_BYTES_MAX.min(PATH_BYTES_MAX.saturating_sub(parent.len() + 1))
    });
    let text = match (parent, fit_name(name, &tag, reserve, beside)) {
        (Some(parent), Some(component)) => format!("{parent}/{component}"),
        (None, Some(component)) => component,
        (_, None) => fit_name(name, &tag, reserve, PATH_COMPONENT_BYTES_MAX).unwrap_or_default(),
    };
    // Cannot fail: the component comes from a valid name and a tag without '/', '\' or NUL,
    // and it was cut to the limits above. Returning `path` keeps this total; the caller sees
    // it as taken.
    RelPath::parse(&text).unwrap_or_else(|_| path.clone())
}

/// Applies `actions` to `tree` as plain map updates, without checking that they could run
/// on a filesystem. `apply(local, &plan.local)` and `apply(remote, &plan.remote)` both equal
/// `plan.merged`, so an engine can use it to advance a tree after running a prefix of a plan.
#[must_use]
pub fn apply(tree: &Tree, actions: &[Action]) -> Tree {
    let mut out = tree.clone();
    for action in actions {
        match action {
            Action::Put { path, entry } => {
                out.insert(path.clone(), entry.clone());
            }
            Action::Delete { path } => {
                out.remove(path);
            }
            Action::Rename { from, to, entry } => {
                out.remove(from);
                out.insert(to.clone(), entry.clone());
            }
        }
    }
    out
}

/// Kind and content: what decides whether two entries hold the same thing.
type ContentKey = (Kind, [u8; 32]);

/// A conflict before its copy has a name.
struct Pending {
    path: RelPath,
    reason: ConflictReason,
    copy: Option<Entry>,
}

/// The result of merging one path.
struct Outcome {
    entry: Option<Entry>,
    conflict: Option<(ConflictReason, Option<Entry>)>,
}

/// What one side must change to become the merged tree, before ordering.
struct Changes<'a> {
    /// Paths to remove, with their kind on that side.
    deletes: BTreeMap<&'a RelPath, Kind>,
    /// Paths to create or update, with their merged entry.
    puts: BTreeMap<&'a RelPath, &'a Entry>,
}

/// A rename before ordering.
struct Move<'a> {
    from: &'a RelPath,
    to: &'a RelPath,
    entry: &'a Entry,
}

fn content_key(entry: &Entry) -> ContentKey {
    match entry.kind {
        // Directories carry no content of their own; ignoring the field keeps two directories
        // from ever conflicting, even in a malformed tree.
        Kind::Dir => (Kind::Dir, [0; 32]),
        kind => (kind, entry.content),
    }
}

/// Phase 1: merges every path that appears in any of the three trees.
fn merge_paths(base: &Tree, local: &Tree, remote: &Tree) -> (Tree, Vec<Pending>) {
    let paths: BTreeSet<&RelPath> = base
        .keys()
        .chain(local.keys())
        .chain(remote.keys())
        .collect();
    let mut merged = Tree::new();
    let mut pending = Vec::new();
    for path in paths {
        let outcome = merge_entry(base.get(path), local.get(path), remote.get(path));
        if let Some(entry) = outcome.entry {
            merged.insert(path.clone(), entry);
        }
        if let Some((reason, copy)) = outcome.conflict {
            pending.push(Pending {
                path: path.clone(),
                reason,
                copy,
            });
        }
    }
    (merged, pending)
}

/// The three-way merge of one path's content; the mode is merged separately.
fn merge_entry(b: Option<&Entry>, l: Option<&Entry>, r: Option<&Entry>) -> Outcome {
    let (kb, kl, kr) = (b.map(content_key), l.map(content_key), r.map(content_key));
    let entry = if kl == kr {
        l.zip(r).map(|(l, r)| same_content(b, l, r))
    } else if kl == kb {
        r.map(|r| with_merged_mode(r, b, l, Some(r)))
    } else if kr == kb {
        l.map(|l| with_merged_mode(l, b, Some(l), r))
    } else {
        return content_conflict(b, l, r);
    };
    Outcome {
        entry,
        conflict: None,
    }
}

/// Both sides hold the same content: the size, mtime and node come three-way from the side
/// that changed them (the remote one when both did), the mode three-way.
fn same_content(b: Option<&Entry>, l: &Entry, r: &Entry) -> Entry {
    let unchanged = |side: &Entry| b.is_some_and(|b| same_attributes(side, b));
    let source = if unchanged(l) {
        r
    } else if unchanged(r) {
        l
    } else {
        r
    };
    with_merged_mode(source, b, Some(l), Some(r))
}

fn same_attributes(x: &Entry, y: &Entry) -> bool {
    content_key(x) == content_key(y)
        && x.size == y.size
        && x.mtime_ns == y.mtime_ns
        && x.node == y.node
}

/// `winner` with its mode merged three-way from the sides that hold the same kind of entry.
fn with_merged_mode(
    winner: &Entry,
    b: Option<&Entry>,
    l: Option<&Entry>,
    r: Option<&Entry>,
) -> Entry {
    let mode_of = |side: Option<&Entry>| side.filter(|e| e.kind == winner.kind).map(|e| e.mode);
    let mode = three_way(mode_of(b), mode_of(l), mode_of(r)).unwrap_or(winner.mode);
    Entry {
        mode,
        ..winner.clone()
    }
}

/// The three-way rule; when both sides changed differently the remote side wins.
fn three_way<T: PartialEq + Copy>(b: T, l: T, r: T) -> T {
    if l == b {
        r
    } else if r == b {
        l
    } else {
        r
    }
}

/// Both sides changed the content, differently.
fn content_conflict(b: Option<&Entry>, l: Option<&Entry>, r: Option<&Entry>) -> Outcome {
    let (entry, reason, copy) = match (l, r) {
        (Some(l), Some(r)) if l.kind == Kind::Dir => (
            with_merged_mode(l, b, Some(l), Some(r)),
            ConflictReason::TypeClash,
            Some(r.clone()),
        ),
        (Some(l), Some(r)) => {
            let reason = if r.kind == Kind::Dir {
                ConflictReason::TypeClash
            } else {
                ConflictReason::BothEdited
            };
            (
                with_merged_mode(r, b, Some(l), Some(r)),
                reason,
                Some(l.clone()),
            )
        }
        (Some(kept), None) | (None, Some(kept)) => {
            (kept.clone(), ConflictReason::EditedVsDeleted, None)
        }
        (None, None) => {
            // Unreachable: equal sides are merged before a conflict is considered.
            return Outcome {
                entry: None,
                conflict: None,
            };
        }
    };
    Outcome {
        entry: Some(entry),
        conflict: Some((reason, copy)),
    }
}

/// Phase 2: makes every ancestor of a merged entry a directory.
fn complete_hierarchy(merged: &mut Tree, pending: &mut Vec<Pending>, input: &PlanInput<'_>) {
    for dir in required_dirs(merged) {
        match merged.get(&dir) {
            Some(entry) if entry.kind == Kind::Dir => {}
            Some(_) => {
                let displaced = merged.insert(dir.clone(), dir_entry(&dir, input));
                pending.push(Pending {
                    path: dir,
                    reason: ConflictReason::TypeClash,
                    copy: displaced,
                });
            }
            None => {
                merged.insert(dir.clone(), dir_entry(&dir, input));
                if input.base.contains_key(&dir) {
                    pending.push(Pending {
                        path: dir,
                        reason: ConflictReason::EditedVsDeleted,
                        copy: None,
                    });
                }
            }
        }
    }
}

/// Every proper ancestor of every path in `tree`, each computed once.
fn required_dirs(tree: &Tree) -> BTreeSet<RelPath> {
    let mut dirs = BTreeSet::new();
    for path in tree.keys() {
        let mut current = parent(path);
        while let Some(dir) = current {
            let next = parent(&dir);
            if !dirs.insert(dir) {
                // Its ancestors were added with it.
                break;
            }
            current = next;
        }
    }
    dirs
}

fn parent(path: &RelPath) -> Option<RelPath> {
    let (head, _) = path.as_str().rsplit_once('/')?;
    RelPath::parse(head).ok()
}

/// The directory entry to restore at `dir`: a side's own directory entry if it has one
/// (remote first), else a new one.
fn dir_entry(dir: &RelPath, input: &PlanInput<'_>) -> Entry {
    [input.remote, input.local, input.base]
        .into_iter()
        .filter_map(|tree| tree.get(dir))
        .find(|entry| entry.kind == Kind::Dir)
        .cloned()
        .unwrap_or(Entry {
            kind: Kind::Dir,
            content: [0; 32],
            node: NodeId::from_bytes([0; 32]),
            size: 0,
            mode: DIR_MODE_DEFAULT,
            mtime_ns: 0,
        })
}

/// Phase 3: gives each losing entry a free name beside its path and records the conflicts.
fn place_copies(
    merged: &mut Tree,
    mut pending: Vec<Pending>,
    input: &PlanInput<'_>,
) -> Vec<Conflict> {
    pending.sort_by(|x, y| x.path.cmp(&y.path));
    pending
        .into_iter()
        .map(|item| {
            let history_only = !input.conflict_copies
                && item.reason == ConflictReason::BothEdited
                && item.copy.as_ref().is_some_and(|e| e.kind == Kind::File);
            if history_only {
                return Conflict {
                    path: item.path,
                    copy: None,
                    reason: item.reason,
                    kept: item.copy,
                };
            }
            let copy = item.copy.and_then(|entry| {
                let name = free_copy_name(merged, &item.path, input)?;
                merged.insert(name.clone(), entry);
                Some(name)
            });
            Conflict {
                path: item.path,
                copy,
                reason: item.reason,
                kept: None,
            }
        })
        .collect()
}

/// The first [`conflict_name`] of `path` taken neither in `merged` nor locally (so the local
/// loser can be renamed there). Distinct `n` give distinct names and at most
/// `merged.len() + local.len()` are taken, so the bounded search always finds one.
fn free_copy_name(merged: &Tree, path: &RelPath, input: &PlanInput<'_>) -> Option<RelPath> {
    let taken_max = merged.len().saturating_add(input.local.len());
    let attempts_max = u32::try_from(taken_max)
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    (1..=attempts_max)
        .map(|n| conflict_name(path, input.device, input.now_utc, n))
        .find(|name| !merged.contains_key(name) && !input.local.contains_key(name))
}

fn sanitize_device(device: &str) -> String {
    let clean: String = device
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    truncate(&clean, DEVICE_NAME_BYTES_MAX).to_owned()
}

fn conflict_tag(device: &str, now_utc: UtcTime, n: u32) -> String {
    let (year, month, day, hour, minute, second) = now_utc;
    let counter = if n > 1 {
        format!(" {n}")
    } else {
        String::new()
    };
    format!(
        " (conflict from {device} {year:04}-{month:02}-{day:02} {hour:02}{minute:02}{second:02}{counter})"
    )
}

/// `stem + tag + ext` within `budget` bytes, cutting the stem as if the tag were `reserve`
/// bytes long; drops the extension if it alone does not fit; `None` if the tag does not fit.
fn fit_name(name: &str, tag: &str, reserve: usize, budget: usize) -> Option<String> {
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    if reserve + ext.len() <= budget {
        let stem = truncate(stem, budget - reserve - ext.len());
        Some(format!("{stem}{tag}{ext}"))
    } else if reserve <= budget {
        Some(format!("{}{tag}", truncate(name, budget - reserve)))
    } else {
        None
    }
}

/// The longest prefix of `text` of at most `bytes_max` bytes that ends on a char boundary.
fn truncate(text: &str, bytes_max: usize) -> &str {
    let mut end = bytes_max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// Groups of merged paths equal under NFC and lowercasing.
fn collisions(tree: &Tree) -> Vec<Vec<RelPath>> {
    let mut groups: BTreeMap<String, Vec<RelPath>> = BTreeMap::new();
    for path in tree.keys() {
        let folded = path.as_str().nfc().collect::<String>().to_lowercase();
        groups.entry(folded).or_default().push(path.clone());
    }
    let mut found: Vec<Vec<RelPath>> = groups
        .into_values()
        .filter(|group| group.len() > 1)
        .collect();
    found.sort();
    found
}

/// What `from` must change to become `to`, unordered. A path whose kind changes between a
/// directory and anything else is deleted and put again.
fn diff<'a>(from: &'a Tree, to: &'a Tree) -> Changes<'a> {
    let mut changes = Changes {
        deletes: BTreeMap::new(),
        puts: BTreeMap::new(),
    };
    for (path, old) in from {
        match to.get(path) {
            None => {
                changes.deletes.insert(path, old.kind);
            }
            Some(new) if (old.kind == Kind::Dir) != (new.kind == Kind::Dir) => {
                changes.deletes.insert(path, old.kind);
            }
            Some(_) => {}
        }
    }
    for (path, new) in to {
        if from.get(path) != Some(new) {
            changes.puts.insert(path, new);
        }
    }
    changes
}

/// The local side's actions: the diff, with renames found for conflict copies and for
/// remote renames.
fn local_actions(input: &PlanInput<'_>, merged: &Tree, conflicts: &[Conflict]) -> Vec<Action> {
    let mut changes = diff(input.local, merged);
    let mut moves = copy_moves(&mut changes, input.local, merged, conflicts);
    moves.extend(remote_moves(&mut changes, input, merged));
    order(&changes, &moves, input.local, merged)
}

/// A local conflict loser is renamed to its copy name instead of being written again.
fn copy_moves<'a>(
    changes: &mut Changes<'a>,
    local: &'a Tree,
    merged: &'a Tree,
    conflicts: &'a [Conflict],
) -> Vec<Move<'a>> {
    let mut moves = Vec::new();
    // A path loses at most one local entry; the set guards malformed input all the same.
    let mut sources_used: BTreeSet<&RelPath> = BTreeSet::new();
    for conflict in conflicts {
        let Some(to) = conflict.copy.as_ref() else {
            continue;
        };
        let (Some(entry), Some(old)) = (merged.get(to), local.get(&conflict.path)) else {
            continue;
        };
        let from = &conflict.path;
        let from_changes = changes.puts.contains_key(from) || changes.deletes.contains_key(from);
        let vacant = !local.contains_key(to);
        if old == entry
            && from_changes
            && vacant
            && !sources_used.contains(from)
            && may_move(changes, from, to, local, merged)
        {
            changes.puts.remove(to);
            changes.deletes.remove(from);
            sources_used.insert(from);
            moves.push(Move { from, to, entry });
        }
    }
    moves
}

/// A remote rename (remote deleted `from`, unchanged locally, and added `to` with the same
/// content, absent locally) becomes a local rename. Candidates with equal content are paired
/// in path order.
fn remote_moves<'a>(
    changes: &mut Changes<'a>,
    input: &PlanInput<'a>,
    merged: &'a Tree,
) -> Vec<Move<'a>> {
    let mut sources: BTreeMap<ContentKey, Vec<&'a RelPath>> = BTreeMap::new();
    for (&path, &kind) in &changes.deletes {
        let (Some(local), Some(base)) = (input.local.get(path), input.base.get(path)) else {
            continue;
        };
        let unchanged = content_key(local) == content_key(base);
        let remote_deleted = !input.remote.contains_key(path) && !changes.puts.contains_key(path);
        if kind != Kind::Dir && unchanged && remote_deleted {
            sources.entry(content_key(local)).or_default().push(path);
        }
    }
    let mut targets: BTreeMap<ContentKey, Vec<(&'a RelPath, &'a Entry)>> = BTreeMap::new();
    for (&path, &entry) in &changes.puts {
        let added = !input.local.contains_key(path) && !input.base.contains_key(path);
        let from_remote = input.remote.get(path).map(content_key) == Some(content_key(entry));
        if entry.kind != Kind::Dir && added && from_remote {
            targets
                .entry(content_key(entry))
                .or_default()
                .push((path, entry));
        }
    }
    let mut moves = Vec::new();
    for (key, froms) in sources {
        let Some(tos) = targets.get(&key) else {
            continue;
        };
        for (from, &(to, entry)) in froms.into_iter().zip(tos) {
            if may_move(changes, from, to, input.local, merged) {
                changes.deletes.remove(from);
                changes.puts.remove(to);
                moves.push(Move { from, to, entry });
            }
        }
    }
    moves
}

/// A rename that must wait for new directories (see [`order`]) runs after the directory
/// puts, so `from` must not be one of them.
fn may_move(
    changes: &Changes<'_>,
    from: &RelPath,
    to: &RelPath,
    local: &Tree,
    merged: &Tree,
) -> bool {
    target_dir_exists(to, local, merged) || !changes.puts.contains_key(from)
}

/// Whether `to`'s directory exists on the side before any action runs and stays a directory.
fn target_dir_exists(to: &RelPath, local: &Tree, merged: &Tree) -> bool {
    let is_dir = |tree: &Tree, dir: &RelPath| tree.get(dir).is_some_and(|e| e.kind == Kind::Dir);
    parent(to).is_none_or(|dir| is_dir(local, &dir) && is_dir(merged, &dir))
}

/// Orders one side's actions so each can run top-down on a filesystem (see [`Plan::local`]).
fn order(changes: &Changes<'_>, moves: &[Move<'_>], side: &Tree, merged: &Tree) -> Vec<Action> {
    let rename = |m: &Move<'_>| Action::Rename {
        from: m.from.clone(),
        to: m.to.clone(),
        entry: m.entry.clone(),
    };
    let put = |(path, entry): (&&RelPath, &&Entry)| Action::Put {
        path: (*path).clone(),
        entry: (*entry).clone(),
    };
    let delete = |(path, _): (&&RelPath, &Kind)| Action::Delete {
        path: (*path).clone(),
    };
    let (early, late): (Vec<_>, Vec<_>) = moves
        .iter()
        .partition(|m| target_dir_exists(m.to, side, merged));
    let is_dir_delete = |item: &(&&RelPath, &Kind)| *item.1 == Kind::Dir;
    let is_dir_put = |item: &(&&RelPath, &&Entry)| item.1.kind == Kind::Dir;
    let mut actions = Vec::with_capacity(changes.deletes.len() + changes.puts.len() + moves.len());
    actions.extend(early.into_iter().map(rename));
    actions.extend(
        changes
            .deletes
            .iter()
            .filter(|d| !is_dir_delete(d))
            .map(delete),
    );
    actions.extend(changes.puts.iter().filter(is_dir_put).map(put));
    actions.extend(late.into_iter().map(rename));
    // Reverse path order puts every directory after its descendants.
    actions.extend(
        changes
            .deletes
            .iter()
            .rev()
            .filter(is_dir_delete)
            .map(delete),
    );
    actions.extend(changes.puts.iter().filter(|p| !is_dir_put(p)).map(put));
    actions
}

// The brief for this module asked for its tests in the same file, so this file is over the
// ~600-line guideline; the tests can move to `plan/tests.rs` (as `store::node` does) without
// other changes.
#[cfg(test)]
mod tests {
    //! Unit tests pin each merge rule through [`check`], which also asserts the invariants
    //! every plan keeps. The property tests generate one base tree over a small path alphabet
    //! (so changes collide often), perturb it twice into a local and a remote tree, and assert
    //! convergence, termination, that nothing is lost, order independence and totality.
    //!
    //! They run `PROPTEST_CASES` cases (256 by default); the nightly-style run is
    //! `PROPTEST_CASES=10000 cargo test -p cairn-client plan`.

    use proptest::prelude::*;

    use super::*;

    const DEVICE: &str = "laptop";
    const NOW: UtcTime = (2024, 3, 5, 14, 7, 9);
    const TAG: &str = " (conflict from laptop 2024-03-05 140709)";

    fn path(text: &str) -> RelPath {
        RelPath::parse(text).expect("test paths are valid")
    }

    fn entry(kind: Kind, content: u8) -> Entry {
        let is_dir = kind == Kind::Dir;
        Entry {
            kind,
            content: if is_dir { [0; 32] } else { [content; 32] },
            node: NodeId::from_bytes([content; 32]),
            size: u64::from(content),
            mode: if is_dir { 0o755 } else { 0o644 },
            mtime_ns: 0,
        }
    }

    fn file(content: u8) -> Entry {
        entry(Kind::File, content)
    }

    fn link(content: u8) -> Entry {
        entry(Kind::Symlink, content)
    }

    fn dir() -> Entry {
        entry(Kind::Dir, 0)
    }

    fn with_mode(entry: &Entry, mode: u32) -> Entry {
        Entry {
            mode,
            ..entry.clone()
        }
    }

    /// A valid tree from `(path, entry)` pairs; missing ancestors become directories.
    fn tree(entries: &[(&str, Entry)]) -> Tree {
        let mut tree = Tree::new();
        for (text, entry) in entries {
            let entry_path = path(text);
            let mut current = parent(&entry_path);
            while let Some(dir_path) = current {
                current = parent(&dir_path);
                tree.entry(dir_path).or_insert_with(dir);
            }
            tree.insert(entry_path, entry.clone());
        }
        tree
    }

    fn put(text: &str, entry: Entry) -> Action {
        Action::Put {
            path: path(text),
            entry,
        }
    }

    fn delete(text: &str) -> Action {
        Action::Delete { path: path(text) }
    }

    fn rename(from: &str, to: &str, entry: Entry) -> Action {
        Action::Rename {
            from: path(from),
            to: path(to),
            entry,
        }
    }

    fn conflict(text: &str, copy: Option<&str>, reason: ConflictReason) -> Conflict {
        Conflict {
            path: path(text),
            copy: copy.map(path),
            reason,
            kept: None,
        }
    }

    fn input<'a>(base: &'a Tree, local: &'a Tree, remote: &'a Tree) -> PlanInput<'a> {
        PlanInput {
            base,
            local,
            remote,
            device: DEVICE,
            now_utc: NOW,
            conflict_copies: true,
        }
    }

    /// Plans valid trees and asserts every invariant, including that both action lists run
    /// top-down on a filesystem.
    fn check(base: &Tree, local: &Tree, remote: &Tree) -> Plan {
        let input = input(base, local, remote);
        let out = check_total(&input);
        if let Err(err) = execute(local, &out.local) {
            panic!("local actions do not run: {err}\n{out:#?}");
        }
        if let Err(err) = execute(remote, &out.remote) {
            panic!("remote actions do not run: {err}\n{out:#?}");
        }
        out
    }

    /// The invariants that hold for any input, valid trees or not.
    fn check_total(input: &PlanInput<'_>) -> Plan {
        let out = plan(input);
        assert_eq!(plan(input), out, "the plan is deterministic");
        assert_valid(&out.merged);
        assert_eq!(
            apply(input.local, &out.local),
            out.merged,
            "local converges"
        );
        assert_eq!(
            apply(input.remote, &out.remote),
            out.merged,
            "remote converges"
        );
        assert!(
            !out.remote
                .iter()
                .any(|a| matches!(a, Action::Rename { .. }))
        );
        assert_nothing_lost(input, &out);
        assert_terminates(input, &out);
        out
    }

    fn assert_valid(tree: &Tree) {
        for entry_path in tree.keys() {
            if let Some(dir_path) = parent(entry_path) {
                let kind = tree.get(&dir_path).map(|e| e.kind);
                assert_eq!(kind, Some(Kind::Dir), "parent of {entry_path} in {tree:#?}");
            }
        }
    }

    /// Every file or symlink content a side changed is at its path or in a copy recorded for it.
    fn assert_nothing_lost(input: &PlanInput<'_>, out: &Plan) {
        for side in [input.local, input.remote] {
            for (entry_path, entry) in side {
                let key = Some(content_key(entry));
                if entry.kind == Kind::Dir || input.base.get(entry_path).map(content_key) == key {
                    continue;
                }
                let at_path = out.merged.get(entry_path).map(content_key) == key;
                let in_copy = out.conflicts.iter().any(|c| {
                    &c.path == entry_path
                        && c.copy
                            .as_ref()
                            .and_then(|copy| out.merged.get(copy))
                            .map(content_key)
                            == key
                });
                let in_history = out
                    .conflicts
                    .iter()
                    .any(|c| &c.path == entry_path && c.kept.as_ref().map(content_key) == key);
                assert!(
                    at_path || in_copy || in_history,
                    "{entry_path}: {entry:?} lost in {out:#?}"
                );
            }
        }
    }

    /// After running the plan, the next pass has nothing to do.
    fn assert_terminates(input: &PlanInput<'_>, out: &Plan) {
        let local = apply(input.local, &out.local);
        let remote = apply(input.remote, &out.remote);
        let again = plan(&PlanInput {
            base: &out.merged,
            local: &local,
            remote: &remote,
            ..*input
        });
        assert_eq!(again.merged, out.merged, "second pass changes the tree");
        assert_eq!(again.local, [], "second pass has local actions");
        assert_eq!(again.remote, [], "second pass has remote actions");
        assert_eq!(again.conflicts, [], "second pass has conflicts");
    }

    /// Runs actions like a filesystem would, refusing any whose precondition fails.
    fn execute(tree: &Tree, actions: &[Action]) -> Result<Tree, String> {
        let mut fs = tree.clone();
        for action in actions {
            match action {
                Action::Put { path, entry } => {
                    require_parent_dir(&fs, path)?;
                    if let Some(old) = fs.get(path)
                        && (old.kind == Kind::Dir) != (entry.kind == Kind::Dir)
                    {
                        return Err(format!("put {path} over a {:?}", old.kind));
                    }
                    fs.insert(path.clone(), entry.clone());
                }
                Action::Delete { path } => {
                    if fs.remove(path).is_none() {
                        return Err(format!("delete of missing {path}"));
                    }
                    if has_children(&fs, path) {
                        return Err(format!("delete of non-empty {path}"));
                    }
                }
                Action::Rename { from, to, entry } => {
                    let old = fs.remove(from).ok_or(format!("rename of missing {from}"))?;
                    if old.kind == Kind::Dir || content_key(&old) != content_key(entry) {
                        return Err(format!("rename of {from} changes content"));
                    }
                    if fs.contains_key(to) {
                        return Err(format!("rename onto existing {to}"));
                    }
                    require_parent_dir(&fs, to)?;
                    fs.insert(to.clone(), entry.clone());
                }
            }
        }
        Ok(fs)
    }

    fn require_parent_dir(fs: &Tree, entry_path: &RelPath) -> Result<(), String> {
        match parent(entry_path) {
            Some(dir_path) if fs.get(&dir_path).is_none_or(|e| e.kind != Kind::Dir) => {
                Err(format!("{entry_path}: parent is not a directory"))
            }
            _ => Ok(()),
        }
    }

    fn has_children(fs: &Tree, dir_path: &RelPath) -> bool {
        let prefix = format!("{dir_path}/");
        fs.keys().any(|k| k.as_str().starts_with(&prefix))
    }

    #[test]
    fn disjoint_changes_merge() {
        // Goal: changes to different paths on the two sides all arrive, without conflicts.
        let base = tree(&[("a.txt", file(1)), ("b.txt", file(1))]);
        let local = tree(&[("a.txt", file(2)), ("b.txt", file(1))]);
        let remote = tree(&[("a.txt", file(1)), ("b.txt", file(3)), ("c.txt", file(4))]);
        let out = check(&base, &local, &remote);
        assert_eq!(
            out.merged,
            tree(&[("a.txt", file(2)), ("b.txt", file(3)), ("c.txt", file(4))])
        );
        assert_eq!(out.local, [put("b.txt", file(3)), put("c.txt", file(4))]);
        assert_eq!(out.remote, [put("a.txt", file(2))]);
        assert_eq!(out.conflicts, []);
    }

    #[test]
    fn edit_edit_keeps_remote_and_copies_local() {
        // Goal: the remote edit wins at the path, the local one survives as a copy that the
        // executor makes by renaming before it writes the winner, and the user is told.
        let copy = format!("doc{TAG}.txt");
        let base = tree(&[("doc.txt", file(1))]);
        let local = tree(&[("doc.txt", file(2))]);
        let remote = tree(&[("doc.txt", file(3))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, tree(&[("doc.txt", file(3)), (&copy, file(2))]));
        assert_eq!(
            out.local,
            [rename("doc.txt", &copy, file(2)), put("doc.txt", file(3))]
        );
        assert_eq!(out.remote, [put(&copy, file(2))]);
        assert_eq!(
            out.conflicts,
            [conflict("doc.txt", Some(&copy), ConflictReason::BothEdited)]
        );
    }

    #[test]
    fn edit_edit_local_does_not_win_even_when_newer() {
        // Goal: the other direction of the rule: a local edit with a later mtime still loses,
        // because client clocks never order edits.
        let base = tree(&[("doc", file(1))]);
        let local = tree(&[(
            "doc",
            Entry {
                mtime_ns: i64::MAX,
                ..file(2)
            },
        )]);
        let remote = tree(&[("doc", file(3))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged.get(&path("doc")), Some(&file(3)));
        assert_eq!(out.conflicts[0].copy, Some(path(&format!("doc{TAG}"))));
    }

    #[test]
    fn taken_copy_name_gets_a_counter() {
        // Goal: a copy name already in use gets " 2" inside the parentheses.
        let taken = format!("notes{TAG}");
        let base = tree(&[("notes", file(1))]);
        let local = tree(&[("notes", file(2))]);
        let remote = tree(&[("notes", file(3)), (&taken, file(9))]);
        let out = check(&base, &local, &remote);
        let copy = "notes (conflict from laptop 2024-03-05 140709 2)";
        assert_eq!(
            out.conflicts,
            [conflict("notes", Some(copy), ConflictReason::BothEdited)]
        );
        assert_eq!(out.merged.get(&path(copy)), Some(&file(2)));
        assert_eq!(out.merged.get(&path(&taken)), Some(&file(9)));
    }

    #[test]
    fn both_add_different_content_is_edit_edit() {
        // Goal: two adds of one path with different content conflict like two edits.
        let base = tree(&[]);
        let local = tree(&[("new.md", file(2))]);
        let remote = tree(&[("new.md", file(3))]);
        let out = check(&base, &local, &remote);
        let copy = format!("new{TAG}.md");
        assert_eq!(
            out.conflicts,
            [conflict("new.md", Some(&copy), ConflictReason::BothEdited)]
        );
        assert_eq!(out.merged, tree(&[("new.md", file(3)), (&copy, file(2))]));
    }

    #[test]
    fn without_copies_the_local_loser_goes_to_the_history_only() {
        // Goal: with conflict copies off, the remote version is written over the local one and
        // the local one is handed back as `kept`, so it can be committed to the history first;
        // a symlink loser and a type clash still get copies (the history holds only files).
        let base = tree(&[("doc.txt", file(1)), ("ln", link(1))]);
        let local = tree(&[("doc.txt", file(2)), ("ln", link(2)), ("d", file(5))]);
        let remote = tree(&[
            ("doc.txt", file(3)),
            ("ln", link(3)),
            ("d", dir()),
            ("d/x", file(6)),
        ]);
        let input = PlanInput {
            conflict_copies: false,
            ..input(&base, &local, &remote)
        };
        let out = check_total(&input);
        let kept = out
            .conflicts
            .iter()
            .find(|c| c.path == path("doc.txt"))
            .expect("doc.txt conflict");
        assert_eq!(kept.copy, None);
        assert_eq!(kept.kept, Some(file(2)));
        assert_eq!(out.merged.get(&path("doc.txt")), Some(&file(3)));
        assert!(out.local.contains(&put("doc.txt", file(3))));
        assert!(
            out.conflicts
                .iter()
                .filter(|c| c.path != path("doc.txt"))
                .all(|c| c.copy.is_some() && c.kept.is_none()),
            "{:#?}",
            out.conflicts
        );
        assert_eq!(execute(&local, &out.local), Ok(out.merged.clone()));
    }

    #[test]
    fn both_add_same_content_is_no_conflict() {
        // Goal: the same content added on both sides merges silently.
        let base = tree(&[]);
        let both = tree(&[("same.bin", file(7))]);
        let out = check(&base, &both, &both);
        assert_eq!(out.merged, both);
        assert_eq!(
            (out.local, out.remote, out.conflicts),
            (vec![], vec![], vec![])
        );
    }

    #[test]
    fn local_edit_beats_remote_delete() {
        // Goal: an edit beats a delete: the local edit is uploaded again.
        let base = tree(&[("f", file(1))]);
        let local = tree(&[("f", file(2))]);
        let remote = tree(&[]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, local);
        assert_eq!(out.local, []);
        assert_eq!(out.remote, [put("f", file(2))]);
        assert_eq!(
            out.conflicts,
            [conflict("f", None, ConflictReason::EditedVsDeleted)]
        );
    }

    #[test]
    fn remote_edit_beats_local_delete() {
        // Goal: the other direction: the remote edit comes back although the file was
        // deleted locally.
        let base = tree(&[("f", file(1))]);
        let local = tree(&[]);
        let remote = tree(&[("f", file(3))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, remote);
        assert_eq!(out.local, [put("f", file(3))]);
        assert_eq!(out.remote, []);
        assert_eq!(
            out.conflicts,
            [conflict("f", None, ConflictReason::EditedVsDeleted)]
        );
    }

    #[test]
    fn stale_device_does_not_resurrect() {
        // Goal: a device offline since before a delete, whose copy is unchanged, deletes it
        // instead of uploading it again; a local delete of an unchanged file reaches the server.
        let base = tree(&[("gone", file(1)), ("kept", file(1)), ("mine", file(1))]);
        let local = tree(&[("gone", file(1)), ("kept", file(1))]);
        let remote = tree(&[("kept", file(1)), ("mine", file(1))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, tree(&[("kept", file(1))]));
        assert_eq!(out.local, [delete("gone")]);
        assert_eq!(out.remote, [delete("mine")]);
        assert_eq!(out.conflicts, []);
    }

    #[test]
    fn local_chmod_with_remote_edit_keeps_both() {
        // Goal: a mode change is never a content conflict: remote content, local mode.
        let base = tree(&[("run.sh", file(1))]);
        let local = tree(&[("run.sh", with_mode(&file(1), 0o755))]);
        let remote = tree(&[("run.sh", file(2))]);
        let out = check(&base, &local, &remote);
        let merged = with_mode(&file(2), 0o755);
        assert_eq!(out.merged, tree(&[("run.sh", merged.clone())]));
        assert_eq!(out.local, [put("run.sh", merged.clone())]);
        assert_eq!(out.remote, [put("run.sh", merged)]);
        assert_eq!(out.conflicts, []);
    }

    #[test]
    fn remote_chmod_with_local_edit_keeps_both() {
        // Goal: the other direction: local content, remote mode.
        let base = tree(&[("run.sh", file(1))]);
        let local = tree(&[("run.sh", file(2))]);
        let remote = tree(&[("run.sh", with_mode(&file(1), 0o700))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, tree(&[("run.sh", with_mode(&file(2), 0o700))]));
        assert_eq!(out.conflicts, []);
    }

    #[test]
    fn both_chmod_differently_takes_remote_mode() {
        // Goal: two different mode changes pick the remote one, with no copy and no conflict.
        let base = tree(&[("f", file(1))]);
        let local = tree(&[("f", with_mode(&file(1), 0o755))]);
        let remote = tree(&[("f", with_mode(&file(1), 0o600))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, remote);
        assert_eq!(out.local, [put("f", with_mode(&file(1), 0o600))]);
        assert_eq!((out.remote, out.conflicts), (vec![], vec![]));
    }

    #[test]
    fn delete_beats_chmod() {
        // Goal: a mode change is not an edit, so a delete on the other side still applies.
        let base = tree(&[("f", file(1))]);
        let local = tree(&[("f", with_mode(&file(1), 0o755))]);
        let remote = tree(&[]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, tree(&[]));
        assert_eq!(out.local, [delete("f")]);
        assert_eq!(out.conflicts, []);
    }

    #[test]
    fn file_vs_symlink_is_both_edited() {
        // Goal: a kind change between file and symlink is an ordinary content conflict.
        let base = tree(&[("l", file(1))]);
        let local = tree(&[("l", link(2))]);
        let remote = tree(&[("l", file(3))]);
        let out = check(&base, &local, &remote);
        let copy = format!("l{TAG}");
        assert_eq!(out.merged, tree(&[("l", file(3)), (&copy, link(2))]));
        assert_eq!(
            out.conflicts,
            [conflict("l", Some(&copy), ConflictReason::BothEdited)]
        );
    }

    #[test]
    fn file_replacing_dir_loses_to_remote_child() {
        // Goal: local replaced directory `a` by a file while remote added `a/y`: the directory
        // wins and the local file moves to a copy (renamed, not re-written).
        let copy = format!("a{TAG}");
        let base = tree(&[("a/x", file(1))]);
        let local = tree(&[("a", file(5))]);
        let remote = tree(&[("a/x", file(1)), ("a/y", file(2))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, tree(&[("a/y", file(2)), (&copy, file(5))]));
        assert_eq!(
            out.local,
            [
                rename("a", &copy, file(5)),
                put("a", dir()),
                put("a/y", file(2))
            ]
        );
        assert_eq!(out.remote, [delete("a/x"), put(&copy, file(5))]);
        assert_eq!(
            out.conflicts,
            [conflict("a", Some(&copy), ConflictReason::TypeClash)]
        );
    }

    #[test]
    fn local_edit_loses_to_remote_dir() {
        // Goal: remote replaced file `a` by a directory while local edited it: the directory
        // wins and the local edit is kept as a copy.
        let copy = format!("a{TAG}");
        let base = tree(&[("a", file(1))]);
        let local = tree(&[("a", file(2))]);
        let remote = tree(&[("a/x", file(3))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, tree(&[("a/x", file(3)), (&copy, file(2))]));
        assert_eq!(
            out.local,
            [
                rename("a", &copy, file(2)),
                put("a", dir()),
                put("a/x", file(3))
            ]
        );
        assert_eq!(
            out.conflicts,
            [conflict("a", Some(&copy), ConflictReason::TypeClash)]
        );
    }

    #[test]
    fn remote_edit_loses_to_local_dir() {
        // Goal: the other direction: the local directory wins and the remote file is the copy.
        let copy = format!("a{TAG}");
        let base = tree(&[("a", file(1))]);
        let local = tree(&[("a/x", file(2))]);
        let remote = tree(&[("a", file(3))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, tree(&[("a/x", file(2)), (&copy, file(3))]));
        assert_eq!(out.local, [put(&copy, file(3))]);
        assert_eq!(
            out.remote,
            [
                delete("a"),
                put("a", dir()),
                put(&copy, file(3)),
                put("a/x", file(2))
            ]
        );
        assert_eq!(
            out.conflicts,
            [conflict("a", Some(&copy), ConflictReason::TypeClash)]
        );
    }

    #[test]
    fn deleted_dir_with_remote_added_child_survives() {
        // Goal: a directory deleted locally survives when remote added to it, and the user is
        // told; what the local side deleted stays deleted.
        let base = tree(&[("d/x", file(1))]);
        let local = tree(&[]);
        let remote = tree(&[("d/x", file(1)), ("d/new", file(2))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, tree(&[("d/new", file(2))]));
        assert_eq!(out.local, [put("d", dir()), put("d/new", file(2))]);
        assert_eq!(out.remote, [delete("d/x")]);
        assert_eq!(
            out.conflicts,
            [conflict("d", None, ConflictReason::EditedVsDeleted)]
        );
    }

    #[test]
    fn deleted_dir_with_remote_edited_child_survives() {
        // Goal: the edited child and its ancestors survive a local delete of the whole tree.
        let base = tree(&[("d/e/x", file(1)), ("d/y", file(1))]);
        let local = tree(&[]);
        let remote = tree(&[("d/e/x", file(2)), ("d/y", file(1))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, tree(&[("d/e/x", file(2))]));
        assert_eq!(
            out.local,
            [put("d", dir()), put("d/e", dir()), put("d/e/x", file(2))]
        );
        assert_eq!(out.remote, [delete("d/y")]);
        let reason = ConflictReason::EditedVsDeleted;
        assert_eq!(
            out.conflicts,
            [
                conflict("d", None, reason),
                conflict("d/e", None, reason),
                conflict("d/e/x", None, reason)
            ]
        );
    }

    #[test]
    fn deleted_dir_untouched_elsewhere_is_deleted_children_first() {
        // Goal: a directory deleted on one side and untouched on the other goes, files before
        // directories and children before parents.
        let base = tree(&[("d/e/x", file(1)), ("d/y", file(1)), ("keep", file(1))]);
        let local = tree(&[("keep", file(1))]);
        let out = check(&base, &local, &base);
        assert_eq!(out.merged, local);
        assert_eq!(
            out.remote,
            [delete("d/e/x"), delete("d/y"), delete("d/e"), delete("d")]
        );
        assert_eq!((out.local, out.conflicts), (vec![], vec![]));
    }

    #[test]
    fn puts_are_parents_first() {
        // Goal: new directories are created before their contents.
        let base = tree(&[]);
        let remote = tree(&[("p/q/r", file(1)), ("p/s", link(2))]);
        let out = check(&base, &base, &remote);
        assert_eq!(
            out.local,
            [
                put("p", dir()),
                put("p/q", dir()),
                put("p/q/r", file(1)),
                put("p/s", link(2))
            ]
        );
    }

    #[test]
    fn remote_rename_becomes_local_rename() {
        // Goal: a remote rename of a file unchanged locally is a local rename, not a download.
        let base = tree(&[("old.txt", file(4))]);
        let remote = tree(&[("new.txt", file(4))]);
        let out = check(&base, &base, &remote);
        assert_eq!(out.local, [rename("old.txt", "new.txt", file(4))]);
        assert_eq!((out.remote, out.conflicts), (vec![], vec![]));
    }

    #[test]
    fn remote_move_into_new_dir_runs_in_order() {
        // Goal: a move out of a directory that goes away into one that is new: the new
        // directory first, then the rename, then the emptied directory is removed.
        let base = tree(&[("d/f", file(4)), ("d/g", file(5))]);
        let remote = tree(&[("e/f", file(4)), ("e/g", file(5))]);
        let out = check(&base, &base, &remote);
        assert_eq!(
            out.local,
            [
                put("e", dir()),
                rename("d/f", "e/f", file(4)),
                rename("d/g", "e/g", file(5)),
                delete("d")
            ]
        );
    }

    #[test]
    fn renames_pair_equal_contents_in_path_order() {
        // Goal: several moved files with the same content pair up deterministically.
        let base = tree(&[("a1", file(4)), ("a2", file(4))]);
        let remote = tree(&[("b1", file(4)), ("b2", file(4))]);
        let out = check(&base, &base, &remote);
        assert_eq!(
            out.local,
            [rename("a1", "b1", file(4)), rename("a2", "b2", file(4))]
        );
    }

    #[test]
    fn locally_edited_source_is_not_renamed() {
        // Goal: a remote rename of a file edited locally keeps the edit at the old path
        // (edit beats delete) and downloads the new path.
        let base = tree(&[("old", file(4))]);
        let local = tree(&[("old", file(5))]);
        let remote = tree(&[("new", file(4))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged, tree(&[("new", file(4)), ("old", file(5))]));
        assert_eq!(out.local, [put("new", file(4))]);
        assert_eq!(
            out.conflicts,
            [conflict("old", None, ConflictReason::EditedVsDeleted)]
        );
    }

    #[test]
    fn conflict_name_format() {
        // Goal: pin the copy name: extension, none, dotfile, double extension, counter, folder.
        let name = |text: &str, n| {
            conflict_name(&path(text), DEVICE, NOW, n)
                .as_str()
                .to_owned()
        };
        assert_eq!(name("docs/report.pdf", 1), format!("docs/report{TAG}.pdf"));
        assert_eq!(name("Makefile", 1), format!("Makefile{TAG}"));
        assert_eq!(name(".bashrc", 1), format!(".bashrc{TAG}"));
        assert_eq!(name("a.tar.gz", 1), format!("a.tar{TAG}.gz"));
        assert_eq!(name("x/.config.toml", 1), format!("x/.config{TAG}.toml"));
        assert_eq!(name("a.txt", 0), name("a.txt", 1));
        assert_eq!(
            name("a.txt", 3),
            "a (conflict from laptop 2024-03-05 140709 3).txt"
        );
    }

    #[test]
    fn conflict_name_cleans_device_and_pads_date() {
        // Goal: a device name cannot add path components, and the date has fixed widths.
        let got = conflict_name(&path("f"), "my/pc\\x\n", (987, 1, 2, 3, 4, 5), 1);
        assert_eq!(got.as_str(), "f (conflict from my_pc_x_ 0987-01-02 030405)");
        let long = "é".repeat(100);
        let got = conflict_name(&path("f"), &long, NOW, 1);
        let tag = format!(" (conflict from {} 2024-03-05 140709)", "é".repeat(32));
        assert_eq!(got.as_str(), format!("f{tag}"));
    }

    #[test]
    fn conflict_name_shortens_long_names() {
        // Goal: a 255-byte name keeps its extension and tag and loses the end of its stem.
        let stem = "ü".repeat(125);
        let got = conflict_name(&path(&format!("d/{stem}.txt")), DEVICE, NOW, 1);
        let file_name = got.file_name();
        assert!(file_name.len() <= PATH_COMPONENT_BYTES_MAX, "{file_name}");
        assert!(file_name.starts_with("üüü") && file_name.ends_with(&format!("{TAG}.txt")));
        assert!(got.as_str().starts_with("d/"));
        let long_ext = format!("a.{}", "e".repeat(240));
        let got = conflict_name(&path(&long_ext), DEVICE, NOW, 1);
        assert!(
            got.as_str().starts_with("a.eee") && got.as_str().ends_with(TAG),
            "{got}"
        );
    }

    #[test]
    fn conflict_name_beside_deep_path_falls_back_to_top_level() {
        // Goal: when the directory leaves no room for the tag, the copy goes to the top level.
        let mut dirs = vec!["d".repeat(255); 15];
        dirs.push("e".repeat(220));
        let deep = dirs.join("/");
        let got = conflict_name(&path(&format!("{deep}/x.txt")), DEVICE, NOW, 2);
        assert_eq!(
            got.as_str(),
            "x (conflict from laptop 2024-03-05 140709 2).txt"
        );
    }

    #[test]
    fn collisions_under_nfc() {
        // Goal: the NFD and NFC spellings of "é" are reported as one group; both are kept.
        let base = tree(&[]);
        let local = tree(&[("e\u{301}.txt", file(1))]);
        let remote = tree(&[("\u{e9}.txt", file(2))]);
        let out = check(&base, &local, &remote);
        assert_eq!(out.merged.len(), 2);
        assert_eq!(
            out.collisions,
            [vec![path("e\u{301}.txt"), path("\u{e9}.txt")]]
        );
    }

    #[test]
    fn collisions_under_case() {
        // Goal: names differing only in case collide, and so do their contents.
        let base = tree(&[]);
        let local = tree(&[("A.txt", file(1)), ("Dir/x", file(1))]);
        let remote = tree(&[("a.txt", file(2)), ("dir/x", file(2))]);
        let out = check(&base, &local, &remote);
        assert_eq!(
            out.collisions,
            [
                vec![path("A.txt"), path("a.txt")],
                vec![path("Dir"), path("dir")],
                vec![path("Dir/x"), path("dir/x")],
            ]
        );
    }

    #[test]
    fn malformed_trees_still_merge_into_a_valid_tree() {
        // Goal: a file with children and entries without parents are survivable input.
        let mut broken = Tree::new();
        broken.insert(path("f"), file(1));
        broken.insert(path("f/child"), file(2));
        broken.insert(path("orphan/deep/x"), file(3));
        let base = tree(&[("f", file(9))]);
        let out = check_total(&input(&base, &broken, &Tree::new()));
        assert!(
            out.merged
                .get(&path("f"))
                .is_some_and(|e| e.kind == Kind::Dir)
        );
        assert!(out.merged.contains_key(&path("orphan/deep")));
    }

    #[test]
    fn plan_of_100k_paths_with_one_change() {
        // Goal: a 100,000-file folder with one remote edit plans to one download.
        let mut base = Tree::new();
        for d in 0..100 {
            base.insert(path(&format!("d{d:03}")), dir());
            for f in 0..1000 {
                base.insert(path(&format!("d{d:03}/f{f:04}.txt")), file(1));
            }
        }
        let mut remote = base.clone();
        remote.insert(path("d042/f0042.txt"), file(2));
        let out = plan(&input(&base, &base, &remote));
        assert_eq!(out.local, [put("d042/f0042.txt", file(2))]);
        assert_eq!(
            (out.remote, out.conflicts, out.collisions),
            (vec![], vec![], vec![])
        );
        assert_eq!(out.merged, remote);
    }

    /// The path alphabet of generated trees: few paths, nested, one case-collision pair.
    const PATHS: [&str; 8] = ["a", "A", "b", "c.txt", "a/x", "a/y", "b/z", "a/x/q"];

    /// One change to a tree, by index into [`PATHS`].
    #[derive(Debug, Clone)]
    enum Op {
        Put(usize, Entry),
        Delete(usize),
        Chmod(usize, u32),
        Touch(usize, i64),
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        let kinds = [Kind::File, Kind::Dir, Kind::Symlink];
        (
            prop::sample::select(kinds.to_vec()),
            0..3u8,
            arb_mode(),
            0..2i64,
        )
            .prop_map(|(kind, content, mode, mtime_ns)| Entry {
                mode,
                mtime_ns,
                ..entry(kind, content)
            })
    }

    fn arb_mode() -> impl Strategy<Value = u32> {
        prop::sample::select(vec![0o644, 0o755, 0o600])
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let index = 0..PATHS.len();
        prop_oneof![
            4 => (index.clone(), arb_entry()).prop_map(|(i, e)| Op::Put(i, e)),
            2 => index.clone().prop_map(Op::Delete),
            1 => (index.clone(), arb_mode()).prop_map(|(i, m)| Op::Chmod(i, m)),
            1 => (index, 0..3i64).prop_map(|(i, t)| Op::Touch(i, t)),
        ]
    }

    /// Applies `op` keeping the tree valid: a put makes its ancestors directories and a
    /// non-directory put or a delete removes the subtree below.
    fn apply_op(tree: &mut Tree, op: &Op) {
        match op {
            Op::Put(i, new) => {
                let target = path(PATHS[*i]);
                let mut current = parent(&target);
                while let Some(dir_path) = current {
                    current = parent(&dir_path);
                    if tree.get(&dir_path).is_none_or(|e| e.kind != Kind::Dir) {
                        tree.insert(dir_path, dir());
                    }
                }
                if new.kind != Kind::Dir {
                    remove_below(tree, &target);
                }
                tree.insert(target, new.clone());
            }
            Op::Delete(i) => {
                let target = path(PATHS[*i]);
                remove_below(tree, &target);
                tree.remove(&target);
            }
            Op::Chmod(i, mode) => {
                if let Some(e) = tree.get_mut(&path(PATHS[*i])) {
                    e.mode = *mode;
                }
            }
            Op::Touch(i, mtime_ns) => {
                if let Some(e) = tree.get_mut(&path(PATHS[*i])) {
                    e.mtime_ns = *mtime_ns;
                }
            }
        }
    }

    fn remove_below(tree: &mut Tree, dir_path: &RelPath) {
        let prefix = format!("{dir_path}/");
        tree.retain(|k, _| !k.as_str().starts_with(&prefix));
    }

    fn apply_ops(tree: &Tree, ops: &[Op]) -> Tree {
        let mut out = tree.clone();
        for op in ops {
            apply_op(&mut out, op);
        }
        out
    }

    /// Base, local and remote: one random tree perturbed twice.
    fn arb_trees() -> impl Strategy<Value = (Tree, Tree, Tree)> {
        let ops = |max| prop::collection::vec(arb_op(), 0..max);
        (ops(10), ops(6), ops(6)).prop_map(|(b, l, r)| {
            let base = apply_ops(&Tree::new(), &b);
            let local = apply_ops(&base, &l);
            let remote = apply_ops(&base, &r);
            (base, local, remote)
        })
    }

    fn op_path(op: &Op) -> &'static str {
        match op {
            Op::Put(i, _) | Op::Delete(i) | Op::Chmod(i, _) | Op::Touch(i, _) => PATHS[*i],
        }
    }

    /// Keeps the ops whose paths are neither equal to nor nested in an earlier kept one's.
    fn independent(ops: Vec<Op>) -> Vec<Op> {
        let nested = |a: &str, b: &str| {
            a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
        };
        let mut kept: Vec<Op> = Vec::new();
        for op in ops {
            if !kept.iter().any(|k| nested(op_path(k), op_path(&op))) {
                kept.push(op);
            }
        }
        kept
    }

    /// Any tree, valid or not, over paths with NFC/NFD and case variants.
    fn arb_any_tree() -> impl Strategy<Value = Tree> {
        let component =
            prop::sample::select(vec!["a", "A", "b", "e\u{301}", "\u{e9}", "x.y", ".z"]);
        let any_path = prop::collection::vec(component, 1..4).prop_map(|c| path(&c.join("/")));
        let kinds = [Kind::File, Kind::Dir, Kind::Symlink];
        let any_entry = (
            prop::sample::select(kinds.to_vec()),
            any::<[u8; 32]>(),
            0..3u8,
            any::<u32>(),
            any::<i64>(),
        )
            .prop_map(|(kind, content, node, mode, mtime_ns)| Entry {
                kind,
                content,
                node: NodeId::from_bytes([node; 32]),
                size: u64::from(node),
                mode,
                mtime_ns,
            });
        prop::collection::btree_map(any_path, any_entry, 0..10)
    }

    proptest! {
        #[test]
        fn prop_converges((base, local, remote) in arb_trees()) {
            // Property 1: both sides reach the merged tree, which is valid, and every action
            // runs top-down on a filesystem.
            let out = check(&base, &local, &remote);
            prop_assert_eq!(execute(&local, &out.local), Ok(out.merged.clone()));
            prop_assert_eq!(execute(&remote, &out.remote), Ok(out.merged));
        }

        #[test]
        fn prop_terminates((base, local, remote) in arb_trees()) {
            // Property 2: a synced state plans to nothing, and so does the state after a plan
            // ran (`check` runs the second pass).
            let out = check(&base, &local, &remote);
            let again = plan(&input(&out.merged, &out.merged, &out.merged));
            prop_assert_eq!(again.merged, out.merged);
            prop_assert!(again.local.is_empty() && again.remote.is_empty() && again.conflicts.is_empty());
        }

        #[test]
        fn prop_nothing_lost((base, local, remote) in arb_trees()) {
            // Property 3: every changed file or symlink content is at its path or in a copy
            // recorded for that path; deletions are the only losses.
            let out = plan(&input(&base, &local, &remote));
            assert_nothing_lost(&input(&base, &local, &remote), &out);
        }

        #[test]
        fn prop_nothing_lost_without_copies((base, local, remote) in arb_trees()) {
            // Property 3 with conflict copies off: a loser not at its path or in a copy is
            // handed back to be kept in the history, and the plan still converges.
            let input = PlanInput { conflict_copies: false, ..input(&base, &local, &remote) };
            let out = check_total(&input);
            prop_assert_eq!(execute(&local, &out.local), Ok(out.merged.clone()));
            prop_assert_eq!(execute(&remote, &out.remote), Ok(out.merged));
        }

        #[test]
        fn prop_order_independent(
            (base_ops, local_ops, first, second) in (
                prop::collection::vec(arb_op(), 0..10),
                prop::collection::vec(arb_op(), 0..6),
                prop::collection::vec(arb_op(), 0..8),
            ).prop_flat_map(|(b, l, r)| {
                let r = independent(r);
                (Just(b), Just(l), Just(r.clone()).prop_shuffle(), Just(r).prop_shuffle())
            })
        ) {
            // Property 4: a batch of independent remote edits applied in two orders gives the
            // same remote tree and the same plan.
            let base = apply_ops(&Tree::new(), &base_ops);
            let local = apply_ops(&base, &local_ops);
            let remote_first = apply_ops(&base, &first);
            let remote_second = apply_ops(&base, &second);
            prop_assert_eq!(&remote_first, &remote_second);
            let out_first = check(&base, &local, &remote_first);
            let out_second = check(&base, &local, &remote_second);
            prop_assert_eq!(out_first, out_second);
        }

        #[test]
        fn prop_total_on_arbitrary_trees(
            base in arb_any_tree(),
            local in arb_any_tree(),
            remote in arb_any_tree(),
            device in prop_oneof![Just(String::from(DEVICE)), any::<String>()],
            now_utc in any::<UtcTime>(),
            conflict_copies in any::<bool>(),
        ) {
            // Property 5: no panic on any input, and even malformed trees converge to a valid
            // merged tree.
            let input = PlanInput { base: &base, local: &local, remote: &remote, device: &device, now_utc, conflict_copies };
            check_total(&input);
        }

        #[test]
        fn prop_conflict_names_are_valid_and_distinct(
            dirs in prop::collection::vec("[a-z]{1,255}", 0..20),
            name in "[a-zé.]{1,100}",
            device in any::<String>(),
            now_utc in any::<UtcTime>(),
            n in 1..1000u32,
        ) {
            // Conflict names are valid paths beside the original or at the top level, and two
            // counters never give the same name.
            let mut text = String::new();
            for dir_name in dirs {
                if text.len() + dir_name.len() + name.len() + 2 > PATH_BYTES_MAX {
                    break;
                }
                text.push_str(&dir_name);
                text.push('/');
            }
            text.push_str(&name);
            let Ok(original) = RelPath::parse(&text) else { return Ok(()) };
            let first = conflict_name(&original, &device, now_utc, n);
            let second = conflict_name(&original, &device, now_utc, n + 1);
            prop_assert_ne!(&first, &second);
            prop_assert_ne!(&first, &original);
            let beside = parent(&first) == parent(&original) || parent(&first).is_none();
            prop_assert!(beside, "{} for {}", first, original);
        }
    }
}
