//! The remote store's server URLs, as the controller and the agent both
//! decide on them: parsed by the parser the HTTP client itself uses (the
//! `url` crate, WHATWG rules, what reqwest parses a request URL with), so
//! the host a check is made on is the host the token is sent to. A URL is
//! accepted only when it reads the same to that parser as it is written
//! (up to letter case and a trailing `/`): `" http://h"`, `http:h:8200`,
//! `HTTP:\\h`, `http://h:8200\@127.0.0.1`, `http://127.1` are refused with
//! the spelling the client would use, since a person (or an older string
//! check) reads them as something else. No user name, password, query or
//! fragment either (tokens hide there, and `@` tricks the eye).
//! Whether a URL carries tokens in cleartext across a network
//! ([`StoreUrl::is_cleartext_to_network`]) is decided on the parsed host.
//! Nothing here logs; errors never repeat credentials or a query.

use std::net::IpAddr;

use thiserror::Error;

/// Why a store URL is refused. The messages hold no part of the URL that
/// may carry a secret (user info, query, fragment).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreUrlError {
    #[error("it is not a URL ({0})")]
    Parse(String),
    #[error("use http:// or https://")]
    Scheme,
    #[error("no user name or password allowed in the URL")]
    Credentials,
    #[error("no query or fragment allowed")]
    QueryOrFragment,
    #[error("no host")]
    NoHost,
    #[error(
        "the HTTP client reads it as {0}, not as written: write it that way if that is \
         the server you mean"
    )]
    NotAsWritten(String),
}

/// A store server URL that reads the same to the HTTP client as it is
/// written. Its text has no trailing `/`: request URLs are
/// `format!("{url}/v1/{path}")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    parsed: url::Url,
    text: String,
}

/// Parse a store URL: `http` or `https`, a host, no credentials, query or
/// fragment, and the same to the parser as written (ASCII case and one
/// trailing `/` aside). No trimming: surrounding blanks are refused too.
pub fn parse(text: &str) -> Result<StoreUrl, StoreUrlError> {
    let parsed = url::Url::parse(text).map_err(|e| StoreUrlError::Parse(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(StoreUrlError::Scheme);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(StoreUrlError::Credentials);
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(StoreUrlError::QueryOrFragment);
    }
    if parsed.host().is_none() {
        return Err(StoreUrlError::NoHost);
    }
    let serialized = parsed.as_str();
    let as_written = serialized.eq_ignore_ascii_case(text)
        || (parsed.path() == "/" && serialized.eq_ignore_ascii_case(&format!("{text}/")));
    if !as_written {
        return Err(StoreUrlError::NotAsWritten(
            serialized.trim_end_matches('/').to_owned(),
        ));
    }
    let text = serialized.trim_end_matches('/').to_owned();
    Ok(StoreUrl { parsed, text })
}

impl StoreUrl {
    /// The URL as the client reads it, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether what this URL carries crosses a network in cleartext: plain
    /// `http` to a host that is not loopback. Loopback is `localhost`
    /// exactly (not `localhost.` or `x.localhost`: those go to the
    /// resolver, which may send them anywhere), 127.0.0.0/8, `::1` and
    /// IPv4-mapped 127.0.0.0/8. Store tokens may go over such a URL only
    /// when the user opted in, on the machine that sends them (controller:
    /// `RH_VAULT_ALLOW_HTTP`; agent: `pull_allow_insecure_http`).
    pub fn is_cleartext_to_network(&self) -> bool {
        if self.parsed.scheme() != "http" {
            return false;
        }
        match self.parsed.host() {
            Some(url::Host::Domain(name)) => name != "localhost",
            Some(url::Host::Ipv4(ip)) => !IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => {
                !(ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
            }
            None => true,
        }
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A URL as it may be shown in an error: credentials before `@` and any
/// query or fragment (where tokens hide) replaced by `<redacted>`; for
/// `{:?}`, which quotes it and escapes control characters. Works on text
/// that does not parse as a URL too.
pub fn shown(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let (before_query, query) = match rest.find(['?', '#']) {
        Some(i) => (&rest[..i], "?<redacted>"),
        None => (rest, ""),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("<redacted>@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    format!("{scheme}{authority}{path}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_read_otherwise_to_the_client_are_refused_with_its_reading() {
        for (text, client_reads) in [
            (" http://10.0.0.2:8200", "http://10.0.0.2:8200"),
            ("http://10.0.0.2:8200 ", "http://10.0.0.2:8200"),
            ("\thttps://vault.example", "https://vault.example"),
            ("http:10.0.0.2:8200", "http://10.0.0.2:8200"),
            ("http:/10.0.0.2", "http://10.0.0.2"),
            ("HTTP:\\\\10.0.0.2", "http://10.0.0.2"),
            ("http:\\\\vault.example\\v1", "http://vault.example/v1"),
            // The old string test saw 127.0.0.1 after the last `@`; the
            // client sends to 10.0.0.2, path `/@127.0.0.1`.
            (
                "http://10.0.0.2:8200\\@127.0.0.1",
                "http://10.0.0.2:8200/@127.0.0.1",
            ),
            ("http://127.1:8200", "http://127.0.0.1:8200"),
            ("http://0x7f.1", "http://127.0.0.1"),
            ("http://2130706433", "http://127.0.0.1"),
            ("http://127.0.0.%31", "http://127.0.0.1"),
            (
                "http://[::ffff:127.0.0.1]:8200",
                "http://[::ffff:7f00:1]:8200",
            ),
            ("http://[0:0:0:0:0:0:0:1]", "http://[::1]"),
            ("https://vault.example:443", "https://vault.example"),
            (
                "https://b\u{fc}cher.example",
                "https://xn--bcher-kva.example",
            ),
            ("https://vault.example/a/../v", "https://vault.example/v"),
            (
                "https://vault.example/a/%2e%2e/v",
                "https://vault.example/v",
            ),
        ] {
            assert_eq!(
                parse(text),
                Err(StoreUrlError::NotAsWritten(client_reads.into())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn credentials_queries_fragments_and_other_schemes_are_refused() {
        for (text, why) in [
            ("http://127.0.0.1@10.0.0.2", StoreUrlError::Credentials),
            (
                "http://127.0.0.1:8200@10.0.0.2:8200",
                StoreUrlError::Credentials,
            ),
            ("https://user:pw@vault.example", StoreUrlError::Credentials),
            ("http://:pw@127.0.0.1", StoreUrlError::Credentials),
            ("http://10.0.0.2#@127.0.0.1", StoreUrlError::QueryOrFragment),
            ("http://10.0.0.2?@127.0.0.1", StoreUrlError::QueryOrFragment),
            (
                "https://vault.example/?token=x",
                StoreUrlError::QueryOrFragment,
            ),
            ("ftp://vault.example", StoreUrlError::Scheme),
            ("file:///etc/passwd", StoreUrlError::Scheme),
            ("unix:/run/bao.sock", StoreUrlError::Scheme),
            ("vault.example:8200", StoreUrlError::Scheme),
        ] {
            assert_eq!(parse(text), Err(why), "{text:?}");
        }
        for text in [
            "",
            "http://",
            "//vault.example",
            "http://[::1",
            "http://h:99999",
        ] {
            assert!(
                matches!(parse(text), Err(StoreUrlError::Parse(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn cleartext_is_decided_on_the_host_the_client_connects_to() {
        for (text, cleartext) in [
            ("http://10.0.0.5:8200", true),
            ("HTTP://vault.example.com/v1", true),
            ("http://[2001:db8::1]:8200", true),
            ("http://0.0.0.0:8200", true),
            ("http://localhost.:8200", true),
            ("http://localhost.example.com", true),
            ("http://x.localhost", true),
            ("http://10.0.0.2:8200/@127.0.0.1", true),
            ("http://127.0.0.1:8200", false),
            ("http://127.9.9.9", false),
            ("http://localhost:8200/x", false),
            ("http://LOCALHOST", false),
            ("http://[::1]:8200", false),
            ("http://[::1]", false),
            ("http://[::ffff:7f00:1]:8200", false),
            ("https://10.0.0.5:8200", false),
            ("https://vault.example.com", false),
            ("https://localhost.", false),
        ] {
            let url = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(url.is_cleartext_to_network(), cleartext, "{text:?}");
        }
    }

    #[test]
    fn the_text_is_the_clients_without_a_trailing_slash() {
        for (text, canonical) in [
            ("https://vault.example:8200", "https://vault.example:8200"),
            ("https://vault.example:8200/", "https://vault.example:8200"),
            ("HTTPS://Vault.Example:8200", "https://vault.example:8200"),
            ("https://vault.example/bao/", "https://vault.example/bao"),
            ("http://[::1]:8200", "http://[::1]:8200"),
        ] {
            assert_eq!(parse(text).unwrap().as_str(), canonical, "{text:?}");
        }
    }

    #[test]
    fn shown_urls_hide_credentials_and_queries() {
        for text in [
            "https://admin:hunter2-pw@vault:8200/",
            "https://vault:8200/?token=hunter2-pw",
            "ftp://u:hunter2-pw@vault",
            "http://u:hunter2-pw@[bad",
            "u:hunter2-pw@vault",
            "https://vault#hunter2-pw",
        ] {
            let shown = shown(text);
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("vault") || shown.contains("[bad"), "{shown}");
        }
    }
}
