//! Scenario 2: status polls by 32 clients, plain and conditional (304), against
//! `pgbench -S` on the same PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use uuid::Uuid;

use super::Suite;
use crate::db::settle;
use crate::load::{Conn, Run, closed_loop, summarise};
use crate::pgbench::{pgbench, pgbench_init};
use crate::report::Row;
use crate::server::{API_KEY, Server};
use crate::usage::Cpu;

/// Polls the 10,000 seeded logins that follow the 1,000 after `next_token`, which the
/// webhooks of scenario 1 left pending.
pub async fn run(suite: &Suite, server: &Server, next_token: usize) -> anyhow::Result<Vec<Row>> {
    let (args, secs) = (&suite.args, suite.secs());
    let poll_ids = suite
        .seeded
        .login_ids
        .get(next_token + 1000..next_token + 11_000)
        .with_context(|| {
            format!(
                "--rows {} leaves fewer than 10,000 logins to poll after the webhooks \
                 took {next_token}: raise --rows",
                args.rows
            )
        })?;
    let poll_ids: Arc<Vec<Uuid>> = Arc::new(poll_ids.to_vec());
    pgbench_init(&args.pgbench, &suite.ref_url)?;
    // the rows the webhooks before left dead, and pgbench's tables, vacuumed and written out
    settle(suite).await?;
    let mut rows = Vec::new();
    for conditional in [false, true] {
        let mut rounds = Vec::new();
        for _ in 0..args.rounds.max(1) {
            // the CPU each request takes, from each party: steadier than the rate on a
            // shared machine, and all of it comes out of the same cores
            let before = Cpu::now(server.pid)?;
            let reference = pgbench(&args.pgbench, &suite.ref_url, &["-S"], 32, secs)?;
            let reference_cpu = Cpu::now(server.pid)?.each(before, reference * secs.as_secs_f64());
            let before = Cpu::now(server.pid)?;
            let run = polls(
                &suite.http,
                &server.url,
                poll_ids.clone(),
                conditional,
                32,
                secs,
            )
            .await?;
            let cpu = Cpu::now(server.pid)?.each(before, run.rate * secs.as_secs_f64());
            rounds.push((run.rate / reference, run, reference, (cpu, reference_cpu)));
        }
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        rows.push(row(conditional, &rounds));
    }
    Ok(rows)
}

/// facepair's rate over pgbench's, facepair's run, pgbench's rate, and the CPU each took.
type Round = (f64, Run, f64, (Cpu, Cpu));

/// The median round of `rounds`, sorted by ratio, and their spread.
fn row(conditional: bool, rounds: &[Round]) -> Row {
    let (ratio, run, reference, (cpu, reference_cpu)) = &rounds[rounds.len() / 2];
    Row {
        scenario: format!(
            "2. status polls{}, 32 clients",
            if conditional {
                " with If-None-Match (304)"
            } else {
                ""
            }
        ),
        facepair: format!(
            "{:.0}/s (p50 {:.2} ms, p99 {:.2} ms, {} errors; CPU each: facepair {:.1} us, load generator {:.1} us)",
            run.rate,
            run.p50_ms,
            run.p99_ms,
            run.errors,
            cpu.facepair * 1000.0,
            cpu.generator * 1000.0
        ),
        reference: format!(
            "{reference:.0}/s pgbench -S (CPU each: PostgreSQL {:.1} us, pgbench {:.1} us)",
            reference_cpu.postgres * 1000.0,
            reference_cpu.pgbench * 1000.0
        ),
        ratio: format!(
            "{ratio:.2}x median of {} rounds ({:.2}-{:.2})",
            rounds.len(),
            rounds[0].0,
            rounds[rounds.len() - 1].0
        ),
        target: ">= 1.5x".into(),
    }
}

async fn polls(
    http: &reqwest::Client,
    url: &str,
    ids: Arc<Vec<Uuid>>,
    conditional: bool,
    concurrency: usize,
    secs: Duration,
) -> anyhow::Result<Run> {
    let mut etags = HashMap::new();
    if conditional {
        for id in ids.iter() {
            let r = http
                .get(format!("{url}/v1/logins/{id}"))
                .bearer_auth(API_KEY)
                .send()
                .await?;
            let status = r.status();
            let etag = r
                .headers()
                .get("etag")
                .map(|e| e.to_str().map(str::to_owned));
            let etag = etag.transpose()?.with_context(|| {
                format!("GET /v1/logins/{id} answered {status} without an ETag")
            })?;
            etags.insert(*id, etag);
        }
    }
    // every request's parts made and checked once, before the clock starts: the load
    // generator's CPU is taken from facepair on a shared machine
    let authorization = http::HeaderValue::from_str(&format!("Bearer {API_KEY}"))?;
    let host = http::HeaderValue::from_str(url.trim_start_matches("http://"))?;
    let prepared = ids
        .iter()
        .map(|id| {
            let uri: http::Uri = format!("/v1/logins/{id}").parse()?;
            let etag = etags
                .get(id)
                .map(|e| http::HeaderValue::from_str(e))
                .transpose()?;
            Ok((uri, etag))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let prepared = Arc::new(prepared);
    let want = if conditional { 304 } else { 200 };
    let (latencies, errors, took, _) =
        closed_loop(url, concurrency, secs, 0, move |mut conn: Conn, i| {
            let (prepared, host, authorization) =
                (prepared.clone(), host.clone(), authorization.clone());
            async move {
                let (uri, etag) = &prepared[i % prepared.len()];
                let mut request = http::Request::new(Full::new(Bytes::new()));
                *request.uri_mut() = uri.clone();
                let headers = request.headers_mut();
                headers.insert(http::header::HOST, host);
                headers.insert(http::header::AUTHORIZATION, authorization);
                if let Some(etag) = etag {
                    headers.insert(http::header::IF_NONE_MATCH, etag.clone());
                }
                let ok = conn
                    .send(request)
                    .await
                    .is_some_and(|(status, _)| status == want);
                (conn, ok)
            }
        })
        .await?;
    Ok(summarise(latencies, errors, took))
}
