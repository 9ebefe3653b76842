//! Validation of the names users and requests choose: secret names, env
//! names and environment variable names. Errors name the offending name but
//! these functions never see a value.

use thiserror::Error;

/// A name that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name {name:?} is longer than {max} characters")]
    TooLong {
        kind: &'static str,
        name: String,
        max: usize,
    },
    #[error("{kind} name {name:?} contains {what}; {}", allowed(.kind))]
    Invalid {
        kind: &'static str,
        name: String,
        what: &'static str,
    },
}

const MAX_NAME: usize = 128;
/// How much of an over-long name its error shows.
const SHOWN_START: usize = 32;

/// What a name of `kind` may hold, as told to the user.
fn allowed(kind: &str) -> &'static str {
    if kind == "environment variable" {
        "use letters, digits and '_', not starting with a digit"
    } else {
        "use letters, digits, '-', '_', '.', '@' or '+' (not starting with '.')"
    }
}

fn check_common(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.chars().count() > MAX_NAME {
        // only the start of it: the message stays short whatever was sent
        let start: String = printable(name).chars().take(SHOWN_START).collect();
        return Err(NameError::TooLong {
            kind,
            name: format!("{start}..."),
            max: MAX_NAME,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Invalid {
            kind,
            name: printable(name),
            what: "a control character",
        });
    }
    Ok(())
}

fn printable(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_NAME)
        .collect()
}

/// A secret name: becomes a file name in `~/.rh/secrets`, so no `/`, no `..`,
/// no control characters, not starting with `.`.
pub fn validate_secret_name(name: &str) -> Result<(), NameError> {
    validate_file_name("secret", name)
}

/// An env name: same rules as a secret name (it names a state entry and a process).
pub fn validate_env_name(name: &str) -> Result<(), NameError> {
    validate_file_name("env", name)
}

/// A cluster name: same rules as a secret name.
pub fn validate_cluster_name(name: &str) -> Result<(), NameError> {
    validate_file_name("cluster", name)
}

/// A provider id (a builtin, or the id of a custom provider secret): same
/// rules as a secret name.
pub fn validate_provider_id(id: &str) -> Result<(), NameError> {
    validate_file_name("provider", id)
}

fn validate_file_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    check_common(kind, name)?;
    let invalid = |what| {
        Err(NameError::Invalid {
            kind,
            name: name.to_owned(),
            what,
        })
    };
    if name.contains('/') || name.contains('\\') {
        return invalid("a path separator");
    }
    if name.contains("..") {
        return invalid("'..'");
    }
    if name.starts_with('.') {
        return invalid("a leading '.'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+'))
    {
        return invalid("a character outside [A-Za-z0-9-_.@+]");
    }
    Ok(())
}

/// An environment variable name: not empty, no `=`, no NUL, and (as POSIX
/// shells expect) letters, digits and `_`, not starting with a digit.
pub fn validate_env_var_name(name: &str) -> Result<(), NameError> {
    let kind = "environment variable";
    check_common(kind, name)?;
    if name.contains('=') {
        return Err(NameError::Invalid {
            kind,
            name: name.to_owned(),
            what: "'='",
        });
    }
    let mut chars = name.chars();
    let first = chars.next().unwrap_or('0');
    if first.is_ascii_digit() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(NameError::Invalid {
            kind,
            name: name.to_owned(),
            what: "a character other than A-Z, a-z, 0-9 and '_' (or a leading digit)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for ok in ["aws", "ssh-id_rsa", "my_secret", "gcp.prod", "a@b"] {
            assert_eq!(validate_secret_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "a/b", "..", "a..b", ".hidden", "a\nb", "a\0b", "a b", "a\\b",
        ] {
            assert!(validate_secret_name(bad).is_err(), "{bad:?}");
        }
        let err = validate_secret_name(&"x".repeat(5000)).unwrap_err();
        assert!(matches!(err, NameError::TooLong { .. }), "{err}");
        assert!(err.to_string().len() < 100, "{err}");
        assert!(validate_secret_name(&"x".repeat(129)).is_err());
        assert!(validate_provider_id("aws").is_ok());
        assert!(validate_provider_id("../aws").is_err());
    }

    #[test]
    fn env_var_names() {
        for ok in ["OPENAI_API_KEY", "_X", "a1"] {
            assert_eq!(validate_env_var_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "A=B", "A\0", "1A", "A-B", "A B"] {
            assert!(validate_env_var_name(bad).is_err(), "{bad:?}");
        }
        // The hint lists only what is allowed for that kind of name.
        for bad in ["A-B", "A.B", "A=B"] {
            let text = validate_env_var_name(bad).unwrap_err().to_string();
            assert!(
                text.ends_with("use letters, digits and '_', not starting with a digit"),
                "{text}"
            );
        }
        let text = validate_secret_name("a b").unwrap_err().to_string();
        assert!(text.contains("'@' or '+'"), "{text}");
        assert!(validate_secret_name("a@b+c").is_ok());
    }

    #[test]
    fn error_message_names_the_name() {
        let err = validate_secret_name("a/b").unwrap_err().to_string();
        assert!(err.contains("\"a/b\""), "{err}");
        assert!(err.contains("path separator"), "{err}");
    }
}
