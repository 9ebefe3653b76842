//! The duration flags' value parsers (`--wrap-ttl`, `--ttl`, `--token-ttl`,
//! `--key-rotation`, `secret create --duration`): `90`, `90s`, `15m`, `2h`,
//! `1d` -> seconds, refused by clap before any command runs.

/// Parse a duration: `90`, `90s`, `15m`, `2h`, `1d` -> seconds (> 0).
pub(crate) fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|s| *s > 0)
}

/// A duration flag's value parser ([`parse_duration`]), in seconds.
pub(super) fn duration(text: &str) -> Result<u64, String> {
    parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration (e.g. 90s, 15m, 2h)"))
}

/// `secret create --session --duration`: a session's lifetime, in seconds.
pub(super) fn session_lifetime(text: &str) -> Result<u64, String> {
    parse_duration(text)
        .filter(|secs| *secs <= common::session::MAX_LIFETIME_SECS as u64)
        .ok_or_else(|| "a lifetime like 1h, 90m or 900s, at most 36h".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("15m"), Some(900));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("1d"), Some(86_400));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("m"), None);
    }
}
