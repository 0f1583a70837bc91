//! The scenarios, one module each; every one returns its rows of the table.

pub mod creation;
pub mod events;
pub mod ingest;
pub mod polls;
pub mod scale;
pub mod startup;
pub mod streams;

use std::time::Duration;

use sqlx::PgPool;

use crate::Args;
use crate::db::Seeded;
use crate::server::Server;

/// What every scenario works with: the command line, the seeded databases, the simulator.
pub struct Suite {
    pub args: Args,
    /// this process runs under SCHED_BATCH (see [`Server::start`])
    pub batch: bool,
    pub admin: PgPool,
    pub app_url: String,
    pub ref_url: String,
    pub app_db: PgPool,
    pub ref_db: PgPool,
    pub seeded: Seeded,
    pub sim_url: String,
    pub http: reqwest::Client,
}

impl Suite {
    pub fn runs(&self, scenario: u8) -> bool {
        self.args.scenarios.contains(&scenario)
    }

    /// Seconds per measured run.
    pub fn secs(&self) -> Duration {
        Duration::from_secs(self.args.seconds)
    }

    /// A facepair process on the seeded database, and how long it took to become ready.
    pub async fn start_server(&self) -> anyhow::Result<(Server, Duration)> {
        self.start_server_with(&[]).await
    }

    /// The same, with more settings in its environment.
    pub async fn start_server_with(
        &self,
        env: &[(&str, String)],
    ) -> anyhow::Result<(Server, Duration)> {
        let started = Server::start(
            &self.args.facepair,
            self.batch,
            &self.app_url,
            &self.sim_url,
            self.args.server_log.as_deref(),
            env,
        )
        .await;
        // past start-up's allocations before anything is measured
        tokio::time::sleep(Duration::from_millis(500)).await;
        started
    }
}
