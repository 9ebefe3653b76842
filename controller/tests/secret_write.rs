//! The real `controller` binary on a temp HOME: `secret write` never touches
//! denied files (even through a link), keeps other profiles and entries of
//! the files it merges into, makes new files private in private
//! directories, and needs a path for an env-only provider. No fixture value
//! reaches stdout/stderr.

mod secret_common;

use serde_json::Value;
use test_support::mode;

use secret_common::*;

#[test]
fn write_never_touches_denied_files_even_through_a_link() {
    let home = Home::empty();
    home.put(".bashrc", "# mine\n");
    std::os::unix::fs::symlink(home.path(".bashrc"), home.path("creds.json")).unwrap();
    let out = home.run(&["secret", "create", "t", "--value", "k=fixture-deny-1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for path in [
        "~/.bashrc",
        "~/.ssh/authorized_keys",
        "~/.rh/agent/token",
        "~/creds.json",
    ] {
        let out = home.run(&["secret", "write", "t", "--path", path]);
        assert_eq!(code(&out), 1, "{path}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("never written by a secret"),
            "{}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("fixture-deny-1"));
    }
    assert_eq!(home.read(".bashrc"), "# mine\n");
    assert!(!home.path(".ssh").exists() && !home.path(".rh/agent").exists());
}

#[test]
fn write_aws_conflict_then_overwrite_keeps_other_profiles() {
    let home = Home::empty();
    let original = "# mine\n[default]\naws_access_key_id = AKIAOLD\naws_secret_access_key = oldSecretValue\naws_session_token = sessionTokenKeep\nregion = eu-north-1\n\n[prod]\naws_access_key_id = AKIAPROD\naws_secret_access_key = prodSecret\n";
    home.put(".aws/credentials", original);
    let create = home.run(&test_support::argv("secret create aws-new --provider aws --value access_key=AKIANEWFIXTURE --value secret_key=newSecretFixture"));
    assert_eq!(code(&create), 0, "{}", stderr(&create));
    let out = home.run(&["secret", "write", "aws-new"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("~/.aws/credentials")
            && err.contains("access_key, aws_session_token, secret_key"),
        "{err}"
    );
    for v in [
        "AKIANEWFIXTURE",
        "newSecretFixture",
        "AKIAOLD",
        "oldSecretValue",
    ] {
        assert!(!err.contains(v) && !stdout(&out).contains(v));
    }
    assert!(stdout(&out).contains("conflict (access_key, aws_session_token, secret_key)"));
    assert_eq!(home.read(".aws/credentials"), original);

    let out = home.run(&["secret", "write", "aws-new", "--overwrite", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["status"], "written");
    assert_eq!(json(&out)["files"][0]["path"], "~/.aws/credentials");
    assert_eq!(
        home.read(".aws/credentials"),
        original
            .replace("AKIAOLD", "AKIANEWFIXTURE")
            .replace("oldSecretValue", "newSecretFixture")
            .replace("aws_session_token = sessionTokenKeep\n", "")
    );
    let creds = home.path(".aws/credentials");
    assert_eq!(mode(&creds), 0o600);
    let mtime = std::fs::metadata(&creds).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = home.run(&["secret", "write", "aws-new"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("unchanged"));
    assert_eq!(
        std::fs::metadata(&creds).unwrap().modified().unwrap(),
        mtime
    );
}

#[test]
fn write_new_files_private_in_private_dirs() {
    let home = Home::empty();
    for (name, args) in [
        (
            "hf",
            vec![
                "--provider",
                "huggingface",
                "--value",
                "token=hf_fixtureNew",
            ],
        ),
        (
            "lam",
            vec![
                "--provider",
                "lambda",
                "--value",
                "api_key=fixture-lambda-new",
            ],
        ),
        (
            "gcp",
            vec![
                "--provider",
                "gcp",
                "--value",
                "client_id=fixture-cid",
                "--value",
                "client_secret=fixture-cs",
            ],
        ),
        (
            "ssh-deploy",
            vec![
                "--provider",
                "ssh",
                "--value",
                "private_key=fixture-priv\n",
                "--value",
                "public_key=fixture-pub\n",
            ],
        ),
    ] {
        let mut full = vec!["secret", "create", name];
        full.extend(args);
        assert_eq!(code(&home.run(&full)), 0, "{name}");
        let out = home.run(&["secret", "write", name]);
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
        assert!(!stdout(&out).contains("fixture"), "{name}");
        assert!(stdout(&out).contains("written"), "{name}");
    }
    assert_eq!(home.read(".cache/huggingface/token"), "hf_fixtureNew");
    assert_eq!(
        home.read(".lambda_cloud/lambda_keys"),
        "api_key = fixture-lambda-new\n"
    );
    let gcp: Value =
        serde_json::from_str(&home.read(".config/gcloud/application_default_credentials.json"))
            .unwrap();
    assert_eq!(
        gcp,
        serde_json::json!({"client_id": "fixture-cid", "client_secret": "fixture-cs"})
    );
    assert_eq!(home.read(".ssh/deploy"), "fixture-priv\n");
    assert_eq!(home.read(".ssh/deploy.pub"), "fixture-pub\n");
    for f in [
        ".cache/huggingface/token",
        ".lambda_cloud/lambda_keys",
        ".config/gcloud/application_default_credentials.json",
        ".ssh/deploy",
        ".ssh/deploy.pub",
    ] {
        assert_eq!(mode(&home.path(f)), 0o600, "{f}");
    }
    for d in [
        ".cache",
        ".cache/huggingface",
        ".lambda_cloud",
        ".config",
        ".config/gcloud",
        ".ssh",
        ".rh",
        ".rh/secrets",
    ] {
        assert_eq!(mode(&home.path(d)), 0o700, "{d}");
    }
    // never a literal ./~ in the working directory, never a file named ~/.ssh
    assert!(!home.cwd.path().join("~").exists());
    assert!(home.path(".ssh").is_dir());
    // huggingface overwrite replaces the token, never appends
    home.put(".cache/huggingface/token", "hf_someoneElse\n");
    assert_eq!(code(&home.run(&["secret", "write", "hf"])), 1);
    assert_eq!(
        code(&home.run(&["secret", "write", "hf", "--overwrite"])),
        0
    );
    assert_eq!(home.read(".cache/huggingface/token"), "hf_fixtureNew");
}

#[test]
fn write_env_only_provider_needs_a_path() {
    let home = Home::empty();
    assert_eq!(
        code(&home.run(&test_support::argv(
            "secret create oa --provider openai --value api_key=fixture-sk"
        ))),
        0
    );
    let out = home.run(&["secret", "write", "oa"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("no file") && err.contains("--path"), "{err}");
    assert!(!err.contains("fixture-sk"));
    let out = home.run(&["secret", "write", "oa", "--path", "oa.json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let written = home.cwd.path().join("oa.json");
    assert_eq!(mode(&written), 0o600);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(written).unwrap()).unwrap();
    assert_eq!(v, serde_json::json!({"api_key": "fixture-sk"}));
}

#[test]
fn write_github_and_kubeconfig_keep_other_entries() {
    let home = Home::full();
    for (name, p) in [("gh", "github"), ("kube", "kubernetes")] {
        assert_eq!(
            code(&home.run(&["secret", "create", name, "--provider", p])),
            0
        );
    }
    home.put(
        ".config/gh/hosts.yml",
        "gitlab.example:\n  user: other\n  oauth_token: keep-me\n",
    );
    home.put(".kube/config", "apiVersion: v1\nkind: Config\nclusters:\n- name: dev\n  cluster:\n    server: https://dev\nusers:\n- name: dev\n  user:\n    token: dev-token\ncontexts: []\n");
    for name in ["gh", "kube"] {
        let out = home.run(&["secret", "write", name]);
        assert_eq!(code(&out), 0, "{name}: {} {}", stdout(&out), stderr(&out));
    }
    let hosts = home.read(".config/gh/hosts.yml");
    assert!(
        hosts.contains("gitlab.example:") && hosts.contains("keep-me"),
        "{hosts}"
    );
    assert!(hosts.contains("gho_fixtureGithubToken0001"), "{hosts}");
    let kube = home.read(".kube/config");
    assert_eq!(kube_names(&kube, "clusters"), ["dev", "fixture-cluster"]);
    assert_eq!(kube_names(&kube, "users"), ["dev", "fixture-user"]);
    assert_eq!(kube_names(&kube, "contexts"), ["fixture-context"]);
    assert_eq!(mode(&home.path(".kube/config")), 0o600);
    // the same cluster name with other content: conflict, file untouched
    let before = home.read(".kube/config");
    home.put(
        ".kube/config",
        &before.replace("fixture-kube-token-0001", "rotated"),
    );
    let out = home.run(&["secret", "write", "kube"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("users/fixture-user"),
        "{}",
        stderr(&out)
    );
}
