//! Putting a secret's values into its files and taking them out again, on
//! whatever machine runs this (the controller for `secret write`, the agent on
//! a node). Merges through the provider, never loses other content, writes
//! atomically with mode 0600, and holds a lock on each file's directory for
//! the whole read-merge-write so concurrent writers never interleave.
//! Callers confine paths first ([`crate::fsutil::confine`]); each file is
//! resolved again here, once, and then only touched through its opened
//! directory. This module never logs.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::fsutil::{self, ConfinedFile, FileRef, PathError};
use crate::model::Secret;
use crate::providers::{self, FileMerge, FileRemove, Merge, Provider, ProviderError, Removal};
use crate::secret_value::{SecretValue, Values};

/// The display paths (`~/...`) of a secret's files: at `path` when given, else
/// the secret's own path, else its provider's default file. An ssh secret
/// without a path lives at `~/.ssh/<key>`, the key named by the secret
/// (`ssh-id_rsa` -> `~/.ssh/id_rsa`), never at `~/.ssh` itself.
pub fn secret_paths(secret: &Secret, path: Option<&str>) -> Result<Vec<String>, ProviderError> {
    let provider = providers::for_secret(secret.provider.as_deref());
    let chosen = path
        .map(str::to_owned)
        .or_else(|| secret.path.clone())
        .or_else(|| provider.default_path().map(str::to_owned))
        .or_else(|| {
            (provider.id() == "ssh").then(|| {
                let key = secret.name.strip_prefix("ssh-").unwrap_or(&secret.name);
                format!("~/.ssh/{key}")
            })
        })
        .ok_or_else(|| ProviderError::NoPath {
            provider: secret
                .provider
                .clone()
                .unwrap_or_else(|| secret.name.clone()),
        })?;
    Ok(provider.files(&chosen))
}

/// The environment variables a secret sets: its `env_vars` map (else its
/// provider's default map) applied to its values. String values are used as
/// they are; other JSON values are passed as compact JSON. Keys without a
/// value are skipped.
pub fn secret_env_vars(secret: &Secret) -> BTreeMap<String, SecretValue> {
    let map = match &secret.env_vars {
        Some(map) => map.clone(),
        None => providers::env_var_map(providers::for_secret(secret.provider.as_deref())),
    };
    map.iter()
        .filter_map(|(key, var)| {
            let value = secret.values.get(key)?;
            let text = match value.expose_str() {
                Some(s) => s.to_owned(),
                None => value.expose_secret().to_string(),
            };
            Some((var.clone(), SecretValue::from_string(text)))
        })
        .collect()
}

/// One file of a secret: how it is shown (`~/.aws/credentials`) and where it
/// is (checked by [`fsutil::confine`] or named explicitly by the user).
#[derive(Debug, Clone)]
pub struct TargetFile {
    pub display: String,
    pub path: FileRef,
}

/// What happened (or, in a dry run, would happen) to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Written,
    Unchanged,
    Conflict,
    /// A dry run: it would be written (or, when revoking, changed).
    WouldWrite,
    /// It would be written, but another file of the same secret conflicts,
    /// so it was left as it is.
    Blocked,
    Removed,
}

/// The outcome for one file, with the conflicting keys when there are any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOutcome {
    pub path: String,
    pub status: FileStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflict_keys: Vec<String>,
}

/// What writing a secret's values into its files would do, decided from the
/// files as they are: per file, unchanged, conflict, would write, or blocked
/// (a file that would be written while another one conflicts). Made by
/// [`plan_write`] (a dry run: that is all it does) or inside [`write_files`]
/// under the lock, where it is then committed.
#[derive(Debug)]
pub struct FilePlan {
    files: Vec<PlannedFile>,
}

#[derive(Debug)]
struct PlannedFile {
    display: String,
    handle: Option<ConfinedFile>,
    merge: Merge,
    /// The signature of the file as read (`None`: missing).
    sig: Option<fsutil::FileSig>,
}

impl FilePlan {
    /// Each file's planned status: `would_write`, `blocked`, `unchanged` or
    /// `conflict` (with its keys).
    pub fn outcomes(&self) -> Vec<FileOutcome> {
        let conflicted = self.conflicted();
        self.files
            .iter()
            .map(|f| {
                let (status, conflict_keys) = match &f.merge {
                    Merge::Unchanged => (FileStatus::Unchanged, vec![]),
                    Merge::Conflict(keys) => (FileStatus::Conflict, keys.clone()),
                    Merge::Write(_) if conflicted => (FileStatus::Blocked, vec![]),
                    Merge::Write(_) => (FileStatus::WouldWrite, vec![]),
                };
                FileOutcome {
                    path: f.display.clone(),
                    status,
                    conflict_keys,
                }
            })
            .collect()
    }

    fn conflicted(&self) -> bool {
        self.files
            .iter()
            .any(|f| matches!(f.merge, Merge::Conflict(_)))
    }
}

/// Plan writing `values` into `files` (aligned with `provider.files(..)`):
/// reads each file under its confinement, creates, locks and changes nothing.
/// A dry run is this plan. The values must have passed the provider's checks
/// ([`crate::placement::place`] or [`crate::placement::verify`]).
pub fn plan_write(
    provider: &dyn Provider,
    files: &[TargetFile],
    values: &Values,
    overwrite: bool,
) -> Result<FilePlan, ProviderError> {
    let opened = open_all(files, false)?;
    plan_opened(provider, files, opened, values, overwrite)
}

fn plan_opened(
    provider: &dyn Provider,
    files: &[TargetFile],
    opened: Vec<Option<ConfinedFile>>,
    values: &Values,
    overwrite: bool,
) -> Result<FilePlan, ProviderError> {
    let mut planned = Vec::with_capacity(files.len());
    for (index, (file, handle)) in files.iter().zip(opened).enumerate() {
        let (existing, sig) = match &handle {
            Some(h) => h.read_with_sig()?.unzip(),
            None => (None, None),
        };
        let merge = provider.merge(&FileMerge {
            index,
            path: &file.display,
            existing: existing.as_ref(),
            values,
            overwrite,
        })?;
        planned.push(PlannedFile {
            display: file.display.clone(),
            handle,
            merge,
            sig,
        });
    }
    Ok(FilePlan { files: planned })
}

/// Make an unchanged file private (0600) unless it was read so: returns its
/// signature when nothing had to change.
fn keep_private(
    handle: &ConfinedFile,
    sig: Option<fsutil::FileSig>,
) -> Result<Option<fsutil::FileSig>, PathError> {
    match sig {
        Some(sig) if sig.is_private() => Ok(Some(sig)),
        _ => handle.tighten_mode().map(|()| None),
    }
}

/// Carry out a plan made under the lock: write its files unless one
/// conflicts, tighten the mode of unchanged ones. Also returns, per file,
/// the signature of an unchanged file that needed no change at all.
fn commit(plan: FilePlan) -> Result<Committed, ProviderError> {
    let mut outcomes = plan.outcomes();
    let mut sigs = vec![None; plan.files.len()];
    if plan.conflicted() {
        // Nothing is written, but a file already holding these values is
        // still made private (0600), as when nothing conflicts.
        for (file, sig) in plan.files.iter().zip(&mut sigs) {
            if let (Some(handle), Merge::Unchanged) = (&file.handle, &file.merge) {
                *sig = keep_private(handle, file.sig)?;
            }
        }
        return Ok((outcomes, sigs));
    }
    for ((file, outcome), sig) in plan.files.into_iter().zip(&mut outcomes).zip(&mut sigs) {
        let Some(handle) = file.handle else {
            continue;
        };
        match file.merge {
            Merge::Unchanged => *sig = keep_private(&handle, file.sig)?,
            Merge::Write(text) => {
                handle.write(text.expose_secret().as_bytes())?;
                outcome.status = FileStatus::Written;
            }
            Merge::Conflict(_) => {}
        }
    }
    Ok((outcomes, sigs))
}

/// Per file: its outcome, and the signature of an unchanged file that
/// needed no change (as read under the lock).
pub type Committed = (Vec<FileOutcome>, Vec<Option<fsutil::FileSig>>);

/// Write `values` into `files` (aligned with `provider.files(..)`): under
/// the lock of each file's directory, plan from the files as they are, then
/// commit. If any file conflicts, nothing is written (the others are
/// `blocked`). A dry run is [`plan_write`]: it creates, locks and changes
/// nothing. The values must have passed the provider's checks
/// ([`crate::placement`]).
pub fn write_files(
    provider: &dyn Provider,
    files: &[TargetFile],
    values: &Values,
    overwrite: bool,
    dry_run: bool,
) -> Result<Vec<FileOutcome>, ProviderError> {
    if dry_run {
        return Ok(plan_write(provider, files, values, overwrite)?.outcomes());
    }
    Ok(write_files_noting(provider, files, values, overwrite)?.0)
}

/// [`write_files`] (not a dry run), also returning the signature of each
/// file that was unchanged and needed no change, taken on the file read
/// under the lock: a later [`fsutil::ConfinedFile::sig`] equal to it (and
/// taken once the file has settled) means the file still holds what was
/// compared.
pub fn write_files_noting(
    provider: &dyn Provider,
    files: &[TargetFile],
    values: &Values,
    overwrite: bool,
) -> Result<Committed, ProviderError> {
    let opened = open_all(files, true)?;
    let _locks = lock_all(&opened, false)?;
    commit(plan_opened(provider, files, opened, values, overwrite)?)
}

/// Remove what `values` installed from `files`, keeping everything else.
/// A dry run locks and changes nothing.
pub fn remove_files(
    provider: &dyn Provider,
    files: &[TargetFile],
    values: &Values,
    dry_run: bool,
) -> Result<Vec<FileOutcome>, ProviderError> {
    let opened = open_all(files, false)?;
    let _locks = lock_all(&opened, dry_run)?;
    let mut outcomes = Vec::with_capacity(files.len());
    for (index, (file, handle)) in files.iter().zip(&opened).enumerate() {
        let status = match (read(handle.as_ref())?, handle) {
            (Some(text), Some(handle)) => {
                let removal = provider.remove(&FileRemove {
                    index,
                    path: &file.display,
                    existing: &text,
                    values,
                })?;
                match removal {
                    Removal::Unchanged => FileStatus::Unchanged,
                    _ if dry_run => FileStatus::WouldWrite,
                    Removal::Write(new) => {
                        handle.write(new.expose_secret().as_bytes())?;
                        FileStatus::Removed
                    }
                    Removal::Delete => {
                        handle.remove()?;
                        FileStatus::Removed
                    }
                }
            }
            _ => FileStatus::Unchanged,
        };
        outcomes.push(FileOutcome {
            path: file.display.clone(),
            status,
            conflict_keys: vec![],
        });
    }
    Ok(outcomes)
}

/// Resolve every file once (creating missing directories when `create`);
/// `None` for a file whose directory does not exist.
fn open_all(files: &[TargetFile], create: bool) -> Result<Vec<Option<ConfinedFile>>, PathError> {
    files.iter().map(|f| f.path.open(create)).collect()
}

fn read(handle: Option<&ConfinedFile>) -> Result<Option<crate::SecretText>, PathError> {
    handle.map_or(Ok(None), ConfinedFile::read)
}

/// Lock each distinct opened directory once, in a fixed order (device and
/// inode, so two paths to one directory share a lock and nothing deadlocks),
/// and, under the lock, remove the temp files a killed writer of ours left
/// there (`ConfinedFile::sweep_stale_temps`: they may hold values, of a write
/// since revoked). A dry run takes no lock and removes nothing.
fn lock_all(
    opened: &[Option<ConfinedFile>],
    dry_run: bool,
) -> Result<Vec<fsutil::DirLock>, PathError> {
    if dry_run {
        return Ok(vec![]);
    }
    let mut dirs = opened
        .iter()
        .flatten()
        .map(|f| Ok((f.dir_id()?, f)))
        .collect::<Result<Vec<_>, PathError>>()?;
    dirs.sort_by_key(|(id, _)| *id);
    dirs.dedup_by_key(|(id, _)| *id);
    dirs.iter()
        .map(|(_, f)| {
            let lock = f.lock_dir()?;
            f.sweep_stale_temps(&lock)?;
            Ok(lock)
        })
        .collect()
}

/// Sum of a secret's file outcomes: the most telling one, ranked as
/// secret statuses are ([`crate::wire::Status::rank`]).
pub fn overall(outcomes: &[FileOutcome]) -> FileStatus {
    outcomes
        .iter()
        .map(|o| o.status)
        .max_by_key(|s| crate::wire::Status::from(*s).rank())
        .unwrap_or(FileStatus::Unchanged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::generic::GENERIC;
    use crate::secret_value::values_from;
    use std::os::unix::fs::PermissionsExt;

    fn target(dir: &std::path::Path) -> Vec<TargetFile> {
        vec![TargetFile {
            display: "~/sub/s.json".into(),
            path: fsutil::confine(dir, "~/sub/s.json").unwrap(),
        }]
    }

    #[test]
    fn paths_and_env_vars_of_a_secret() {
        let mut s = Secret::base("ssh-id_rsa", values_from([("k", "v")]));
        assert!(secret_paths(&s, None).is_err());
        assert_eq!(
            secret_paths(&s, Some("~/x.json")).unwrap(),
            vec!["~/x.json".to_string()]
        );
        s.env_vars = Some([("k".to_string(), "MY_VAR".to_string())].into());
        let vars = secret_env_vars(&s);
        assert_eq!(vars.get("MY_VAR").and_then(|v| v.expose_str()), Some("v"));
        assert_eq!(vars.len(), 1);
    }

    #[test]
    fn write_then_unchanged_then_conflict_then_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let files = target(dir.path());
        let v1 = values_from([("k", "v1")]);
        let out = write_files(&GENERIC, &files, &v1, false, false).unwrap();
        assert_eq!(overall(&out), FileStatus::Written);
        let meta = std::fs::metadata(files[0].path.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let mtime = meta.modified().unwrap();
        std::fs::set_permissions(files[0].path.path(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let out = write_files(&GENERIC, &files, &v1, false, false).unwrap();
        assert_eq!(overall(&out), FileStatus::Unchanged);
        let mode = std::fs::metadata(files[0].path.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "a readable credential file is tightened in place"
        );
        assert_eq!(
            std::fs::metadata(files[0].path.path())
                .unwrap()
                .modified()
                .unwrap(),
            mtime
        );
        let v2 = values_from([("k", "v2")]);
        let before = std::fs::read(files[0].path.path()).unwrap();
        let out = write_files(&GENERIC, &files, &v2, false, false).unwrap();
        assert_eq!(out[0].status, FileStatus::Conflict);
        assert_eq!(out[0].conflict_keys, vec!["k".to_string()]);
        assert_eq!(std::fs::read(files[0].path.path()).unwrap(), before);
        let out = write_files(&GENERIC, &files, &v2, true, true).unwrap();
        assert_eq!(out[0].status, FileStatus::WouldWrite);
        assert_eq!(std::fs::read(files[0].path.path()).unwrap(), before);
        let out = write_files(&GENERIC, &files, &v2, true, false).unwrap();
        assert_eq!(out[0].status, FileStatus::Written);
        let out = remove_files(&GENERIC, &files, &v2, false).unwrap();
        assert_eq!(out[0].status, FileStatus::Removed);
        assert!(!files[0].path.path().exists());
    }

    /// Issue 19 item 14: a writer killed between creating its temp file and
    /// renaming it leaves `.rh-tmp-<16 hex>` with values in the target
    /// directory. The next write or revoke there removes it under the
    /// directory's lock; anything else of that name shape stays (another
    /// name, a symlink, a directory), and a dry run removes nothing.
    #[test]
    fn stale_temp_files_in_a_target_directory_are_swept_under_its_lock() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let files = target(dir.path());
        let sub = dir.path().join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let plant =
            |name: &str| std::fs::write(sub.join(name), b"half-written-value-5e1f").unwrap();
        let stale = [".rh-tmp-0123456789abcdef", ".rh-tmp-fedcba9876543210"];
        let keep = [
            ".rh-tmp-notes",
            ".rh-tmp-0123456789ABCDEF",
            "rh-tmp-0123456789abcdef",
        ];
        for name in stale.iter().chain(&keep) {
            plant(name);
        }
        let outside = tempfile::NamedTempFile::new().unwrap();
        symlink(outside.path(), sub.join(".rh-tmp-1111111111111111")).unwrap();
        std::fs::create_dir(sub.join(".rh-tmp-2222222222222222")).unwrap();
        let names = || {
            let mut n: Vec<String> = std::fs::read_dir(&sub)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            n.sort();
            n
        };
        let v = values_from([("k", "v1")]);
        write_files(&GENERIC, &files, &v, false, true).unwrap();
        assert!(
            names().contains(&stale[0].to_owned()),
            "a dry run sweeps nothing"
        );
        write_files(&GENERIC, &files, &v, false, false).unwrap();
        let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        want.extend([
            ".rh-tmp-1111111111111111".into(),
            ".rh-tmp-2222222222222222".into(),
            "s.json".into(),
        ]);
        want.sort();
        assert_eq!(names(), want);
        assert!(outside.path().exists(), "a link's target is never touched");
        // A revoke that finds its file unchanged still sweeps.
        plant(stale[0]);
        let other = values_from([("k", "other")]);
        let out = remove_files(&GENERIC, &files, &other, false).unwrap();
        assert_eq!(out[0].status, FileStatus::Unchanged);
        assert!(!sub.join(stale[0]).exists());
        // Another user's file of that name is not ours to remove (checked
        // when the tests run as root, who can give a file away).
        if nix::unistd::geteuid().is_root() {
            plant(stale[0]);
            let nobody = Some(nix::unistd::Uid::from_raw(65534));
            nix::unistd::chown(&sub.join(stale[0]), nobody, None).unwrap();
            write_files(&GENERIC, &files, &other, true, false).unwrap();
            assert!(sub.join(stale[0]).exists(), "another user's file stays");
            std::fs::remove_file(sub.join(stale[0])).unwrap();
        }
        // State files written by `fsutil::atomic_write` hold the same lock.
        plant(stale[1]);
        fsutil::atomic_write(&sub.join("state.json"), b"{}").unwrap();
        assert!(sub.join(stale[1]).exists(), "atomic_write does not sweep");
    }

    /// A file that would be written is `would_write` in a dry run and
    /// `blocked` when another file of the secret conflicts (dry run or not);
    /// a blocked file is left as it is.
    #[test]
    fn blocked_is_not_would_write() {
        use crate::providers::ssh::SSH;
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<TargetFile> = SSH
            .files("~/.ssh/id_test")
            .into_iter()
            .map(|display| TargetFile {
                path: fsutil::confine(dir.path(), &display).unwrap(),
                display,
            })
            .collect();
        let values = values_from([("private_key", "PRIV\n"), ("public_key", "PUB\n")]);
        let statuses = |out: &[FileOutcome]| out.iter().map(|o| o.status).collect::<Vec<_>>();
        let out = write_files(&SSH, &files, &values, false, true).unwrap();
        assert_eq!(statuses(&out), [FileStatus::WouldWrite; 2]);
        assert_eq!(overall(&out), FileStatus::WouldWrite);
        assert!(
            !dir.path().join(".ssh").exists(),
            "a dry run creates nothing"
        );

        std::fs::create_dir(dir.path().join(".ssh")).unwrap();
        std::fs::write(dir.path().join(".ssh/id_test.pub"), "OTHER\n").unwrap();
        for dry_run in [true, false] {
            let out = write_files(&SSH, &files, &values, false, dry_run).unwrap();
            assert_eq!(
                statuses(&out),
                [FileStatus::Blocked, FileStatus::Conflict],
                "dry run {dry_run}"
            );
            assert_eq!(overall(&out), FileStatus::Conflict);
            assert!(!dir.path().join(".ssh/id_test").exists());
            assert_eq!(
                std::fs::read(dir.path().join(".ssh/id_test.pub")).unwrap(),
                b"OTHER\n"
            );
        }
        let plan = plan_write(&SSH, &files, &values, true).unwrap();
        assert_eq!(statuses(&plan.outcomes()), [FileStatus::WouldWrite; 2]);
        let out = write_files(&SSH, &files, &values, true, false).unwrap();
        assert_eq!(statuses(&out), [FileStatus::Written; 2]);
        assert_eq!(
            std::fs::read(dir.path().join(".ssh/id_test")).unwrap(),
            b"PRIV\n"
        );

        // A file that already holds its values is made private even when
        // another file of the secret conflicts (and nothing is written).
        let private = dir.path().join(".ssh/id_test");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(dir.path().join(".ssh/id_test.pub"), "OTHER\n").unwrap();
        let out = write_files(&SSH, &files, &values, false, false).unwrap();
        assert_eq!(
            statuses(&out),
            [FileStatus::Unchanged, FileStatus::Conflict]
        );
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "tightened despite the conflict");
        // A dry run changes no mode.
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_files(&SSH, &files, &values, false, true).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "a dry run changes nothing");
    }
}
