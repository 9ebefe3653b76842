//! The one path resolver: walks a file's path from a directory descriptor of
//! its root (home, or `/` for a path the user named explicitly), component by
//! component with `openat(O_NOFOLLOW | O_DIRECTORY)`, never re-walking a
//! checked path. A symlink is read (`readlinkat`) and its target walked the
//! same way, at most [`MAX_HOPS`] times; under a confined root a link whose
//! target leaves the root is refused, naming the link. Missing directories are
//! created 0700 (`mkdirat`) when asked. The result is the opened parent
//! directory and the final name: every later operation is relative to it.
//! On Linux `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` opens the parent
//! in one call when it can; anything it refuses takes the portable walk, which
//! gives the precise error. Never reads or logs file contents.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::{cut, ConfinedFile, PathError};

/// Symlinks followed in one resolution at most (the kernel's limit too).
pub const MAX_HOPS: usize = 40;

/// Where a resolution starts, how it is shown, and whether it may be left.
#[derive(Debug, Clone)]
pub(super) struct Root {
    /// The directory itself (home as configured, or `/`).
    pub(super) path: PathBuf,
    /// Its name in messages: `~` for home, empty for `/`.
    pub(super) shown: String,
    /// Whether the walk must stay beneath it.
    pub(super) confined: bool,
    /// A home shown as `~` in messages when the walk passes through it.
    pub(super) tilde: Option<PathBuf>,
}

/// How directories on the way are opened: on Linux `O_PATH`, so a directory
/// with search permission only (mode 0711) can be walked through.
fn dir_flags() -> OFlags {
    #[cfg(target_os = "linux")]
    let read = OFlags::PATH;
    #[cfg(not(target_os = "linux"))]
    let read = OFlags::RDONLY;
    read | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// The directory `fd` refers to, opened for reading (locking, fsync, chmod).
fn readable(fd: &OwnedFd, shown: &str) -> Result<OwnedFd, PathError> {
    rfs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| PathError::io("open directory", Path::new(shown), e.into()))
}

/// Open `root` and walk `rel` (plain names; `..` only from link targets)
/// beneath it. `None` when a directory on the way is missing and `create` is
/// false. The final name may be missing (the file is then to be created).
pub(super) fn resolve(
    root: &Root,
    rel: &[OsString],
    create: bool,
) -> Result<Option<ConfinedFile>, PathError> {
    let root_fd = rfs::open(
        &root.path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| PathError::io("open directory", &root.path, e.into()))?;
    #[cfg(target_os = "linux")]
    if let Some(found) = beneath(&root_fd, root, rel) {
        return Ok(Some(found));
    }
    Walk {
        root,
        asked: rel,
        stack: vec![root_fd],
        names: vec![],
        queue: rel.iter().cloned().collect(),
        hops: 0,
        last_link: None,
    }
    .run(create)
}

/// The Linux fast path: the parent opened by the kernel beneath the root, the
/// final name not a symlink. `None` sends the caller to the portable walk.
#[cfg(target_os = "linux")]
fn beneath(root_fd: &OwnedFd, root: &Root, rel: &[OsString]) -> Option<ConfinedFile> {
    let (name, parents) = rel.split_last()?;
    if !root.confined || parents.is_empty() || rel.iter().any(|c| c == "..") {
        return None;
    }
    let parent: PathBuf = parents.iter().collect();
    let dir = rfs::openat2(
        root_fd,
        &parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        rfs::ResolveFlags::BENEATH | rfs::ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    match rfs::readlinkat(&dir, name.as_os_str(), Vec::new()) {
        Err(Errno::INVAL | Errno::NOENT) => Some(ConfinedFile {
            dir,
            name: name.clone(),
            display: shown(root, rel.iter()),
        }),
        _ => None,
    }
}

/// How a path is named in messages: the root's name and the components.
pub(super) fn shown<'a>(root: &Root, names: impl Iterator<Item = &'a OsString>) -> String {
    let mut text = root.shown.clone();
    for name in names {
        text.push('/');
        text.push_str(&name.to_string_lossy());
    }
    match &root.tilde {
        Some(home) => super::tilde_path(home, Path::new(&text)),
        None => text,
    }
}

struct Walk<'a> {
    root: &'a Root,
    /// The path as asked for.
    asked: &'a [OsString],
    /// Opened directories from the root down; `stack[i + 1]` is `names[i]`.
    stack: Vec<OwnedFd>,
    names: Vec<OsString>,
    queue: VecDeque<OsString>,
    hops: usize,
    /// The last link followed, named when its target escapes.
    last_link: Option<String>,
}

impl Walk<'_> {
    fn here(&self, name: &OsString) -> String {
        shown(self.root, self.names.iter().chain([name]))
    }

    fn run(mut self, create: bool) -> Result<Option<ConfinedFile>, PathError> {
        let mut created: Option<OsString> = None;
        while let Some(name) = self.queue.pop_front() {
            if name.is_empty() || name == "." {
                continue;
            }
            let here = self.here(&name);
            if name == ".." {
                if self.stack.len() > 1 {
                    self.stack.pop();
                    self.names.pop();
                } else if self.root.confined {
                    return Err(PathError::SymlinkEscape {
                        path: cut(self.last_link.as_deref().unwrap_or(&here)),
                    });
                }
                continue;
            }
            let cur = self.stack.last().expect("the root stays on the stack");
            if self.queue.is_empty() {
                // The final name: a link is followed, anything else is the file.
                match rfs::readlinkat(cur, name.as_os_str(), Vec::new()) {
                    Ok(target) => self.follow(here, target.as_bytes())?,
                    Err(Errno::INVAL | Errno::NOENT) => {
                        let parent = self.stack.pop().expect("the root stays on the stack");
                        let dir = readable(&parent, &shown(self.root, self.names.iter()))?;
                        // named as asked for, and where its links led
                        let asked = shown(self.root, self.asked.iter());
                        let display = match self.last_link {
                            Some(_) if asked != here => format!("{asked} -> {here}"),
                            _ => here,
                        };
                        return Ok(Some(ConfinedFile { dir, name, display }));
                    }
                    Err(e) => return Err(PathError::io("inspect", Path::new(&here), e.into())),
                }
                continue;
            }
            match rfs::openat(cur, name.as_os_str(), dir_flags(), Mode::empty()) {
                Ok(fd) => {
                    if created.take().is_some_and(|c| c == name) {
                        // mkdirat applied the umask: make it exactly 0700.
                        rfs::fchmod(readable(&fd, &here)?, Mode::RWXU)
                            .map_err(|e| PathError::io("chmod", Path::new(&here), e.into()))?;
                    }
                    self.stack.push(fd);
                    self.names.push(name);
                }
                Err(Errno::NOENT) if create => {
                    self.hops += 1; // bounds the retries when raced
                    if self.hops > MAX_HOPS {
                        return Err(PathError::SymlinkLoop { path: cut(&here) });
                    }
                    match rfs::mkdirat(cur, name.as_os_str(), Mode::RWXU) {
                        Ok(()) => created = Some(name.clone()),
                        Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(PathError::io(
                                "create directory",
                                Path::new(&here),
                                e.into(),
                            ))
                        }
                    }
                    self.queue.push_front(name);
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    match rfs::readlinkat(cur, name.as_os_str(), Vec::new()) {
                        Ok(target) => self.follow(here, target.as_bytes())?,
                        Err(_) => return Err(PathError::NotDirectory { path: cut(&here) }),
                    }
                }
                Err(e) => return Err(PathError::io("open directory", Path::new(&here), e.into())),
            }
        }
        // The path ended on `.` or `..`: a directory, not a file.
        Err(PathError::NotRegular {
            path: cut(&shown(self.root, self.names.iter())),
            kind: "directory",
        })
    }

    /// Continue the walk at the target of the link `here`.
    fn follow(&mut self, here: String, target: &[u8]) -> Result<(), PathError> {
        self.hops += 1;
        if self.hops > MAX_HOPS {
            return Err(PathError::SymlinkLoop { path: cut(&here) });
        }
        let target = Path::new(OsStr::from_bytes(target));
        let rest = if target.is_absolute() {
            let rest = if self.root.confined {
                strip_root(&self.root.path, target)
                    .ok_or_else(|| PathError::SymlinkEscape { path: cut(&here) })?
            } else {
                target.strip_prefix("/").unwrap_or(target).to_path_buf()
            };
            self.stack.truncate(1);
            self.names.clear();
            rest
        } else {
            target.to_path_buf()
        };
        for component in rest.components().rev() {
            let name = match component {
                Component::Normal(n) => n.to_os_string(),
                Component::ParentDir => "..".into(),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => continue,
            };
            self.queue.push_front(name);
        }
        self.last_link = Some(here);
        Ok(())
    }
}

/// `target` relative to `root` (as configured, or canonical), if beneath it.
fn strip_root(root: &Path, target: &Path) -> Option<PathBuf> {
    if let Ok(rest) = target.strip_prefix(root) {
        return Some(rest.to_path_buf());
    }
    let canonical = root.canonicalize().ok()?;
    target.strip_prefix(canonical).ok().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::Path;

    use crate::fsutil::{confine, explicit, PathError};

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn write(home: &Path, path: &str, text: &str) -> Result<(), PathError> {
        confine(home, path)?
            .open(true)?
            .expect("created")
            .write(text.as_bytes())
    }

    #[test]
    fn dangling_links_inside_home_are_followed_and_their_targets_created() {
        let h = tempfile::tempdir().unwrap();
        let home = h.path();
        // a dotfiles repository committed the links before their targets exist
        fs::create_dir(home.join(".config")).unwrap();
        symlink("../dotfiles/app.json", home.join(".config/app.json")).unwrap();
        symlink(home.join("dotfiles/aws"), home.join(".aws")).unwrap();
        write(home, "~/.config/app.json", "{}").unwrap();
        write(home, "~/.aws/credentials", "[default]\n").unwrap();
        assert_eq!(fs::read(home.join("dotfiles/app.json")).unwrap(), b"{}");
        assert_eq!(mode(&home.join("dotfiles/app.json")), 0o600);
        assert_eq!(mode(&home.join("dotfiles")), 0o700);
        assert_eq!(mode(&home.join("dotfiles/aws")), 0o700);
        assert_eq!(mode(&home.join("dotfiles/aws/credentials")), 0o600);
        for link in [".config/app.json", ".aws"] {
            let meta = fs::symlink_metadata(home.join(link)).unwrap();
            assert!(meta.file_type().is_symlink(), "{link} was replaced");
        }
        // a link through the canonical form of home stays inside too
        let canon = home.canonicalize().unwrap();
        symlink(canon.join("dotfiles/kube"), home.join(".kube")).unwrap();
        write(home, "~/.kube/config", "x").unwrap();
        assert_eq!(fs::read(home.join("dotfiles/kube/config")).unwrap(), b"x");
    }

    #[test]
    fn links_leading_outside_home_are_refused_naming_the_link() {
        let h = tempfile::tempdir().unwrap();
        let home = h.path();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(home.join("dots")).unwrap();
        symlink(outside.path(), home.join("dots/aws")).unwrap();
        symlink("dots/aws", home.join(".aws")).unwrap();
        symlink("../../etc/passwd", home.join("dots/pw")).unwrap();
        symlink(outside.path().join("missing"), home.join("dangling-out")).unwrap();
        for (path, link) in [
            ("~/.aws/credentials", "~/dots/aws"),
            ("~/dots/pw", "~/dots/pw"),
            ("~/dangling-out", "~/dangling-out"),
        ] {
            let err = write(home, path, "v").unwrap_err();
            match &err {
                PathError::SymlinkEscape { path } => assert_eq!(path, link),
                other => panic!("{path}: {other}"),
            }
            assert!(err.to_string().contains(link), "{err}");
        }
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // unless the user named the path explicitly (the controller's --path)
        let f = explicit(home, "~/.aws/credentials").unwrap();
        f.open(true).unwrap().unwrap().write(b"mine").unwrap();
        assert_eq!(
            fs::read(outside.path().join("credentials")).unwrap(),
            b"mine"
        );
    }

    #[test]
    fn link_loops_and_long_paths_are_errors() {
        let h = tempfile::tempdir().unwrap();
        let home = h.path();
        symlink("b", home.join("a")).unwrap();
        symlink("a", home.join("b")).unwrap();
        assert!(matches!(
            write(home, "~/a/x", "v"),
            Err(PathError::SymlinkLoop { .. })
        ));
        let long_name = format!("~/{}", "n".repeat(300));
        let long_path = format!("~/{}", "d/".repeat(2100));
        for path in [long_name, long_path] {
            let err = confine(home, &path).unwrap_err();
            assert!(matches!(err, PathError::TooLong { .. }), "{err}");
            assert!(err.to_string().len() < 300, "{err}");
        }
        // a file in the way of a directory
        fs::write(home.join("plain"), "x").unwrap();
        assert!(matches!(
            write(home, "~/plain/x", "v"),
            Err(PathError::NotDirectory { .. })
        ));
    }

    /// A directory inside home swapped (atomically, over and over) with a
    /// symlink to an outside directory while writes go through it, each
    /// write starting while it is a directory: no write may land outside,
    /// temp files included.
    #[cfg(target_os = "linux")]
    #[test]
    fn swapping_a_directory_for_an_outside_link_never_lets_a_write_escape() {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        use std::sync::atomic::{AtomicBool, Ordering};
        let h = tempfile::tempdir().unwrap();
        let home = h.path().to_path_buf();
        let outside = tempfile::tempdir().unwrap();
        let (d, l) = (home.join("d"), home.join("l"));
        fs::create_dir(&d).unwrap();
        symlink(outside.path(), &l).unwrap();
        let stop = AtomicBool::new(false);
        let is_link = |p: &Path| fs::symlink_metadata(p).unwrap().file_type().is_symlink();
        let (mut ok, mut refused) = (0, 0);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    renameat_with(CWD, &d, CWD, &l, RenameFlags::EXCHANGE).unwrap();
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            });
            for i in 0..300 {
                while is_link(&d) {
                    std::thread::yield_now();
                }
                match write(&home, "~/d/f", &format!("value {i}")) {
                    Ok(()) => ok += 1,
                    Err(_) => refused += 1,
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        let escaped: Vec<_> = fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(escaped.is_empty(), "written outside home: {escaped:?}");
        assert_eq!(ok + refused, 300);
        // the swapper is stopped: with `d` a directory again, writes go through
        if is_link(&d) {
            renameat_with(CWD, &d, CWD, &l, RenameFlags::EXCHANGE).unwrap();
        }
        write(&home, "~/d/f", "last").unwrap();
        assert_eq!(fs::read(d.join("f")).unwrap(), b"last");
        let left: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["f"], "temp files left behind");
    }
}
