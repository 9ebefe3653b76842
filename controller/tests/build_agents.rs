//! `scripts/build-agents.sh`, the builder of the agents `cluster bootstrap`
//! sends, run for real with stand-ins for the tools it drives: a `cargo`
//! that answers `metadata` (honouring `CARGO_TARGET_DIR`, as cargo does) and
//! whose `zigbuild` writes a known binary under the target dir, and
//! `cargo-zigbuild`, `rustup` and `python3 -m ziglang` that say everything
//! is installed (so nothing is installed from a test). Nothing under the
//! repository's own `target/` is read or written.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use test_support::{mode, run, Run};

const TARGET: &str = "x86_64-unknown-linux-musl";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-agents.sh")
}

fn tool(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The real `python3` (the script parses cargo's JSON with it).
fn real_python3() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
        .expect("python3 on PATH")
}

/// A dir of stand-in tools, first on the script's PATH.
fn fake_tools(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    tool(
        dir,
        "cargo",
        r#"case "$1" in
  metadata)
    [ -n "${FAKE_METADATA_FAILS:-}" ] && { echo "error: could not find Cargo.toml" >&2; exit 101; }
    printf '{"packages":[],"target_directory":"%s","version":1}\n' "${CARGO_TARGET_DIR:-$PWD/target}" ;;
  zigbuild)
    t=""
    while [ "$#" -gt 0 ]; do [ "$1" = --target ] && t="$2"; shift; done
    [ -n "${FAKE_BUILDS_NOTHING:-}" ] && exit 0
    d="${CARGO_TARGET_DIR:?the test always sets it}/$t/release"
    mkdir -p "$d" && printf 'agent built for %s\n' "$t" >"$d/agent" ;;
  *) exit 2 ;;
esac"#,
    );
    tool(dir, "cargo-zigbuild", "exit 0");
    tool(
        dir,
        "rustup",
        &format!("[ \"$1 $2 $3\" = 'target list --installed' ] && echo {TARGET}"),
    );
    tool(
        dir,
        "python3",
        &format!(
            "[ \"$1 $2\" = '-m ziglang' ] && exit 0\nexec '{}' \"$@\"",
            real_python3().display()
        ),
    );
}

struct Setup {
    _tmp: tempfile::TempDir,
    tools: PathBuf,
    target_dir: PathBuf,
    out: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let tools = tmp.path().join("tools");
    fake_tools(&tools);
    Setup {
        tools,
        target_dir: tmp.path().join("elsewhere/cargo-target"),
        out: tmp.path().join("out"),
        _tmp: tmp,
    }
}

fn build(s: &Setup, env: &[(&str, &str)]) -> Run {
    build_into(s, &s.out, env)
}

fn build_into(s: &Setup, out: &Path, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .args(["--out", out.to_str().unwrap(), "--target", TARGET])
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", s.tools.display()),
        )
        .env("CARGO_TARGET_DIR", &s.target_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, Duration::from_secs(60), "build-agents.sh", None)
}

#[test]
fn the_agent_is_taken_from_the_target_dir_cargo_names() {
    let s = setup();
    let r = build(&s, &[]);
    r.assert_code(0);
    let agent = s.out.join(TARGET).join("agent");
    let bytes =
        fs::read(&agent).unwrap_or_else(|e| panic!("{}: {e}\n{}", agent.display(), r.show()));
    assert_eq!(bytes, format!("agent built for {TARGET}\n").as_bytes());
    assert_eq!(mode(&agent), 0o755);
    let sum = fs::read_to_string(s.out.join(TARGET).join("agent.sha256")).unwrap();
    assert_eq!(sum, format!("{}  agent\n", hex(&Sha256::digest(&bytes))));
}

#[test]
fn every_failed_step_stops_the_script_with_its_own_message() {
    let s = setup();
    // A stale agent and checksum from an earlier build are never re-published.
    let dir = s.out.join(TARGET);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("agent"), "stale agent\n").unwrap();
    fs::write(dir.join("agent.sha256"), "stale sum\n").unwrap();

    let r = build(&s, &[("FAKE_BUILDS_NOTHING", "1")]);
    r.assert_code(1);
    let missing = s.target_dir.join(TARGET).join("release/agent");
    r.stderr_has(&format!(
        "build-agents.sh: cargo zigbuild reported success but left no agent at {}",
        missing.display()
    ));
    assert_eq!(
        fs::read_to_string(dir.join("agent")).unwrap(),
        "stale agent\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("agent.sha256")).unwrap(),
        "stale sum\n"
    );

    let r = build(&s, &[("FAKE_METADATA_FAILS", "1")]);
    r.assert_code(1);
    r.stderr_has("build-agents.sh: `cargo metadata` failed");
    assert_eq!(
        fs::read_to_string(dir.join("agent.sha256")).unwrap(),
        "stale sum\n"
    );

    // An output dir that cannot be written: named, and nothing hashed.
    let blocked = s.out.join("file");
    fs::write(&blocked, "").unwrap();
    let r = build_into(&s, &blocked, &[]);
    r.assert_code(1);
    r.stderr_has(&format!(
        "build-agents.sh: cannot create {}/{TARGET}",
        blocked.display()
    ));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
