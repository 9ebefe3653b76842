//! Finding a binary of another workspace package from a test. Cargo gives a
//! test `CARGO_BIN_EXE_<name>` only for its own package's binaries, and
//! artifact dependencies are unstable, so the controller's tests find the
//! agent in the target directory they run from. They never build it: a
//! nested `cargo build` fights the outer one for the build lock and the
//! CPUs. A missing or stale binary is a failure that says how to build it
//! (`cargo test --workspace` and `scripts/test.sh` build every binary first).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The binary `name` of this workspace, next to the running test's
/// profile directory (`target/<profile>/<name>`; tests run from
/// `target/<profile>/deps/`). `sources` are directories relative to the
/// workspace root (e.g. `["agent/src", "common/src"]`): the binary must not
/// be older than any file under them. Panics, naming the command that
/// builds it, when it is missing or stale.
pub fn workspace_bin(name: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .or_else(|| exe.parent())
        .expect("the test's directory")
        .to_path_buf();
    let bin = profile_dir.join(name);
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let build = format!(
        "cargo build -p {name}{}",
        if release { " --release" } else { "" }
    );
    let built = std::fs::metadata(&bin).and_then(|m| m.modified());
    let Ok(built) = built else {
        panic!(
            "no {name} binary at {}: build it first with `{build}` \
             (`cargo test --workspace` builds it too)",
            bin.display()
        );
    };
    let root = workspace_root();
    let newest = sources
        .iter()
        .filter_map(|dir| newest_under(&root.join(dir)))
        .max();
    if let Some(newest) = newest {
        assert!(
            built >= newest,
            "the {name} binary at {} is older than its sources: rebuild it with `{build}`",
            bin.display()
        );
    }
    bin
}

/// The workspace root: this crate lives in `common/test-support`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("common/test-support sits two levels below the root")
        .to_path_buf()
}

/// Newest modification time of the files under `dir`.
fn newest_under(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    for entry in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_under(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        best = best.max(t);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_holds_the_workspace_manifest() {
        let text = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(text.contains("[workspace]"), "{text}");
    }

    #[test]
    #[should_panic(expected = "build it first with `cargo build -p no-such-binary")]
    fn a_missing_binary_says_how_to_build_it() {
        workspace_bin("no-such-binary", &[]);
    }
}
