//! The one OpenBao client against fake store nodes on loopback (raw TCP,
//! one scripted answer per request): which answers move a call to the
//! next node, that a write which timed out is sent nowhere else unless the
//! options say so, and that rounds are repeated while a node answers "try
//! another" (an election).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::openbao::{Call, Client, Error, Method, Options, Retry, Start, StatusCode, ToActive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a fake node answers to its `n`-th request (0-based) for a path
/// (`/v1/sys/health`): a status and a body, or `None` to hold the
/// connection without answering.
type Script = fn(u32, &str) -> Option<(u16, &'static str)>;

struct Node {
    url: String,
    hits: Arc<AtomicU32>,
}

impl Node {
    fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn node(script: Script) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicU32::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let counted = counted.clone();
            tokio::spawn(async move {
                let path = read_request(&mut stream).await;
                let n = counted.fetch_add(1, Ordering::SeqCst);
                match script(n, &path) {
                    Some((status, body)) => {
                        let head = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(body.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    Node { url, hits }
}

/// Read one request: its head, then a body of its `Content-Length`; its
/// path.
async fn read_request(stream: &mut tokio::net::TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut buf).await else {
            return String::new();
        };
        if n == 0 {
            return String::new();
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let line = text.lines().next().unwrap_or_default();
                return line.split(' ').nth(1).unwrap_or_default().to_owned();
            }
        }
    }
}

fn options(resend_timed_out_writes: bool, retry: Retry) -> Options {
    routed(ToActive::Never, resend_timed_out_writes, retry)
}

fn routed(to_active: ToActive, resend_timed_out_writes: bool, retry: Retry) -> Options {
    Options {
        user_agent: "test",
        connect_timeout: Duration::from_secs(3),
        failover_connect_timeout: None,
        request_timeout: Duration::from_millis(500),
        idle_timeout: None,
        body_cap: 1 << 20,
        start: Start::First,
        to_active,
        resend_timed_out_writes,
        retry,
    }
}

fn client(nodes: &[&Node], options: Options) -> Client {
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    Client::new(&urls, None, options).unwrap()
}

const OK: Option<(u16, &str)> = Some((200, r#"{"data":{}}"#));

#[tokio::test]
async fn an_answer_of_the_list_moves_on_and_a_store_failure_is_reported_as_it_is() {
    let sealed = node(|_, _| Some((503, r#"{"errors":["Vault is sealed"]}"#))).await;
    let good = node(|_, _| OK).await;
    let c = client(&[&sealed, &good], options(true, Retry::NONE));
    let answer = c.send(&Call::new("read", Method::GET, "x")).await.unwrap();
    assert_eq!(
        (answer.url.as_str(), answer.status),
        (good.url.as_str(), StatusCode::OK)
    );
    assert_eq!((sealed.hits(), good.hits()), (1, 1));

    // The server's own failure is its answer: the next node (which would
    // forward it to the same active node) is not asked.
    let failing = node(|_, _| Some((500, r#"{"errors":["storage failure"]}"#))).await;
    let good = node(|_, _| OK).await;
    let c = client(&[&failing, &good], options(true, Retry::NONE));
    let answer = c.send(&Call::new("read", Method::GET, "x")).await.unwrap();
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer.fail("read x").to_string(),
        format!("read x: HTTP 500 from {}: storage failure", failing.url)
    );
    assert_eq!(good.hits(), 0);
}

#[tokio::test]
async fn a_write_that_timed_out_is_not_resent_unless_the_options_say_so() {
    let hung = node(|_, _| None).await;
    let good = node(|_, _| OK).await;
    let c = client(&[&hung, &good], options(false, Retry::NONE));
    let write = Call::new("write", Method::POST, "x").body(b"{}");
    match c.send(&write).await {
        Err(Error::Unreachable { tried, busy, .. }) => assert_eq!((tried, busy), (1, false)),
        other => panic!("{other:?}"),
    }
    assert_eq!(good.hits(), 0, "a timed-out write was resent");
    // A read that timed out is asked of the next node.
    let answer = c.send(&Call::new("read", Method::GET, "x")).await.unwrap();
    assert_eq!(answer.url, good.url);

    let hung = node(|_, _| None).await;
    let good = node(|_, _| OK).await;
    let c = client(&[&hung, &good], options(true, Retry::NONE));
    let answer = c.send(&write).await.unwrap();
    assert_eq!((answer.url.as_str(), good.hits()), (good.url.as_str(), 1));
}

#[tokio::test]
async fn rounds_are_repeated_while_a_node_answers_try_another() {
    fn electing(n: u32, _: &str) -> Option<(u16, &'static str)> {
        if n < 2 {
            Some((
                500,
                r#"{"errors":["local node not active but active cluster node not found"]}"#,
            ))
        } else {
            OK
        }
    }
    let retry = Retry {
        tries: 5,
        budget: Duration::from_secs(30),
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
    };
    let store = node(electing).await;
    let c = client(&[&store], options(true, retry));
    let answer = c.send(&Call::new("read", Method::GET, "x")).await.unwrap();
    assert_eq!((answer.status, store.hits()), (StatusCode::OK, 3));

    // Without a retry: one round, "busy" (worth a retry by the caller).
    let store = node(electing).await;
    let c = client(&[&store], options(true, Retry::NONE));
    match c.send(&Call::new("read", Method::GET, "x")).await {
        Err(Error::Unreachable {
            tried: 1,
            busy: true,
            details,
            ..
        }) => {
            assert!(
                details.contains("HTTP 500: local node not active"),
                "{details}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.hits(), 1);
}

/// A standby of a store with standby reads (OpenBao's default): `sys/health`
/// 429, and it answers reads itself from its own copy.
fn standby(_: u32, path: &str) -> Option<(u16, &'static str)> {
    if path == "/v1/sys/health" {
        Some((429, r#"{"initialized":true,"sealed":false,"standby":true}"#))
    } else {
        Some((200, r#"{"data":{"from":"standby"}}"#))
    }
}

fn active(_: u32, path: &str) -> Option<(u16, &'static str)> {
    if path == "/v1/sys/health" {
        Some((
            200,
            r#"{"initialized":true,"sealed":false,"standby":false}"#,
        ))
    } else {
        Some((200, r#"{"data":{"from":"active"}}"#))
    }
}

#[tokio::test]
async fn calls_go_to_the_active_node_as_the_options_say_and_the_active_node_is_asked_once() {
    let read = Call::new("read", Method::GET, "secret/data/x");
    let write = Call::new("write", Method::POST, "secret/data/x").body(b"{}");
    for (to_active, read_from, write_from) in [
        (ToActive::Never, "standby", "standby"),
        (ToActive::Writes, "standby", "active"),
        (ToActive::All, "active", "active"),
    ] {
        // The standby first: where a call starts without routing.
        let (s, a) = (node(standby).await, node(active).await);
        let c = client(&[&s, &a], routed(to_active, true, Retry::NONE));
        for _ in 0..2 {
            for (call, want) in [(&read, read_from), (&write, write_from)] {
                let answer = c.send(call).await.unwrap();
                let from = answer.json("read").unwrap()["data"]["from"].clone();
                assert_eq!(from, want, "{to_active:?}: {} answered by", call.op);
            }
        }
        // Two of each call; the active node found with one probe of each
        // node at most, then remembered.
        let probes = match to_active {
            ToActive::Never => (0, 0),
            _ => (1, 1),
        };
        let calls = |from: &str| {
            [read_from, read_from, write_from, write_from]
                .iter()
                .filter(|f| **f == from)
                .count() as u32
        };
        assert_eq!(
            (s.hits(), a.hits()),
            (calls("standby") + probes.0, calls("active") + probes.1),
            "{to_active:?}: requests to the standby and to the active node"
        );
    }
}
