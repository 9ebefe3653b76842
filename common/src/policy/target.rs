//! The one answer to "may this file of a secret be written here", asked by
//! every writer of secret files (the agent for a sync or a pull, the
//! controller's `secret write` and `login --download`): the path judged as
//! written by the placement policy, then confined to home (or, for a path
//! the user named, taken where it leads), then the target it resolves to
//! judged again, so a symlink in home cannot lead to a denied file. The
//! path is read once ([`HomePath`]) for the policy and the writer alike.
//! Errors name the secret and the path, never a value.

use std::path::Path;

use thiserror::Error;

use super::{Origin, Policy, PolicyError};
use crate::apply::TargetFile;
use crate::fsutil::{self, HomePath, PathError};
use crate::model::Secret;

/// How far a file's path may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// It stays in home: `..`, an absolute path elsewhere and a symlink
    /// leading out are refused ([`fsutil::confine`]).
    Home,
    /// The user on this machine named it (`secret write --path`): it is
    /// honoured wherever it leads ([`fsutil::explicit`]).
    Named,
}

/// Why a file of a secret may not be written here.
#[derive(Debug, Error)]
pub enum Refused {
    /// The placement policy refuses the path, or the target it resolves to.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The path cannot be used: outside home, `..`, a symlink leading out,
    /// not a valid path, or the filesystem failed while resolving it.
    #[error(transparent)]
    Path(#[from] PathError),
}

impl Policy {
    /// May `secret`'s file `path` (`~/...`, relative to home, or absolute)
    /// be written on this machine, whose home is `home` (`canon_home`: the
    /// same with its symlinks resolved)? Judged by [`Policy::check`] as a
    /// path of `origin`, resolved as `reach` allows, and its resolved target
    /// judged by [`Policy::check_resolved`]. Returns the file to write,
    /// shown as `path`.
    pub fn may_write(
        &self,
        home: &Path,
        canon_home: &Path,
        secret: &Secret,
        path: &str,
        origin: Origin,
        reach: Reach,
    ) -> Result<TargetFile, Refused> {
        let name = secret.name.as_str();
        let parsed = HomePath::parse(home, path);
        self.check_parsed(home, secret.provider.as_deref(), name, &parsed, origin)?;
        let file = match reach {
            Reach::Home => fsutil::confine_parsed(home, &parsed)?.0,
            Reach::Named => fsutil::explicit(home, path)?,
        };
        self.check_resolved(canon_home, name, &file.resolved())?;
        Ok(TargetFile {
            display: path.to_owned(),
            path: file,
        })
    }
}
