//! Paths and files that hold secrets: `~` expansion, confinement to a home
//! directory (no `..`, no absolute path outside, no symlink escape), private
//! directories (0700), atomic private writes (temp file in the same dir,
//! fsync, rename, fsync of the dir; mode 0600 whatever the umask) and a
//! per-directory lock so read-merge-write cycles never interleave.
//! Errors name paths, never file contents.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use crate::secret_value::SecretText;

/// Mode of every file that holds a secret.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory this project creates.
pub const DIR_MODE: u32 = 0o700;

/// A path that cannot be used, or a file operation that failed.
#[derive(Debug, Error)]
pub enum PathError {
    #[error("path {path:?} contains '..'")]
    ParentComponent { path: String },
    #[error("path {path:?} is outside the home directory {home}")]
    OutsideHome { path: String, home: String },
    #[error("path {path:?} leads through a symlink outside the home directory")]
    SymlinkEscape { path: String },
    #[error("path is empty")]
    Empty,
    #[error("path {path:?} contains a control character")]
    ControlChar { path: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl PathError {
    /// Wrap an I/O error with the operation and path it concerned.
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

/// Expand `~` and `~/x` against `home`; a relative path is taken relative to
/// `home`; an absolute path is returned as is. No confinement: see [`confine`].
pub fn expand_home(home: &Path, path: &str) -> PathBuf {
    if path == "~" {
        home.to_path_buf()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else {
        home.join(path) // join keeps an absolute `path` as is
    }
}

/// The `~/...` form of `path` when it lies under `home`, else the path itself.
pub fn tilde_path(home: &Path, path: &Path) -> String {
    match path.strip_prefix(home) {
        Ok(rest) if rest.as_os_str().is_empty() => "~".to_owned(),
        Ok(rest) => format!("~/{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

/// Resolve `path` (`~/x`, relative to `home`, or absolute) to a path that is
/// certainly inside `home`: refuses `..`, absolute paths elsewhere, and any
/// symlink (in a parent or the file itself) that leads out of `home`.
/// An existing symlink inside home is followed, so the link target is updated.
pub fn confine(home: &Path, path: &str) -> Result<PathBuf, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlChar {
            path: path.escape_debug().to_string(),
        });
    }
    let joined = expand_home(home, path);
    if joined.components().any(|c| c == Component::ParentDir) {
        return Err(PathError::ParentComponent { path: path.into() });
    }
    let canon_home = home
        .canonicalize()
        .map_err(|e| PathError::io("resolve home", home, e))?;
    let rel = joined
        .strip_prefix(home)
        .or_else(|_| joined.strip_prefix(&canon_home))
        .map_err(|_| PathError::OutsideHome {
            path: path.into(),
            home: home.display().to_string(),
        })?
        .to_path_buf();
    if rel.as_os_str().is_empty() {
        return Err(PathError::OutsideHome {
            path: path.into(),
            home: home.display().to_string(),
        });
    }
    // Walk down from the canonical home, resolving every existing component.
    let mut current = canon_home.clone();
    let mut components = rel.components().peekable();
    while let Some(component) = components.next() {
        let next = current.join(component);
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let resolved = next
                    .canonicalize()
                    .map_err(|_| PathError::SymlinkEscape { path: path.into() })?;
                if !resolved.starts_with(&canon_home) || resolved == canon_home {
                    return Err(PathError::SymlinkEscape { path: path.into() });
                }
                current = resolved;
            }
            Ok(_) => current = next,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Nothing below exists yet: the rest is created by us.
                current = next;
                for rest in components.by_ref() {
                    current.push(rest);
                }
                break;
            }
            Err(e) => return Err(PathError::io("inspect", &next, e)),
        }
    }
    Ok(current)
}

/// Create `dir` and any missing parents with mode 0700. Existing directories
/// keep their mode.
pub fn create_private_dir_all(dir: &Path) -> Result<(), PathError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| PathError::io("create directory", dir, e))?;
    // DirBuilder applies the umask; make sure the leaf is exactly 0700.
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| PathError::io("chmod", dir, e))
}

/// Read a file as UTF-8 text, `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<SecretText>, PathError> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(|s| Some(SecretText::new(s)))
            .map_err(|_| {
                PathError::io(
                    "read",
                    path,
                    io::Error::new(io::ErrorKind::InvalidData, "file is not valid UTF-8"),
                )
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PathError::io("read", path, e)),
    }
}

/// Write `contents` to `path` atomically with mode 0600: a temp file in the
/// same directory is written, fsynced and renamed over `path`, then the
/// directory is fsynced. Readers see the old file or the new one, never a
/// torn one, even if the process is killed mid-write. Missing parent
/// directories are created with mode 0700.
pub fn atomic_write(path: &Path, contents: &[u8]) -> Result<(), PathError> {
    let dir = parent_dir(path);
    create_private_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
        .map_err(|e| PathError::io("create temp file in", dir, e))?;
    // tempfile creates 0600 already; set it again so the umask cannot matter.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .map_err(|e| PathError::io("chmod", tmp.path(), e))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| PathError::io("write", path, e))?;
    tmp.persist(path)
        .map_err(|e| PathError::io("rename into", path, e.error))?;
    sync_dir(dir)
}

/// The name prefix of [`atomic_write`]'s temp files.
pub const TEMP_PREFIX: &str = ".rh-tmp-";

/// Remove the temp files [`atomic_write`] left in `dir` when its process was
/// killed between creating and renaming them (they hold what was being
/// written, values included). Only regular files named `.rh-tmp-*` directly
/// in `dir` are removed, never a symlink or a directory. Call it only on a
/// directory no other process is writing to at the time (the agent's state
/// dir at start). Returns how many were removed.
pub fn remove_stale_temp_files(dir: &Path) -> Result<usize, PathError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(PathError::io("list", dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| PathError::io("list", dir, e))?;
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_temp && is_file {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(PathError::io("remove", &path, e)),
            }
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Remove `path` (missing is fine) and fsync its directory.
pub fn remove_file(path: &Path) -> Result<(), PathError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent_dir(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PathError::io("remove", path, e)),
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> Result<(), PathError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PathError::io("fsync directory", dir, e))
}

/// An exclusive advisory lock on a file's directory, held until dropped.
/// Serialises read-merge-write cycles between threads and processes
/// (the controller and a local agent may write the same `~/.aws`).
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<File>,
}

/// Lock the directory that holds `path` (creating it 0700 if missing).
pub fn lock_parent(path: &Path) -> Result<DirLock, PathError> {
    let dir = parent_dir(path);
    create_private_dir_all(dir)?;
    let file = OpenOptions::new()
        .read(true)
        .open(dir)
        .map_err(|e| PathError::io("open directory", dir, e))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| PathError::io("lock directory", dir, io::Error::from(errno)))?;
    Ok(DirLock { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn home() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn expands_tilde_and_relative() {
        let h = Path::new("/h");
        assert_eq!(expand_home(h, "~/.aws/x"), PathBuf::from("/h/.aws/x"));
        assert_eq!(expand_home(h, ".aws/x"), PathBuf::from("/h/.aws/x"));
        assert_eq!(expand_home(h, "/etc/x"), PathBuf::from("/etc/x"));
        assert_eq!(tilde_path(h, Path::new("/h/.aws/x")), "~/.aws/x");
    }

    #[test]
    fn confine_accepts_paths_inside_home() {
        let h = home();
        let canon = h.path().canonicalize().unwrap();
        assert_eq!(
            confine(h.path(), "~/.aws/credentials").unwrap(),
            canon.join(".aws/credentials")
        );
        let abs = format!("{}/.kube/config", h.path().display());
        assert_eq!(confine(h.path(), &abs).unwrap(), canon.join(".kube/config"));
    }

    #[test]
    fn confine_refuses_escapes() {
        let h = home();
        assert!(matches!(
            confine(h.path(), "~/../x"),
            Err(PathError::ParentComponent { .. })
        ));
        assert!(matches!(
            confine(h.path(), "a/../../x"),
            Err(PathError::ParentComponent { .. })
        ));
        assert!(matches!(
            confine(h.path(), "/etc/passwd"),
            Err(PathError::OutsideHome { .. })
        ));
        assert!(matches!(
            confine(h.path(), "~"),
            Err(PathError::OutsideHome { .. })
        ));
        assert!(matches!(confine(h.path(), ""), Err(PathError::Empty)));
        assert!(matches!(
            confine(h.path(), "a\nb"),
            Err(PathError::ControlChar { .. })
        ));
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), h.path().join("link")).unwrap();
        assert!(matches!(
            confine(h.path(), "~/link/x"),
            Err(PathError::SymlinkEscape { .. })
        ));
        symlink("/etc/passwd", h.path().join("file-link")).unwrap();
        assert!(matches!(
            confine(h.path(), "~/file-link"),
            Err(PathError::SymlinkEscape { .. })
        ));
    }

    #[test]
    fn confine_follows_symlinks_that_stay_inside() {
        let h = home();
        fs::create_dir(h.path().join("dotfiles")).unwrap();
        symlink(h.path().join("dotfiles"), h.path().join(".aws")).unwrap();
        let canon = h.path().canonicalize().unwrap();
        assert_eq!(
            confine(h.path(), "~/.aws/credentials").unwrap(),
            canon.join("dotfiles/credentials")
        );
    }

    #[test]
    fn atomic_write_is_0600_in_0700_dirs_whatever_the_umask() {
        let h = home();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o000));
        let path = h.path().join("a/b/secret");
        atomic_write(&path, b"one").unwrap();
        nix::sys::stat::umask(old);
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&h.path().join("a")), 0o700);
        assert_eq!(mode(&h.path().join("a/b")), 0o700);
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        // no temp files left behind
        assert_eq!(fs::read_dir(h.path().join("a/b")).unwrap().count(), 1);
    }

    #[test]
    fn stale_temp_files_are_removed_and_nothing_else() {
        let h = home();
        let dir = h.path();
        fs::write(dir.join(".rh-tmp-AbC123"), b"half-written secret").unwrap();
        fs::write(dir.join("installed.json"), b"{}").unwrap();
        fs::write(dir.join("rh-tmp-not-ours"), b"x").unwrap();
        fs::create_dir(dir.join(".rh-tmp-dir")).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        symlink(outside.path(), dir.join(".rh-tmp-link")).unwrap();
        assert_eq!(remove_stale_temp_files(dir).unwrap(), 1);
        let mut left: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".rh-tmp-dir",
                ".rh-tmp-link",
                "installed.json",
                "rh-tmp-not-ours"
            ]
        );
        assert!(outside.path().exists());
        assert_eq!(remove_stale_temp_files(&dir.join("missing")).unwrap(), 0);
    }

    #[test]
    fn read_optional_missing_is_none() {
        let h = home();
        assert!(read_optional(&h.path().join("nope")).unwrap().is_none());
        let _lock = lock_parent(&h.path().join("x/y")).unwrap();
        assert!(h.path().join("x").is_dir());
    }
}
