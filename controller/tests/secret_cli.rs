//! The real `controller` binary on a temp HOME, with a cleared environment:
//! `providers` and `secret detect|create|show|list|delete`. Asserts on exit
//! codes, JSON shapes, file bytes and modes, and that no fixture value
//! reaches stdout/stderr without `--reveal`. Fixtures are common's
//! `tests/data/providers/<id>/`; `secret write` is in `secret_write.rs`.

mod secret_common;

use serde_json::Value;
use test_support::mode;

use secret_common::*;

#[test]
fn providers_lists_the_16_in_reference_order() {
    let home = Home::empty();
    let out = home.run(&["providers", "--json"]);
    assert_eq!(code(&out), 0);
    let doc = json(&out);
    let ids: Vec<_> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        test_support::argv("aws azure gcp github huggingface kubernetes lambda docker ssh sky anthropic cohere langchain openai pinecone wandb")
    );
    assert_eq!(doc[0]["default_path"], "~/.aws/credentials");
    assert_eq!(doc[0]["env_vars"]["access_key"], "AWS_ACCESS_KEY_ID");
    assert_eq!(
        doc[8]["files"],
        serde_json::json!(["~/.ssh/<key>", "~/.ssh/<key>.pub"])
    );
    let text = stdout(&home.run(&["providers"]));
    assert!(
        text.contains("~/.cache/huggingface/token") && text.contains("HF_TOKEN"),
        "{text}"
    );
}

#[test]
fn detect_finds_everything_redacted_unless_revealed() {
    let home = Home::full();
    let out = home.run(&["secret", "detect", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_no_fixture_value(&stdout(&out));
    assert_no_fixture_value(&stderr(&out));
    let doc = json(&out);
    let map = doc.as_object().unwrap();
    let mut names: Vec<_> = map.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "anthropic",
            "aws",
            "azure",
            "cohere",
            "docker",
            "gcp",
            "github",
            "huggingface",
            "kubernetes",
            "lambda",
            "langchain",
            "openai",
            "pinecone",
            "sky",
            "ssh-id_ed25519",
            "wandb"
        ]
    );
    for (name, entry) in map {
        let mut keys: Vec<_> = entry.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["env_vars", "name", "path", "provider", "values"],
            "{name}"
        );
        assert_eq!(entry["name"], name.as_str());
        assert!(!entry["values"].as_object().unwrap().is_empty(), "{name}");
        for v in entry["values"].as_object().unwrap().values() {
            assert_eq!(v, "<redacted>", "{name}");
        }
    }
    assert_eq!(map["aws"]["path"], "~/.aws/credentials");
    assert_eq!(map["aws"]["env_vars"], Value::Null);
    assert_eq!(map["openai"]["path"], Value::Null);
    assert_eq!(map["openai"]["env_vars"]["api_key"], "OPENAI_API_KEY");
    assert_eq!(map["sky"]["provider"], "sky");
    assert_eq!(map["ssh-id_ed25519"]["path"], "~/.ssh/id_ed25519");

    let text = home.run(&["secret", "detect"]);
    assert_eq!(code(&text), 0);
    assert_no_fixture_value(&stdout(&text));
    assert!(stdout(&text).contains("ssh-id_ed25519"));

    let revealed = json(&home.run(&test_support::argv(
        "secret detect --json --reveal --provider aws --provider ssh",
    )));
    let names: Vec<_> = revealed.as_object().unwrap().keys().cloned().collect();
    assert_eq!(names, ["aws", "ssh-id_ed25519"]);
    assert_eq!(
        revealed["aws"]["values"]["secret_key"],
        "fixtureAwsSecret/Key+0001"
    );
    assert_eq!(
        revealed["ssh-id_ed25519"]["values"]["public_key"],
        fixture("ssh", "source.pub")
    );
}

#[test]
fn detect_warns_on_a_malformed_file_without_its_content() {
    let home = Home::empty();
    home.put(
        ".aws/credentials",
        "[default]\naws_access_key_id = AKIA\nhunter2-not-a-key-line\n",
    );
    let out = home.run(&["secret", "detect", "--json"]);
    assert_eq!(code(&out), 0);
    assert_eq!(json(&out), serde_json::json!({}));
    let err = stderr(&out);
    assert!(err.contains("~/.aws/credentials line 3"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn unknown_provider_is_a_usage_error_listing_valid_ids() {
    let home = Home::empty();
    for args in [
        &["secret", "detect", "--provider", "acme"][..],
        &["secret", "create", "x", "--provider", "acme"][..],
    ] {
        let out = home.run(args);
        assert_eq!(code(&out), 2, "{args:?}");
        assert!(stderr(&out).contains("aws, azure, gcp"), "{}", stderr(&out));
    }
    assert!(!home.path(".rh/secrets/x.json").exists());
    let out = home.run(&test_support::argv(
        "secret create x --provider acme --value token=fixture-acme",
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("not a builtin provider"));
    let saved: Value = serde_json::from_str(&home.read(".rh/secrets/x.json")).unwrap();
    assert_eq!(saved["provider"], "acme");
    assert_eq!(saved["resource_subtype"], "ProviderSecret");
}

#[test]
fn create_refuses_ini_values_with_outer_whitespace_naming_the_key() {
    // Explicit values, and values extracted from the environment.
    let mut home = Home::empty();
    let out = home.run(&[
        "secret",
        "create",
        "a",
        "--provider",
        "aws",
        "--value",
        "access_key=AKIAPADDED ",
        "--value",
        "secret_key=s3cr3tpadded",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("access_key") && err.contains("whitespace"),
        "{err}"
    );
    assert!(
        !err.contains("AKIAPADDED") && !err.contains("s3cr3tpadded"),
        "{err}"
    );
    home.env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "AKIAENV".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "\tenvpadded".into()),
    ];
    let out = home.run(&["secret", "create", "b", "--provider", "aws"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("secret_key") && !err.contains("envpadded"),
        "{err}"
    );
    assert!(!home.path(".rh/secrets/a.json").exists());
    assert!(!home.path(".rh/secrets/b.json").exists());
}

#[test]
fn create_base_secret_from_stdin_and_refuse_overwrite_without_force() {
    let home = Home::empty();
    let out = home.run(&["secret", "create", "my_secret"]);
    assert_eq!(code(&out), 2, "base secret without values");
    let out = home.run_with(
        &["secret", "create", "my_secret", "--values-json", "-"],
        Some(r#"{"key": "fixture-base-value", "n": 1}"#),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stdout(&out).contains("fixture-base-value"));
    let file = home.path(".rh/secrets/my_secret.json");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&home.path(".rh/secrets")), 0o700);
    assert_eq!(mode(&home.path(".rh")), 0o700);
    let saved: Value = serde_json::from_str(&home.read(".rh/secrets/my_secret.json")).unwrap();
    assert_eq!(
        saved,
        serde_json::json!({"name": "~/my_secret", "resource_type": "secret",
            "resource_subtype": "Secret", "visibility": "private",
            "values": {"key": "fixture-base-value", "n": 1}})
    );
    let again = home.run(&["secret", "create", "my_secret", "--value", "key=other"]);
    assert_eq!(code(&again), 1);
    assert!(stderr(&again).contains("--force"));
    assert!(home
        .read(".rh/secrets/my_secret.json")
        .contains("fixture-base-value"));
    let forced = home.run(&test_support::argv(
        "secret create my_secret --value key=other --force",
    ));
    assert_eq!(code(&forced), 0);
    assert!(home
        .read(".rh/secrets/my_secret.json")
        .contains("\"other\""));
    let bad = home.run_with(
        &["secret", "create", "b", "--values-json", "-"],
        Some("{\"k\": \"fixture-x\""),
    );
    assert_eq!(code(&bad), 2);
    assert!(!stderr(&bad).contains("fixture-x"));
}

#[test]
fn create_provider_secret_from_default_file_path_and_env() {
    let home = Home::full();
    let out = home.run(&["secret", "create", "aws", "--provider", "aws", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_no_fixture_value(&stdout(&out));
    assert_eq!(json(&out)["path"], "~/.aws/credentials");
    let saved: Value = serde_json::from_str(&home.read(".rh/secrets/aws.json")).unwrap();
    assert_eq!(saved["resource_subtype"], "AWSSecret");
    assert_eq!(saved["values"]["access_key"], "AKIAFIXTUREAWS0001");
    assert_eq!(mode(&home.path(".rh/secrets/aws.json")), 0o600);

    home.put(
        "elsewhere/creds",
        &fixture("aws", "source").replace("FIXTUREAWS", "CUSTOMPATH"),
    );
    let out = home.run(&test_support::argv(
        "secret create aws-custom --provider aws --path ~/elsewhere/creds",
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let shown = json(&home.run(&["secret", "show", "aws-custom", "--json", "--reveal"]));
    assert_eq!(shown["path"], "~/elsewhere/creds");
    assert_eq!(shown["values"]["access_key"], "AKIACUSTOMPATH0001");

    let out = home.run(&test_support::argv(
        "secret create oa --provider openai --env-var api_key=WANDB_API_KEY",
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let shown = json(&home.run(&["secret", "show", "oa", "--json", "--reveal"]));
    assert_eq!(shown["values"]["api_key"], "fixture-wandb-api-key-0001");
    assert_eq!(shown["env_vars"]["api_key"], "WANDB_API_KEY");

    let empty = Home::empty();
    let out = empty.run(&["secret", "create", "aws", "--provider", "aws"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("~/.aws/credentials") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    let out = empty.run(&test_support::argv(
        "secret create aws --provider aws --value access_key=A",
    ));
    assert_eq!(code(&out), 2, "missing required key");
    assert!(stderr(&out).contains("secret_key"));
    let out = empty.run(&[
        "secret",
        "create",
        "aws",
        "--provider",
        "aws",
        "--value",
        "access_key=A",
        "--value",
        "secret_key=B\n[x]",
    ]);
    assert_eq!(code(&out), 2, "newline in an INI value");
    assert!(stderr(&out).contains("newline"));
}

#[test]
fn show_list_delete() {
    let home = Home::full();
    assert_eq!(
        code(&home.run(&["secret", "create", "gh", "--provider", "github"])),
        0
    );
    assert_eq!(
        code(&home.run(&["secret", "create", "a-base", "--value", "k=fixture-v1"])),
        0
    );
    let list = home.run(&["secret", "list", "--json"]);
    assert_eq!(code(&list), 0);
    assert_no_fixture_value(&stdout(&list));
    let rows = json(&list);
    let names: Vec<_> = test_support::names(&rows);
    assert_eq!(names, ["a-base", "gh"]);
    assert_eq!(
        rows[1]["keys"],
        serde_json::json!(["git_protocol", "oauth_token", "user"])
    );
    let text = home.run(&["secret", "list"]);
    assert_no_fixture_value(&stdout(&text));
    assert!(!stdout(&text).contains("fixture-v1"));
    let show = home.run(&["secret", "show", "gh"]);
    assert_eq!(code(&show), 0);
    assert_no_fixture_value(&stdout(&show));
    assert!(stdout(&show).contains("oauth_token: <redacted>"));
    // a detected (unsaved) secret can be shown too
    assert_eq!(
        json(&home.run(&["secret", "show", "lambda", "--json"]))["path"],
        "~/.lambda_cloud/lambda_keys"
    );
    assert_eq!(code(&home.run(&["secret", "delete", "gh"])), 0);
    assert!(!home.path(".rh/secrets/gh.json").exists());
    assert!(
        home.path(".config/gh/hosts.yml").exists(),
        "credential file left alone"
    );
    assert_eq!(code(&home.run(&["secret", "delete", "gh"])), 1);
    assert_eq!(code(&home.run(&["secret", "show", "nothing-here"])), 1);
    assert_eq!(code(&home.run(&["secret", "show", "../x"])), 2);
}

#[test]
fn errors_say_each_cause_once_and_hint_only_allowed_characters() {
    // ~/.rh is a file: the OS error must be printed once, not twice.
    let home = Home::empty();
    home.put(".rh", "not a directory");
    let out = home.run(&["secret", "create", "x", "--value", "k=v"]);
    assert_eq!(code(&out), 1, "{out:?}");
    let err = stderr(&out);
    let cause = std::io::Error::from_raw_os_error(20).to_string(); // ENOTDIR
    assert_eq!(err.matches(&cause).count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A bad variable name: the hint lists what a variable name may hold.
    let home = Home::empty();
    let out = home.run(&test_support::argv(
        "secret create y --value k=v --env-var k=MY-VAR",
    ));
    assert_eq!(code(&out), 2, "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("\"MY-VAR\""), "{err}");
    assert!(
        err.contains("use letters, digits and '_', not starting with a digit"),
        "{err}"
    );
    assert!(!err.contains("'-'") && !err.contains("'.'"), "{err}");
}

#[test]
fn stdin_env_is_the_environment_secrets_are_found_in() {
    let mut home = Home::empty();
    // The process environment holds two keys; the first line of stdin
    // another, and a second value for one of them, which wins.
    home.env
        .push(("OPENAI_API_KEY".into(), "fixture-process-env-key".into()));
    home.env
        .push(("COHERE_API_KEY".into(), "fixture-process-cohere".into()));
    let out = home.run_with(
        &["--stdin-env", "secret", "detect", "--json", "--reveal"],
        Some(
            "{\"ANTHROPIC_API_KEY\": \"fixture-stdin-env-key\", \"COHERE_API_KEY\": \"fixture-stdin-cohere\"}\n",
        ),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let found = json(&out);
    assert_eq!(
        found["anthropic"]["values"]["api_key"], "fixture-stdin-env-key",
        "{found:#}"
    );
    assert_eq!(found["cohere"]["values"]["api_key"], "fixture-stdin-cohere");
    assert_eq!(
        found["openai"]["values"]["api_key"], "fixture-process-env-key",
        "{found:#}"
    );
    // Without the flag the stdin line is not read.
    let out = home.run_with(
        &["secret", "detect", "--json"],
        Some("{\"ANTHROPIC_API_KEY\": \"fixture-stdin-env-key\"}\n"),
    );
    assert!(json(&out).get("anthropic").is_none());
    // Not a JSON object of strings: usage error, the line not echoed.
    let out = home.run_with(
        &["--stdin-env", "secret", "list"],
        Some("{\"ANTHROPIC_API_KEY\": [\"fixture-in-a-list\"]}\n"),
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("fixture-in-a-list"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn secret_json_is_shown_written_and_extracted_without_being_saved() {
    let home = Home::empty();
    home.put(
        ".aws/credentials_custom",
        "[default]\naws_access_key_id = FIXTUREKEYCUSTOM\naws_secret_access_key = fixture/custom\n",
    );
    // No values: extracted from the path given, printed with --reveal only.
    let entry = r#"{"name": "aws", "provider": "aws", "path": "~/.aws/credentials_custom"}"#;
    let out = home.run_with(
        &["secret", "show", "--secret-json", "-", "--json", "--reveal"],
        Some(entry),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let shown = json(&out);
    assert_eq!(shown["path"], "~/.aws/credentials_custom");
    assert_eq!(shown["values"]["secret_key"], "fixture/custom");
    let out = home.run_with(&["secret", "show", "--secret-json", "-"], Some(entry));
    assert_no_fixture_value(&stdout(&out));
    assert!(!stdout(&out).contains("fixture/custom"));
    // Values given: written into the provider's default file (0600), nothing saved.
    let out = home.run_with(
        &["secret", "write", "--secret-json", "-", "--json"],
        Some(r#"{"name": "lambda", "provider": "lambda", "values": {"api_key": "fixture-lambda-json"}}"#),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        json(&out)["files"][0]["path"],
        "~/.lambda_cloud/lambda_keys"
    );
    assert_eq!(
        home.read(".lambda_cloud/lambda_keys"),
        "api_key = fixture-lambda-json\n"
    );
    assert_eq!(mode(&home.path(".lambda_cloud/lambda_keys")), 0o600);
    assert!(!home.path(".rh/secrets/lambda.json").exists());
    // Refused: redacted values fed back, a value where an object belongs,
    // a bad var name, a base secret with nothing to extract; none echoed.
    for (bad, leak) in [
        (r#"{"name": "x", "values": {"k": "<redacted>"}}"#, "<none>"),
        (
            r#"{"name": "x", "values": "fixture-not-a-map"}"#,
            "fixture-not-a-map",
        ),
        (
            r#"{"name": "x", "provider": "openai", "env_vars": {"api_key": "BAD-VAR"}, "values": {"api_key": "fixture-v"}}"#,
            "fixture-v",
        ),
        (r#"{"name": "x"}"#, "<none>"),
        (r#"[]"#, "<none>"),
    ] {
        let out = home.run_with(&["secret", "show", "--secret-json", "-"], Some(bad));
        assert_eq!(code(&out), 2, "{bad}: {}", stderr(&out));
        assert!(!stderr(&out).contains(leak), "{}", stderr(&out));
    }
    // NAME and --secret-json together, or neither: usage errors.
    assert_eq!(code(&home.run(&["secret", "show"])), 2);
    let both = home.run_with(&["secret", "write", "n", "--secret-json", "-"], Some(entry));
    assert_eq!(code(&both), 2);
}
