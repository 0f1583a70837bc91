//! Typed settings, read once from flags or `FACEPAIR_*` environment variables and validated at
//! start-up. Secrets have no defaults and redact themselves in `Debug`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use crate::domain::Lifetime;
use crate::domain::network::TrustedProxies;

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection string.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: SecretString,

    /// Largest number of pooled database connections. PostgreSQL on 2 cores peaks at 4-16.
    #[arg(
        long,
        env = "FACEPAIR_DB_MAX_CONNECTIONS",
        value_name = "FACEPAIR_DB_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub db_max_connections: u32,

    /// How long a request waits for a pooled connection before answering 503.
    #[arg(
        long,
        env = "FACEPAIR_DB_ACQUIRE_TIMEOUT_MS",
        value_name = "FACEPAIR_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = 3000
    )]
    pub db_acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address and port to serve on.
    #[arg(
        long,
        env = "FACEPAIR_LISTEN",
        value_name = "FACEPAIR_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// Base URL browsers use to reach facepair, for `watch_url` and the pairing page.
    /// Defaults to `http://<listen>`.
    #[arg(long, env = "FACEPAIR_PUBLIC_URL", value_name = "FACEPAIR_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Comma-separated platform API keys; several at once for rotation.
    #[arg(
        long,
        env = "FACEPAIR_API_KEYS",
        value_name = "FACEPAIR_API_KEYS",
        value_delimiter = ',',
        required = true,
        hide_env_values = true
    )]
    pub api_keys: Vec<SecretString>,

    /// iDenfy's API base URL.
    #[arg(
        long,
        env = "FACEPAIR_IDENFY_BASE_URL",
        value_name = "FACEPAIR_IDENFY_BASE_URL",
        default_value = "https://ivs.idenfy.com"
    )]
    pub idenfy_base_url: String,

    /// iDenfy API key (HTTP Basic user name).
    #[arg(
        long,
        env = "FACEPAIR_IDENFY_API_KEY",
        value_name = "FACEPAIR_IDENFY_API_KEY",
        hide_env_values = true
    )]
    pub idenfy_api_key: SecretString,

    /// iDenfy API secret (HTTP Basic password).
    #[arg(
        long,
        env = "FACEPAIR_IDENFY_API_SECRET",
        value_name = "FACEPAIR_IDENFY_API_SECRET",
        hide_env_values = true
    )]
    pub idenfy_api_secret: SecretString,

    /// Comma-separated webhook signing keys; several at once for rotation.
    #[arg(
        long,
        env = "FACEPAIR_IDENFY_SIGNING_KEYS",
        value_name = "FACEPAIR_IDENFY_SIGNING_KEYS",
        value_delimiter = ',',
        required = true,
        hide_env_values = true
    )]
    pub idenfy_signing_keys: Vec<SecretString>,

    /// Timeout of one call to iDenfy, in seconds.
    #[arg(
        long,
        env = "FACEPAIR_IDENFY_TIMEOUT_SECONDS",
        value_name = "FACEPAIR_IDENFY_TIMEOUT_SECONDS",
        default_value_t = 8
    )]
    pub idenfy_timeout_seconds: u64,

    /// Lifetime of a digit code when the platform does not set one (1..2592000).
    #[arg(
        long,
        env = "FACEPAIR_CODE_LIFETIME_SECONDS",
        value_name = "FACEPAIR_CODE_LIFETIME_SECONDS",
        default_value_t = 600
    )]
    pub code_lifetime_seconds: i64,

    /// Codes one login may be issued, the first included.
    #[arg(
        long,
        env = "FACEPAIR_MAX_ATTEMPTS_PER_LOGIN",
        value_name = "FACEPAIR_MAX_ATTEMPTS_PER_LOGIN",
        default_value_t = 3
    )]
    pub max_attempts_per_login: i32,

    /// Codes one scan_ref may be issued in any hour from one address (the desktop's
    /// `client_ip`, or the browser's for a code asked from the pairing page; IPv6 by /64),
    /// across its logins. Strangers asking from other addresses do not spend it.
    #[arg(
        long,
        env = "FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR",
        value_name = "FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR",
        default_value_t = 10
    )]
    pub max_attempts_per_scan_ref_hour: i64,

    /// Codes one scan_ref may be issued in any hour from all addresses together: the cost
    /// ceiling. Strangers who reach it from many addresses lock the person out until the hour
    /// ends, so keep it well above the per-address budget.
    #[arg(
        long,
        env = "FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR_TOTAL",
        value_name = "FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR_TOTAL",
        default_value_t = 60
    )]
    pub max_attempts_per_scan_ref_hour_total: i64,

    /// How long an approval may be redeemed, in seconds; after that the login reads `expired`.
    #[arg(
        long,
        env = "FACEPAIR_APPROVAL_TTL_SECONDS",
        value_name = "FACEPAIR_APPROVAL_TTL_SECONDS",
        default_value_t = 120
    )]
    pub approval_ttl_seconds: u64,

    /// How often browsers may poll a watch token, in seconds.
    #[arg(
        long,
        env = "FACEPAIR_POLL_INTERVAL_SECONDS",
        value_name = "FACEPAIR_POLL_INTERVAL_SECONDS",
        default_value_t = 2
    )]
    pub poll_interval_seconds: u32,

    /// Largest webhook body accepted, in bytes.
    #[arg(long, env = "FACEPAIR_WEBHOOK_MAX_BYTES",
        value_name = "FACEPAIR_WEBHOOK_MAX_BYTES", default_value_t = 64 * 1024)]
    pub webhook_max_bytes: usize,

    /// How often the expiry task looks for pending attempts past their expiry, in milliseconds.
    #[arg(
        long,
        env = "FACEPAIR_EXPIRY_INTERVAL_MS",
        value_name = "FACEPAIR_EXPIRY_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub expiry_interval_ms: u64,

    /// Comma-separated origins allowed to embed the pairing page in an iframe (CSP
    /// frame-ancestors); they also receive its `postMessage` on approval. Empty: no framing.
    #[arg(
        long,
        env = "FACEPAIR_FRAME_ANCESTORS",
        value_name = "FACEPAIR_FRAME_ANCESTORS",
        value_delimiter = ','
    )]
    pub frame_ancestors: Vec<String>,

    /// Where the pairing page sends the person after approval (`?login_id=` is added).
    #[arg(long, env = "FACEPAIR_RETURN_URL", value_name = "FACEPAIR_RETURN_URL")]
    pub return_url: Option<String>,

    /// Days after which a finished login's identity data (scan_ref, user_ref, IP addresses,
    /// user agent, clientId, selfie URL) is removed; outcomes stay.
    #[arg(
        long,
        env = "FACEPAIR_RETENTION_DAYS",
        value_name = "FACEPAIR_RETENTION_DAYS",
        default_value_t = 90
    )]
    pub retention_days: i64,

    /// Days after which raw webhook bodies are removed.
    #[arg(
        long,
        env = "FACEPAIR_DELIVERY_BODY_RETENTION_DAYS",
        value_name = "FACEPAIR_DELIVERY_BODY_RETENTION_DAYS",
        default_value_t = 30
    )]
    pub delivery_body_retention_days: i64,

    /// Hours between retention purges; 0 turns the job off (`facepair purge` still works).
    #[arg(
        long,
        env = "FACEPAIR_PURGE_INTERVAL_HOURS",
        value_name = "FACEPAIR_PURGE_INTERVAL_HOURS",
        default_value_t = 24
    )]
    pub purge_interval_hours: u64,

    /// Seconds after a code's expiry at which iDenfy is asked what became of a session whose
    /// webhook never came, before the expiry is recorded; `off` records expiry at once from
    /// facepair's clock without asking.
    #[arg(
        long,
        env = "FACEPAIR_RECONCILE_GRACE_SECONDS",
        value_name = "FACEPAIR_RECONCILE_GRACE_SECONDS",
        default_value = "30"
    )]
    pub reconcile_grace_seconds: String,

    /// Logins one platform API key may create per minute (all instances together).
    #[arg(
        long,
        env = "FACEPAIR_LOGINS_PER_API_KEY_PER_MINUTE",
        value_name = "FACEPAIR_LOGINS_PER_API_KEY_PER_MINUTE",
        default_value_t = 1200
    )]
    pub logins_per_api_key_per_minute: i32,

    /// Logins one desktop address (`client_ip`; IPv6 by /64) may be given per hour.
    #[arg(
        long,
        env = "FACEPAIR_LOGINS_PER_CLIENT_IP_PER_HOUR",
        value_name = "FACEPAIR_LOGINS_PER_CLIENT_IP_PER_HOUR",
        default_value_t = 30
    )]
    pub logins_per_client_ip_per_hour: i32,

    /// Unknown watch tokens one browser address may present per 10 minutes before it is
    /// refused with 429 for the rest of the window.
    #[arg(
        long,
        env = "FACEPAIR_WATCH_MISSES_PER_IP",
        value_name = "FACEPAIR_WATCH_MISSES_PER_IP",
        default_value_t = 20
    )]
    pub watch_misses_per_ip: i32,

    /// New codes one browser address may ask for from the pairing page per hour, over all
    /// watch tokens.
    #[arg(
        long,
        env = "FACEPAIR_WATCH_CODES_PER_IP_PER_HOUR",
        value_name = "FACEPAIR_WATCH_CODES_PER_IP_PER_HOUR",
        default_value_t = 20
    )]
    pub watch_codes_per_ip_per_hour: i32,

    /// Requests for a new code one watch token may make per hour, answered or refused.
    #[arg(
        long,
        env = "FACEPAIR_WATCH_CODES_PER_TOKEN_PER_HOUR",
        value_name = "FACEPAIR_WATCH_CODES_PER_TOKEN_PER_HOUR",
        default_value_t = 10
    )]
    pub watch_codes_per_token_per_hour: i32,

    /// Comma-separated address ranges (CIDR) of the proxies in front of facepair. From a peer
    /// in one, the browser's address is the rightmost `X-Forwarded-For` entry outside them;
    /// from any other peer, the peer's own address. Empty: the header is never read.
    #[arg(
        long,
        env = "FACEPAIR_TRUSTED_PROXIES",
        value_name = "FACEPAIR_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// Replaced by FACEPAIR_TRUSTED_PROXIES; set, it stops start-up.
    #[arg(
        long,
        env = "FACEPAIR_CLIENT_IP_HEADER",
        value_name = "FACEPAIR_CLIENT_IP_HEADER",
        hide = true
    )]
    pub client_ip_header: Option<String>,

    /// HTTP worker threads; default: one per CPU.
    #[arg(long, env = "FACEPAIR_WORKERS", value_name = "FACEPAIR_WORKERS")]
    pub workers: Option<usize>,

    /// `json` for one JSON object per line, `text` for people.
    #[arg(
        long,
        env = "FACEPAIR_LOG_FORMAT",
        value_name = "FACEPAIR_LOG_FORMAT",
        default_value = "json"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Everything the running service needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub api_keys: Vec<SecretString>,
    pub idenfy_base_url: String,
    pub idenfy_api_key: SecretString,
    pub idenfy_api_secret: SecretString,
    pub idenfy_signing_keys: Vec<SecretString>,
    pub idenfy_timeout: Duration,
    pub code_lifetime: Lifetime,
    pub max_attempts_per_login: i32,
    pub max_attempts_per_scan_ref_hour: i64,
    pub max_attempts_per_scan_ref_hour_total: i64,
    pub approval_ttl: Duration,
    pub poll_interval_seconds: u32,
    pub webhook_max_bytes: usize,
    pub expiry_interval: Duration,
    pub frame_ancestors: Vec<String>,
    pub return_url: Option<String>,
    pub retention: Retention,
    /// `None`: expiry is recorded at once from the clock, without asking iDenfy.
    pub reconcile_after: Option<Duration>,
    pub limits: Limits,
    pub trusted_proxies: TrustedProxies,
    /// HTTP worker threads; `None`: one per CPU.
    pub workers: Option<usize>,
}

/// Abuse limits, counted in PostgreSQL across instances.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub logins_per_api_key_per_minute: i32,
    pub logins_per_client_ip_per_hour: i32,
    pub watch_misses_per_ip: i32,
    pub watch_codes_per_ip_per_hour: i32,
    pub watch_codes_per_token_per_hour: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            logins_per_api_key_per_minute: 1200,
            logins_per_client_ip_per_hour: 30,
            watch_misses_per_ip: 20,
            watch_codes_per_ip_per_hour: 20,
            watch_codes_per_token_per_hour: 10,
        }
    }
}

/// How long identity data and raw webhook bodies are kept, and how often the purge runs.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub identity: chrono::Duration,
    pub delivery_bodies: chrono::Duration,
    /// `None`: no background purge.
    pub every: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            identity: chrono::Duration::days(90),
            delivery_bodies: chrono::Duration::days(30),
            every: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

fn bad(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        reason: reason.into(),
    }
}

/// A comma-separated list's entries, trimmed; an empty entry (a stray comma) stops start-up.
/// An empty variable is an empty list.
fn list_entries<'a>(
    variable: &'static str,
    entries: &'a [String],
) -> Result<Vec<&'a str>, ConfigError> {
    if let [only] = entries
        && only.trim().is_empty()
    {
        return Ok(Vec::new());
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| match e.trim() {
            "" => Err(bad(variable, format!("entry {} is empty", i + 1))),
            e => Ok(e),
        })
        .collect()
}

/// Keys shorter than this are refused: a platform key or a signing key must not be guessable.
const MIN_KEY_LENGTH: usize = 16;

/// A comma-separated key list, each entry trimmed (`k1, k2` lists `k2`, not ` k2`). An empty
/// entry (a stray comma) or a short key stops start-up; the message never shows a key.
fn key_list(
    variable: &'static str,
    entries: &[SecretString],
) -> Result<Vec<SecretString>, ConfigError> {
    use secrecy::ExposeSecret;
    if entries.is_empty() {
        return Err(bad(variable, "must list at least one key"));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let key = entry.expose_secret().trim();
            if key.is_empty() {
                Err(bad(variable, format!("entry {} is empty", i + 1)))
            } else if key.chars().count() < MIN_KEY_LENGTH {
                Err(bad(
                    variable,
                    format!(
                        "entry {} is shorter than {MIN_KEY_LENGTH} characters",
                        i + 1
                    ),
                ))
            } else {
                Ok(SecretString::from(key))
            }
        })
        .collect()
}

impl ServeArgs {
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        use secrecy::ExposeSecret;
        let api_keys = key_list("FACEPAIR_API_KEYS", &self.api_keys)?;
        let idenfy_signing_keys =
            key_list("FACEPAIR_IDENFY_SIGNING_KEYS", &self.idenfy_signing_keys)?;
        if self
            .client_ip_header
            .as_deref()
            .is_some_and(|h| !h.trim().is_empty())
        {
            // its first entry was written by the client: anyone could pick an address
            return Err(bad(
                "FACEPAIR_CLIENT_IP_HEADER",
                "is no longer read; list the proxies in front of facepair in \
                 FACEPAIR_TRUSTED_PROXIES (e.g. 10.0.0.0/8) instead",
            ));
        }
        let trusted_proxies = TrustedProxies::parse(list_entries(
            "FACEPAIR_TRUSTED_PROXIES",
            &self.trusted_proxies,
        )?)
        .map_err(|reason| bad("FACEPAIR_TRUSTED_PROXIES", reason))?;
        if self.idenfy_api_key.expose_secret().is_empty() {
            return Err(bad("FACEPAIR_IDENFY_API_KEY", "must not be empty"));
        }
        if self.idenfy_api_secret.expose_secret().is_empty() {
            return Err(bad("FACEPAIR_IDENFY_API_SECRET", "must not be empty"));
        }
        if !(self.idenfy_base_url.starts_with("http://")
            || self.idenfy_base_url.starts_with("https://"))
        {
            return Err(bad("FACEPAIR_IDENFY_BASE_URL", "must be an http(s) URL"));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(bad("FACEPAIR_PUBLIC_URL", "must be an http(s) URL"));
        }
        let origin_like = |o: &str| {
            (o.starts_with("https://") || o.starts_with("http://"))
                && !o
                    .trim_end_matches('/')
                    .contains(|c: char| c.is_whitespace() || c == ';' || c == '\'' || c == ',')
                && o.matches('/').count() == 2
        };
        let frame_ancestors: Vec<String> = self
            .frame_ancestors
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if let Some(bad_origin) = frame_ancestors.iter().find(|o| !origin_like(o)) {
            return Err(bad(
                "FACEPAIR_FRAME_ANCESTORS",
                format!("{bad_origin:?} is not an origin like https://platform.example"),
            ));
        }
        if let Some(url) = &self.return_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(bad("FACEPAIR_RETURN_URL", "must be an http(s) URL"));
        }
        if !(1..=36_500).contains(&self.retention_days) {
            return Err(bad("FACEPAIR_RETENTION_DAYS", "must be 1 to 36500"));
        }
        if !(1..=36_500).contains(&self.delivery_body_retention_days) {
            return Err(bad(
                "FACEPAIR_DELIVERY_BODY_RETENTION_DAYS",
                "must be 1 to 36500",
            ));
        }
        let reconcile_after = match self.reconcile_grace_seconds.trim() {
            "off" => None,
            n => Some(Duration::from_secs(
                n.parse::<u64>()
                    .ok()
                    .filter(|n| *n <= 3600)
                    .ok_or_else(|| {
                        bad(
                            "FACEPAIR_RECONCILE_GRACE_SECONDS",
                            "must be 0 to 3600 seconds, or off",
                        )
                    })?,
            )),
        };
        let code_lifetime = Lifetime::from_seconds(self.code_lifetime_seconds)
            .map_err(|e| bad("FACEPAIR_CODE_LIFETIME_SECONDS", e.reason))?;
        if self.max_attempts_per_login < 1 {
            return Err(bad("FACEPAIR_MAX_ATTEMPTS_PER_LOGIN", "must be at least 1"));
        }
        if self.max_attempts_per_scan_ref_hour < 1 {
            return Err(bad(
                "FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR",
                "must be at least 1",
            ));
        }
        if self.max_attempts_per_scan_ref_hour_total < self.max_attempts_per_scan_ref_hour {
            return Err(bad(
                "FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR_TOTAL",
                "must be at least FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR",
            ));
        }
        if !(10..=3600).contains(&self.approval_ttl_seconds) {
            return Err(bad("FACEPAIR_APPROVAL_TTL_SECONDS", "must be 10 to 3600"));
        }
        if !(1..=60).contains(&self.poll_interval_seconds) {
            return Err(bad("FACEPAIR_POLL_INTERVAL_SECONDS", "must be 1 to 60"));
        }
        if !(1..=30).contains(&self.idenfy_timeout_seconds) {
            return Err(bad("FACEPAIR_IDENFY_TIMEOUT_SECONDS", "must be 1 to 30"));
        }
        if !(1024..=1024 * 1024).contains(&self.webhook_max_bytes) {
            return Err(bad("FACEPAIR_WEBHOOK_MAX_BYTES", "must be 1024 to 1048576"));
        }
        Ok(Settings {
            listen: self.listen,
            public_url: self.public_url.clone(),
            api_keys,
            idenfy_base_url: self.idenfy_base_url.clone(),
            idenfy_api_key: self.idenfy_api_key.clone(),
            idenfy_api_secret: self.idenfy_api_secret.clone(),
            idenfy_signing_keys,
            idenfy_timeout: Duration::from_secs(self.idenfy_timeout_seconds),
            code_lifetime,
            max_attempts_per_login: self.max_attempts_per_login,
            max_attempts_per_scan_ref_hour: self.max_attempts_per_scan_ref_hour,
            max_attempts_per_scan_ref_hour_total: self.max_attempts_per_scan_ref_hour_total,
            approval_ttl: Duration::from_secs(self.approval_ttl_seconds),
            poll_interval_seconds: self.poll_interval_seconds,
            webhook_max_bytes: self.webhook_max_bytes,
            expiry_interval: Duration::from_millis(self.expiry_interval_ms.max(50)),
            frame_ancestors,
            return_url: self.return_url.clone(),
            reconcile_after,
            limits: Limits {
                logins_per_api_key_per_minute: self.logins_per_api_key_per_minute.max(1),
                logins_per_client_ip_per_hour: self.logins_per_client_ip_per_hour.max(1),
                watch_misses_per_ip: self.watch_misses_per_ip.max(1),
                watch_codes_per_ip_per_hour: self.watch_codes_per_ip_per_hour.max(1),
                watch_codes_per_token_per_hour: self.watch_codes_per_token_per_hour.max(1),
            },
            trusted_proxies,
            workers: self.workers.filter(|w| *w > 0),
            retention: Retention {
                identity: chrono::Duration::days(self.retention_days),
                delivery_bodies: chrono::Duration::days(self.delivery_body_retention_days),
                every: (self.purge_interval_hours > 0)
                    .then(|| Duration::from_secs(self.purge_interval_hours * 3600)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use secrecy::ExposeSecret;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// Settings from flags (flags win over any `FACEPAIR_*` variable in the environment); a
    /// flag in `extra` replaces the default one of the same name.
    fn settings(extra: &[&str]) -> Result<Settings, ConfigError> {
        let defaults = [
            "--database-url=postgres://localhost/x",
            "--api-keys=platform-key-0000001",
            "--idenfy-api-key=key",
            "--idenfy-api-secret=secret",
            "--idenfy-signing-keys=signing-key-0000001",
        ];
        let name = |flag: &str| flag.split('=').next().unwrap().to_owned();
        let args = defaults
            .iter()
            .filter(|d| !extra.iter().any(|e| name(e) == name(d)))
            .chain(extra);
        Cli::try_parse_from(std::iter::once(&"facepair").chain(args))
            .unwrap()
            .serve
            .settings()
    }

    fn exposed(keys: &[SecretString]) -> Vec<&str> {
        keys.iter().map(|k| k.expose_secret()).collect()
    }

    #[test]
    fn key_lists_are_trimmed() {
        let s = settings(&[
            "--api-keys= platform-key-0000001 , platform-key-0000002",
            "--idenfy-signing-keys=signing-key-0000001,\tsigning-key-0000002 ",
        ])
        .unwrap();
        assert_eq!(
            exposed(&s.api_keys),
            ["platform-key-0000001", "platform-key-0000002"]
        );
        assert_eq!(
            exposed(&s.idenfy_signing_keys),
            ["signing-key-0000001", "signing-key-0000002"]
        );
    }

    #[test]
    fn empty_key_entries_stop_start_up() {
        for (flag, variable) in [
            ("--api-keys", "FACEPAIR_API_KEYS"),
            ("--idenfy-signing-keys", "FACEPAIR_IDENFY_SIGNING_KEYS"),
        ] {
            for list in [
                "abcdefghijklmnop,,qrstuvwxyz012345",
                "abcdefghijklmnop,",
                " ",
            ] {
                let e = settings(&[&format!("{flag}={list}")]).unwrap_err();
                assert_eq!(e.variable, variable, "{list:?}");
                assert!(e.reason.contains("is empty"), "{list:?}: {e}");
            }
        }
    }

    #[test]
    fn trusted_proxies_are_address_ranges() {
        let s = settings(&["--trusted-proxies= 10.0.0.0/8 , fd00::/8,192.0.2.7"]).unwrap();
        assert_eq!(
            s.trusted_proxies,
            TrustedProxies::parse(["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"]).unwrap()
        );
        assert_eq!(
            settings(&["--trusted-proxies="]).unwrap().trusted_proxies,
            TrustedProxies::default()
        );
        for list in [
            "10.0.0.0/8,,192.0.2.7",
            "10.0.0.0/8,",
            "lb.internal",
            "10.0.0.0/40",
        ] {
            let e = settings(&[&format!("--trusted-proxies={list}")]).unwrap_err();
            assert_eq!(e.variable, "FACEPAIR_TRUSTED_PROXIES", "{list}");
        }
    }

    /// The old setting believed a header any client writes; it must not be silently ignored
    /// either, or a deployment would lose its proxy's addresses without noticing.
    #[test]
    fn the_client_ip_header_setting_stops_start_up_naming_its_replacement() {
        let e = settings(&["--client-ip-header=x-forwarded-for"]).unwrap_err();
        assert_eq!(e.variable, "FACEPAIR_CLIENT_IP_HEADER");
        assert!(e.reason.contains("FACEPAIR_TRUSTED_PROXIES"), "{e}");
    }

    #[test]
    fn short_keys_stop_start_up_without_showing_them() {
        for (flag, variable) in [
            ("--api-keys", "FACEPAIR_API_KEYS"),
            ("--idenfy-signing-keys", "FACEPAIR_IDENFY_SIGNING_KEYS"),
        ] {
            // 15 characters once trimmed, though 17 as written
            let e = settings(&[&format!("{flag}=abcdefghijklmnop, short-key-12345 ")]).unwrap_err();
            assert_eq!(e.variable, variable);
            assert_eq!(e.reason, "entry 2 is shorter than 16 characters");
            assert!(!e.to_string().contains("short-key"), "{e}");
        }
    }
}
