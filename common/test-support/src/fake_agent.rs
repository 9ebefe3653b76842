//! [`FakeAgent`]: a process on a loopback port that is NOT the agent, for
//! the tests that check what a client sends to whatever listens on the
//! agent port (the token must not go to a listener that cannot prove it
//! holds it). An axum server on its own thread and runtime, so sync tests
//! and `#[tokio::test]`s use it alike; it answers every request `200` with
//! a JSON body chosen by the test and records each request as text.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::oneshot;

/// How the fake answers a request, from its recorded text.
type Answer = Arc<dyn Fn(&str) -> String + Send + Sync>;

#[derive(Clone)]
struct Shared {
    answer: Answer,
    seen: Arc<Mutex<Vec<String>>>,
}

/// A fake agent on `127.0.0.1:port`; stops when dropped.
pub struct FakeAgent {
    pub port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAgent")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl FakeAgent {
    /// Answer every request with `body`.
    pub fn start(body: &str) -> FakeAgent {
        let body = body.to_owned();
        FakeAgent::answering(move |_| body.clone())
    }

    /// Answer each request with `answer(request text)` (see
    /// [`FakeAgent::requests`] for the text).
    pub fn answering(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> FakeAgent {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("the bound address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            answer: Arc::new(answer),
            seen: seen.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the fake agent");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                let app = Router::new().fallback(record).with_state(shared);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        FakeAgent {
            port,
            seen,
            stop: Some(stop),
        }
    }

    /// Every request received so far, as text: the request line
    /// (`GET /healthz?challenge=.. HTTP/1.1`), one `name: value` line per
    /// header, an empty line, then the body.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("the request log").clone()
    }

    /// Assert it was asked for a challenge and never sent the token: no
    /// `Authorization` header, no `token` text, no request but the challenge.
    #[track_caller]
    pub fn assert_challenged_only(&self, token: &str) {
        let seen = self.requests();
        assert!(!seen.is_empty(), "the fake agent was never asked");
        for req in &seen {
            assert!(
                req.starts_with("GET /healthz?challenge="),
                "a request other than the challenge reached the fake agent: {req}"
            );
            assert!(
                !req.to_ascii_lowercase().contains("authorization"),
                "an Authorization header reached the fake agent: {req}"
            );
            assert!(
                !req.contains(token),
                "the token reached the fake agent: {req}"
            );
        }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The one handler: record the request, answer `200` with the test's body.
async fn record(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let mut text = format!("{} {target} {:?}\r\n", parts.method, parts.version);
    for (name, value) in &parts.headers {
        text.push_str(&format!(
            "{name}: {}\r\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text.push_str("\r\n");
    let body = to_bytes(body, 16 << 20).await.unwrap_or_default();
    text.push_str(&String::from_utf8_lossy(&body));
    let out = (shared.answer)(&text);
    shared.seen.lock().expect("the request log").push(text);
    ([(CONTENT_TYPE, "application/json")], Body::from(out)).into_response()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn it_answers_and_records_line_headers_and_body() {
        let fake = FakeAgent::answering(|req| {
            if req.starts_with("POST /x?q=1 ") {
                r#"{"ok":true}"#.into()
            } else {
                "{}".into()
            }
        });
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, fake.port)).unwrap();
        s.write_all(
            b"POST /x?q=1 HTTP/1.1\r\nHost: h\r\nX-Probe: yes\r\nContent-Length: 5\r\n\
              Connection: close\r\n\r\nhello",
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with(r#"{"ok":true}"#), "{answer}");
        let seen = fake.requests();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].starts_with("POST /x?q=1 HTTP/1.1\r\n"), "{seen:?}");
        assert!(seen[0].contains("x-probe: yes\r\n"), "{seen:?}");
        assert!(seen[0].ends_with("\r\n\r\nhello"), "{seen:?}");
    }
}
