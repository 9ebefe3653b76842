//! The real `controller` binary on a temp HOME, for file-system confinement:
//! `secret detect` with a FIFO at a credential path ends with an error naming
//! it (a timeout guard turns a hang into a failure), and `secret write`
//! follows the agent's link rules: a symlinked credentials file (stow,
//! chezmoi, yadm) has its target updated and stays a link; a link leading
//! outside home is refused, naming it, unless `--path` names it explicitly.

use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use test_support::Run;

const BIN: &str = env!("CARGO_BIN_EXE_controller");

/// Run the binary with `home` as HOME and a cleared environment; fail if it
/// has not exited within 30 s (it is killed then).
fn run(home: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .current_dir(home);
    test_support::run(
        cmd,
        Duration::from_secs(30),
        &format!("controller {}", args.join(" ")),
        None,
    )
    .finished()
}

fn stderr(out: &Run) -> String {
    out.stderr.clone()
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .unwrap()
        .file_type()
        .is_symlink()
}

#[test]
fn detect_with_a_fifo_at_a_credential_path_ends_with_an_error_naming_it() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::create_dir_all(h.join(".aws")).unwrap();
    std::fs::create_dir_all(h.join(".ssh")).unwrap();
    let mode = nix::sys::stat::Mode::S_IRWXU;
    nix::unistd::mkfifo(&h.join(".aws/credentials"), mode).unwrap();
    // an ssh key pair whose private half is a link to a FIFO
    nix::unistd::mkfifo(&h.join("pipe"), mode).unwrap();
    symlink("../pipe", h.join(".ssh/id_x")).unwrap();
    std::fs::write(h.join(".ssh/id_x.pub"), "ssh-ed25519 AAAA x\n").unwrap();
    let out = run(h, &["secret", "detect"]);
    let err = stderr(&out);
    for path in ["~/.aws/credentials", "~/.ssh/id_x"] {
        assert!(
            err.lines()
                .any(|l| l.contains(path) && l.contains("not a regular file")),
            "{path}: {err}"
        );
    }
    let kind = std::fs::symlink_metadata(h.join(".aws/credentials"))
        .unwrap()
        .file_type();
    assert!(kind.is_fifo());
}

fn create_aws(home: &Path) {
    let out = run(
        home,
        &test_support::argv("secret create aws --provider aws --value access_key=AKIAFIXTURENEW --value secret_key=fixture-new-secret"),
    );
    assert_eq!(out.code, 0, "{}", stderr(&out));
}

#[test]
fn write_through_a_stow_link_updates_the_target_and_keeps_the_link() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let target = h.join("dotfiles/aws/.aws/credentials");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(
        &target,
        "[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other\n",
    )
    .unwrap();
    std::fs::create_dir(h.join(".aws")).unwrap();
    symlink(
        "../dotfiles/aws/.aws/credentials",
        h.join(".aws/credentials"),
    )
    .unwrap();
    create_aws(h);
    let out = run(h, &["secret", "write", "aws"]);
    assert_eq!(out.code, 0, "{}", stderr(&out));
    assert!(
        is_link(&h.join(".aws/credentials")),
        "the link was replaced"
    );
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(
        text.contains("AKIAFIXTURENEW") && text.contains("AKIAOTHER"),
        "{text}"
    );
}

#[test]
fn write_refuses_a_link_leading_outside_home_unless_path_names_it() {
    let home = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::create_dir(h.join(".aws")).unwrap();
    let target = outside.path().join("credentials");
    symlink(&target, h.join(".aws/credentials")).unwrap();
    create_aws(h);
    let out = run(h, &["secret", "write", "aws"]);
    assert_eq!(out.code, 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("~/.aws/credentials") && err.contains("outside the home directory"),
        "{err}"
    );
    assert!(err.contains("--path"), "{err}");
    assert!(
        is_link(&h.join(".aws/credentials")),
        "the link was replaced"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    // the user names it explicitly: honoured, through the link
    let out = run(
        h,
        &["secret", "write", "aws", "--path", "~/.aws/credentials"],
    );
    assert_eq!(out.code, 0, "{}", stderr(&out));
    assert!(
        is_link(&h.join(".aws/credentials")),
        "the link was replaced"
    );
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(text.contains("AKIAFIXTURENEW"), "{text}");
}
