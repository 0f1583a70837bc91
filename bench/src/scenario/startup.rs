//! Scenario 5: start-up time and idle footprint, measured first, on a quiet machine.

use std::time::Duration;

use crate::report::Row;
use crate::server::Server;
use crate::usage::rss_kib;

/// The rows for a server just started by [`super::Suite::start_server`].
pub fn rows(server: &Server, ready_after: Duration) -> anyhow::Result<Vec<Row>> {
    let idle_rss = rss_kib(server.pid)?;
    Ok(vec![
        Row {
            scenario: "5. start-up: exec to /health/ready".into(),
            facepair: format!("{:.0} ms", ready_after.as_secs_f64() * 1000.0),
            reference: "-".into(),
            ratio: "-".into(),
            target: "<= 1000 ms".into(),
        },
        Row {
            scenario: "5. idle RSS after start".into(),
            facepair: format!("{:.1} MiB", idle_rss as f64 / 1024.0),
            reference: "-".into(),
            ratio: "-".into(),
            target: "<= 30 MiB".into(),
        },
    ])
}
