//! The processes under measurement: facepair, and the iDenfy simulator it calls.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use facepair::sim::state::Eligibility;
use facepair::sim::{SimConfig, Simulator};

pub const API_KEY: &str = "bench-platform-api-key-0001";
pub const SIGNING_KEY: &str = "bench-signing-key";
pub const SIM_KEY: &str = "bench-sim-key";
pub const SIM_SECRET: &str = "bench-sim-secret";

/// Starts the simulator in this process, for every person scenario 4 creates a login for, and
/// returns its base URL.
pub async fn start_simulator(creates: usize) -> anyhow::Result<String> {
    let mut sim_config = SimConfig::for_tests(SIM_KEY, SIM_SECRET, SIGNING_KEY);
    // every creation is for another person, as on a platform with many users
    sim_config.scan_refs = (0..creates)
        .map(|i| (format!("bench-person-{i}"), Eligibility::Authentication))
        .chain([("bench-person".into(), Eligibility::Authentication)])
        .collect();
    sim_config.rate_limit_per_hour = u64::MAX;
    let sim = Simulator::start(sim_config).await?;
    let sim_url = sim.base_url();
    tokio::spawn(sim.run_until_stopped());
    Ok(sim_url)
}

pub struct Server {
    pub url: String,
    pub pid: u32,
    child: std::process::Child,
}

impl Server {
    /// `batch`: this process runs under SCHED_BATCH, which facepair would inherit; it is
    /// started under the normal policy instead, as PostgreSQL runs.
    pub async fn start(
        bin: &PathBuf,
        batch: bool,
        db: &str,
        sim_url: &str,
        log: Option<&std::path::Path>,
        env: &[(&str, String)],
    ) -> anyhow::Result<(Server, Duration)> {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let started = Instant::now();
        let mut command = if batch {
            let mut chrt = std::process::Command::new("chrt");
            chrt.args(["--other", "0"]).arg(bin);
            chrt
        } else {
            std::process::Command::new(bin)
        };
        let child = command
            .arg("serve")
            .env("DATABASE_URL", db)
            .env("FACEPAIR_LISTEN", format!("127.0.0.1:{port}"))
            .env("FACEPAIR_API_KEYS", API_KEY)
            .env("FACEPAIR_IDENFY_BASE_URL", sim_url)
            .env("FACEPAIR_IDENFY_API_KEY", SIM_KEY)
            .env("FACEPAIR_IDENFY_API_SECRET", SIM_SECRET)
            .env("FACEPAIR_IDENFY_SIGNING_KEYS", SIGNING_KEY)
            .env("FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR", "100000000")
            .env("FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR_TOTAL", "100000000")
            // the limits stay on (their counters are part of the cost) but high enough
            .env("FACEPAIR_LOGINS_PER_API_KEY_PER_MINUTE", "100000000")
            .env("FACEPAIR_LOGINS_PER_CLIENT_IP_PER_HOUR", "100000000")
            .env("FACEPAIR_EXPIRY_INTERVAL_MS", "1000")
            // approvals outlive a run of the suite at its default lengths: their expiries, two minutes after the webhooks that
            // approved them, would land in whichever run is measured then, the reference's too
            .env("FACEPAIR_APPROVAL_TTL_SECONDS", "3600")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let probe = reqwest::Client::new();
        loop {
            if let Ok(r) = probe.get(format!("{url}/health/ready")).send().await
                && r.status().is_success()
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("facepair did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = started.elapsed();
        Ok((
            Server {
                url,
                pid: child.id(),
                child,
            },
            ready,
        ))
    }
}

/// The measured process never outlives the run, however the run ends.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
