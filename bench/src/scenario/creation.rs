//! Scenario 4: login creation, one at a time, against the iDenfy simulator; its statements and
//! PostgreSQL CPU against pgbench running the least SQL that does the same durable work
//! (`bench/creation-minimal.sql`).

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use super::Suite;
use crate::db::{settle, vacuum};
use crate::load::percentile;
use crate::pgbench::pgbench;
use crate::report::Row;
use crate::server::{API_KEY, SIGNING_KEY, SIM_KEY, SIM_SECRET, Server};
use crate::usage::Usage;

/// facepair's own time: a creation's whole time less the simulator's answering the same calls.
pub async fn run(suite: &Suite, server: &Server) -> anyhow::Result<Vec<Row>> {
    let (admin, count) = (&suite.admin, suite.args.creates);
    let mut sim = simulator_alone(&suite.http, &suite.sim_url, count).await?;
    settle(suite).await?;
    let before = Usage::now(server.pid, admin, None).await?;
    let started = Instant::now();
    let mut total = creates(&suite.http, &server.url, count).await?;
    let elapsed = started.elapsed();
    vacuum(&suite.app_db).await?;
    let own = Usage::now(server.pid, admin, None)
        .await?
        .each(before, count as f64);
    // the reference at one client too, for as long as facepair took
    settle(suite).await?;
    let before = Usage::now(server.pid, admin, None).await?;
    let secs = Duration::from_secs(elapsed.as_secs().max(1));
    let tps = pgbench(
        &suite.args.pgbench,
        &suite.ref_url,
        &["-f", "bench/creation-minimal.sql"],
        1,
        secs,
    )?;
    vacuum(&suite.ref_db).await?;
    let minimal = Usage::now(server.pid, admin, None)
        .await?
        .each(before, tps * secs.as_secs_f64());
    let redeemed = redeems(suite, server, count).await?;
    total.sort();
    sim.sort();
    let (t50, t99, s50, s99) = (
        percentile(&total, 0.5),
        percentile(&total, 0.99),
        percentile(&sim, 0.5),
        percentile(&sim, 0.99),
    );
    Ok(vec![
        Row {
            scenario: "4. login creation: facepair's own time".into(),
            facepair: format!("p50 {:.2} ms, p99 {:.2} ms", t50 - s50, t99 - s99),
            reference: format!("simulator alone p50 {s50:.2} ms, p99 {s99:.2} ms"),
            ratio: format!("total p50 {t50:.2} ms, p99 {t99:.2} ms"),
            target: "own p99 <= 5 ms".into(),
        },
        Row {
            scenario: "4. login creation: PostgreSQL's share".into(),
            facepair: describe(&own),
            reference: format!("{} (bench/creation-minimal.sql)", describe(&minimal)),
            ratio: format!(
                "{:.2}x PostgreSQL CPU",
                own.cpu.postgres / minimal.cpu.postgres
            ),
            target: "reported".into(),
        },
        Row {
            scenario: "4. redeem of an approved login: PostgreSQL's share".into(),
            facepair: describe(&redeemed),
            reference: "-".into(),
            ratio: "-".into(),
            target: "reported".into(),
        },
    ])
}

/// Each operation's statements, PostgreSQL CPU and write-ahead log.
fn describe(each: &Usage) -> String {
    format!(
        "{}, {:.3} ms PostgreSQL CPU, WAL {}",
        each.describe_statements(),
        each.cpu.postgres,
        each.wal.describe()
    )
}

/// Approves the `count` logins just created (webhooks, not measured), then redeems them one
/// at a time: what each redeem costs.
async fn redeems(suite: &Suite, server: &Server, count: usize) -> anyhow::Result<Usage> {
    let app = sqlx::PgPool::connect(&suite.app_url).await?;
    let created: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "select l.id, l.scan_ref, a.idenfy_token from logins l join attempts a on a.login_id = l.id
         where l.scan_ref like 'bench-person-%' and l.status = 'pending'",
    )
    .fetch_all(&app)
    .await?;
    if created.len() != count {
        bail!("{} of {count} created logins are pending", created.len());
    }
    for (_, scan_ref, token) in &created {
        let body = json!({
            "id": uuid::Uuid::new_v4(), "scanRef": scan_ref, "clientId": "BENCHCLIENT",
            "token": token, "status": "SUCCESS", "type": "AUTHENTICATION",
            "method": "FACE_MATCHING", "ipAddress": "203.0.113.7", "riskTags": []
        })
        .to_string();
        let r = suite
            .http
            .post(format!("{}/v1/webhooks/idenfy", server.url))
            .header("content-type", "application/json")
            .header(
                "idenfy-signature",
                facepair::idenfy::signature::sign(SIGNING_KEY.as_bytes(), body.as_bytes()),
            )
            .body(body)
            .send()
            .await?;
        if !r.text().await?.contains("\"applied\"") {
            bail!("a webhook for a created login was not applied");
        }
    }
    settle(suite).await?;
    let before = Usage::now(server.pid, &suite.admin, None).await?;
    for (id, _, _) in &created {
        let r = suite
            .http
            .post(format!("{}/v1/logins/{id}/redeem", server.url))
            .bearer_auth(API_KEY)
            .send()
            .await?;
        if r.status() != 200 {
            bail!("redeem answered {}: {}", r.status(), r.text().await?);
        }
        r.bytes().await?;
    }
    app.close().await;
    vacuum(&suite.app_db).await?;
    Ok(Usage::now(server.pid, &suite.admin, None)
        .await?
        .each(before, count as f64))
}

/// The simulator answering the two iDenfy calls facepair makes for a creation, `count` times.
async fn simulator_alone(
    http: &reqwest::Client,
    sim_url: &str,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
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
    Ok(sim)
}

/// Creates `count` logins one at a time, each for another person.
async fn creates(http: &reqwest::Client, url: &str, count: usize) -> anyhow::Result<Vec<Duration>> {
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
    Ok(total)
}
