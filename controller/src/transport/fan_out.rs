//! Running work on every node of a cluster: [`for_each_node`] is the
//! bounded parallel map (at most `--parallel` at once, results in the order
//! of the nodes, a progress bar on stderr when it is a terminal), and
//! [`fan_out`] is that map over a connection to each node's agent, with one
//! retry when connecting fails at the connection level. Never sees a value:
//! jobs carry their own requests.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{connect, http_client, AgentConn, TransportError, TransportOptions};
use crate::clusters::Node;

/// The outcome of a job on one node.
#[derive(Debug)]
pub struct NodeOutcome<T> {
    pub node: Node,
    pub result: Result<T, TransportError>,
}

/// Run `job` on every node: at most `opts.parallel` at once, a progress bar
/// on stderr when `opts.progress`. Results come back in the order of `nodes`;
/// a job that panics is that node's error, not the others'.
pub async fn for_each_node<T, F, Fut>(
    nodes: &[Node],
    opts: &TransportOptions,
    label: &str,
    job: F,
) -> Vec<NodeOutcome<T>>
where
    T: Send + 'static,
    F: Fn(Node) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TransportError>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let job = Arc::new(job);
    let bar = opts.progress.then(|| {
        let bar = indicatif::ProgressBar::new(nodes.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} nodes {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_owned());
        bar
    });
    let mut tasks = Vec::with_capacity(nodes.len());
    for node in nodes.iter().cloned() {
        let (limit, job, bar) = (limit.clone(), job.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let result = job(node.clone()).await;
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            NodeOutcome { node, result }
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for (task, node) in tasks.into_iter().zip(nodes) {
        out.push(task.await.unwrap_or_else(|e| NodeOutcome {
            node: node.clone(),
            result: Err(TransportError::Http {
                node: node.name.clone(),
                detail: format!("internal error: {e}"),
            }),
        }));
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    out
}

/// [`for_each_node`] over a connection to each node's agent: the connection
/// is retried once on a connection error, and closed when `job` is done.
pub async fn fan_out<T, F, Fut>(
    nodes: &[Node],
    opts: &TransportOptions,
    label: &str,
    job: F,
) -> Vec<NodeOutcome<T>>
where
    T: Send + 'static,
    F: Fn(Arc<AgentConn>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TransportError>> + Send + 'static,
{
    let http = http_client(opts.timeout);
    let job = Arc::new(job);
    let shared = Arc::new(opts.clone());
    for_each_node(nodes, opts, label, move |node| {
        let (http, job, opts) = (http.clone(), job.clone(), shared.clone());
        async move { run_on_node(&node, &opts, &http, job.as_ref()).await }
    })
    .await
}

/// Slack on top of `--timeout` for the connect phase (starting ssh, the
/// forward, reading the token), so a healthy but slow node is not cut off.
const CONNECT_MARGIN: Duration = Duration::from_secs(1);

async fn run_on_node<T, F, Fut>(
    node: &Node,
    opts: &TransportOptions,
    http: &reqwest::Client,
    job: &F,
) -> Result<T, TransportError>
where
    F: Fn(Arc<AgentConn>) -> Fut,
    Fut: Future<Output = Result<T, TransportError>>,
{
    let started = Instant::now();
    // One budget for the whole connect phase (a stale kept master, a new
    // master, the retry): an unreachable node is reported after about
    // `--timeout`, not after a multiple of it.
    let deadline = started + opts.timeout + CONNECT_MARGIN;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let connected = match tokio::time::timeout(remaining, connect(node, opts, http)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::connect_timeout(&node.name, opts.timeout)),
        };
        let conn = match connected {
            Ok(c) => Arc::new(c),
            Err(e) if attempt == 1 && e.is_retryable() && Instant::now() < deadline => {
                tracing::info!(node = %node.name, error = %e, "connection failed; retrying once");
                continue;
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(node = %node.name, ms = started.elapsed().as_millis() as u64, "connected");
        let result = job(conn.clone()).await;
        if let Ok(conn) = Arc::try_unwrap(conn) {
            conn.close().await;
        }
        tracing::debug!(node = %node.name, ms = started.elapsed().as_millis() as u64, "done");
        // No retry once a request went out: it may have reached the agent.
        return result;
    }
}
