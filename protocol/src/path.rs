//! Canonical relative paths inside a folder.
//!
//! A [`RelPath`] is `/`-separated UTF-8 names with no empty, `.` or `..` component, no leading
//! or trailing `/`, no backslash or NUL, and within [`PATH_BYTES_MAX`]. Parse, don't validate:
//! every function that takes a path takes a `&RelPath`, so these checks happen once, at the edge.

use std::fmt;

use cairn_store::node::Name;

use crate::limits::{PATH_BYTES_MAX, PATH_COMPONENT_BYTES_MAX, PATH_DEPTH_MAX};

/// Why a string is not a [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path '{shown}'; {reason}")]
pub struct PathError {
    shown: String,
    reason: &'static str,
}

/// A canonical relative path inside a folder.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    /// Parses and checks a path.
    ///
    /// # Errors
    /// [`PathError`] naming the rule the path breaks.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let fail = |reason| {
            Err(PathError {
                shown: text.chars().take(120).collect(),
                reason,
            })
        };
        if text.is_empty() {
            return fail("a path must not be empty");
        }
        if text.len() > PATH_BYTES_MAX {
            return fail("a path must be at most 4096 bytes");
        }
        if text.starts_with('/') {
            return fail("paths are relative to the folder; remove the leading '/'");
        }
        if text.contains('\\') || text.contains('\0') {
            return fail("a path must not contain '\\' or NUL");
        }
        let mut depth = 0;
        for component in text.split('/') {
            depth += 1;
            match component {
                "" => {
                    return fail("a path must not have empty components ('//' or a trailing '/')");
                }
                "." | ".." => {
                    return fail(
                        "a path must not contain '.' or '..' components; paths must stay inside the folder",
                    );
                }
                c if c.len() > PATH_COMPONENT_BYTES_MAX => {
                    return fail("each name must be at most 255 bytes");
                }
                _ => {}
            }
        }
        if depth > PATH_DEPTH_MAX {
            return fail("a path must be at most 256 components deep");
        }
        Ok(RelPath(text.to_owned()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components as tree names.
    pub fn names(&self) -> Vec<Name> {
        self.0
            .split('/')
            .map(|c| Name::new(c.as_bytes().to_vec()).expect("components were checked at parse"))
            .collect()
    }

    /// The proper ancestors, nearest first: `a/b/c` gives `a/b`, then `a`.
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> + '_ {
        self.0
            .char_indices()
            .rev()
            .filter(|&(_, c)| c == '/')
            .map(|(i, _)| RelPath(self.0[..i].to_owned()))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0
            .rsplit('/')
            .next()
            .expect("split yields at least one item")
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_nearest_first() {
        let path = RelPath::parse("a/b/c.txt").expect("valid");
        let found: Vec<String> = path.ancestors().map(|p| p.as_str().to_owned()).collect();
        assert_eq!(found, ["a/b", "a"]);
        assert_eq!(RelPath::parse("top").expect("valid").ancestors().count(), 0);
    }

    fn check(input: &str, expect: Result<(), &str>) {
        match (RelPath::parse(input), expect) {
            (Ok(path), Ok(())) => assert_eq!(path.as_str(), input),
            (Err(err), Err(reason)) => {
                assert!(err.to_string().contains(reason), "{input:?}: {err}")
            }
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn accepts_canonical_paths() {
        for ok in [
            "a",
            "docs/report.txt",
            "café/☕ notes.md",
            "a/b/c/d",
            ".hidden",
            "..dots",
            "x..y",
        ] {
            check(ok, Ok(()));
        }
    }

    #[test]
    fn refuses_escapes_and_non_canonical_forms() {
        check("", Err("must not be empty"));
        check("/etc/passwd", Err("remove the leading '/'"));
        check("../x", Err("'.' or '..'"));
        check("a/../../x", Err("'.' or '..'"));
        check("a/./b", Err("'.' or '..'"));
        check("a//b", Err("empty components"));
        check("a/", Err("empty components"));
        check("a\\b", Err("'\\' or NUL"));
        check("a\0b", Err("'\\' or NUL"));
        check(&"x".repeat(256), Err("at most 255 bytes"));
        check(&"ab/".repeat(1400), Err("at most 4096 bytes"));
        check(&["a"; 257].join("/"), Err("256 components"));
    }

    #[test]
    fn names_and_file_name() {
        let path = RelPath::parse("docs/2024/report.pdf").expect("valid");
        assert_eq!(path.file_name(), "report.pdf");
        assert_eq!(path.names().len(), 3);
    }
}
