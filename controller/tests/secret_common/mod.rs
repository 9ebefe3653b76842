//! Helpers for the `secret_*.rs` tests: the real `controller` binary run
//! under umask 000 on a temp HOME (and a separate working directory) with
//! a cleared environment, that home filled from common's provider
//! fixtures, and the fixture values that must never show unredacted.
//! Never prints a value.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use test_support::Run;

pub const BIN: &str = env!("CARGO_BIN_EXE_controller");

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../common/tests/data/providers")
}

pub fn fixture(id: &str, file: &str) -> String {
    std::fs::read_to_string(fixtures().join(id).join(file)).unwrap()
}

/// Every line of every fixture value that says "fixture" (what must never show unredacted).
pub fn fixture_secrets() -> Vec<String> {
    fn leaves(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.contains("fixture") => out.extend(
                s.lines()
                    .filter(|l| l.contains("fixture"))
                    .map(str::to_owned),
            ),
            Value::Array(a) => a.iter().for_each(|i| leaves(i, out)),
            Value::Object(m) => m.values().for_each(|i| leaves(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let dir = entry.unwrap().path();
        for f in ["values.json", "env.json"] {
            if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
                leaves(&serde_json::from_str(&t).unwrap(), &mut out);
            }
        }
    }
    assert!(out.len() > 20);
    out
}

/// A temp home (and a separate temp working directory).
pub struct Home {
    pub dir: tempfile::TempDir,
    pub cwd: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Home {
    pub fn empty() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            cwd: tempfile::tempdir().unwrap(),
            env: vec![],
        }
    }

    /// Every provider configured from the fixtures: files and env vars.
    pub fn full() -> Self {
        let mut home = Self::empty();
        for (id, path) in [
            ("aws", ".aws/credentials"),
            ("azure", ".azure/clouds.config"),
            ("gcp", ".config/gcloud/application_default_credentials.json"),
            ("github", ".config/gh/hosts.yml"),
            ("huggingface", ".cache/huggingface/token"),
            ("kubernetes", ".kube/config"),
            ("lambda", ".lambda_cloud/lambda_keys"),
            ("sky", ".ssh/sky-key"),
            ("ssh", ".ssh/id_ed25519"),
        ] {
            home.put(path, &fixture(id, "source"));
            if matches!(id, "ssh" | "sky") {
                home.put(&format!("{path}.pub"), &fixture(id, "source.pub"));
            }
        }
        for id in [
            "docker",
            "openai",
            "anthropic",
            "cohere",
            "langchain",
            "pinecone",
            "wandb",
        ] {
            let env: serde_json::Map<String, Value> =
                serde_json::from_str(&fixture(id, "env.json")).unwrap();
            for (k, v) in env {
                home.env.push((k, v.as_str().unwrap().to_owned()));
            }
        }
        home
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn put(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    /// Run the binary under umask 000 (so modes prove the code sets them),
    /// stdin a pipe holding `stdin` (empty when `None`).
    pub fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(BIN)
            .args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("PATH", "/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.cwd.path());
        let what = format!("controller {}", args.join(" "));
        let input = Some(stdin.unwrap_or_default().as_bytes().to_vec());
        test_support::run(cmd, Duration::from_secs(120), &what, input).finished()
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None)
    }
}

pub fn code(out: &Run) -> i32 {
    out.code
}

pub fn stdout(out: &Run) -> String {
    out.utf8_stdout()
}

pub fn stderr(out: &Run) -> String {
    out.utf8_stderr()
}

pub fn json(out: &Run) -> Value {
    out.json()
}

pub fn assert_no_fixture_value(text: &str) {
    for s in fixture_secrets() {
        assert!(!text.contains(&s), "leaked {s:?} in:\n{text}");
    }
}

/// Names of the entries of a kubeconfig list.
pub fn kube_names(text: &str, list: &str) -> Vec<String> {
    let doc = common::formats::yaml::parse_mapping(
        "~/.kube/config",
        &common::SecretText::new(text.to_owned()),
    )
    .unwrap();
    doc.get(list)
        .and_then(|l| l.as_sequence())
        .map(|l| {
            l.iter()
                .map(|e| e.get("name").and_then(|n| n.as_str()).unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
