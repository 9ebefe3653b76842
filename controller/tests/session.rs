//! Session secrets end to end, offline, against real protocol peers: moto
//! (`moto[server]`) as STS on loopback, a local fake of the SSO portal's
//! GetRoleCredentials (moto has none: `tests/data/session/fake_sso.py`) and
//! of Google's token endpoint and IAM Credentials (`fake_google.py`). The
//! node side is checked with unmodified clients: boto3 in an env process
//! (`aws_identity.py`, `aws_loop.py`), the AWS CLI through
//! `credential_process` in a plain shell, google-auth's
//! `google.auth.default()` (`gcp_default.py`). Skipped with a message when
//! python3 lacks boto3/moto/google-auth (a failure with CI set).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{StopAgents, World};
use serde_json::Value;

const LONG_KEY_ID: &str = "AKIAFIXTURELONGLIVED1";
const LONG_SECRET: &str = "fixture-long-lived-secret-key-0123456789";
const CONFIG: &str = "# the user's own\n[default]\nregion = eu-west-3\n\n[profile ops]\nrole_arn = arn:aws:iam::123456789012:role/ops\nsource_profile = default\nregion = eu-west-3\n";

use test_support::python::{moto, python, serve, Killed};

/// `controller LINE` (a `sync --json`, plain words): exit 0, the first
/// result written.
fn synced(w: &World, line: &str, env: &[(&str, &str)]) -> common::Run {
    let r = ok(w, env, line);
    assert_eq!(
        r.json()["nodes"][0]["results"][0]["status"],
        "written",
        "{}",
        r.show()
    );
    r
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/session")
        .join(name)
}

/// The laptop: static keys for `default`, a role profile `ops`.
fn laptop(w: &World) {
    let aws = w.home.join(".aws");
    fs::create_dir_all(&aws).unwrap();
    fs::write(aws.join("config"), CONFIG).unwrap();
    fs::write(
        aws.join("credentials"),
        format!(
            "[default]\naws_access_key_id = {LONG_KEY_ID}\naws_secret_access_key = {LONG_SECRET}\n"
        ),
    )
    .unwrap();
}

fn env_of(sts: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("AWS_ENDPOINT_URL_STS", sts),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("RH_LOCAL_AGENT_LISTEN", "127.0.0.1:0"),
    ]
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            out.extend(files_holding(&p, needle));
        } else if meta.is_file()
            && String::from_utf8_lossy(&fs::read(&p).unwrap_or_default()).contains(needle)
        {
            out.push(p);
        }
    }
    out
}

/// `controller LINE` (plain words) with `env`: exit 0.
fn ok(w: &World, env: &[(&str, &str)], line: &str) -> common::Run {
    w.controller_with(&test_support::argv(line), env).ok()
}

/// [`run_json`] of `py SCRIPT ARGS` (SCRIPT from tests/data/session) in the
/// env `node_env` of the local node.
fn run_script(
    w: &World,
    env: &[(&str, &str)],
    node_env: &str,
    py: &Path,
    script: &str,
    args: &[&str],
) -> Value {
    let script = data(script);
    let mut argv = vec![node_env, py.to_str().unwrap(), script.to_str().unwrap()];
    argv.extend(args);
    run_json(w, env, &argv)
}

/// The sessions in `status --cluster local --json`.
fn local_sessions(w: &World, env: &[(&str, &str)]) -> Value {
    let st = ok(w, env, "status --cluster local --json").json();
    st["nodes"][0]["status"]["sessions"].clone()
}

fn run_json(w: &World, env: &[(&str, &str)], argv: &[&str]) -> Value {
    let mut args = vec!["run", "--cluster", "local", "--env", argv[0], "--"];
    args.extend_from_slice(&argv[1..]);
    let r = w.controller_with(&args, env).ok();
    serde_json::from_str(r.stdout.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {}", r.show()))
}

/// A laptop ([`laptop`]) whose STS is moto, syncing to its `local`
/// cluster (the agent stopped at the end). Tests take it apart with
/// [`LocalLaptop::parts`].
struct LocalLaptop {
    py: PathBuf,
    sts: String,
    w: World,
    _moto: Killed,
    _stop: StopAgents,
}

impl LocalLaptop {
    fn start() -> Option<Self> {
        let py = python("boto3, moto")?;
        let (moto, sts) = moto()?;
        let w = World::bare();
        let stop = StopAgents(vec![w.home.clone()]);
        laptop(&w);
        Some(Self {
            py,
            sts,
            w,
            _moto: moto,
            _stop: stop,
        })
    }

    /// Its parts, the guards last: bound after `w`, they drop first.
    /// `StopAgents` reads the agent's pid file under `w`'s home, which
    /// `w`'s temp dir takes with it (guards left in a partly moved struct
    /// drop after `w`, and the agent outlived its test).
    fn parts(self) -> (PathBuf, String, World, (Killed, StopAgents)) {
        (self.py, self.sts, self.w, (self._moto, self._stop))
    }
}

#[test]
fn local_env_processes_get_minted_aws_sessions_and_the_users_files_stay() {
    let Some(laptop) = LocalLaptop::start() else {
        return;
    };
    let (py, sts, w, _guards) = laptop.parts();
    let env = env_of(&sts);
    let before_config = fs::read(w.home.join(".aws/config")).unwrap();
    let before_creds = fs::read(w.home.join(".aws/credentials")).unwrap();

    // Detected: the role profile is a session secret; default has keys.
    let r = ok(&w, &env, "secret detect");
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("aws-ops"))
        .unwrap_or_else(|| panic!("{}", r.show()));
    assert!(
        row.contains("session (role)") && row.contains("~/.aws/config [ops]"),
        "{row}"
    );
    let json = ok(&w, &env, "secret detect --json").json();
    assert_eq!(json["aws-ops"]["session"]["kind"], "role");
    assert_eq!(json["aws-ops"]["values"], serde_json::json!({}));

    ok(&w, &env, "secret create keys --provider aws --session");
    ok(&w, &env, "secret create direct --provider aws --session --role-arn arn:aws:iam::123456789012:role/direct --duration 30m");

    // The role profile, resolved by aws-config (AssumeRole at moto).
    let r = synced(
        &w,
        "sync --cluster local --secret aws-ops --env ops --json",
        &env,
    );
    r.no_values(&[LONG_KEY_ID, LONG_SECRET]);
    let identity = |node_env: &str| run_script(&w, &env, node_env, &py, "aws_identity.py", &[&sts]);
    let id = identity("ops");
    assert_eq!(id["method"], "container-role", "{id}");
    assert!(
        id["arn"].as_str().unwrap().contains("assumed-role/ops/"),
        "{id}"
    );

    // Static keys become a GetSessionToken session; --role-arn an AssumeRole.
    ok(&w, &env, "sync --cluster local --secret keys --env keys");
    let id = identity("keys");
    assert_eq!(id["method"], "container-role", "{id}");
    assert_ne!(id["key_id"], LONG_KEY_ID, "{id}");
    ok(
        &w,
        &env,
        "sync --cluster local --secret direct --env direct",
    );
    let id = identity("direct");
    assert!(
        id["arn"].as_str().unwrap().contains("assumed-role/direct/"),
        "{id}"
    );

    let sessions = local_sessions(&w, &env);
    let sessions = sessions.as_array().unwrap();
    let source = |n: &str| sessions.iter().find(|s| s["name"] == n).unwrap()["source"].clone();
    assert_eq!(source("aws-ops"), "role");
    assert_eq!(source("keys"), "get_session_token");
    assert_eq!(source("direct"), "assume_role");
    let table = ok(&w, &env, "status --cluster local");
    assert!(
        table.stdout.contains("EXPIRES AT")
            && table.stdout.contains("get_session_token")
            && table.stdout.contains("session secret (below)")
            && !table.stdout.contains("not on this machine"),
        "{}",
        table.show()
    );

    // The local cluster: the user's own files are untouched, byte for byte,
    // and the long-lived key is nowhere in the agent's state.
    assert_eq!(fs::read(w.home.join(".aws/config")).unwrap(), before_config);
    assert_eq!(
        fs::read(w.home.join(".aws/credentials")).unwrap(),
        before_creds
    );
    let state = w.home.join(".rh/agent");
    assert!(files_holding(&state, LONG_KEY_ID).is_empty());
    assert!(files_holding(&state, LONG_SECRET).is_empty());
}

/// `-vv` traces the controller, not the SDK it mints with: the AWS SDK's
/// own debug output prints the laptop's access key id (e2e t99 found it
/// in a `-vv sync` log).
#[test]
fn minting_with_trace_output_prints_no_key_of_the_laptop() {
    let Some(laptop) = LocalLaptop::start() else {
        return;
    };
    let (_, sts, w, _guards) = laptop.parts();
    let env = env_of(&sts);
    w.controller_with(
        &[
            "secret",
            "create",
            "traced",
            "--provider",
            "aws",
            "--session",
            "--role-arn",
            "arn:aws:iam::123456789012:role/traced",
        ],
        &env,
    )
    .ok();
    let r = synced(&w, "-vv sync --cluster local --secret traced --json", &env);
    assert!(
        r.stderr.contains("session secrets minted"),
        "no trace output: {}",
        r.show()
    );
    for needle in [LONG_KEY_ID, LONG_SECRET] {
        assert!(
            !r.stderr.contains(needle) && !r.stdout.contains(needle),
            "the laptop's key is in the output"
        );
    }
}

#[test]
fn a_pushed_node_gets_the_helper_profile_and_the_aws_cli_uses_it() {
    let Some(py) = python("boto3, moto, awscli") else {
        return;
    };
    let Some((_moto, sts)) = moto() else {
        return;
    };
    let mut w = World::bare();
    w.add_node(true, true);
    w.add_cluster("gpu", &[0], &[]);
    laptop(&w);
    let env = env_of(&sts);
    synced(&w, "sync --cluster gpu --secret aws-ops --json", &env);
    let node = w.nodes[0].home.clone();
    let config = fs::read_to_string(node.join(".aws/config")).unwrap();
    assert!(
        config.contains("[profile ops]\ncredential_process = "),
        "{config}"
    );
    assert!(
        config.contains(" credentials aws --secret aws-ops --state-dir "),
        "{config}"
    );
    assert_eq!(test_support::mode(&node.join(".aws/config")), 0o600);
    // A plain shell of the node user: the AWS CLI, through credential_process.
    let out = test_support::run_ok(
        Command::new(&py)
            .args([
                "-m",
                "awscli",
                "sts",
                "get-caller-identity",
                "--profile",
                "ops",
                "--output",
                "json",
                "--endpoint-url",
                &sts,
                "--region",
                "us-east-1",
            ])
            .env_clear()
            .env("HOME", &node)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default()),
    );
    let id: Value = out.json();
    assert!(
        id["Arn"].as_str().unwrap().contains("assumed-role/ops/"),
        "{id}"
    );
    // The laptop's long-lived key is nowhere on the node.
    assert!(files_holding(&node, LONG_KEY_ID).is_empty());
    assert!(files_holding(&node, LONG_SECRET).is_empty());
    // Revoke takes the profile line away again.
    w.controller_with(&["revoke", "aws-ops", "--cluster", "gpu"], &env)
        .ok();
    let config = fs::read_to_string(node.join(".aws/config")).unwrap_or_default();
    assert!(!config.contains("credential_process"), "{config}");
}

#[test]
fn an_sso_profile_is_minted_from_the_portal_never_sending_the_sso_token() {
    let Some(py) = python("boto3") else { return };
    let port = test_support::free_port();
    let sso_token = "cached-sso-access-token-XYZ";
    let _sso = serve(
        &py,
        &[
            data("fake_sso.py").to_str().unwrap(),
            &port.to_string(),
            sso_token,
            "ASIAFROMSSOPORTAL",
        ],
        port,
    );
    let w = World::bare();
    let _stop = StopAgents(vec![w.home.clone()]);
    let aws = w.home.join(".aws");
    fs::create_dir_all(aws.join("sso/cache")).unwrap();
    fs::write(
        aws.join("config"),
        "[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Dev\nregion = eu-west-1\n\n[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n",
    )
    .unwrap();
    // The SDK's cache file name: SHA-1 of the session name.
    let name = sha1_hex("corp");
    fs::write(
        aws.join("sso/cache").join(format!("{name}.json")),
        format!("{{\"accessToken\": \"{sso_token}\", \"expiresAt\": \"2099-01-01T00:00:00Z\", \"region\": \"eu-west-1\", \"startUrl\": \"https://corp.awsapps.com/start\"}}"),
    )
    .unwrap();
    let sso_url = format!("http://127.0.0.1:{port}");
    let mut env = env_of("http://127.0.0.1:1");
    env.push(("AWS_ENDPOINT_URL_SSO", &sso_url));
    synced(&w, "sync --cluster local --secret aws-dev --json", &env);
    let id = run_json(&w, &env, &["base_env", py.to_str().unwrap(), "-c",
        "import boto3,json; c=boto3.Session().get_credentials(); print(json.dumps({'method': c.method, 'key_id': c.access_key}))"]);
    assert_eq!(id["method"], "container-role");
    assert_eq!(id["key_id"], "ASIAFROMSSOPORTAL");
    assert!(files_holding(&w.home.join(".rh/agent"), sso_token).is_empty());
}

/// SHA-1 in hex (the AWS SDK names its SSO cache files so), by python.
fn sha1_hex(text: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("import hashlib; print(hashlib.sha1(b'{text}').hexdigest())"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn keep_fresh_refreshes_before_expiry_and_a_stopped_controller_leaves_503() {
    let Some(laptop) = LocalLaptop::start() else {
        return;
    };
    let (py, sts, w, _guards) = laptop.parts();
    let env = env_of(&sts);
    // moto takes lifetimes below STS's 900 s minimum: 12 s, refreshed at 6 s.
    ok(&w, &env, "secret create short --provider aws --session --role-arn arn:aws:iam::123456789012:role/short --duration 12s");
    let log = w.home.join("keep-fresh.log");
    let mut cmd = Command::new(common::controller_bin());
    cmd.args([
        "sync",
        "--cluster",
        "local",
        "--secret",
        "short",
        "--env",
        "fresh",
        "--keep-fresh",
    ])
    .env_clear()
    .env("HOME", &w.home)
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("RH_AGENT_BIN", common::agent_bin())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(fs::File::create(&log).unwrap());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let keeper = Killed(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("keep-fresh: keeping")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A client loops across two refreshes: not one failure.
    let looped = run_script(&w, &env, "fresh", &py, "aws_loop.py", &[&sts, "16"]);
    assert_eq!(looped["failures"], 0, "{looped}");
    assert!(
        looped["keys"].as_u64().unwrap() >= 2,
        "no refresh seen: {looped}"
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("keep-fresh: refreshed session secret short on cluster local (1/1 nodes)"),
        "{text}"
    );
    assert!(!text.contains(LONG_SECRET));
    // The controller stops; at expiry the node answers 503 and status says so.
    term(&keeper);
    drop(keeper);
    std::thread::sleep(Duration::from_secs(13));
    let sessions = local_sessions(&w, &env);
    let s = &sessions[0];
    assert_eq!(
        (s["name"].as_str(), s["expired"].as_bool()),
        (Some("short"), Some(true)),
        "{sessions}"
    );
    let probe = "import os,urllib.request,urllib.error\nr=urllib.request.Request(os.environ['AWS_CONTAINER_CREDENTIALS_FULL_URI'],headers={'Authorization':open(os.environ['AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE']).read()})\ntry:\n  urllib.request.urlopen(r); print('{\"code\": 200}')\nexcept urllib.error.HTTPError as e:\n  import json; print(json.dumps({'code': e.code, 'body': json.loads(e.read())}))\n";
    let got = run_json(&w, &env, &["fresh", py.to_str().unwrap(), "-c", probe]);
    assert_eq!(got["code"], 503, "{got}");
    assert!(
        got["body"]["message"]
            .as_str()
            .unwrap()
            .contains("short expired at"),
        "{got}"
    );
}

/// SIGTERM to the keep-fresh controller (it stops on it).
fn term(p: &Killed) {
    let _ = Command::new("kill").arg(p.0.id().to_string()).status();
}

#[test]
fn gcp_env_processes_get_compute_engine_credentials_with_the_minted_token() {
    let Some(py) = python("google.auth, requests") else {
        return;
    };
    let port = test_support::free_port();
    let count = tempfile::NamedTempFile::new().unwrap();
    let refresh = "1//refresh-token-never-leaves";
    let access = "ya29.minted-access-token";
    let _google = serve(
        &py,
        &[
            data("fake_google.py").to_str().unwrap(),
            &port.to_string(),
            refresh,
            access,
            count.path().to_str().unwrap(),
        ],
        port,
    );
    let w = World::bare();
    let _stop = StopAgents(vec![w.home.clone()]);
    let adc = w
        .home
        .join(".config/gcloud/application_default_credentials.json");
    fs::create_dir_all(adc.parent().unwrap()).unwrap();
    let adc_text = format!(
        "{{\"type\": \"authorized_user\", \"client_id\": \"cid.apps.googleusercontent.com\", \"client_secret\": \"client-secret-x\", \"refresh_token\": \"{refresh}\", \"quota_project_id\": \"proj-fixture\", \"token_uri\": \"http://127.0.0.1:{port}/token\"}}"
    );
    fs::write(&adc, &adc_text).unwrap();
    let iam = format!("http://127.0.0.1:{port}/");
    let env = vec![
        ("RH_LOCAL_AGENT_LISTEN", "127.0.0.1:0"),
        (
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS",
            iam.as_str(),
        ),
    ];
    ok(&w, &env, "secret create gcp-user --provider gcp --session");
    let r = synced(&w, "sync --cluster local --secret gcp-user --json", &env);
    r.no_values(&[refresh, access]);
    let adc_client = |want: &str| run_script(&w, &env, "base_env", &py, "gcp_default.py", &[want]);
    let got = adc_client(access);
    assert_eq!(
        got["class"], "google.auth.compute_engine.credentials.Credentials",
        "{got}"
    );
    assert_eq!(got["token_matches"], true, "{got}");
    assert_eq!(got["project"], "proj-fixture", "{got}");
    // Impersonation: another session, after the first is revoked.
    w.controller_with(&["revoke", "gcp-user", "--cluster", "local"], &env)
        .ok();
    ok(&w, &env, "secret create gcp-sa --provider gcp --session --impersonate runner@proj-sa.iam.gserviceaccount.com");
    w.controller_with(&["sync", "--cluster", "local", "--secret", "gcp-sa"], &env)
        .ok();
    let got = adc_client(&format!("impersonated-{access}"));
    assert_eq!(got["token_matches"], true, "{got}");
    // The ADC file stays byte for byte; its refresh token is nowhere in the agent's state.
    assert_eq!(fs::read_to_string(&adc).unwrap(), adc_text);
    assert!(files_holding(&w.home.join(".rh/agent"), refresh).is_empty());
    assert!(files_holding(&w.home.join(".rh/agent"), "client-secret-x").is_empty());
}

#[test]
fn a_kube_exec_user_is_resolved_here_and_the_node_gets_only_the_token() {
    let mut w = World::bare();
    w.add_node(true, true);
    w.add_cluster("gpu", &[0], &[]);
    let plugin = w.home.join("bin/eks-get-token");
    fs::create_dir_all(plugin.parent().unwrap()).unwrap();
    fs::write(
        &plugin,
        "#!/bin/sh\n[ -n \"$KUBERNETES_EXEC_INFO\" ] || exit 3\nprintf '{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"k8s-aws-v1.minted-%s\",\"expirationTimestamp\":\"2099-01-01T00:00:00Z\"}}' \"$1\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(w.home.join(".kube")).unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: eks\nclusters:\n- name: eks\n  cluster:\n    server: https://eks.example:443\ncontexts:\n- name: eks\n  context:\n    cluster: eks\n    user: eks-user\nusers:\n- name: eks-user\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: {}\n      args: [prod]\n",
        plugin.display()
    );
    fs::write(w.home.join(".kube/config"), &kubeconfig).unwrap();
    synced(&w, "sync --cluster gpu --secret kubernetes --json", &[]);
    let node = fs::read_to_string(w.nodes[0].home.join(".kube/config")).unwrap();
    assert!(node.contains("token: k8s-aws-v1.minted-prod"), "{node}");
    assert!(
        !node.contains("exec") && !node.contains("eks-get-token"),
        "{node}"
    );
    // The user's own kubeconfig keeps its exec block.
    assert_eq!(
        fs::read_to_string(w.home.join(".kube/config")).unwrap(),
        kubeconfig
    );

    // A kubeconfig saved from elsewhere (not this machine's file): its
    // plugin is never run here.
    let marker = w.home.join("plugin-ran");
    let values = serde_json::json!({"apiVersion": "v1", "clusters": [], "contexts": [],
        "users": [{"name": "other", "user": {"exec": {
        "command": "/bin/sh", "args": ["-c", format!("touch {}", marker.display())]}}}]});
    let file = w.home.join("values.json");
    fs::write(&file, values.to_string()).unwrap();
    w.controller_with(
        &[
            "secret",
            "create",
            "foreign-kube",
            "--provider",
            "kubernetes",
            "--path",
            "~/foreign/config",
            "--values-json",
            file.to_str().unwrap(),
        ],
        &[],
    )
    .ok();
    w.controller_with(
        &["sync", "--cluster", "gpu", "--secret", "foreign-kube"],
        &[],
    );
    assert!(
        !marker.exists(),
        "a foreign kubeconfig's exec plugin ran on this machine"
    );
}
