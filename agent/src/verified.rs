//! Files this agent compared and found already holding what an item puts
//! there, so that the same item sent again (the usual warm `sync`) is
//! answered `unchanged` from one `fstatat` per file instead of re-walking,
//! re-reading and re-merging every file.
//!
//! An entry is kept per secret name, in memory only (a restart starts
//! empty): a keyed hash of everything that decides the files' content and
//! the checks they passed (the secret with its values, its placement, the
//! origin) and, per file, the signature ([`FileSig`]: device, inode, size,
//! mtime, ctime, mode, owner) taken on the file read under the lock. It is
//! recorded only when every file of the item was unchanged and private, and
//! only for files that had settled a second before the request started
//! (timestamps are coarse: a change in the same tick as the read would
//! otherwise keep the old signature). A hit needs the same hash and every
//! file's signature equal now; anything else (a byte written, a chmod, a
//! rename over it, a link put in its place, another secret merged into the
//! same file) misses and takes the full path, which records again. A hit
//! writes nothing, so it cannot write where the policy would refuse: the
//! policy checks ran when the entry was recorded, with this process's
//! config. Revoking a secret forgets its entry; a write, a conflict or a
//! failure of the item drops it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use common::apply::TargetFile;
use common::fsutil::{self, FileSig};
use common::placement::Placement;
use common::policy::Origin;
use common::Secret;
use zeroize::Zeroizing;

/// What the files of one secret were last found to hold.
struct Entry {
    key: String,
    files: Vec<(String, FileSig)>,
}

/// The entries, by secret name.
#[derive(Default)]
pub(crate) struct Verified {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified").finish_non_exhaustive()
    }
}

/// The keyed hash of what decides an item's files (never its values in
/// the clear: the serialized secret is zeroed once hashed).
pub(crate) fn item_key(
    fingerprint_key: &[u8],
    secret: &Secret,
    placement: &Placement,
    origin: Origin,
) -> String {
    let secret = Zeroizing::new(serde_json::to_vec(secret).expect("a secret serializes"));
    let placed = serde_json::to_vec(&placement.files).expect("a placement serializes");
    let mut data = Zeroizing::new(Vec::with_capacity(secret.len() + placed.len() + 32));
    data.extend_from_slice(b"rh-verified-v1\0");
    data.extend_from_slice(match origin {
        Origin::Remote => b"remote\0",
        Origin::Local => b"local\0\0",
    });
    data.extend_from_slice(&(secret.len() as u64).to_le_bytes());
    data.extend_from_slice(&secret);
    data.extend_from_slice(&placed);
    common::fingerprint::fingerprint(fingerprint_key, &data)
}

impl Verified {
    /// The item's files, when its entry matches `key` and every file's
    /// signature is still the one recorded: the item is unchanged.
    pub(crate) fn hit(
        &self,
        home: &Path,
        name: &str,
        key: &str,
        placement: &Placement,
    ) -> Option<Vec<TargetFile>> {
        let files: Vec<(String, FileSig)> = {
            let entries = self.entries.lock().expect("never poisoned");
            let entry = entries.get(name).filter(|e| e.key == key)?;
            entry.files.clone()
        };
        if files.len() != placement.files.len() {
            return None;
        }
        let mut out = Vec::with_capacity(files.len());
        for ((display, sig), placed) in files.into_iter().zip(&placement.files) {
            if display != placed.path {
                return None;
            }
            let (path, handle) = fsutil::confine_open(home, &display).ok()?;
            if handle?.sig().ok()?? != sig {
                return None;
            }
            out.push(TargetFile { display, path });
        }
        Some(out)
    }

    /// Record the outcome of an item applied the full way: its files'
    /// signatures when every one was unchanged, private and settled before
    /// `settled_before` (seconds since the epoch); otherwise forget it.
    pub(crate) fn note(
        &self,
        name: &str,
        key: String,
        files: &[TargetFile],
        sigs: &[Option<FileSig>],
        settled_before: i64,
    ) {
        if files.len() != sigs.len() {
            self.forget(name);
            return;
        }
        let recorded: Option<Vec<(String, FileSig)>> = files
            .iter()
            .zip(sigs)
            .map(|(f, sig)| {
                sig.filter(|s| s.settled_before(settled_before))
                    .map(|s| (f.display.clone(), s))
            })
            .collect();
        let mut entries = self.entries.lock().expect("never poisoned");
        match recorded {
            Some(files) if !files.is_empty() => {
                entries.insert(name.to_owned(), Entry { key, files });
            }
            _ => {
                entries.remove(name);
            }
        }
    }

    /// Forget a secret (revoked, or applied with an unknown outcome).
    pub(crate) fn forget(&self, name: &str) {
        self.entries.lock().expect("never poisoned").remove(name);
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use common::apply::TargetFile;
    use common::placement::{PlacedFile, Placement};
    use common::policy::Origin;
    use common::{Secret, SecretValue};

    use super::{item_key, Verified};

    const FAR: i64 = i64::MAX;

    fn placement(paths: &[&str]) -> Placement {
        Placement {
            files: paths
                .iter()
                .map(|p| PlacedFile {
                    path: (*p).to_owned(),
                })
                .collect(),
            env: None,
        }
    }

    /// The signatures of `paths` as the writer notes them.
    fn noted(
        home: &std::path::Path,
        paths: &[&str],
    ) -> (Vec<TargetFile>, Vec<Option<super::FileSig>>) {
        paths
            .iter()
            .map(|p| {
                let (path, handle) = common::fsutil::confine_open(home, p).unwrap();
                let sig = handle.unwrap().sig().unwrap();
                (
                    TargetFile {
                        display: (*p).to_owned(),
                        path,
                    },
                    sig,
                )
            })
            .unzip()
    }

    #[test]
    fn a_hit_needs_the_same_item_and_every_file_as_it_was() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        fs::create_dir(h.join(".aws")).unwrap();
        let file = h.join(".aws/credentials");
        fs::write(&file, "[default]\naws_access_key_id = AKIAONE\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let paths = ["~/.aws/credentials"];
        let placed = placement(&paths);
        let secret = |v: &str| {
            let mut values = common::Values::new();
            values.insert("access_key".into(), SecretValue::from_string(v.to_owned()));
            let mut s = Secret::base("aws", values);
            s.provider = Some("aws".into());
            s
        };
        let key_of = |value: &str, origin| {
            item_key(
                b"0123456789abcdef0123456789abcdef",
                &secret(value),
                &placed,
                origin,
            )
        };
        let key = key_of("AKIAONE", Origin::Local);
        let v = Verified::default();
        assert!(
            v.hit(h, "aws", &key, &placed).is_none(),
            "nothing recorded yet"
        );
        let (files, sigs) = noted(h, &paths);
        // Changed within the last second: not recorded.
        v.note("aws", key.clone(), &files, &sigs, 0);
        assert!(v.hit(h, "aws", &key, &placed).is_none());
        v.note("aws", key.clone(), &files, &sigs, FAR);
        let hit = v
            .hit(h, "aws", &key, &placed)
            .expect("recorded and untouched");
        assert_eq!(hit[0].display, "~/.aws/credentials");
        // Another value, origin or placement is another item.
        let other = key_of("AKIATWO", Origin::Local);
        assert!(v.hit(h, "aws", &other, &placed).is_none());
        let remote = key_of("AKIAONE", Origin::Remote);
        assert!(v.hit(h, "aws", &remote, &placed).is_none());
        assert!(v
            .hit(h, "aws", &key, &placement(&["~/.aws/other"]))
            .is_none());
        // Same size, mtime put back: the status-change time still tells.
        let mtime = fs::metadata(&file).unwrap().modified().unwrap();
        let mut f = fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all(b"[default]\naws_access_key_id = AKIAXXX\n")
            .unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        assert!(
            v.hit(h, "aws", &key, &placed).is_none(),
            "an edit went unseen"
        );
        // A chmod, a link in its place, a removal: all miss.
        let (files, sigs) = noted(h, &paths);
        v.note("aws", key.clone(), &files, &sigs, FAR);
        assert!(v.hit(h, "aws", &key, &placed).is_some());
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            v.hit(h, "aws", &key, &placed).is_none(),
            "a chmod went unseen"
        );
        let (files, sigs) = noted(h, &paths);
        v.note("aws", key.clone(), &files, &sigs, FAR);
        fs::rename(&file, h.join("moved")).unwrap();
        std::os::unix::fs::symlink(h.join("moved"), &file).unwrap();
        assert!(
            v.hit(h, "aws", &key, &placed).is_none(),
            "a link in its place went unseen"
        );
        fs::remove_file(&file).unwrap();
        assert!(v.hit(h, "aws", &key, &placed).is_none());
        // Forgotten: no hit even when the file is back as it was.
        fs::rename(h.join("moved"), &file).unwrap();
        let (files, sigs) = noted(h, &paths);
        v.note("aws", key.clone(), &files, &sigs, FAR);
        v.forget("aws");
        assert!(v.hit(h, "aws", &key, &placed).is_none());
        // A file not noted unchanged (no signature) records nothing.
        v.note("aws", key.clone(), &files, &[None], FAR);
        assert!(v.hit(h, "aws", &key, &placed).is_none());
    }
}
