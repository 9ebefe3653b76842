//! The one builder of every ssh process the controller starts
//! ([`ssh_command`]): the master, a command through it (the token read,
//! bootstrap's uploads and install), and a forward request. Each gets the
//! same base options: `-F $RH_SSH_CONFIG` when set (so the real `~/.ssh` is
//! never read then), the control socket, `BatchMode=yes`, host keys checked
//! against known_hosts (`StrictHostKeyChecking=yes`, or `accept-new` with
//! `--accept-new-host-keys`: a CHANGED key is refused either way), a
//! `ConnectTimeout`, and the cluster's port, user and identity file. ssh's
//! default key exchange is kept. Also turns ssh's messages into errors a
//! user can act on; they never contain secret values, and neither does
//! anything here.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use crate::clusters::SshTarget;
use crate::transport::{TransportError, TransportOptions};

/// What one ssh process is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call<'a> {
    /// Start the master (`-M`), persisting `persist_secs` after its first
    /// session, with the agent port forwarded to a unix socket on its
    /// command line, running `command` as that first session.
    Master {
        persist_secs: u64,
        log: &'a Path,
        forward: (&'a Path, u16),
        command: &'a str,
    },
    /// Run `command` through the master.
    Run(&'a str),
    /// Ask the master for one more forward: the unix socket to `127.0.0.1:<port>`.
    Forward(&'a Path, u16),
}

/// The argv (without `ssh`) of `call` to node `t` through the master at `ctl`.
pub(crate) fn ssh_args(
    opts: &TransportOptions,
    t: &SshTarget,
    ctl: &Path,
    call: Call<'_>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![];
    let mut push = |s: &dyn AsRef<std::ffi::OsStr>| a.push(s.as_ref().to_owned());
    if let Some(cfg) = &opts.ssh_config {
        push(&"-F");
        push(cfg);
    }
    push(&"-S");
    push(&ctl);
    for o in [
        "BatchMode=yes",
        if opts.accept_new_host_keys {
            "StrictHostKeyChecking=accept-new"
        } else {
            "StrictHostKeyChecking=yes"
        },
        &format!("ConnectTimeout={}", opts.timeout.as_secs().max(1)),
        "ServerAliveInterval=15",
    ] {
        push(&"-o");
        push(&o);
    }
    // Port 22 is ssh's default: leave it to the ssh config (host aliases may set Port).
    if t.port != 22 {
        push(&"-p");
        push(&t.port.to_string());
    }
    if let Some(user) = &t.user {
        push(&"-l");
        push(user);
    }
    if let Some(key) = &t.identity_file {
        push(&"-o");
        push(&"IdentitiesOnly=yes");
        push(&"-i");
        push(key);
    }
    let forward = |sock: &Path, port: u16| {
        let mut f = OsString::from(sock);
        f.push(format!(":127.0.0.1:{port}"));
        f
    };
    let command = match call {
        Call::Master {
            persist_secs,
            log,
            forward: (sock, port),
            command,
        } => {
            push(&"-M");
            push(&"-T");
            push(&"-E");
            push(&log);
            push(&"-o");
            push(&format!("ControlPersist={persist_secs}s"));
            push(&"-o");
            push(&"ExitOnForwardFailure=yes");
            push(&"-L");
            push(&forward(sock, port));
            Some(command)
        }
        Call::Run(command) => {
            push(&"-T");
            push(&"-o");
            push(&"ControlMaster=no");
            Some(command)
        }
        Call::Forward(sock, port) => {
            push(&"-o");
            push(&"ControlMaster=no");
            push(&"-O");
            push(&"forward");
            push(&"-L");
            push(&forward(sock, port));
            None
        }
    };
    push(&"--");
    push(&t.host);
    if let Some(c) = command {
        push(&c);
    }
    a
}

/// `ssh` with [`ssh_args`], stdin closed and output captured (a caller
/// that feeds input pipes stdin itself); killed if dropped.
pub(crate) fn ssh_command(
    opts: &TransportOptions,
    t: &SshTarget,
    ctl: &Path,
    call: Call<'_>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(ssh_args(opts, t, ctl, call))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

pub(crate) fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_owned()
}

pub(crate) fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let out = lines[start..].join(" | ");
    if out.is_empty() {
        "no message".into()
    } else {
        out
    }
}

/// Turn ssh's failure into an error the user can act on.
pub(crate) fn classify_text(node: &str, t: &SshTarget, text: &str) -> TransportError {
    let host = if t.port == 22 {
        t.host.clone()
    } else {
        format!("[{}]:{}", t.host, t.port)
    };
    let node = node.to_owned();
    let lower = text.to_lowercase();
    if lower.contains("remote host identification has changed")
        || lower.contains("host key for") && lower.contains("has changed")
        || lower.contains("offending")
    {
        return TransportError::HostKeyChanged { node, host };
    }
    if lower.contains("host key verification failed")
        || lower.contains("no ") && lower.contains("host key is known")
    {
        return TransportError::UnknownHostKey { node, host };
    }
    if lower.contains("permission denied") || lower.contains("too many authentication failures") {
        return TransportError::AuthFailed {
            node,
            who: format!("{}@{host}", t.user.as_deref().unwrap_or("(default user)")),
            detail: first_line(text),
        };
    }
    for pat in [
        "connection refused",
        "no route to host",
        "could not resolve hostname",
        "name or service not known",
        "network is unreachable",
        "connection timed out",
        "operation timed out",
        "connection reset",
        "connection closed by",
        "kex_exchange_identification",
    ] {
        if lower.contains(pat) {
            return TransportError::Unreachable {
                node,
                host,
                detail: first_line(text),
            };
        }
    }
    TransportError::Ssh {
        node,
        detail: first_line(text),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            host: "10.0.0.5".into(),
            user: Some("ubuntu".into()),
            port: 2222,
            identity_file: Some(PathBuf::from("/keys/id")),
            agent_port: 32300,
        }
    }

    /// Every kind of ssh process gets the same base options: the ssh config
    /// of `RH_SSH_CONFIG`, the control socket, batch mode, strict host keys,
    /// the timeout, port, user and key (issue 9 item 14: the token read
    /// once went without `-F` and read the user's real `~/.ssh/config`).
    #[test]
    fn every_call_kind_gets_the_same_base_options() {
        let mut opts = crate::transport::options::test_options(7);
        opts.ssh_config = Some(PathBuf::from("/cfg/ssh_config"));
        let t = target();
        let ctl = Path::new("/ctl/0123456789abcdef");
        let sock = Path::new("/ctl/0123456789abcdef.p32300");
        let calls = [
            Call::Master {
                persist_secs: 300,
                log: Path::new("/ctl/log"),
                forward: (sock, 32300),
                command: "cat x",
            },
            Call::Run("cat ~/.rh/agent/token"),
            Call::Forward(sock, 32301),
        ];
        let base: Vec<&str> = vec![
            "-F",
            "/cfg/ssh_config",
            "-S",
            "/ctl/0123456789abcdef",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=7",
            "-o",
            "ServerAliveInterval=15",
            "-p",
            "2222",
            "-l",
            "ubuntu",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            "/keys/id",
        ];
        for call in calls {
            let args: Vec<String> = ssh_args(&opts, &t, ctl, call)
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert_eq!(&args[..base.len()], &base[..], "{call:?}: {args:?}");
            let host = args.iter().position(|a| a == "--").unwrap();
            assert_eq!(args[host + 1], "10.0.0.5", "{args:?}");
        }
        opts.accept_new_host_keys = true;
        opts.ssh_config = None;
        opts.timeout = Duration::from_secs(3);
        let args = ssh_args(&opts, &t, ctl, Call::Run("true"));
        assert!(args.iter().any(|a| a == "StrictHostKeyChecking=accept-new"));
        assert!(!args.iter().any(|a| a == "-F"));
    }

    #[test]
    fn the_master_forwards_the_agent_port_on_its_command_line() {
        let opts = crate::transport::options::test_options(7);
        let sock = Path::new("/ctl/x.p32300");
        let args: Vec<String> = ssh_args(
            &opts,
            &target(),
            Path::new("/ctl/x"),
            Call::Master {
                persist_secs: 30,
                log: Path::new("/ctl/x.log"),
                forward: (sock, 32300),
                command: "cat token",
            },
        )
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
        let l = args.iter().position(|a| a == "-L").unwrap();
        assert_eq!(args[l + 1], "/ctl/x.p32300:127.0.0.1:32300");
        assert!(args.iter().any(|a| a == "-M"));
        assert!(args.iter().any(|a| a == "ControlPersist=30s"));
        assert_eq!(args.last().unwrap(), "cat token");
    }

    #[test]
    fn ssh_messages_are_classified() {
        let t = target();
        let c = |s: &str| classify_text("n1", &t, s);
        assert!(matches!(
            c("@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\nHost key verification failed."),
            TransportError::HostKeyChanged { .. }
        ));
        assert!(matches!(
            c("No ED25519 host key is known for [10.0.0.5]:2222 and you have requested strict checking.\r\nHost key verification failed."),
            TransportError::UnknownHostKey { .. }
        ));
        assert!(matches!(
            c("ubuntu@10.0.0.5: Permission denied (publickey)."),
            TransportError::AuthFailed { .. }
        ));
        assert!(matches!(
            c("connect to host 10.0.0.5 port 2222: Connection refused"),
            TransportError::Unreachable { .. }
        ));
        let e = c("something else");
        assert!(matches!(e, TransportError::Ssh { .. }));
        let msg = c("No ED25519 host key is known for x").to_string();
        assert!(msg.contains("--accept-new-host-keys"), "{msg}");
    }
}
