//! A path of a file in a home directory as a user, a request or the store
//! writes it (`~`, `~/x`, `x` relative to home, or absolute), read by one
//! parser ([`HomePath::parse`]) for the writer (`fsutil::confine`), the
//! placement policy (`crate::policy`) and everyone who expands `~`
//! (`fsutil::expand_home`), so no two of them can take one text for two
//! different files. Lexical only: nothing here touches the filesystem.

use std::path::{Component, Path, PathBuf};

/// A path as written for a file in home, read once:
///
/// - `~` is home, `~/x` is `x` under home, and so is `~//x` (as a shell
///   reads it: `$HOME//x`);
/// - a relative path is relative to home, `~user/x` included: it names no
///   other user's home, only a directory `~user` in this one;
/// - an absolute path is itself.
///
/// `.` and `..` are kept as written ([`HomePath::joined`]: the writer
/// refuses `..`) and folded only on request ([`HomePath::normalised`]: the
/// policy judges where the path leads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomePath {
    text: String,
    joined: PathBuf,
}

impl HomePath {
    /// Read `text` against `home`.
    pub fn parse(home: &Path, text: &str) -> Self {
        let joined = if text == "~" {
            home.to_path_buf()
        } else if let Some(rest) = text.strip_prefix("~/") {
            home.join(rest.trim_start_matches('/'))
        } else {
            home.join(text) // join keeps an absolute `text` as is
        };
        Self {
            text: text.to_owned(),
            joined,
        }
    }

    /// The text it was read from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The path as written, joined to home (`.` and `..` kept).
    pub fn joined(&self) -> &Path {
        &self.joined
    }

    /// [`HomePath::joined`], owned.
    pub fn into_path(self) -> PathBuf {
        self.joined
    }

    /// Whether it has a `..` component as written.
    pub fn climbs(&self) -> bool {
        self.joined.components().any(|c| c == Component::ParentDir)
    }

    /// Where it leads lexically: `.`, `..` and repeated separators folded;
    /// `None` when `..` climbs above the root or the path is not absolute
    /// (a relative home).
    pub fn normalised(&self) -> Option<PathBuf> {
        normalise(&self.joined)
    }

    /// Its normalised components below `home` (none for home itself), or
    /// `None` when it does not lead into home.
    pub fn in_home(&self, home: &Path) -> Option<Vec<String>> {
        let joined = self.normalised()?;
        let home = normalise(home)?;
        let rel = joined.strip_prefix(&home).ok()?;
        Some(
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect(),
        )
    }
}

/// Fold `.`, `..` and repeated separators of an absolute path; `None` when
/// `..` climbs above the root or the path is relative.
pub(crate) fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => return None,
        }
    }
    out.has_root().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings the policy and the writer once read apart (`~//x`:
    /// the writer took `/x`), and the ones near them, read one way: what
    /// the path joins to, whether it climbs, where it leads in home.
    #[test]
    fn one_reading_of_tilde_spellings() {
        let home = Path::new("/home/u");
        for (text, joined, climbs, in_home) in [
            ("~", "/home/u", false, Some(vec![])),
            ("~/x", "/home/u/x", false, Some(vec!["x"])),
            ("~//x", "/home/u/x", false, Some(vec!["x"])),
            ("~///x/y", "/home/u/x/y", false, Some(vec!["x", "y"])),
            ("~/./x", "/home/u/./x", false, Some(vec!["x"])),
            ("~/../x", "/home/u/../x", true, None),
            ("~/a/../x", "/home/u/a/../x", true, Some(vec!["x"])),
            (
                "~user/x",
                "/home/u/~user/x",
                false,
                Some(vec!["~user", "x"]),
            ),
            ("x", "/home/u/x", false, Some(vec!["x"])),
            ("/home/u/x", "/home/u/x", false, Some(vec!["x"])),
            ("/etc/x", "/etc/x", false, None),
            ("/../x", "/../x", true, None),
        ] {
            let parsed = HomePath::parse(home, text);
            assert_eq!(parsed.text(), text);
            assert_eq!(parsed.joined(), Path::new(joined), "{text}");
            assert_eq!(parsed.climbs(), climbs, "{text}");
            let want = in_home.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(parsed.in_home(home), want, "{text}");
        }
        assert_eq!(HomePath::parse(home, "/../x").normalised(), None);
        assert_eq!(
            HomePath::parse(home, "~/../x").normalised(),
            Some(PathBuf::from("/home/x"))
        );
    }
}
