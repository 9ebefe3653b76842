//! Operations on a resolved file, all relative to its opened parent
//! directory so nothing re-walks a checked path: read (regular files only,
//! opened non-blocking, size-capped), atomic private write (temp created
//! `O_EXCL | O_NOFOLLOW` 0600 in that directory, fsync, `renameat`, fsync of
//! the directory), removal, mode tightening, and a bounded-wait lock on the
//! directory released when dropped. A symlink, FIFO, socket, device or
//! directory at the name is never read, replaced or removed. Errors name the
//! path, never the contents.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{self as rfs, AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::{cut, PathError, TEMP_PREFIX};

/// [`super::FILE_MODE`] as rustix's `Mode` (whose raw type is `u16` on
/// macOS and `u32` on Linux, so no cast of the constant serves both).
const FILE_PERM: Mode = Mode::RUSR.union(Mode::WUSR);
use crate::secret_value::SecretText;

/// Largest credential file read (16 MiB); a larger one is refused.
pub const MAX_FILE_SIZE: u64 = 16 << 20;
/// How long a writer waits for another one's directory lock before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// What tells a file's content apart without reading it: device, inode,
/// size, modification and status-change times (ns), mode and owner. Any
/// write, rename over it, chmod or chown changes one of them; a file
/// replaced by a link has another inode. Timestamps are coarse (the
/// kernel's clock tick), so a signature proves an unchanged content only
/// when taken well after the file's last change ([`FileSig::settled_before`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSig {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
    uid: u32,
}

impl FileSig {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn of(st: &rfs::Stat) -> Self {
        Self {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as i64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
        }
    }

    /// Whether group or others may read the file.
    pub fn is_private(&self) -> bool {
        self.mode & 0o077 == 0
    }

    /// Whether the file last changed (content, metadata) before `t`, in
    /// whole seconds since the epoch: a signature taken after that still
    /// matches only while the content is the one read.
    pub fn settled_before(&self, t: i64) -> bool {
        self.mtime.0 < t && self.ctime.0 < t
    }
}

/// A file reached by the resolver: its opened parent directory and its name
/// there. Build one with [`super::FileRef::open`].
#[derive(Debug)]
pub struct ConfinedFile {
    pub(super) dir: OwnedFd,
    pub(super) name: std::ffi::OsString,
    pub(super) display: String,
}

/// What kind of thing a mode describes, for messages.
fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "special file",
    }
}

impl ConfinedFile {
    /// The path as shown in messages (`~/.aws/credentials`).
    pub fn display(&self) -> &str {
        &self.display
    }

    fn io(&self, op: &'static str, e: impl Into<io::Error>) -> PathError {
        PathError::io(op, Path::new(&self.display), e.into())
    }

    fn not_regular(&self, kind: FileType) -> PathError {
        PathError::NotRegular {
            path: cut(&self.display),
            kind: kind_name(kind),
        }
    }

    /// What is at the name now, without following a link: `None` when missing.
    pub(super) fn kind(&self) -> Result<Option<FileType>, PathError> {
        match rfs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.io("inspect", e)),
        }
    }

    /// The signature of the regular file at the name (a link is not
    /// followed); `None` when missing or not a regular file.
    pub fn sig(&self) -> Result<Option<FileSig>, PathError> {
        match rfs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                Ok(Some(FileSig::of(&st)))
            }
            Ok(_) | Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.io("inspect", e)),
        }
    }

    /// Open the regular file at the name (never a link, never blocking on a
    /// FIFO or device); `None` when missing.
    fn open_regular(&self, flags: OFlags) -> Result<Option<(File, FileSig)>, PathError> {
        match self.kind()? {
            None => return Ok(None),
            Some(FileType::RegularFile) => {}
            Some(other) => return Err(self.not_regular(other)),
        }
        let flags = flags | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rfs::openat(&self.dir, &self.name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(self.not_regular(FileType::Symlink)),
            Err(e) => return Err(self.io("open", e)),
        };
        // Checked again on the opened file: it may have been swapped since.
        let st = rfs::fstat(&fd).map_err(|e| self.io("inspect", e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(self.not_regular(kind));
        }
        Ok(Some((File::from(fd), FileSig::of(&st))))
    }

    /// The file as UTF-8 text, `None` when it does not exist. Anything but a
    /// regular file, or one above [`MAX_FILE_SIZE`], is refused.
    pub fn read(&self) -> Result<Option<SecretText>, PathError> {
        Ok(self.read_with_sig()?.map(|(text, _)| text))
    }

    /// [`ConfinedFile::read`], with the signature of the file read (taken
    /// on the opened file, before reading it).
    pub fn read_with_sig(&self) -> Result<Option<(SecretText, FileSig)>, PathError> {
        let Some((file, sig)) = self.open_regular(OFlags::RDONLY)? else {
            return Ok(None);
        };
        let size = u64::try_from(sig.size).unwrap_or(0);
        let too_large = || PathError::TooLarge {
            path: cut(&self.display),
            max: MAX_FILE_SIZE,
        };
        if size > MAX_FILE_SIZE {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.io("read", e))?;
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(too_large());
        }
        String::from_utf8(bytes)
            .map(|s| Some((SecretText::new(s), sig)))
            .map_err(|_| {
                self.io(
                    "read",
                    io::Error::new(io::ErrorKind::InvalidData, "file is not valid UTF-8"),
                )
            })
    }

    /// Replace the file with `contents` atomically, mode 0600 whatever the
    /// umask: a temp file in the same directory is written, fsynced and
    /// renamed over the name, then the directory is fsynced. Refuses to
    /// replace anything but a regular file (or nothing).
    pub fn write(&self, contents: &[u8]) -> Result<(), PathError> {
        if let Some(kind) = self.kind()? {
            if kind != FileType::RegularFile {
                return Err(self.not_regular(kind));
            }
        }
        let (tmp_name, fd) = self.create_temp()?;
        let written = (|| {
            rfs::fchmod(&fd, FILE_PERM)?;
            let mut file = File::from(fd);
            file.write_all(contents)?;
            file.sync_all()?;
            rfs::renameat(&self.dir, &tmp_name, &self.dir, &self.name)?;
            Ok::<(), io::Error>(())
        })();
        if let Err(e) = written {
            let _ = rfs::unlinkat(&self.dir, &tmp_name, AtFlags::empty());
            return Err(self.io("write", e));
        }
        self.sync_dir()
    }

    /// Remove the temp files a writer of ours left in this file's directory
    /// when it was killed between creating one and renaming it (they hold
    /// what was being written, values included, and would outlive a revoke).
    /// Called with the directory's lock held (`_lock`): every writer of ours
    /// holds that lock while its temp file exists (`common::apply`,
    /// [`super::atomic_write`]), so a temp file of ours found then is not
    /// being written by anyone. Only regular files named as
    /// [`ConfinedFile::write`] names them (the prefix and 16 hex digits) and
    /// owned by this user are removed; never a link, a directory or another
    /// user's file. Returns how many were removed.
    pub fn sweep_stale_temps(&self, _lock: &DirLock) -> Result<usize, PathError> {
        let list = |e: Errno| self.io("list the directory of", e);
        let dir = rfs::Dir::read_from(&self.dir).map_err(list)?;
        let uid = nix::unistd::geteuid().as_raw();
        let mut removed = 0;
        for entry in dir {
            let entry = entry.map_err(list)?;
            let name = entry.file_name();
            if !is_temp_name(name.to_bytes()) {
                continue;
            }
            let st = match rfs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(self.io("inspect a temp file beside", e)),
            };
            #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
            let ours = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && st.st_uid as u32 == uid;
            if !ours {
                continue;
            }
            match rfs::unlinkat(&self.dir, name, AtFlags::empty()) {
                Ok(()) => removed += 1,
                Err(Errno::NOENT) => {}
                Err(e) => return Err(self.io("remove a stale temp file beside", e)),
            }
        }
        if removed > 0 {
            self.sync_dir()?;
        }
        Ok(removed)
    }

    fn create_temp(&self) -> Result<(String, OwnedFd), PathError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut last = None;
        for _ in 0..16 {
            let mut random = [0u8; TEMP_RANDOM_LEN / 2];
            getrandom::getrandom(&mut random)
                .map_err(|e| self.io("create temp file for", io::Error::other(e.to_string())))?;
            let name = format!("{TEMP_PREFIX}{}", hex::encode(random));
            debug_assert!(is_temp_name(name.as_bytes()));
            match rfs::openat(&self.dir, &name, flags, FILE_PERM) {
                Ok(fd) => return Ok((name, fd)),
                Err(Errno::EXIST) => last = Some(Errno::EXIST),
                Err(e) => return Err(self.io("create temp file for", e)),
            }
        }
        Err(self.io("create temp file for", last.unwrap_or(Errno::EXIST)))
    }

    fn sync_dir(&self) -> Result<(), PathError> {
        rfs::fsync(&self.dir).map_err(|e| self.io("fsync the directory of", e))
    }

    /// Remove the file (missing is fine) and fsync its directory. Anything
    /// but a regular file is refused.
    pub fn remove(&self) -> Result<(), PathError> {
        match self.kind()? {
            None => return Ok(()),
            Some(FileType::RegularFile) => {}
            Some(other) => return Err(self.not_regular(other)),
        }
        match rfs::unlinkat(&self.dir, &self.name, AtFlags::empty()) {
            Ok(()) => self.sync_dir(),
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io("remove", e)),
        }
    }

    /// Make an existing file readable by its owner only (in place, so its
    /// mtime stays) when group or others could read it.
    pub fn tighten_mode(&self) -> Result<(), PathError> {
        if let Some((file, _)) = self.open_regular(OFlags::RDONLY)? {
            let st = rfs::fstat(&file).map_err(|e| self.io("inspect", e))?;
            if st.st_mode & 0o077 != 0 {
                rfs::fchmod(&file, FILE_PERM).map_err(|e| self.io("chmod", e))?;
            }
        }
        Ok(())
    }

    /// The identity (device, inode) of the opened directory.
    pub fn dir_id(&self) -> Result<(u64, u64), PathError> {
        let st = rfs::fstat(&self.dir).map_err(|e| self.io("inspect the directory of", e))?;
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// An exclusive lock on the opened directory, waiting at most
    /// [`LOCK_WAIT`] for another writer; released when the guard is dropped.
    pub fn lock_dir(&self) -> Result<DirLock, PathError> {
        // A descriptor of its own, so the lock lives exactly as long as the guard.
        let fd = rfs::openat(
            &self.dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io("open the directory of", e))?;
        let start = Instant::now();
        loop {
            match rfs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(DirLock { _fd: fd }),
                Err(Errno::WOULDBLOCK | Errno::INTR) if start.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(Errno::WOULDBLOCK) => {
                    return Err(PathError::Busy {
                        path: cut(&self.display),
                        secs: LOCK_WAIT.as_secs(),
                    })
                }
                Err(e) => return Err(self.io("lock the directory of", e)),
            }
        }
    }
}

/// Length of the random part of a temp file's name: 8 bytes as hex.
const TEMP_RANDOM_LEN: usize = 16;

/// Whether `name` is a temp file name [`ConfinedFile::write`] makes:
/// [`TEMP_PREFIX`] and [`TEMP_RANDOM_LEN`] lowercase hex digits.
fn is_temp_name(name: &[u8]) -> bool {
    name.strip_prefix(TEMP_PREFIX.as_bytes())
        .is_some_and(|rest| {
            rest.len() == TEMP_RANDOM_LEN
                && rest
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        })
}

/// An exclusive advisory lock on a file's directory, held until dropped.
/// Serialises read-merge-write cycles between threads and processes
/// (the controller and a local agent may write the same `~/.aws`).
#[derive(Debug)]
pub struct DirLock {
    _fd: OwnedFd,
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::MAX_FILE_SIZE;
    use crate::fsutil::{confine, read_optional, FileRef, PathError};

    fn assert_not_regular(err: PathError, path: &str, kind: &str) {
        let text = err.to_string();
        assert!(
            matches!(&err, PathError::NotRegular { path: p, kind: k } if p == path && *k == kind),
            "{text}"
        );
        assert!(
            text.contains(path) && text.contains("not a regular file"),
            "{text}"
        );
    }

    #[test]
    fn fifo_socket_and_device_are_refused_without_blocking() {
        let h = tempfile::tempdir().unwrap();
        let home = h.path();
        fs::create_dir(home.join(".aws")).unwrap();
        nix::unistd::mkfifo(
            &home.join(".aws/credentials"),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(home.join(".aws/config")).unwrap();
        // a thread, so a regression fails the test instead of hanging it
        let home_path = home.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let file = |p: &str| confine(&home_path, p).unwrap().open(true).unwrap().unwrap();
            let fifo = file("~/.aws/credentials");
            let sock = file("~/.aws/config");
            let results = [
                ("FIFO", fifo.read().map(drop)),
                ("FIFO", fifo.write(b"v")),
                ("FIFO", fifo.remove()),
                ("FIFO", fifo.tighten_mode()),
                ("socket", sock.read().map(drop)),
                ("socket", sock.write(b"v")),
            ];
            let null = FileRef::anywhere(Path::new("/dev/null")).unwrap();
            let device = null.open(false).unwrap().unwrap().read().map(drop);
            let by_path = read_optional(&home_path.join(".aws/credentials")).map(drop);
            tx.send((results, device, by_path)).unwrap();
        });
        let (results, device, by_path) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("an operation on a FIFO blocked");
        for (kind, result) in results {
            let path = if kind == "FIFO" {
                "~/.aws/credentials"
            } else {
                "~/.aws/config"
            };
            assert_not_regular(result.unwrap_err(), path, kind);
        }
        assert_not_regular(device.unwrap_err(), "/dev/null", "character device");
        assert!(matches!(by_path, Err(PathError::NotRegular { .. })));
        let kind = fs::symlink_metadata(home.join(".aws/credentials"))
            .unwrap()
            .file_type();
        assert!(
            std::os::unix::fs::FileTypeExt::is_fifo(&kind),
            "the FIFO was replaced"
        );
    }

    #[test]
    fn files_above_the_cap_are_refused_naming_the_path() {
        let h = tempfile::tempdir().unwrap();
        let big = fs::File::create(h.path().join("big")).unwrap();
        big.set_len(MAX_FILE_SIZE + 1).unwrap();
        let f = confine(h.path(), "~/big")
            .unwrap()
            .open(false)
            .unwrap()
            .unwrap();
        let err = f.read().unwrap_err();
        assert!(matches!(err, PathError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("~/big"), "{err}");
        big.set_len(MAX_FILE_SIZE).unwrap();
        assert_eq!(
            f.read().unwrap().unwrap().expose_secret().len() as u64,
            MAX_FILE_SIZE
        );
    }

    #[test]
    fn a_symlink_swapped_in_after_resolution_is_never_replaced() {
        let h = tempfile::tempdir().unwrap();
        let home = h.path();
        fs::write(home.join("f"), "old").unwrap();
        let f = confine(home, "~/f").unwrap().open(false).unwrap().unwrap();
        fs::remove_file(home.join("f")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", home.join("f")).unwrap();
        assert_not_regular(f.write(b"new").unwrap_err(), "~/f", "symlink");
        assert_not_regular(f.read().unwrap_err(), "~/f", "symlink");
        assert!(fs::symlink_metadata(home.join("f"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_dir(home).unwrap().count(),
            1,
            "a temp file was left"
        );
    }

    #[test]
    fn the_directory_lock_is_released_when_dropped() {
        let h = tempfile::tempdir().unwrap();
        let open = || {
            confine(h.path(), "~/a/f")
                .unwrap()
                .open(true)
                .unwrap()
                .unwrap()
        };
        let (one, two) = (open(), open());
        assert_eq!(one.dir_id().unwrap(), two.dir_id().unwrap());
        let lock = one.lock_dir().unwrap();
        // held: a non-blocking attempt from another descriptor fails
        let other = rustix::fs::openat(
            &two.dir,
            ".",
            rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        assert!(
            rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_err()
        );
        drop(lock);
        assert!(
            rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
        );
        rustix::fs::flock(&other, rustix::fs::FlockOperation::Unlock).unwrap();
        drop(two.lock_dir().unwrap());
    }
}
