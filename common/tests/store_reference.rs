//! The reference's own saved secrets (`tests/data/reference-secrets/*.json`)
//! load through the store: base secrets, provider secrets with values, with
//! only a path (values read from the file), with only env vars (values filled
//! from the environment), names starting with `~/` or `/`, "provenance".

use std::path::PathBuf;

use common::extract::{fill_values, Sources};
use common::store;

fn reference_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let dir = store::secrets_dir(home.path());
    std::fs::create_dir_all(&dir).unwrap();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference-secrets");
    for entry in std::fs::read_dir(data).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let keys = home.path().join(".lambda_cloud");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("lambda_keys"), "api_key = lambda-from-file\n").unwrap();
    home
}

#[test]
fn reads_the_reference_shapes() {
    let home = reference_home();
    let names: Vec<_> = store::list(home.path())
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["aws", "example", "lambda", "my_secret", "openai"]);

    let load = |name: &str| store::load(home.path(), name).unwrap();
    // One value of each: stored (aws, example), a base secret's, read from
    // the file the path names (lambda).
    for (name, key, want) in [
        ("aws", "secret_key", "referenceSecretKey0001"),
        ("my_secret", "key", "secret_val"),
        ("lambda", "api_key", "lambda-from-file"),
        ("example", "private_key", "**private key values**\n"),
    ] {
        assert_eq!(load(name).values[key].expose_str(), Some(want), "{name}");
    }
    assert_eq!(load("aws").provider.as_deref(), Some("aws"));
    let base = load("my_secret");
    assert_eq!(
        (base.name.as_str(), base.provider.as_deref()),
        ("my_secret", None)
    );
    assert_eq!(
        load("lambda").path.as_deref(),
        Some("~/.lambda_cloud/lambda_keys")
    );

    let mut openai = load("openai");
    assert!(openai.values.is_empty());
    let env = |k: &str| (k == "OPENAI_API_KEY").then(|| "sk-from-env".to_string());
    fill_values(
        &Sources {
            home: home.path(),
            env: &env,
        },
        &mut openai,
    )
    .unwrap();
    assert_eq!(openai.values["api_key"].expose_str(), Some("sk-from-env"));
}

#[test]
fn saving_a_reference_secret_again_keeps_the_shape_and_tightens_modes() {
    use std::os::unix::fs::PermissionsExt;
    let home = reference_home();
    let secret = store::load(home.path(), "aws").unwrap();
    store::save(home.path(), &secret).unwrap();
    let path = store::secrets_dir(home.path()).join("aws.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference-secrets/aws.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(json, reference);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
