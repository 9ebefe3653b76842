//! AWS on the node: the answer of the ECS container-credentials protocol
//! (`{"AccessKeyId","SecretAccessKey","Token","Expiration"}`), botocore's
//! `credential_process` Version 1 document, and the one line of the node
//! user's `~/.aws/config` a session owns: `credential_process = <agent>
//! credentials aws --secret NAME --state-dir DIR` in its profile, merged
//! like every credential file (other lines byte for byte, atomic 0600).
//! [`shadowed`] names static keys of that profile in `~/.aws/credentials`,
//! which botocore reads before `credential_process`. Holds no HTTP types.

use std::path::Path;

use common::formats::ini::IniDoc;
use common::providers::{Facts, FileMerge, FileRemove, Merge, Provider, ProviderError};
use common::providers::{Removal, SourceFile};
use common::session::Minted;
use common::time::rfc3339;
use common::Values;
use serde_json::{json, Value};

/// The ECS container-credentials answer.
pub(crate) fn ecs_document(minted: &Minted) -> Value {
    json!({
        "AccessKeyId": minted.part("access_key_id"),
        "SecretAccessKey": minted.part("secret_access_key"),
        "Token": minted.part("session_token"),
        "Expiration": rfc3339(minted.expires_at, None),
    })
}

/// botocore's `credential_process` output (Version 1) from an ECS answer.
pub(crate) fn process_document(ecs: &Value) -> Option<Value> {
    let get = |k: &str| ecs.get(k).and_then(Value::as_str);
    Some(json!({
        "Version": 1,
        "AccessKeyId": get("AccessKeyId")?,
        "SecretAccessKey": get("SecretAccessKey")?,
        "SessionToken": get("Token")?,
        "Expiration": get("Expiration")?,
    }))
}

/// The `~/.aws/config` section of a profile.
pub(crate) fn config_section(profile: &str) -> String {
    if profile == "default" {
        "default".to_owned()
    } else {
        format!("profile {profile}")
    }
}

/// A word for a `credential_process` line: botocore splits it like a POSIX
/// shell, so anything but plain path characters is single-quoted.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@:=".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `<agent> credentials aws --secret NAME --state-dir DIR`.
pub(crate) fn process_command(exe: &Path, name: &str, state_dir: &Path) -> String {
    [
        shell_word(&exe.to_string_lossy()),
        "credentials".into(),
        "aws".into(),
        "--secret".into(),
        shell_word(name),
        "--state-dir".into(),
        shell_word(&state_dir.to_string_lossy()),
    ]
    .join(" ")
}

/// The `credential_process` line of one profile, as a provider over
/// `~/.aws/config` (values: `profile`, `credential_process`), so it is
/// written and removed by `common::apply` like any credential file. It
/// owns that one key: merging replaces it, removing takes it out only
/// while it is still the session's own.
#[derive(Debug)]
pub(crate) struct ProfileProcess;

/// The provider instance.
pub(crate) static PROFILE_PROCESS: ProfileProcess = ProfileProcess;

fn value<'a>(values: &'a Values, key: &str) -> Result<&'a str, ProviderError> {
    values
        .get(key)
        .and_then(|v| v.expose_str())
        .filter(|v| !v.contains(['\n', '\r']))
        .ok_or_else(|| ProviderError::MissingKey {
            provider: "aws".into(),
            key: key.into(),
        })
}

/// What the provider declares: aws' config file, the profile and its line.
static FACTS: Facts = Facts::new(
    "aws",
    Some("~/.aws/config"),
    &[],
    &["profile", "credential_process"],
);

impl Provider for ProfileProcess {
    fn facts(&self) -> &Facts {
        &FACTS
    }
    fn parse(&self, _files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        Ok(Values::new())
    }
    fn merge(&self, file: &FileMerge<'_>) -> Result<Merge, ProviderError> {
        let section = config_section(value(file.values, "profile")?);
        let line = value(file.values, "credential_process")?;
        let mut doc = IniDoc::existing(file.path, file.existing, false)?;
        if doc.get(&section, "credential_process") == Some(line) {
            return Ok(Merge::Unchanged);
        }
        doc.set(&section, "credential_process", line);
        Ok(Merge::Write(doc.render()))
    }
    fn remove(&self, file: &FileRemove<'_>) -> Result<Removal, ProviderError> {
        let section = config_section(value(file.values, "profile")?);
        let line = value(file.values, "credential_process")?;
        let mut doc = IniDoc::parse(file.path, file.existing.expose_secret(), false)?;
        if doc.get(&section, "credential_process") != Some(line) {
            return Ok(Removal::Unchanged);
        }
        doc.remove(&section, "credential_process");
        Ok(if doc.is_blank() {
            Removal::Delete
        } else {
            Removal::Write(doc.render())
        })
    }
}

/// Static keys of `profile` in the node user's `~/.aws/credentials` (they
/// win over `credential_process` in botocore): `["~/.aws/credentials
/// [PROFILE]"]` when there are any.
pub(crate) fn shadowed(home: &Path, profile: &str) -> Vec<String> {
    let Ok(file) = common::fsutil::confine(home, "~/.aws/credentials") else {
        return vec![];
    };
    let Ok(Some(text)) = file.read() else {
        return vec![];
    };
    let Ok(doc) = IniDoc::parse("~/.aws/credentials", text.expose_secret(), false) else {
        return vec![];
    };
    if doc.get(profile, "aws_access_key_id").is_some() {
        vec![format!("~/.aws/credentials [{profile}]")]
    } else {
        vec![]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::secret_value::values_from;
    use common::SecretText;

    fn merge(existing: Option<&SecretText>, values: &Values) -> Result<Merge, ProviderError> {
        PROFILE_PROCESS.merge(&FileMerge {
            index: 0,
            path: "~/.aws/config",
            existing,
            values,
            overwrite: false,
        })
    }

    fn remove(existing: &SecretText, values: &Values) -> Result<Removal, ProviderError> {
        PROFILE_PROCESS.remove(&FileRemove {
            index: 0,
            path: "~/.aws/config",
            existing,
            values,
        })
    }

    #[test]
    fn the_profile_line_is_merged_and_removed_keeping_the_rest() {
        let existing = SecretText::new(
            "# mine\n[default]\nregion = eu-west-3\n\n[profile dev]\nsso_session = x\n".into(),
        );
        let values = values_from([
            ("profile", "default"),
            (
                "credential_process",
                "/bin/agent credentials aws --secret s",
            ),
        ]);
        let Merge::Write(text) = merge(Some(&existing), &values).unwrap() else {
            panic!("no write");
        };
        assert_eq!(
            text.expose_secret(),
            "# mine\n[default]\nregion = eu-west-3\ncredential_process = /bin/agent credentials aws --secret s\n\n[profile dev]\nsso_session = x\n"
        );
        assert_eq!(merge(Some(&text), &values).unwrap(), Merge::Unchanged);
        let Removal::Write(back) = remove(&text, &values).unwrap() else {
            panic!("not removed");
        };
        assert_eq!(back.expose_secret(), existing.expose_secret());
        // Another process line is not ours to remove.
        let other = values_from([("profile", "default"), ("credential_process", "x")]);
        assert_eq!(remove(&text, &other).unwrap(), Removal::Unchanged);
    }

    #[test]
    fn command_words_are_quoted_for_a_shell_split() {
        let cmd = process_command(
            Path::new("/home/a b/.rh/bin/agent"),
            "aws",
            Path::new("/home/a b/.rh/agent"),
        );
        assert_eq!(
            cmd,
            "'/home/a b/.rh/bin/agent' credentials aws --secret aws --state-dir '/home/a b/.rh/agent'"
        );
    }
}
