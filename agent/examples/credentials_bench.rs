//! Benchmark of the session-secret routes of the agent binary on loopback
//! (used by scripts/bench.d/25-credentials.sh): `GET
//! /v1/credentials/aws/NAME` latency at 64 concurrent clients (p50/p99,
//! each client on its own kept-alive connection, as botocore's container
//! provider keeps one), and `agent credentials aws` per call (the
//! `credential_process` helper: a process start and one request). Bounded:
//! a fixed number of requests, a temp home, loopback only; the credential
//! is a fake one made here.
//!
//!   credentials_bench AGENT_BINARY
#![allow(missing_debug_implementations)]

use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

mod common;
use common::{bench_args, cpu_ms, percentile, start_agent, sync};

const CLIENTS: usize = 64;
const PER_CLIENT: usize = 300;
const HELPER_CALLS: usize = 200;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (bin, home, state) = bench_args("credentials_bench");
    let (mut child, base, token) = start_agent(&bin, home.path(), None);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = json!({"items": [{
        "secret": {"name": "bench", "provider": "aws"},
        "session": {"minted": {"kind": "aws",
            "credential": {"access_key_id": "ASIABENCHBENCHBENCH", "secret_access_key": "bench-secret-access-key-0123456789abcdef",
                           "session_token": "x".repeat(900)},
            "expires_at": now + 3600, "minted_at": now, "source": "bench"},
            "env": "base_env"}}]});
    let client = reqwest::Client::new();
    sync(&client, &base, &token, &body).await;
    let env_token = std::fs::read_to_string(state.join("credentials/tokens/base_env")).unwrap();
    let url = format!("{base}/v1/credentials/aws/bench");

    // 1. 64 concurrent clients, each on its own connection.
    let cpu0 = cpu_ms(child.id());
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..CLIENTS {
        let (url, env_token) = (url.clone(), env_token.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut times = Vec::with_capacity(PER_CLIENT);
            for _ in 0..PER_CLIENT {
                let t = Instant::now();
                let r = c
                    .get(&url)
                    .header("authorization", &env_token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let _ = r.bytes().await.unwrap();
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            times
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu_us = (cpu_ms(child.id()) - cpu0) * 1000.0 / all.len() as f64;
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "GET /v1/credentials/aws/NAME, {CLIENTS} concurrent clients, {} requests: p50 {:.3} ms, p99 {:.3} ms, {:.0} req/s, agent CPU {:.0} us per request  [target p99 <= 1 ms]",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.len() as f64 / wall,
        cpu_us
    );

    // 2. the credential_process helper, one call after the other.
    let mut calls = vec![];
    for _ in 0..HELPER_CALLS {
        let t = Instant::now();
        let out = Command::new(&bin)
            .args(["credentials", "aws", "--secret", "bench", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        calls.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    calls.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "agent credentials aws, {HELPER_CALLS} calls: p50 {:.2} ms, p99 {:.2} ms  [target <= 10 ms]",
        percentile(&calls, 0.5),
        percentile(&calls, 0.99)
    );
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}
