//! Scenario 4: login creation, one at a time, against the iDenfy simulator.

use std::time::Instant;

use anyhow::bail;
use serde_json::json;

use super::Suite;
use crate::load::percentile;
use crate::report::Row;
use crate::server::{API_KEY, SIM_KEY, SIM_SECRET, Server};

/// facepair's own time: a creation's whole time less the simulator's answering the same calls.
pub async fn run(suite: &Suite, server: &Server) -> anyhow::Result<Vec<Row>> {
    let create = creates(&suite.http, &server.url, &suite.sim_url, suite.args.creates).await?;
    Ok(vec![Row {
        scenario: "4. login creation: facepair's own time".into(),
        facepair: format!(
            "p50 {:.2} ms, p99 {:.2} ms",
            create.own_p50_ms, create.own_p99_ms
        ),
        reference: format!(
            "simulator alone p50 {:.2} ms, p99 {:.2} ms",
            create.sim_p50_ms, create.sim_p99_ms
        ),
        ratio: format!(
            "total p50 {:.2} ms, p99 {:.2} ms",
            create.total_p50_ms, create.total_p99_ms
        ),
        target: "own p99 <= 5 ms".into(),
    }])
}

struct Creation {
    total_p50_ms: f64,
    total_p99_ms: f64,
    sim_p50_ms: f64,
    sim_p99_ms: f64,
    own_p50_ms: f64,
    own_p99_ms: f64,
}

/// Creates logins one at a time, and separately times the simulator answering the same two
/// iDenfy calls facepair makes; facepair's own time is the difference.
async fn creates(
    http: &reqwest::Client,
    url: &str,
    sim_url: &str,
    count: usize,
) -> anyhow::Result<Creation> {
    let mut total = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        let r = http
            .post(format!("{url}/v1/logins"))
            .bearer_auth(API_KEY)
            .json(&json!({ "scan_ref": format!("bench-person-{i}") }))
            .send()
            .await?;
        if r.status() != 201 {
            bail!("create answered {}: {}", r.status(), r.text().await?);
        }
        r.bytes().await?;
        total.push(t.elapsed());
    }
    let mut sim = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        http.get(format!(
            "{sim_url}/identification/facial-auth/bench-person/check-status/?method=FACE_MATCHING"
        ))
        .basic_auth(SIM_KEY, Some(SIM_SECRET))
        .send()
        .await?
        .bytes()
        .await?;
        http.post(format!("{sim_url}/partner/authentication-info"))
            .basic_auth(SIM_KEY, Some(SIM_SECRET))
            .json(&json!({ "scanRef": "bench-person", "type": "AUTHENTICATION", "method": "FACE_MATCHING", "generateDigitString": true, "lifetime": 600 }))
            .send()
            .await?
            .bytes()
            .await?;
        sim.push(t.elapsed());
    }
    total.sort();
    sim.sort();
    let (t50, t99, s50, s99) = (
        percentile(&total, 0.5),
        percentile(&total, 0.99),
        percentile(&sim, 0.5),
        percentile(&sim, 0.99),
    );
    Ok(Creation {
        total_p50_ms: t50,
        total_p99_ms: t99,
        sim_p50_ms: s50,
        sim_p99_ms: s99,
        own_p50_ms: t50 - s50,
        own_p99_ms: t99 - s99,
    })
}
