//! The store client against hostile or careless servers, without OpenBao: a
//! raw TCP server on 127.0.0.1:0 answers every request with an oversized
//! body (declared, or close-delimited), an endless chunked stream, or an
//! error text full of terminal control sequences; `openssl s_server` serves
//! self-signed CA certificates (trusted when pinned, refused otherwise). The real `controller` binary runs under a
//! 1 GiB address-space limit, so an unbounded read dies instead of passing.
//! Also: plain `http://` to a host that is not loopback is refused before
//! any connection unless the user opts in.

mod vault_common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use vault_common::{Home, Run, ROOT_TOKEN};

/// How the fake store answers.
#[derive(Clone, Copy)]
enum Answer {
    /// `Content-Length: 1 GiB`, then bytes until the client hangs up.
    DeclaredHuge,
    /// No length, no chunking: 40 MiB of JSON-ish bytes, then close.
    CloseDelimited,
    /// `Transfer-Encoding: chunked`, 64 KiB chunks forever.
    EndlessChunked,
    /// 403 with an error text carrying escape sequences.
    HostileError,
}

/// Serve `answer` to every connection; returns the base URL.
fn fake_store(answer: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve_one(stream, answer);
            });
        }
    });
    url
}

fn serve_one(mut stream: TcpStream, answer: Answer) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let filler = vec![b'a'; 64 << 10];
    match answer {
        Answer::DeclaredHuge => {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n",
            )?;
            loop {
                stream.write_all(&filler)?;
            }
        }
        Answer::CloseDelimited => {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            )?;
            for _ in 0..640 {
                stream.write_all(&filler)?;
            }
            Ok(())
        }
        Answer::EndlessChunked => {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            )?;
            loop {
                stream.write_all(format!("{:x}\r\n", filler.len()).as_bytes())?;
                stream.write_all(&filler)?;
                stream.write_all(b"\r\n")?;
            }
        }
        Answer::HostileError => {
            let body =
                "{\"errors\":[\"denied\\u001b[2J\\u001b]0;pwned\\u0007\\r\\nerror: fake line\"]}";
            stream.write_all(
                format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
        }
    }
}

/// Run the controller under a 1 GiB address-space limit (`ulimit -v`).
fn run_limited(home: &Home, args: &[&str]) -> Run {
    let bin = env!("CARGO_BIN_EXE_controller");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
        .arg(bin)
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("USER", "alice")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    for (k, v) in &home.env {
        cmd.env(k, v);
    }
    let what = format!("controller {}", args.join(" "));
    let run = test_support::run(cmd, Duration::from_secs(600), &what, None).finished();
    assert!(
        !run.stderr.contains(ROOT_TOKEN) && !run.stdout.contains(ROOT_TOKEN),
        "{run:?}"
    );
    run
}

fn home_at(url: &str) -> Home {
    let mut home = Home::new("alice");
    home.set_env("VAULT_ADDR", url);
    home.set_env("VAULT_TOKEN", ROOT_TOKEN);
    home
}

#[test]
fn oversized_and_endless_answers_fail_with_a_clear_error() {
    for answer in [
        Answer::DeclaredHuge,
        Answer::CloseDelimited,
        Answer::EndlessChunked,
    ] {
        let url = fake_store(answer);
        let home = home_at(&url);
        for args in [&["vault", "list"][..], &["vault", "pull", "x"][..]] {
            let run = run_limited(&home, args);
            assert_eq!(run.code, 1, "{args:?}: {run:?}");
            assert!(
                run.stderr
                    .contains(&format!("store answer from {url} exceeds 33554432 bytes")),
                "{args:?}: {run:?}"
            );
        }
    }
}

#[test]
fn login_against_an_endless_health_answer_ends_with_no_server_ready() {
    let url = fake_store(Answer::EndlessChunked);
    let home = home_at(&url);
    let run = run_limited(&home, &["login"]);
    assert_eq!(run.code, 1, "{run:?}");
    run.stderr_has("no server of the remote store is ready");
    run.stderr_has("exceeds 65536 bytes");
    assert!(!home.file(".rh/config").exists());
}

#[test]
fn store_error_text_is_escaped_before_the_terminal() {
    let url = fake_store(Answer::HostileError);
    let home = home_at(&url);
    let run = home.run(&["vault", "list"]);
    assert_eq!(run.code, 1, "{run:?}");
    run.stderr_has("HTTP 500");
    assert!(!run.stderr.contains('\u{1b}'), "{run:?}");
    assert!(!run.stderr.contains('\u{7}'), "{run:?}");
    assert!(!run.stderr.contains('\r'), "{run:?}");
    assert!(!run.stderr.contains("\nerror: fake line"), "{run:?}");
    run.stderr_has("denied\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{d}\\u{a}error: fake line");
}

#[test]
fn plain_http_off_this_machine_needs_an_opt_in() {
    // A listener on a non-loopback address of this machine is not needed:
    // the refusal comes before any connection (10.255.255.1 is never dialled).
    let url = "http://10.255.255.1:8200";
    let mut home = home_at(url);
    let run = home.run(&["vault", "list"]);
    assert_eq!(run.code, 1, "{run:?}");
    run.stderr_has(&format!(
        "refusing to send the store token in cleartext to {url}"
    ));
    run.stderr_has("RH_VAULT_ALLOW_HTTP=1");
    assert!(!run.stderr.contains("cannot connect"), "{run:?}");
    // Loopback by name and by address stays allowed: the request is made.
    for loopback in [
        fake_store(Answer::HostileError),
        "http://localhost:9".into(),
    ] {
        let run = home_at(&loopback).run(&["vault", "list"]);
        assert!(!run.stderr.contains("refusing"), "{run:?}");
    }
    // Opted in: a warning, then the request is tried.
    home.set_env("RH_VAULT_ALLOW_HTTP", "1");
    let run = home.run(&["vault", "list"]);
    assert!(!run.stderr.contains("refusing"), "{run:?}");
    run.stderr_has(&format!(
        "warning: the store token goes to {url} in cleartext"
    ));
    // The opt-in may also live in the config file.
    home.env.retain(|(k, _)| k != "RH_VAULT_ALLOW_HTTP");
    std::fs::create_dir_all(home.file(".rh")).unwrap();
    std::fs::write(
        home.file(".rh/config"),
        r#"{"vault": {"urls": [], "allow_insecure_http": true}}"#,
    )
    .unwrap();
    let run = home.run(&["vault", "list"]);
    assert!(!run.stderr.contains("refusing"), "{run:?}");
    run.stderr_has("in cleartext");
}

#[test]
fn a_self_signed_store_certificate_is_trusted_when_it_is_the_pinned_one() {
    use test_support::{self_signed_cert, TlsServer, Validity};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // openssl's self-signed certificate (basicConstraints CA:TRUE), pinned
    // with VAULT_CACERT as the `bao` CLI takes it.
    let (cert, key) = self_signed_cert(d, "store", "127.0.0.1", Validity::Current);
    let list = r#"{"data":{"keys":["aws","openai"]}}"#;
    let server = TlsServer::start(
        &d.join("s1"),
        &cert,
        &key,
        &[("v1/secret/metadata/rh/alice?list=true", list)],
    );
    let url = server.url();
    let mut home = home_at(&url);
    home.set_env("VAULT_CACERT", &cert.display().to_string());
    let run = home.run(&["vault", "list", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("\"openai\""), "{run:?}");

    // Another self-signed certificate pinned, an expired one, one for
    // another name: refused, and said to be a certificate problem.
    let (_servers, refused) = test_support::refused_pins(d, &server);
    for pin in &refused {
        let (url, pinned, problem) = (&pin.url, &pin.pinned, pin.problem);
        let mut home = home_at(url);
        home.set_env("VAULT_CACERT", &pinned.display().to_string());
        let run = home.run(&["vault", "list"]);
        assert_eq!(run.code, 1, "{run:?}");
        run.stderr_has(&format!(
            "TLS handshake with {url} failed (CA file {}): the server's TLS certificate \
                 was refused",
            pinned.display()
        ));
        assert!(run.stderr.contains(problem), "{problem}: {run:?}");
        assert!(!run.stderr.contains("cannot connect"), "{run:?}");
        if problem == "CaUsedAsEndEntity" {
            run.stderr_has("not one of the pinned certificates: a pinned certificate");
        }
    }
}
