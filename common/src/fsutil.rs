//! Paths and files that hold secrets: `~` expansion, confinement to a home
//! directory (no `..`, no absolute path outside, no symlink escape), private
//! directories (0700), atomic private writes (temp file in the same dir,
//! fsync, rename, fsync of the dir; mode 0600 whatever the umask) and a
//! per-directory lock so read-merge-write cycles never interleave.
//! A path is checked and resolved once, into a [`ConfinedFile`] (an opened
//! parent directory and a name, see `resolve`); every read, write, lock and
//! removal is relative to that directory, never a re-walk of the path. Only
//! regular files are read or replaced. Errors name paths (cut to a readable
//! length), never file contents.

mod file;
mod home;
mod resolve;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use crate::secret_value::SecretText;

pub use file::{ConfinedFile, DirLock, FileSig, LOCK_WAIT, MAX_FILE_SIZE};
pub(crate) use home::normalise;
pub use home::HomePath;
use resolve::Root;
pub use resolve::MAX_HOPS;

/// Mode of every file that holds a secret.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory this project creates.
pub const DIR_MODE: u32 = 0o700;
/// Longest path accepted, in bytes (Linux `PATH_MAX`).
pub const PATH_MAX: usize = 4096;
/// Longest path component accepted, in bytes (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// A path that cannot be used, or a file operation that failed.
#[derive(Debug, Error)]
pub enum PathError {
    #[error("path {path:?} contains '..'")]
    ParentComponent { path: String },
    #[error("path {path:?} is outside the home directory {home}")]
    OutsideHome { path: String, home: String },
    #[error("path {path:?} is a symlink leading outside the home directory")]
    SymlinkEscape { path: String },
    #[error("path is empty")]
    Empty,
    #[error("path {path:?} contains a control character")]
    ControlChar { path: String },
    #[error("path {path:?} is too long: {what} longer than {max} bytes")]
    TooLong {
        path: String,
        what: &'static str,
        max: usize,
    },
    #[error("{path} is not a regular file (it is a {kind})")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path} is larger than {max} bytes")]
    TooLarge { path: String, max: u64 },
    #[error("{path} is not a directory")]
    NotDirectory { path: String },
    #[error("too many levels of symlinks at {path}")]
    SymlinkLoop { path: String },
    #[error("{path} is locked by another writer (waited {secs} s)")]
    Busy { path: String, secs: u64 },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl PathError {
    /// Wrap an I/O error with the operation and path it concerned (the path
    /// cut to a readable length; a too-long name becomes [`Self::TooLong`]).
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        let path = cut(&path.to_string_lossy());
        if source.raw_os_error() == Some(rustix::io::Errno::NAMETOOLONG.raw_os_error()) {
            return Self::TooLong {
                path,
                what: "a name or the whole path",
                max: PATH_MAX,
            };
        }
        Self::Io { op, path, source }
    }
}

/// `text` made safe and short for a message: control characters escaped,
/// at most [`SHOWN_MAX`] characters (the start and the end, `...` between).
pub fn cut(text: &str) -> String {
    let escaped: String = text
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    let count = escaped.chars().count();
    if count <= SHOWN_MAX {
        return escaped;
    }
    let head: String = escaped.chars().take(SHOWN_MAX / 2).collect();
    let tail: String = escaped.chars().skip(count - SHOWN_MAX / 3).collect();
    format!("{head}...{tail}")
}

/// Longest path shown in a message, in characters.
pub const SHOWN_MAX: usize = 120;

/// Expand `~` and `~/x` against `home`; a relative path is taken relative to
/// `home`; an absolute path is returned as is ([`HomePath::parse`]). No
/// confinement: see [`confine`].
pub fn expand_home(home: &Path, path: &str) -> PathBuf {
    HomePath::parse(home, path).into_path()
}

/// The `~/...` form of `path` when it lies under `home`, else the path itself.
pub fn tilde_path(home: &Path, path: &Path) -> String {
    match path.strip_prefix(home) {
        Ok(rest) if rest.as_os_str().is_empty() => "~".to_owned(),
        Ok(rest) => format!("~/{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

/// A file named by a path under a root it must stay beneath (home), or, for
/// a path the user named explicitly, anywhere. Cheap to clone; resolved
/// afresh by every [`FileRef::open`].
#[derive(Debug, Clone)]
pub struct FileRef {
    root: Root,
    rel: Vec<OsString>,
}

impl FileRef {
    /// Any path on this machine (relative to the current directory when not
    /// absolute). Symlinks are followed wherever they lead; only the file
    /// rules (regular files, no symlink replaced, 0600) apply.
    pub fn anywhere(path: &Path) -> Result<Self, PathError> {
        check_text(&path.to_string_lossy())?;
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| PathError::io("resolve", path, e))?
                .join(path)
        };
        let rel = full
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect::<Vec<_>>();
        if rel.is_empty() {
            return Err(PathError::NotRegular {
                path: cut(&full.to_string_lossy()),
                kind: "directory",
            });
        }
        Ok(Self {
            root: Root {
                path: PathBuf::from("/"),
                shown: String::new(),
                confined: false,
                tilde: None,
            },
            rel,
        })
    }

    /// The path as shown in messages (`~/.aws/credentials`, or absolute).
    pub fn display(&self) -> String {
        resolve::shown(&self.root, self.rel.iter())
    }

    /// The path as written, before any symlink is followed.
    pub fn path(&self) -> PathBuf {
        self.root.path.join(self.rel.iter().collect::<PathBuf>())
    }

    /// Where the path leads now, for policy checks on the target: final
    /// symlinks followed (dangling ones too, as [`FileRef::open`] creates
    /// their targets) and the longest existing ancestor canonicalized. Best
    /// effort and racy by nature: confinement is enforced by `open`, this
    /// only tells a deny-list where a link points.
    pub fn resolved(&self) -> PathBuf {
        let mut path = self.path();
        for _ in 0..40 {
            match fs::read_link(&path) {
                Ok(target) => {
                    // The link's own directory as the kernel sees it (through
                    // links above it), so `..` in the target folds where the
                    // writer's walk goes.
                    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    let base = canonical(base);
                    path = base.join(target);
                }
                Err(_) => break,
            }
        }
        let mut existing = path.clone();
        let mut rest = Vec::new();
        while fs::symlink_metadata(&existing).is_err() {
            match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_os_string());
                    existing = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut out = canonical(existing);
        out.extend(rest.iter().rev());
        out
    }

    /// Resolve the path now (see the `resolve` module): the opened parent
    /// directory and the final name, creating missing directories 0700 when
    /// `create_dirs`. `None` when a directory is missing and not created.
    pub fn open(&self, create_dirs: bool) -> Result<Option<ConfinedFile>, PathError> {
        resolve::resolve(&self.root, &self.rel, create_dirs)
    }

    /// The file's text now, `None` when it (or its directory) is missing;
    /// see [`ConfinedFile::read`].
    pub fn read(&self) -> Result<Option<SecretText>, PathError> {
        match self.open(false)? {
            Some(file) => file.read(),
            None => Ok(None),
        }
    }

    /// Whether something exists at the path now (after following links).
    pub fn exists(&self) -> bool {
        matches!(self.open(false), Ok(Some(f)) if matches!(f.kind(), Ok(Some(_))))
    }
}

/// `path` with every symlink resolved, as `realpath(3)` gives it, or
/// `path` itself when it cannot be resolved. On Linux the kernel names an
/// `O_PATH` descriptor of it (`/proc/self/fd/N`: three syscalls, where
/// `realpath` reads every component's link: the agent calls this for
/// every file of every request); anything unexpected falls back to
/// `realpath`.
fn canonical(path: PathBuf) -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{Mode, OFlags};
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStringExt;
        let named = rustix::fs::open(&path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .and_then(|fd| {
                rustix::fs::readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()), Vec::new())
            });
        if let Ok(name) = named {
            let name = PathBuf::from(std::ffi::OsString::from_vec(name.into_bytes()));
            // An unlinked file's name ends in " (deleted)"; a path not
            // reachable from this root is not absolute: ask realpath.
            if name.is_absolute() && !name.to_string_lossy().ends_with(" (deleted)") {
                return name;
            }
        }
    }
    path.canonicalize().unwrap_or(path)
}

/// Refuse empty paths, control characters and over-long paths or components.
fn check_text(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlChar { path: cut(path) });
    }
    if path.len() > PATH_MAX {
        return Err(PathError::TooLong {
            path: cut(path),
            what: "the whole path",
            max: PATH_MAX,
        });
    }
    if path.split('/').any(|c| c.len() > NAME_MAX) {
        return Err(PathError::TooLong {
            path: cut(path),
            what: "a component",
            max: NAME_MAX,
        });
    }
    Ok(())
}

/// Check `path` (`~/x`, relative to `home`, or absolute) for a file that must
/// stay inside `home`: refuses `..`, absolute paths elsewhere, over-long paths
/// and any symlink (in a parent or the file itself) whose target leads out of
/// `home`. A symlink inside home is followed (its target is what is written),
/// and a dangling one is fine (its target is created). The result is resolved
/// again, from a descriptor of home, each time it is opened.
pub fn confine(home: &Path, path: &str) -> Result<FileRef, PathError> {
    confine_open(home, path).map(|(file, _)| file)
}

/// [`confine`], also handing back what the check opened: the file's
/// parent directory and name (`None` when a directory on the way is missing).
pub fn confine_open(home: &Path, path: &str) -> Result<(FileRef, Option<ConfinedFile>), PathError> {
    confine_parsed(home, &HomePath::parse(home, path))
}

/// [`confine_open`] of a path already read ([`HomePath::parse`] against
/// `home`).
pub fn confine_parsed(
    home: &Path,
    parsed: &HomePath,
) -> Result<(FileRef, Option<ConfinedFile>), PathError> {
    let path = parsed.text();
    check_text(path)?;
    let joined = parsed.joined();
    if parsed.climbs() {
        return Err(PathError::ParentComponent { path: cut(path) });
    }
    let outside = || PathError::OutsideHome {
        path: cut(path),
        home: cut(&home.to_string_lossy()),
    };
    let rel = match joined.strip_prefix(home) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => {
            let canon_home = home
                .canonicalize()
                .map_err(|e| PathError::io("resolve home", home, e))?;
            joined
                .strip_prefix(&canon_home)
                .map_err(|_| outside())?
                .to_path_buf()
        }
    };
    let rel: Vec<OsString> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    if rel.is_empty() {
        return Err(outside());
    }
    let file = FileRef {
        root: Root {
            path: home.to_path_buf(),
            shown: "~".to_owned(),
            confined: true,
            tilde: None,
        },
        rel,
    };
    let opened = file.open(false)?; // refuse escapes now, before anything is written
    Ok((file, opened))
}

/// A path the user named explicitly (`--path`): honoured wherever it leads,
/// inside home or not; see [`FileRef::anywhere`].
pub fn explicit(home: &Path, path: &str) -> Result<FileRef, PathError> {
    check_text(path)?;
    let mut file = FileRef::anywhere(&expand_home(home, path))?;
    file.root.tilde = Some(home.to_path_buf());
    Ok(file)
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

/// Read a file as UTF-8 text, `None` when it does not exist. Only a regular
/// file is read (a FIFO or device is an error, never a hang), at most
/// [`MAX_FILE_SIZE`] bytes.
pub fn read_optional(path: &Path) -> Result<Option<SecretText>, PathError> {
    FileRef::anywhere(path)?.read()
}

/// Write `contents` to `path` atomically with mode 0600: a temp file in the
/// same directory is written, fsynced and renamed over `path`, then the
/// directory is fsynced. Readers see the old file or the new one, never a
/// torn one, even if the process is killed mid-write. Missing parent
/// directories are created with mode 0700. A symlink at `path` is followed
/// (its target is replaced), never replaced itself.
pub fn atomic_write(path: &Path, contents: &[u8]) -> Result<(), PathError> {
    let file = opened(&FileRef::anywhere(path)?)?;
    // Held while the temp file exists, as by every writer of ours: a sweep
    // (`ConfinedFile::sweep_stale_temps`, under the same lock) never takes
    // a live writer's temp file for a stale one.
    let _lock = file.lock_dir()?;
    file.write(contents)
}

/// [`atomic_write`], skipped when `path` already is a regular file of
/// mode 0600 holding exactly `contents` (a state file rewritten unchanged
/// costs two fsyncs and nothing else). Returns whether it wrote. A file
/// that cannot be read or compared is written.
pub fn atomic_write_if_changed(path: &Path, contents: &[u8]) -> Result<bool, PathError> {
    let same = fs::metadata(path).is_ok_and(|m| {
        m.is_file()
            && m.permissions().mode() & 0o7777 == FILE_MODE
            && m.len() == contents.len() as u64
    }) && matches!(read_optional(path), Ok(Some(text)) if text.expose_secret().as_bytes() == contents);
    if same {
        return Ok(false);
    }
    atomic_write(path, contents)?;
    Ok(true)
}

/// Open `file`, creating its missing directories.
fn opened(file: &FileRef) -> Result<ConfinedFile, PathError> {
    file.open(true)?.ok_or_else(|| {
        PathError::io(
            "create the directories of",
            &file.path(),
            io::ErrorKind::NotFound.into(),
        )
    })
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

/// Remove `path` (missing is fine) and fsync its directory. Only a regular
/// file is removed.
pub fn remove_file(path: &Path) -> Result<(), PathError> {
    match FileRef::anywhere(path)?.open(false)? {
        Some(file) => file.remove(),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), PathError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PathError::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn home() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    /// `resolved` folds a link target's `..` from the link's real directory,
    /// as the writer's walk does: `~/.aws` -> `x/y`, and a dangling
    /// `credentials` -> `missing/../../../.zshenv` there leads to `~/.zshenv`.
    #[test]
    fn resolved_follows_links_from_their_real_directory() {
        let home = home();
        let canon = home.path().canonicalize().unwrap();
        fs::create_dir_all(home.path().join("x/y")).unwrap();
        symlink("x/y", home.path().join(".aws")).unwrap();
        symlink(
            "missing/../../../.zshenv",
            home.path().join("x/y/credentials"),
        )
        .unwrap();
        let file = confine(home.path(), "~/.aws/credentials").unwrap();
        let resolved = file.resolved();
        let folded: PathBuf = resolved.components().fold(PathBuf::new(), |mut p, c| {
            match c {
                Component::ParentDir => {
                    p.pop();
                }
                c => p.push(c),
            }
            p
        });
        assert_eq!(folded, canon.join(".zshenv"));
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
        let f = confine(h.path(), "~/.aws/credentials").unwrap();
        assert_eq!(f.display(), "~/.aws/credentials");
        assert_eq!(f.path(), h.path().join(".aws/credentials"));
        let abs = format!("{}/.kube/config", h.path().display());
        assert_eq!(confine(h.path(), &abs).unwrap().display(), "~/.kube/config");
        let canon = format!(
            "{}/.kube/config",
            h.path().canonicalize().unwrap().display()
        );
        assert_eq!(
            confine(h.path(), &canon).unwrap().display(),
            "~/.kube/config"
        );
    }

    /// `~//x` and `~/./x` are `~/x` for the writer as for the policy
    /// (`HomePath`); `~user/x` is a directory `~user` in home.
    #[test]
    fn confine_reads_tilde_spellings_as_the_policy_does() {
        let h = home();
        for (text, shown) in [("~//x", "~/x"), ("~/./x", "~/x"), ("~user/x", "~/~user/x")] {
            assert_eq!(confine(h.path(), text).unwrap().display(), shown, "{text}");
        }
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
        let f = confine(h.path(), "~/.aws/credentials").unwrap();
        f.open(true).unwrap().unwrap().write(b"x").unwrap();
        assert_eq!(
            fs::read(h.path().join("dotfiles/credentials")).unwrap(),
            b"x"
        );
        assert!(fs::symlink_metadata(h.path().join(".aws"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    /// An unchanged private file is left alone (same inode: no rename);
    /// other bytes, or a wider mode, are written.
    #[test]
    fn atomic_write_if_changed_skips_only_identical_private_files() {
        use std::os::unix::fs::MetadataExt;
        let home = home();
        let path = home.path().join("state/s.json");
        assert!(atomic_write_if_changed(&path, b"one").unwrap());
        let ino = fs::metadata(&path).unwrap().ino();
        assert!(!atomic_write_if_changed(&path, b"one").unwrap());
        assert_eq!(fs::metadata(&path).unwrap().ino(), ino);
        assert!(atomic_write_if_changed(&path, b"two").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"two");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(atomic_write_if_changed(&path, b"two").unwrap());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!atomic_write_if_changed(&path, b"two").unwrap());
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
        assert!(read_optional(&h.path().join("no/dir")).unwrap().is_none());
    }
}
