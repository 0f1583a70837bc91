//! A simulated iDenfy, following `docs/idenfy-api.md` field by field, with iDenfy's webhook
//! retries, a control API and a "phone" page that plays the mobile app. Where iDenfy leaves a
//! detail open it takes the inference that page names (§10), so tests need no credentials.

mod api;
mod control;
pub mod state;
mod webhooks;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use state::{Eligibility, SimState};

/// `facepair sim` flags; each also reads its `FACEPAIR_SIM_*` variable.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Address and port the simulator serves on.
    #[arg(
        long = "listen",
        env = "FACEPAIR_SIM_LISTEN",
        value_name = "FACEPAIR_SIM_LISTEN",
        default_value = "127.0.0.1:8090"
    )]
    pub listen: SocketAddr,
    /// The API key clients must present (HTTP Basic user name).
    #[arg(
        long = "api-key",
        env = "FACEPAIR_SIM_API_KEY",
        value_name = "FACEPAIR_SIM_API_KEY",
        hide_env_values = true
    )]
    pub api_key: SecretString,
    /// The API secret (HTTP Basic password).
    #[arg(
        long = "api-secret",
        env = "FACEPAIR_SIM_API_SECRET",
        value_name = "FACEPAIR_SIM_API_SECRET",
        hide_env_values = true
    )]
    pub api_secret: SecretString,
    /// The key webhooks are signed with.
    #[arg(
        long = "signing-key",
        env = "FACEPAIR_SIM_SIGNING_KEY",
        value_name = "FACEPAIR_SIM_SIGNING_KEY",
        hide_env_values = true
    )]
    pub signing_key: SecretString,
    /// Where webhooks are POSTed; without it, sessions end without a webhook.
    #[arg(
        long = "webhook-url",
        env = "FACEPAIR_SIM_WEBHOOK_URL",
        value_name = "FACEPAIR_SIM_WEBHOOK_URL"
    )]
    pub webhook_url: Option<String>,
    /// Seeded scanRefs: `ref=AUTHENTICATION,ref2=IDENTIFICATION,...`.
    #[arg(
        long = "scan-refs",
        env = "FACEPAIR_SIM_SCAN_REFS",
        value_name = "FACEPAIR_SIM_SCAN_REFS",
        value_delimiter = ','
    )]
    pub scan_refs: Vec<String>,
    /// Retries after a failed webhook delivery (iDenfy: up to 10).
    #[arg(
        long = "webhook-retries",
        env = "FACEPAIR_SIM_WEBHOOK_RETRIES",
        value_name = "FACEPAIR_SIM_WEBHOOK_RETRIES",
        default_value_t = 10
    )]
    pub webhook_retries: u32,
    /// Pause between webhook retries, in milliseconds (iDenfy: up to 10 s).
    #[arg(
        long = "webhook-retry-delay-ms",
        env = "FACEPAIR_SIM_WEBHOOK_RETRY_DELAY_MS",
        value_name = "FACEPAIR_SIM_WEBHOOK_RETRY_DELAY_MS",
        default_value_t = 10_000
    )]
    pub webhook_retry_delay_ms: u64,
    /// How long a webhook receiver has to answer, in milliseconds (iDenfy: 10 s).
    #[arg(
        long = "webhook-timeout-ms",
        env = "FACEPAIR_SIM_WEBHOOK_TIMEOUT_MS",
        value_name = "FACEPAIR_SIM_WEBHOOK_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub webhook_timeout_ms: u64,
    /// API requests allowed per hour before TOO_MANY_REQUESTS (iDenfy's default: 10,000).
    #[arg(
        long = "rate-limit-per-hour",
        env = "FACEPAIR_SIM_RATE_LIMIT_PER_HOUR",
        value_name = "FACEPAIR_SIM_RATE_LIMIT_PER_HOUR",
        default_value_t = 10_000
    )]
    pub rate_limit_per_hour: u64,
}

/// Everything a running simulator needs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    pub api_key: SecretString,
    pub api_secret: SecretString,
    pub signing_key: SecretString,
    pub webhook_url: Option<String>,
    pub scan_refs: Vec<(String, Eligibility)>,
    pub webhook_retries: u32,
    pub webhook_retry_delay: Duration,
    pub webhook_timeout: Duration,
    pub rate_limit_per_hour: u64,
    /// How often the simulator's clock looks for sessions whose lifetime ended.
    pub expiry_tick: Duration,
}

impl SimConfig {
    /// A simulator for tests: port 0, fast retries, the given credentials.
    pub fn for_tests(api_key: &str, api_secret: &str, signing_key: &str) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("static address"),
            api_key: SecretString::from(api_key),
            api_secret: SecretString::from(api_secret),
            signing_key: SecretString::from(signing_key),
            webhook_url: None,
            scan_refs: Vec::new(),
            webhook_retries: 10,
            webhook_retry_delay: Duration::from_millis(100),
            webhook_timeout: Duration::from_secs(10),
            rate_limit_per_hour: 10_000,
            expiry_tick: Duration::from_millis(100),
        }
    }
}

impl SimArgs {
    pub fn config(&self) -> Result<SimConfig, crate::config::ConfigError> {
        let bad = |variable, reason: &str| crate::config::ConfigError {
            variable,
            reason: reason.to_owned(),
        };
        if self.api_key.expose_secret().is_empty() {
            return Err(bad("FACEPAIR_SIM_API_KEY", "must not be empty"));
        }
        if self.signing_key.expose_secret().is_empty() {
            return Err(bad("FACEPAIR_SIM_SIGNING_KEY", "must not be empty"));
        }
        let mut scan_refs = Vec::new();
        for entry in self.scan_refs.iter().filter(|e| !e.trim().is_empty()) {
            let (scan_ref, kind) = entry
                .split_once('=')
                .unwrap_or((entry.as_str(), "AUTHENTICATION"));
            let eligibility = Eligibility::parse(kind).ok_or_else(|| {
                bad(
                    "FACEPAIR_SIM_SCAN_REFS",
                    "types are AUTHENTICATION, IDENTIFICATION or ENROLLMENT",
                )
            })?;
            scan_refs.push((scan_ref.trim().to_owned(), eligibility));
        }
        Ok(SimConfig {
            listen: self.listen,
            api_key: self.api_key.clone(),
            api_secret: self.api_secret.clone(),
            signing_key: self.signing_key.clone(),
            webhook_url: self.webhook_url.clone(),
            scan_refs,
            webhook_retries: self.webhook_retries,
            webhook_retry_delay: Duration::from_millis(self.webhook_retry_delay_ms),
            webhook_timeout: Duration::from_millis(self.webhook_timeout_ms),
            rate_limit_per_hour: self.rate_limit_per_hour,
            expiry_tick: Duration::from_millis(250),
        })
    }
}

/// Shared by the simulator's handlers and tasks.
pub(crate) struct Sim {
    pub config: SimConfig,
    pub state: Mutex<SimState>,
    pub http: reqwest::Client,
    /// Where webhooks go; settable after start, so tests can wire facepair's port in later.
    pub webhook_url: Mutex<Option<String>>,
    pub base_url: String,
    /// Woken whenever a webhook delivery is logged.
    pub delivered: tokio::sync::Notify,
}

/// A running simulator.
pub struct Simulator {
    sim: Arc<Sim>,
    server: Server,
    stop: CancellationToken,
    port: u16,
}

impl Simulator {
    pub async fn start(config: SimConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen)?;
        let address = listener.local_addr()?;
        let mut state = SimState::default();
        for (scan_ref, eligibility) in &config.scan_refs {
            state.seed(scan_ref, *eligibility);
        }
        let sim = Arc::new(Sim {
            webhook_url: Mutex::new(config.webhook_url.clone()),
            http: reqwest::Client::builder()
                .timeout(config.webhook_timeout)
                .build()
                .map_err(std::io::Error::other)?,
            state: Mutex::new(state),
            base_url: format!("http://{address}"),
            config,
            delivered: tokio::sync::Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(webhooks::expiry_clock(sim.clone(), stop.clone()));
        let data = web::Data::from(sim.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(
                    web::JsonConfig::default()
                        .error_handler(|e, _| control::bad_request(e.to_string())),
                )
                .configure(api::configure)
                .configure(control::configure)
        })
        .listen(listener)?
        .workers(1)
        .shutdown_timeout(2)
        .run();
        Ok(Self {
            sim,
            server,
            stop,
            port: address.port(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base_url(&self) -> String {
        self.sim.base_url.clone()
    }

    pub fn set_webhook_url(&self, url: &str) {
        *self.sim.webhook_url.lock().unwrap() = Some(url.to_owned());
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.stop.cancel();
        result
    }
}
