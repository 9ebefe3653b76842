//! Every builtin provider against its fixture in `tests/data/providers/<id>/`:
//! `values.json` (what the fixture holds), `source` (+ `source.pub`) for
//! providers with files, `env.json` (variable -> value) for providers with env
//! vars. No provider ships without one: the registry loop fails first.

use std::path::{Path, PathBuf};

use common::providers::{FileMerge, Merge, Provider, SourceFile, PROVIDERS};
use common::{Secret, SecretText, SecretValue, Values};

fn dir(id: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/providers")
        .join(id)
}

fn read(id: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(dir(id).join(file)).ok()
}

fn json_values(text: &str) -> Values {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).unwrap();
    map.into_iter()
        .map(|(k, v)| (k, SecretValue::new(v)))
        .collect()
}

/// The expected values of a provider's fixture.
fn expected(p: &dyn Provider) -> Values {
    json_values(
        &read(p.id(), "values.json").unwrap_or_else(|| panic!("{}: no values.json", p.id())),
    )
}

/// Source file texts, in the order of `files()`.
fn sources(p: &dyn Provider) -> Option<Vec<SecretText>> {
    let files = p.files("source");
    let texts: Vec<_> = files.iter().map(|f| read(p.id(), f)).collect();
    texts.iter().all(Option::is_some).then(|| {
        texts
            .into_iter()
            .map(|t| SecretText::new(t.unwrap()))
            .collect()
    })
}

fn has_file(p: &dyn Provider) -> bool {
    p.default_path().is_some() || p.id() == "ssh"
}

/// Every string leaf of a JSON value (to look for in printed output).
fn leaves(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if s.len() >= 8 => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|i| leaves(i, out)),
        serde_json::Value::Object(m) => m.values().for_each(|i| leaves(i, out)),
        _ => {}
    }
}

#[test]
fn every_provider_has_a_complete_fixture() {
    assert_eq!(PROVIDERS.len(), 16);
    for p in PROVIDERS {
        let id = p.id();
        assert!(dir(id).is_dir(), "{id}: no fixture dir");
        assert!(!expected(*p).is_empty(), "{id}: empty values.json");
        if has_file(*p) {
            assert!(sources(*p).is_some(), "{id}: missing source file(s)");
        }
        if !p.env_vars().is_empty() {
            let env: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
                &read(id, "env.json").unwrap_or_else(|| panic!("{id}: no env.json")),
            )
            .unwrap();
            let mut vars: Vec<_> = p.env_vars().iter().map(|(_, v)| v.to_string()).collect();
            vars.sort();
            assert_eq!(
                env.keys().cloned().collect::<Vec<_>>(),
                vars,
                "{id}: env.json vars"
            );
        }
        assert!(
            has_file(*p) || !p.env_vars().is_empty(),
            "{id}: neither file nor env vars"
        );
    }
}

#[test]
fn fixture_files_parse_to_the_expected_values_and_merge_unchanged() {
    for p in PROVIDERS.iter().filter(|p| has_file(**p)) {
        let texts = sources(*p).unwrap();
        let names = p.files("~/source");
        let files: Vec<_> = names
            .iter()
            .zip(&texts)
            .map(|(path, text)| SourceFile { path, text })
            .collect();
        let values = p
            .parse(&files)
            .unwrap_or_else(|e| panic!("{}: {e}", p.id()));
        assert_eq!(values, expected(*p), "{}", p.id());
        p.validate(&values).unwrap();
        for (i, (name, text)) in names.iter().zip(&texts).enumerate() {
            assert_eq!(
                p.merge(&FileMerge {
                    index: i,
                    path: name,
                    existing: Some(text),
                    values: &values,
                    overwrite: false
                })
                .unwrap(),
                Merge::Unchanged,
                "{}",
                p.id()
            );
        }
    }
}

/// Every provider's own credentials are data: its fixture (what `detect`
/// finds) passes the remote-origin check, so a secret pushed to the store
/// by its owner is accepted when pulled; only a kubeconfig's
/// `current-context` is dropped.
#[test]
fn every_fixture_is_data_a_node_accepts_from_the_store() {
    use common::policy::{data_only, Origin};
    for p in PROVIDERS {
        let mut values = expected(*p);
        data_only(Some(p.id()), "s", None, &mut values, Origin::Remote)
            .unwrap_or_else(|e| panic!("{}: {e}", p.id()));
        let mut want = expected(*p);
        for key in p.remote_dropped() {
            want.remove(*key);
        }
        assert_eq!(values, want, "{}", p.id());
    }
}

#[test]
fn render_then_parse_round_trips() {
    for p in PROVIDERS {
        let values = expected(*p);
        let rendered = p
            .render("~/x", &values)
            .unwrap_or_else(|e| panic!("{}: {e}", p.id()));
        let names = p.files("~/x");
        assert_eq!(rendered.len(), names.len());
        let files: Vec<_> = names
            .iter()
            .zip(&rendered)
            .map(|(path, text)| SourceFile { path, text })
            .collect();
        assert_eq!(p.parse(&files).unwrap(), values, "{}", p.id());
    }
}

#[test]
fn debug_output_is_redacted_for_every_provider() {
    for p in PROVIDERS {
        let mut secret = Secret::base(p.id(), expected(*p));
        secret.provider = Some(p.id().into());
        let printed = format!("{secret:?} {secret:#?} {:?}", secret.values);
        let mut secrets = Vec::new();
        leaves(
            &serde_json::from_str(&read(p.id(), "values.json").unwrap()).unwrap(),
            &mut secrets,
        );
        for s in secrets.iter().filter(|s| s.contains("fixture")) {
            assert!(!printed.contains(s.as_str()), "{}: {printed}", p.id());
        }
    }
}

#[test]
fn missing_required_key_is_refused() {
    for p in PROVIDERS {
        let mut values = expected(*p);
        let key = p
            .required_keys()
            .first()
            .copied()
            .or_else(|| values.keys().next().map(|_| ""));
        match key {
            Some("") | None => values.clear(),
            Some(k) => {
                values.remove(k);
            }
        }
        assert!(p.validate(&values).is_err(), "{}", p.id());
    }
}

/// Put a provider's fixture files at `path` (`~/...`) under `home`.
fn place(home: &Path, p: &dyn Provider, path: &str, texts: &[SecretText]) {
    for (name, text) in p.files(path).iter().zip(texts) {
        let full = common::fsutil::expand_home(home, name);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text.expose_secret()).unwrap();
    }
}

fn fixture_env(id: &str) -> std::collections::BTreeMap<String, String> {
    read(id, "env.json")
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or_default()
}

/// What `extract` finds of provider `id` by its defaults (name, file, vars)
/// in `home` with `env`; panics naming `what` when it finds nothing.
fn found(home: &Path, env: &dyn Fn(&str) -> Option<String>, id: &str, what: &str) -> Secret {
    let src = common::extract::Sources { home, env };
    common::extract::extract(&src, id, None, None, None)
        .unwrap()
        .unwrap_or_else(|| panic!("{id}: {what}"))
}

#[test]
fn extract_from_default_file_custom_path_and_env_vars() {
    use common::extract::{extract, Sources};
    let no_env = |_: &str| None;
    for p in PROVIDERS {
        let id = p.id();
        // default file
        if has_file(*p) {
            let home = tempfile::tempdir().unwrap();
            let default = p.default_path().unwrap_or("~/.ssh/id_rsa");
            place(home.path(), *p, default, &sources(*p).unwrap());
            let s = found(home.path(), &no_env, id, "default");
            assert_eq!(
                (s.name.as_str(), s.path.as_deref()),
                (id, Some(default)),
                "{id}"
            );
            assert_eq!(s.values, expected(*p), "{id}");
        }
        // custom path (env-only providers: a JSON file), given absolute: stored in ~ form
        let home = tempfile::tempdir().unwrap();
        let texts = if has_file(*p) {
            sources(*p).unwrap()
        } else {
            p.render("~/x", &expected(*p)).unwrap()
        };
        place(home.path(), *p, "~/custom/dir/creds", &texts);
        let src = Sources {
            home: home.path(),
            env: &no_env,
        };
        let abs = home.path().join("custom/dir/creds");
        let s = extract(&src, id, Some("named"), abs.to_str(), None)
            .unwrap()
            .unwrap_or_else(|| panic!("{id}: custom"));
        assert_eq!(
            (s.name.as_str(), s.path.as_deref()),
            ("named", Some("~/custom/dir/creds")),
            "{id}"
        );
        assert_eq!(s.values, expected(*p), "{id}");
        assert!(
            extract(&src, id, None, Some("~/nothing/here"), None)
                .unwrap()
                .is_none(),
            "{id}"
        );
        // env vars, every one needed
        let env = fixture_env(id);
        if !env.is_empty() {
            let home = tempfile::tempdir().unwrap();
            let lookup = |k: &str| env.get(k).cloned();
            let s = found(home.path(), &lookup, id, "env");
            assert_eq!(s.path, None);
            for (key, var) in p.env_vars() {
                assert_eq!(
                    s.values[*key].expose_str(),
                    Some(env[*var].as_str()),
                    "{id}"
                );
            }
            let (first_var, _) = env.iter().next().unwrap();
            let partial = |k: &str| {
                if k == first_var {
                    None
                } else {
                    env.get(k).cloned()
                }
            };
            let src = Sources {
                home: home.path(),
                env: &partial,
            };
            assert!(
                extract(&src, id, None, None, None).unwrap().is_none(),
                "{id}: partial env"
            );
        }
    }
}
