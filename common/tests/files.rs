//! Real files: every provider's files are written 0600 in 0700 dirs whatever
//! the umask, identical values leave a file untouched, differing values are a
//! conflict that writes nothing, and removal takes out exactly the secret.
//! (Its own test binary: it changes the process umask.)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::apply::{overall, remove_files, secret_paths, write_files, FileStatus, TargetFile};
use common::fsutil::confine;
use common::providers::PROVIDERS;
use common::{Secret, SecretValue, Values};

fn fixture_values(id: &str) -> Values {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/data/providers/{id}/values.json"));
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    map.into_iter()
        .map(|(k, v)| (k, SecretValue::new(v)))
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn targets(home: &Path, secret: &Secret) -> Vec<TargetFile> {
    secret_paths(secret, None)
        .unwrap()
        .into_iter()
        .map(|display| TargetFile {
            path: confine(home, &display).unwrap(),
            display,
        })
        .collect()
}

#[test]
fn every_provider_writes_private_files_whatever_the_umask() {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    for p in PROVIDERS {
        let home = tempfile::tempdir().unwrap();
        let mut secret = Secret::base(format!("ssh-{}", p.id()), fixture_values(p.id()));
        secret.provider = Some(p.id().into());
        if p.default_path().is_none() && p.id() != "ssh" {
            secret.path = Some("~/.config/rh-test/secret.json".into());
        }
        let files = targets(home.path(), &secret);
        let out = write_files(*p, &files, &secret.values, false, false).unwrap();
        assert_eq!(overall(&out), FileStatus::Written, "{}", p.id());
        for f in &files {
            assert_eq!(mode(&f.path.path()), 0o600, "{}: {}", p.id(), f.display);
            let path = f.path.path();
            let mut dir = path.parent().unwrap();
            while dir != home.path() {
                assert_eq!(mode(dir), 0o700, "{}: {}", p.id(), dir.display());
                dir = dir.parent().unwrap();
            }
        }
        if p.id() == "ssh" {
            assert!(
                home.path().join(".ssh/ssh").is_file()
                    && home.path().join(".ssh/ssh.pub").is_file()
            );
        }
        // identical values: untouched (same mtime and bytes)
        let snapshot = || -> Vec<_> {
            files
                .iter()
                .map(|f| {
                    let meta = std::fs::metadata(f.path.path()).unwrap();
                    (
                        std::fs::read(f.path.path()).unwrap(),
                        meta.modified().unwrap(),
                    )
                })
                .collect()
        };
        let before = snapshot();
        std::thread::sleep(std::time::Duration::from_millis(10));
        let out = write_files(*p, &files, &secret.values, false, false).unwrap();
        assert_eq!(overall(&out), FileStatus::Unchanged, "{}", p.id());
        let after = snapshot();
        assert_eq!(before, after, "{}", p.id());
        // differing values without overwrite: conflict naming keys, nothing written
        let mut other = secret.values.clone();
        let key = other
            .keys()
            .find(|k| other[*k].expose_str().is_some())
            .unwrap()
            .clone();
        let changed = format!("{}-changed", other[&key].expose_str().unwrap().trim_end());
        other.insert(key.clone(), SecretValue::from_string(changed));
        let out = write_files(*p, &files, &other, false, false).unwrap();
        assert_eq!(overall(&out), FileStatus::Conflict, "{}", p.id());
        assert!(
            out.iter().any(|o| o.conflict_keys.contains(&key)),
            "{}: {out:?}",
            p.id()
        );
        let after: Vec<_> = files
            .iter()
            .map(|f| std::fs::read(f.path.path()).unwrap())
            .collect();
        assert_eq!(
            before.iter().map(|b| b.0.clone()).collect::<Vec<_>>(),
            after,
            "{}",
            p.id()
        );
        // remove takes everything back out
        remove_files(*p, &files, &secret.values, false).unwrap();
        for f in &files {
            assert!(!f.path.exists(), "{}: {} left behind", p.id(), f.display);
        }
    }
    nix::sys::stat::umask(old);
}

#[test]
fn aws_overwrite_keeps_other_profiles_comments_and_region_and_drops_the_stale_token() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join(".aws/credentials");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let original = "# keep me\n[default]\naws_access_key_id = AKIAOLD\naws_secret_access_key = oldSecret\naws_session_token = IQoJb3JpZ2luX2VjEKeep==\nregion = ap-south-1\n\n[work]\naws_access_key_id = AKIAWORK\naws_secret_access_key = workSecret\n";
    std::fs::write(&path, original).unwrap();
    let mut secret = Secret::base(
        "aws",
        common::secret_value::values_from([("access_key", "AKIANEW"), ("secret_key", "newSecret")]),
    );
    secret.provider = Some("aws".into());
    let files = targets(home.path(), &secret);
    let p = common::providers::builtin("aws").unwrap();
    let out = write_files(p, &files, &secret.values, false, false).unwrap();
    assert_eq!(out[0].status, FileStatus::Conflict);
    assert_eq!(
        out[0].conflict_keys,
        ["access_key", "aws_session_token", "secret_key"]
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    let out = write_files(p, &files, &secret.values, true, false).unwrap();
    assert_eq!(out[0].status, FileStatus::Written);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        original
            .replace("AKIAOLD", "AKIANEW")
            .replace("oldSecret", "newSecret")
            .replace("aws_session_token = IQoJb3JpZ2luX2VjEKeep==\n", "")
    );
    assert_eq!(mode(&path), 0o600);
    remove_files(p, &files, &secret.values, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "# keep me\n[default]\nregion = ap-south-1\n\n[work]\naws_access_key_id = AKIAWORK\naws_secret_access_key = workSecret\n"
    );
}

/// botocore's own loader on a credentials file that held STS credentials
/// and then got long-term keys merged over it: it sees the new key and no
/// session token. Skipped (with the reason printed) without python3/botocore.
#[test]
fn botocore_reads_no_stale_session_token_after_a_merge() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import botocore"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 with botocore is not installed (pip install botocore)");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join(".aws/credentials");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        "[default]\naws_access_key_id = ASIASTSOLD\naws_secret_access_key = stsSecret\naws_session_token = STSTOKEN\naws_security_token = STSTOKEN\n",
    )
    .unwrap();
    let mut secret = Secret::base(
        "aws",
        common::secret_value::values_from([
            ("access_key", "AKIALONGTERM"),
            ("secret_key", "longSecret"),
        ]),
    );
    secret.provider = Some("aws".into());
    let files = targets(home.path(), &secret);
    let p = common::providers::builtin("aws").unwrap();
    write_files(p, &files, &secret.values, true, false).unwrap();
    let out = test_support::run_ok(
        std::process::Command::new("python3")
            .args([
                "-c",
                "import botocore.session\n\
             c = botocore.session.Session(profile='default').get_credentials()\n\
             print(c.access_key, c.token)",
            ])
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_SHARED_CREDENTIALS_FILE", &path)
            .env("AWS_CONFIG_FILE", home.path().join("no-config")),
    );
    assert_eq!(out.stdout, "AKIALONGTERM None\n");
}

/// `~/.netrc` with other machines: the wandb entry is added next to them
/// (their lines byte for byte), the file is 0600, and removal takes out only
/// the wandb entry.
#[test]
fn wandb_netrc_entry_merged_and_removed_alone() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join(".netrc");
    let others = "# hosts\nmachine github.com\n  login me\n  password ghp_keep\r\n\nmachine example.org login x password y\n";
    std::fs::write(&path, others).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut secret = Secret::base("wandb", fixture_values("wandb"));
    secret.provider = Some("wandb".into());
    let files = targets(home.path(), &secret);
    assert_eq!(files[0].display, "~/.netrc");
    let p = common::providers::builtin("wandb").unwrap();
    let out = write_files(p, &files, &secret.values, false, false).unwrap();
    assert_eq!(out[0].status, FileStatus::Written);
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        written,
        format!(
            "{others}machine api.wandb.ai\n  login user\n  password fixture-wandb-api-key-0001\n"
        )
    );
    assert_eq!(mode(&path), 0o600);
    let out = write_files(p, &files, &secret.values, false, false).unwrap();
    assert_eq!(out[0].status, FileStatus::Unchanged);
    remove_files(p, &files, &secret.values, false).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), others);
}

#[test]
fn huggingface_overwrite_replaces_the_token() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join(".cache/huggingface/token");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "hf_old\n").unwrap();
    let mut secret = Secret::base(
        "huggingface",
        common::secret_value::values_from([("token", "hf_new")]),
    );
    secret.provider = Some("huggingface".into());
    let files = targets(home.path(), &secret);
    let p = common::providers::builtin("huggingface").unwrap();
    write_files(p, &files, &secret.values, true, false).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hf_new");
}
