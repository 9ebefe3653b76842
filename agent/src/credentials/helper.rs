//! `agent credentials aws [--secret NAME]`: the `credential_process`
//! helper the agent writes into the node user's `~/.aws/config`. It asks
//! the running agent (`<state-dir>/agent.addr`, loopback only) for the
//! session over `GET /v1/credentials/aws/NAME` with the helper token
//! (`<state-dir>/credentials/helper.token`) and prints botocore's Version 1
//! JSON on stdout; any failure is one line on stderr and a non-zero exit.
//! One blocking HTTP/1.1 request over `std::net`: no runtime, no TLS, a few
//! milliseconds per call. The credential goes to stdout only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fsutil::read_optional;

/// Largest answer read from the agent.
const MAX_ANSWER: u64 = 64 * 1024;

/// The state dir: `--state-dir`, else `$HOME/.rh/agent`.
pub fn default_state_dir(home: Option<PathBuf>) -> Result<PathBuf, String> {
    let home = home
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
        })
        .ok_or("HOME is not set; give --state-dir")?;
    Ok(home.join(".rh").join("agent"))
}

fn read_text(path: &Path, what: &str) -> Result<common::SecretText, String> {
    match read_optional(path) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(format!(
            "no {what} at {} (is the agent running?)",
            path.display()
        )),
        Err(e) => Err(format!("cannot read {what}: {e}")),
    }
}

/// The AWS session to print: `wanted`, else the only one the agent holds.
fn session_name(state_dir: &Path, wanted: Option<&str>) -> Result<String, String> {
    if let Some(name) = wanted {
        common::names::validate_secret_name(name).map_err(|e| e.to_string())?;
        return Ok(name.to_owned());
    }
    let index = read_text(
        &state_dir.join("credentials").join("index.json"),
        "session index",
    )?;
    let index: std::collections::BTreeMap<String, (String, i64)> =
        serde_json::from_str(index.expose_secret()).map_err(|_| "the session index is damaged")?;
    let aws: Vec<&String> = index
        .iter()
        .filter(|(_, (kind, _))| kind == "aws")
        .map(|(n, _)| n)
        .collect();
    match aws.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err("this node holds no aws session secret (controller sync)".into()),
        many => Err(format!(
            "this node holds several aws session secrets ({}): give --secret NAME",
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// One GET to the agent: the status and the body.
fn get(addr: SocketAddr, path: &str, token: &str) -> Result<(u16, Vec<u8>), String> {
    let err = |e: std::io::Error| format!("the agent at {addr} did not answer: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(err)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(err)?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(err)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    );
    let request = common::SecretText::new(request);
    stream
        .write_all(request.expose_secret().as_bytes())
        .map_err(err)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(err)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the agent's answer has no header end")?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("the agent's answer has no status")?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err("the agent answered in chunks; upgrade the agent".into());
    }
    let body = answer.split_off(split + 4);
    answer.iter_mut().for_each(|b| *b = 0);
    Ok((status, body))
}

/// The Version 1 document for session `wanted` (or the only AWS one) of
/// the agent whose state dir is `state_dir`.
pub fn aws_process_json(state_dir: &Path, wanted: Option<&str>) -> Result<String, String> {
    let name = session_name(state_dir, wanted)?;
    let addr = read_text(&state_dir.join("agent.addr"), "agent address")?;
    let addr: SocketAddr = addr
        .expose_secret()
        .trim()
        .parse()
        .map_err(|_| "agent.addr does not hold an address")?;
    if !addr.ip().is_loopback() {
        return Err("agent.addr is not a loopback address".into());
    }
    let token = read_text(
        &state_dir.join("credentials").join("helper.token"),
        "helper token",
    )?;
    let (status, body) = get(
        addr,
        &format!("/v1/credentials/aws/{name}"),
        token.expose_secret().trim(),
    )?;
    let doc: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| format!("the agent answered {status} without JSON"))?;
    if status != 200 {
        let message = doc
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("no message");
        return Err(format!("the agent answered {status}: {message}"));
    }
    let out = super::aws_ecs::process_document(&doc)
        .ok_or("the agent's answer lacks a credential field")?;
    Ok(out.to_string())
}
