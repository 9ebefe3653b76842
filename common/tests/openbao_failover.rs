//! The one OpenBao client against fake store nodes on loopback (raw TCP,
//! one scripted answer per request): which answers move a call to the
//! next node, that a write which timed out is sent nowhere else unless the
//! options say so, and that rounds are repeated while a node answers "try
//! another" (an election).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::openbao::{Call, Client, Error, Method, Options, Retry, Start, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a fake node answers to its `n`-th request (0-based): a status and
/// a body, or `None` to hold the connection without answering.
type Script = fn(u32) -> Option<(u16, &'static str)>;

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
                read_request(&mut stream).await;
                let n = counted.fetch_add(1, Ordering::SeqCst);
                match script(n) {
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

/// Read one request: its head, then a body of its `Content-Length`.
async fn read_request(stream: &mut tokio::net::TcpStream) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
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
                return;
            }
        }
    }
}

fn options(resend_timed_out_writes: bool, retry: Retry) -> Options {
    Options {
        user_agent: "test",
        connect_timeout: Duration::from_secs(3),
        failover_connect_timeout: None,
        request_timeout: Duration::from_millis(500),
        idle_timeout: None,
        body_cap: 1 << 20,
        start: Start::First,
        writes_to_active: false,
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
    let sealed = node(|_| Some((503, r#"{"errors":["Vault is sealed"]}"#))).await;
    let good = node(|_| OK).await;
    let c = client(&[&sealed, &good], options(true, Retry::NONE));
    let answer = c.send(&Call::new("read", Method::GET, "x")).await.unwrap();
    assert_eq!(
        (answer.url.as_str(), answer.status),
        (good.url.as_str(), StatusCode::OK)
    );
    assert_eq!((sealed.hits(), good.hits()), (1, 1));

    // The server's own failure is its answer: the next node (which would
    // forward it to the same active node) is not asked.
    let failing = node(|_| Some((500, r#"{"errors":["storage failure"]}"#))).await;
    let good = node(|_| OK).await;
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
    let hung = node(|_| None).await;
    let good = node(|_| OK).await;
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

    let hung = node(|_| None).await;
    let good = node(|_| OK).await;
    let c = client(&[&hung, &good], options(true, Retry::NONE));
    let answer = c.send(&write).await.unwrap();
    assert_eq!((answer.url.as_str(), good.hits()), (good.url.as_str(), 1));
}

#[tokio::test]
async fn rounds_are_repeated_while_a_node_answers_try_another() {
    fn electing(n: u32) -> Option<(u16, &'static str)> {
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
