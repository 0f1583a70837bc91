//! Scenario 6: outbound events. Webhook ingest on a facepair with one event endpoint (a
//! receiver in this process that answers 204 at once) beside the same facepair without one,
//! and how fast the pushes reach the receiver.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::Suite;
use super::ingest::webhooks;
use crate::db::settle;
use crate::report::Row;
use crate::server::Server;

const CONCURRENCY: usize = 8;

pub async fn run(
    suite: &Suite,
    server: &Server,
    next_token: &mut usize,
) -> anyhow::Result<Vec<Row>> {
    let secs = suite.secs();
    // first without an endpoint, before one exists
    settle(suite).await?;
    let without = webhooks(&server.url, next_token, CONCURRENCY, secs).await?;
    let (url, received) = receiver().await?;
    let pushing = suite
        .start_server_with(&[
            ("FACEPAIR_EVENT_ENDPOINTS", url.clone()),
            (
                "FACEPAIR_EVENT_SECRETS",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            ),
            ("FACEPAIR_EVENT_ALLOW_PRIVATE_HTTP", "true".into()),
            ("FACEPAIR_EVENT_POLL_INTERVAL_MS", "50".into()),
        ])
        .await?
        .0;
    settle(suite).await?;
    let started = Instant::now();
    let before = received.load(Ordering::Relaxed);
    let with = webhooks(&pushing.url, next_token, CONCURRENCY, secs).await?;
    let during = received.load(Ordering::Relaxed) - before;
    let expected = (with.rate * secs.as_secs_f64()).round() as u64;
    // the pushes still queued when ingest stopped drain, up to a minute
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) - before < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pushed = received.load(Ordering::Relaxed) - before;
    let took = started.elapsed().as_secs_f64();
    drop(pushing);
    Ok(vec![
        Row {
            scenario: format!(
                "6. webhook ingest with one event endpoint, concurrency {CONCURRENCY}"
            ),
            facepair: format!(
                "{:.0}/s (p50 {:.2} ms, p99 {:.2} ms, {} errors; {:.0} pushes/s during it)",
                with.rate,
                with.p50_ms,
                with.p99_ms,
                with.errors,
                during as f64 / secs.as_secs_f64()
            ),
            reference: format!(
                "{:.0}/s without an endpoint (p50 {:.2} ms, p99 {:.2} ms)",
                without.rate, without.p50_ms, without.p99_ms
            ),
            ratio: format!("{:.2}x", with.rate / without.rate),
            target: "no target".into(),
        },
        Row {
            scenario: "6. outbound delivery rate, one endpoint answering at once".into(),
            facepair: format!(
                "{:.0}/s ({pushed} of {expected} events pushed {took:.1} s after ingest began)",
                pushed as f64 / took
            ),
            reference: "-".into(),
            ratio: "-".into(),
            target: "no target".into(),
        },
    ])
}

/// An HTTP/1.1 receiver on loopback that answers every request 204 at once and counts them.
async fn receiver() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(answer(socket, counted.clone()));
        }
    });
    Ok((url, count))
}

async fn answer(mut socket: tokio::net::TcpStream, count: Arc<AtomicU64>) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // one whole request (headers and Content-Length bytes of body) at the front of buf
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + length {
                break;
            }
            buf.drain(..end + 4 + length);
            count.fetch_add(1, Ordering::Relaxed);
            if socket
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
