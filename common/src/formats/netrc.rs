//! A line-preserving `~/.netrc` editor for one `machine` entry (wandb keeps
//! its key as `machine api.wandb.ai` / `password KEY`): reads the entry's
//! tokens, changes its password in place, appends a new entry, or removes
//! exactly that entry; every other machine's lines, `default`, `macdef` and
//! comment lines stay byte for byte. Errors name the file and the machine,
//! never a token's text.

use crate::providers::ProviderError;
use crate::secret_value::SecretText;

/// One whitespace-separated token and its byte range.
#[derive(Debug, Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
}

/// The tokens of `text`, skipping `#` comment lines and `macdef` bodies
/// (which run to the next blank line).
fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut in_macdef = false;
    for line in text.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        if in_macdef {
            in_macdef = !line.trim().is_empty();
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut offset = 0;
        for word in line.split_ascii_whitespace() {
            let at = line[offset..].find(word).map_or(offset, |i| offset + i);
            offset = at + word.len();
            out.push(Token {
                start: start + at,
                end: start + offset,
            });
            if word == "macdef" {
                in_macdef = true;
            }
        }
    }
    out
}

/// One `machine NAME ...` entry: its tokens' indices in the token list.
#[derive(Debug)]
struct Entry {
    /// Index of the `machine` token.
    first: usize,
    /// Index past the entry's last token.
    last: usize,
}

/// The first entry for `machine` in `tokens` of `text`.
fn find(text: &str, tokens: &[Token], machine: &str) -> Option<Entry> {
    let word = |i: usize| &text[tokens[i].start..tokens[i].end];
    let is_start = |w: &str| matches!(w, "machine" | "default" | "macdef");
    let mut i = 0;
    while i < tokens.len() {
        if word(i) == "machine" && i + 1 < tokens.len() && word(i + 1) == machine {
            let mut last = i + 2;
            while last < tokens.len() && !is_start(word(last)) {
                last += 2.min(tokens.len() - last);
            }
            return Some(Entry { first: i, last });
        }
        i += 1;
    }
    None
}

/// The value token after `key` (`password`, `login`) inside `entry`.
fn field(text: &str, tokens: &[Token], entry: &Entry, key: &str) -> Option<usize> {
    (entry.first + 2..entry.last)
        .step_by(2)
        .find(|&i| &text[tokens[i].start..tokens[i].end] == key && i + 1 < entry.last)
        .map(|i| i + 1)
}

/// The password of `machine`, if the file has an entry for it with one.
pub fn password<'a>(text: &'a SecretText, machine: &str) -> Option<&'a str> {
    let text = text.expose_secret();
    let toks = tokens(text);
    let entry = find(text, &toks, machine)?;
    let i = field(text, &toks, &entry, "password")?;
    Some(&text[toks[i].start..toks[i].end])
}

/// A value netrc can hold as one token: not empty, no whitespace, no quote.
pub fn check_token(provider: &str, key: &str, value: &str) -> Result<(), ProviderError> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c.is_control())
    {
        return Err(ProviderError::InvalidValue {
            provider: provider.into(),
            key: key.into(),
            reason: "must be one netrc token: not empty, no whitespace or quotes".into(),
        });
    }
    Ok(())
}

/// What setting a password comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Set {
    /// The entry already holds this password.
    Same,
    /// The entry holds another password (left as it is).
    Differs,
    /// The new text.
    Text(SecretText),
}

/// Set `machine`'s password: in place when the entry has one (only that
/// token changes), else a new entry `machine M / login LOGIN / password P`
/// appended at the end. With `overwrite` off, another password is [`Set::Differs`].
pub fn set_password(
    existing: Option<&SecretText>,
    machine: &str,
    login: &str,
    password: &str,
    overwrite: bool,
) -> Set {
    let text = existing.map(SecretText::expose_secret).unwrap_or("");
    let toks = tokens(text);
    let entry = find(text, &toks, machine);
    let at = entry
        .as_ref()
        .and_then(|e| field(text, &toks, e, "password"));
    let mut out = String::with_capacity(text.len() + 64);
    match (at, entry) {
        // The entry has no password yet: add one after the machine's name.
        (None, Some(e)) => {
            let after_name = toks[e.first + 1].end;
            out.push_str(&text[..after_name]);
            out.push_str(" password ");
            out.push_str(password);
            out.push_str(&text[after_name..]);
        }
        (Some(i), _) => {
            let old = &text[toks[i].start..toks[i].end];
            if crate::secret_value::ct_eq_bytes(old.as_bytes(), password.as_bytes()) {
                return Set::Same;
            }
            if !overwrite {
                return Set::Differs;
            }
            out.push_str(&text[..toks[i].start]);
            out.push_str(password);
            out.push_str(&text[toks[i].end..]);
        }
        (None, None) => {
            out.push_str(text);
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!(
                "machine {machine}\n  login {login}\n  password {password}\n"
            ));
        }
    }
    Set::Text(SecretText::new(out))
}

/// Remove `machine`'s entry when its password is `password`: the entry's
/// lines go (from the line of `machine` to the line before the next entry),
/// everything else stays. `None` when there is no such entry.
pub fn remove_entry(existing: &SecretText, machine: &str, password: &str) -> Option<SecretText> {
    let text = existing.expose_secret();
    let toks = tokens(text);
    let entry = find(text, &toks, machine)?;
    let i = field(text, &toks, &entry, "password")?;
    if &text[toks[i].start..toks[i].end] != password {
        return None;
    }
    let line_start = |pos: usize| text[..pos].rfind('\n').map_or(0, |n| n + 1);
    let first = toks[entry.first].start;
    // Start at the line's start when the entry opens its line.
    let start = if text[line_start(first)..first].trim().is_empty() {
        line_start(first)
    } else {
        first
    };
    let end = match toks.get(entry.last) {
        Some(next) if text[line_start(next.start)..next.start].trim().is_empty() => {
            line_start(next.start)
        }
        Some(next) => next.start,
        None => text.len(),
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    out.push_str(&text[end..]);
    Some(SecretText::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OTHERS: &str = "# mine\nmachine github.com login me password ghp_keep\n\nmachine api.wandb.ai\n  login user\n  password OLDKEY\nmachine example.org\r\n  login x\r\n  password y\r\ndefault login anon password none\n";

    fn text(s: &str) -> SecretText {
        SecretText::new(s.to_owned())
    }

    #[test]
    fn reads_sets_in_place_and_removes_one_entry() {
        let t = text(OTHERS);
        assert_eq!(password(&t, "api.wandb.ai"), Some("OLDKEY"));
        assert_eq!(password(&t, "github.com"), Some("ghp_keep"));
        assert_eq!(password(&t, "nope"), None);
        assert_eq!(
            set_password(Some(&t), "api.wandb.ai", "user", "OLDKEY", false),
            Set::Same
        );
        assert_eq!(
            set_password(Some(&t), "api.wandb.ai", "user", "NEW", false),
            Set::Differs
        );
        let Set::Text(new) = set_password(Some(&t), "api.wandb.ai", "user", "NEW", true) else {
            panic!("expected text")
        };
        assert_eq!(new.expose_secret(), OTHERS.replace("OLDKEY", "NEW"));
        let left = remove_entry(&t, "api.wandb.ai", "OLDKEY").unwrap();
        assert_eq!(
            left.expose_secret(),
            "# mine\nmachine github.com login me password ghp_keep\n\nmachine example.org\r\n  login x\r\n  password y\r\ndefault login anon password none\n"
        );
        assert!(remove_entry(&t, "api.wandb.ai", "OTHER").is_none());
    }

    #[test]
    fn appends_a_new_entry_after_other_machines() {
        // The text after setting the password of api.wandb.ai to K.
        let set_k = |t: &str| {
            let set = set_password(Some(&text(t)), "api.wandb.ai", "user", "K", false);
            let Set::Text(new) = set else {
                panic!("expected text")
            };
            new.expose_secret().to_owned()
        };
        assert_eq!(
            set_k("machine github.com login me password p"),
            "machine github.com login me password p\nmachine api.wandb.ai\n  login user\n  password K\n"
        );
        // an entry without a password gets one, not a second entry
        assert_eq!(
            set_k("machine api.wandb.ai\n  login user\n"),
            "machine api.wandb.ai password K\n  login user\n"
        );
        // a macdef body mentioning the machine is not an entry
        let t = text("macdef init\nmachine api.wandb.ai password X\n\n");
        assert_eq!(password(&t, "api.wandb.ai"), None);
    }
}
