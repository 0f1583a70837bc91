//! The reference figures: pgbench on the same PostgreSQL.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Transactions per second from pgbench, at `clients` clients for `secs`.
pub fn pgbench(
    pgbench: &str,
    url: &str,
    extra: &[&str],
    clients: usize,
    secs: Duration,
) -> anyhow::Result<f64> {
    let output = std::process::Command::new(pgbench)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &secs.as_secs().to_string(),
        ])
        .args(extra)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| {
            format!(
                "pgbench printed no tps: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    Ok(tps)
}

pub fn pgbench_init(pgbench: &str, url: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new(pgbench)
        .args(["-i", "-q", "-s", "10", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("pgbench -i failed");
    }
    Ok(())
}
