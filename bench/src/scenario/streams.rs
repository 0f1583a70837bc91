//! Scenario 3: thousands of browsers waiting on SSE streams: memory per stream, webhook-to-event
//! latency, and what facepair keeps once they are gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::Suite;
use crate::db::{Seeded, settle};
use crate::load::{percentile, send_webhook};
use crate::report::Row;
use crate::server::Server;
use crate::usage::{metric, rss_kib};

/// Opens the streams on the seeded logins past those scenarios 1 and 2 use (`next_token` on).
pub async fn run(suite: &Suite, next_token: usize) -> anyhow::Result<Vec<Row>> {
    let args = &suite.args;
    let stream_base = next_token + 11_000;
    let streams = (args.streams).min(suite.seeded.login_ids.len().saturating_sub(stream_base));
    if streams == 0 {
        bail!(
            "--rows {} leaves no logins to open streams on after the webhooks and polls \
             took {stream_base}: raise --rows",
            args.rows
        );
    }
    settle(suite).await?;
    // a fresh process: memory freed by the earlier scenarios would otherwise be reused
    // by the streams and hide part of their cost
    let (fresh, _) = suite.start_server().await?;
    let result = waiting_clients(
        &fresh,
        &suite.seeded,
        stream_base,
        streams,
        args.stream_samples,
        args.opening,
    )
    .await?;
    drop(fresh);
    Ok(vec![
        Row {
            scenario: format!("3. memory per open SSE stream ({streams} open)"),
            facepair: format!(
                "{:.1} KiB 2 s after the last opened; {:.1} KiB once facepair has returned freed memory ({} s later)",
                result.kib_per_stream,
                result.kib_per_stream_settled,
                facepair::memory::EVERY.as_secs() + 1
            ),
            reference: "-".into(),
            ratio: "-".into(),
            target: "<= 8 KiB".into(),
        },
        Row {
            scenario: format!("3. webhook-to-event latency, {streams} open"),
            facepair: format!(
                "p50 {:.2} ms, p99 {:.2} ms ({} of {} events)",
                result.p50_ms, result.p99_ms, result.received, result.sent
            ),
            reference: "-".into(),
            ratio: "-".into(),
            target: "p99 <= 50 ms".into(),
        },
        Row {
            scenario: "3. RSS once every stream closed".into(),
            facepair: format!(
                "{:.1} MiB (before the first opened: {:.1} MiB; every stream closed {:.1} s after its client left; read {} s later)",
                result.idle_after_kib as f64 / 1024.0,
                result.idle_before_kib as f64 / 1024.0,
                result.all_closed_after.as_secs_f64(),
                AFTER_THE_WAVE.as_secs()
            ),
            reference: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
        },
    ])
}

/// How long after the last stream closed its RSS is read: facepair hands freed memory back to
/// the system periodically, after dropping the cached rows nobody read in a whole period.
const AFTER_THE_WAVE: Duration = Duration::from_secs(facepair::memory::EVERY.as_secs() * 2 + 1);

struct Waiting {
    kib_per_stream: f64,
    /// The same after facepair's next return of freed memory: what the streams hold, without
    /// what their opening freed and glibc had not yet handed back.
    kib_per_stream_settled: f64,
    /// RSS before the first stream opened and [`AFTER_THE_WAVE`] after the last one closed.
    idle_before_kib: u64,
    idle_after_kib: u64,
    /// From the last client leaving to facepair having closed every stream.
    all_closed_after: Duration,
    p50_ms: f64,
    p99_ms: f64,
    sent: usize,
    received: usize,
}

/// Opens `count` watch streams, measures facepair's RSS growth, then sends webhooks for a
/// sample of them and times each from send to the event arriving on its stream. Then closes
/// every stream and measures what facepair keeps once they are gone.
async fn waiting_clients(
    server: &Server,
    seeded: &Seeded,
    first: usize,
    count: usize,
    samples: usize,
    opening: usize,
) -> anyhow::Result<Waiting> {
    let before = rss_kib(server.pid)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    // desktops arrive over time: at most `opening` streams are being opened at once, so the
    // figure is what an open stream keeps, not the high-water mark of thousands of requests
    // queued for the database at the same instant (which glibc keeps mapped afterwards)
    let opening = Arc::new(tokio::sync::Semaphore::new(opening.max(1)));
    let mut streams = tokio::task::JoinSet::new();
    for k in 0..count {
        let token = seeded.watch_tokens[first + k].clone();
        let permit = opening.clone().acquire_owned().await?;
        let (client, url, arrived, opened) = (
            client.clone(),
            server.url.clone(),
            arrived_tx.clone(),
            opened.clone(),
        );
        streams.spawn(async move {
            let mut permit = Some(permit);
            let Ok(mut response) = client
                .get(format!("{url}/v1/watch/{token}/events"))
                .send()
                .await
            else {
                return;
            };
            let mut buffer = String::new();
            let mut announced = false;
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                if !announced && buffer.contains("event: login_created") {
                    announced = true;
                    opened.add_permits(1);
                    permit.take();
                }
                if buffer.contains("event: attempt_succeeded") {
                    let _ = arrived.send((k, Instant::now()));
                    return;
                }
            }
        });
    }
    let all_open =
        tokio::time::timeout(Duration::from_secs(120), opened.acquire_many(count as u32)).await;
    if all_open.is_err() {
        bail!("not every stream opened within 120 s");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server.pid)?;
    let kib_per_stream = after.saturating_sub(before) as f64 / count as f64;
    tokio::time::sleep(facepair::memory::EVERY + Duration::from_secs(1)).await;
    let settled = rss_kib(server.pid)?;
    let kib_per_stream_settled = settled.saturating_sub(before) as f64 / count as f64;

    let http = reqwest::Client::new();
    let mut sent_at = HashMap::new();
    let step = (count / samples.max(1)).max(1);
    for k in (0..count).step_by(step).take(samples) {
        let token = format!("bench-{}", first + k);
        sent_at.insert(k, Instant::now());
        send_webhook(&http, &server.url, &token).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while latencies.len() < sent_at.len() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), arrived_rx.recv()).await {
            Ok(Some((k, at))) => {
                if let Some(sent) = sent_at.get(&k) {
                    latencies.push(at - *sent);
                }
            }
            _ => continue,
        }
    }
    let received = latencies.len();
    latencies.sort();
    // every desktop goes away; facepair notices a gone client when a write to it fails, at
    // the latest on the second keep-alive comment after it left
    streams.shutdown().await;
    drop(client);
    let closed_at = Instant::now();
    loop {
        let open = metric(&http, &server.url, "facepair_sse_streams_open").await?;
        if open == 0.0 {
            break;
        }
        // a client's close is read at once; taking a keep-alive interval means facepair
        // waited for a write to fail instead
        if closed_at.elapsed() > facepair::http::sse::KEEP_ALIVE {
            bail!(
                "{open} streams still open {:?} after every client left",
                closed_at.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_closed_after = closed_at.elapsed();
    tokio::time::sleep(AFTER_THE_WAVE).await;
    let idle_after_kib = rss_kib(server.pid)?;
    Ok(Waiting {
        kib_per_stream,
        kib_per_stream_settled,
        idle_before_kib: before,
        idle_after_kib,
        all_closed_after,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        sent: sent_at.len(),
        received,
    })
}
