//! Typed settings, read once from flags or `FACEPAIR_*` environment variables and validated at
//! start-up. Secrets have no defaults and redact themselves in `Debug`.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser as _;
use secrecy::SecretString;
use url::Url;

use crate::domain::Lifetime;
use crate::domain::network::TrustedProxies;
use crate::domain::outbound::WebhookSecret;

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

    /// A connection string that reaches PostgreSQL without a transaction pooler, for what
    /// needs a session of its own (LISTEN, NOTIFY, migrations), when `DATABASE_URL` is a
    /// transaction pooler's (PgBouncer 1.21 or later in transaction mode, with
    /// `max_prepared_statements` set).
    #[arg(
        long,
        env = "FACEPAIR_DIRECT_DATABASE_URL",
        value_name = "FACEPAIR_DIRECT_DATABASE_URL",
        hide_env_values = true
    )]
    pub direct_database_url: Option<SecretString>,

    /// Largest number of pooled database connections. PostgreSQL on 2 cores peaks at 4-16.
    #[arg(
        long,
        env = "FACEPAIR_DB_MAX_CONNECTIONS",
        value_name = "FACEPAIR_DB_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub db_max_connections: u32,

    /// How long a request waits for a pooled connection before answering 503, in
    /// milliseconds (or a duration like 3s).
    #[arg(
        long = "db-acquire-timeout-ms",
        env = "FACEPAIR_DB_ACQUIRE_TIMEOUT_MS",
        value_name = "FACEPAIR_DB_ACQUIRE_TIMEOUT_MS",
        value_parser = Unit::Milliseconds.range(0..=u64::MAX),
        default_value = "3000"
    )]
    pub db_acquire_timeout: Duration,
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
    #[arg(
        long,
        env = "FACEPAIR_PUBLIC_URL",
        value_name = "FACEPAIR_PUBLIC_URL",
        value_parser = http_url
    )]
    pub public_url: Option<Url>,

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
        value_parser = http_url,
        default_value = "https://ivs.idenfy.com"
    )]
    pub idenfy_base_url: Url,

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

    /// Timeout of one call to iDenfy, 1 to 30 seconds.
    #[arg(
        long = "idenfy-timeout-seconds",
        env = "FACEPAIR_IDENFY_TIMEOUT_SECONDS",
        value_name = "FACEPAIR_IDENFY_TIMEOUT_SECONDS",
        value_parser = Unit::Seconds.range(1..=30),
        default_value = "8"
    )]
    pub idenfy_timeout: Duration,

    /// Lifetime of a digit code when the platform does not set one, 1 second to 30 days.
    #[arg(
        long = "code-lifetime-seconds",
        env = "FACEPAIR_CODE_LIFETIME_SECONDS",
        value_name = "FACEPAIR_CODE_LIFETIME_SECONDS",
        value_parser = Unit::Seconds
            .range(1..=Lifetime::MAX_SECONDS as u64)
            .try_map(|d| Lifetime::from_seconds(d.as_secs() as i64).map_err(|e| e.reason)),
        default_value = "600"
    )]
    pub code_lifetime: Lifetime,

    /// Codes one login may be issued, the first included.
    #[arg(
        long,
        env = "FACEPAIR_MAX_ATTEMPTS_PER_LOGIN",
        value_name = "FACEPAIR_MAX_ATTEMPTS_PER_LOGIN",
        value_parser = clap::value_parser!(i32).range(1..),
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
        value_parser = clap::value_parser!(i64).range(1..),
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

    /// How long an approval may be redeemed, 10 seconds to an hour; after that the login
    /// reads `expired`.
    #[arg(
        long = "approval-ttl-seconds",
        env = "FACEPAIR_APPROVAL_TTL_SECONDS",
        value_name = "FACEPAIR_APPROVAL_TTL_SECONDS",
        value_parser = Unit::Seconds.range(10..=3600),
        default_value = "120"
    )]
    pub approval_ttl: Duration,

    /// How often browsers may poll a watch token, in seconds (1 to 60).
    #[arg(
        long,
        env = "FACEPAIR_POLL_INTERVAL_SECONDS",
        value_name = "FACEPAIR_POLL_INTERVAL_SECONDS",
        value_parser = clap::value_parser!(u32).range(1..=60),
        default_value_t = 2
    )]
    pub poll_interval_seconds: u32,

    /// Largest webhook body accepted, in bytes (1024 to 1048576).
    #[arg(
        long,
        env = "FACEPAIR_WEBHOOK_MAX_BYTES",
        value_name = "FACEPAIR_WEBHOOK_MAX_BYTES",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=1024 * 1024),
        default_value_t = 64 * 1024
    )]
    pub webhook_max_bytes: usize,

    /// How often the expiry task looks for pending attempts past their expiry, in
    /// milliseconds; less than 50 counts as 50.
    #[arg(
        long = "expiry-interval-ms",
        env = "FACEPAIR_EXPIRY_INTERVAL_MS",
        value_name = "FACEPAIR_EXPIRY_INTERVAL_MS",
        value_parser = Unit::Milliseconds.range(0..=u64::MAX),
        default_value = "1000"
    )]
    pub expiry_interval: Duration,

    /// Comma-separated origins allowed to embed the pairing page in an iframe (CSP
    /// frame-ancestors); they also receive its `postMessage` on approval. Empty: no framing.
    #[arg(
        long,
        env = "FACEPAIR_FRAME_ANCESTORS",
        value_name = "FACEPAIR_FRAME_ANCESTORS",
        value_delimiter = ',',
        value_parser = origin
    )]
    pub frame_ancestors: Vec<String>,

    /// Where the pairing page sends the person after approval (with `?state=` when the platform gave one).
    #[arg(
        long,
        env = "FACEPAIR_RETURN_URL",
        value_name = "FACEPAIR_RETURN_URL",
        value_parser = http_url
    )]
    pub return_url: Option<Url>,

    /// The platform's name as people know it, shown on the pairing page ("Sign in to ...")
    /// so that a person can tell whose sign-in a code belongs to. 1 to 60 characters.
    #[arg(
        long,
        env = "FACEPAIR_PLATFORM_NAME",
        value_name = "FACEPAIR_PLATFORM_NAME",
        value_parser = platform_name
    )]
    pub platform_name: Option<String>,

    /// Days after which a finished login's identity data (scan_ref, user_ref, IP addresses,
    /// user agent, clientId, selfie URL) is removed; outcomes stay. 1 to 36500.
    #[arg(
        long = "retention-days",
        env = "FACEPAIR_RETENTION_DAYS",
        value_name = "FACEPAIR_RETENTION_DAYS",
        value_parser = Unit::Days.range(1..=36_500),
        default_value = "90"
    )]
    pub retention: Duration,

    /// Days after which raw webhook bodies are removed, 1 to 36500.
    #[arg(
        long = "delivery-body-retention-days",
        env = "FACEPAIR_DELIVERY_BODY_RETENTION_DAYS",
        value_name = "FACEPAIR_DELIVERY_BODY_RETENTION_DAYS",
        value_parser = Unit::Days.range(1..=36_500),
        default_value = "30"
    )]
    pub delivery_body_retention: Duration,

    /// Hours between retention purges; 0 turns the job off (`facepair purge` still works).
    #[arg(
        long = "purge-interval-hours",
        env = "FACEPAIR_PURGE_INTERVAL_HOURS",
        value_name = "FACEPAIR_PURGE_INTERVAL_HOURS",
        value_parser = Unit::Hours.range(0..=u64::MAX),
        default_value = "24"
    )]
    pub purge_interval: Duration,

    /// Seconds after a code's expiry (0 to 3600) at which iDenfy is asked what became of a
    /// session whose webhook never came, before the expiry is recorded; `off` records expiry at
    /// once from facepair's clock without asking.
    #[arg(
        long = "reconcile-grace-seconds",
        env = "FACEPAIR_RECONCILE_GRACE_SECONDS",
        value_name = "FACEPAIR_RECONCILE_GRACE_SECONDS",
        value_parser = Unit::Seconds.range(0..=3600).or_off(),
        default_value = "30"
    )]
    // qualified, so that clap reads `off` as a value rather than the flag as optional
    pub reconcile_grace: ::std::option::Option<Duration>,

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

    /// Comma-separated https URLs that every event is pushed to (Standard Webhooks).
    #[arg(
        long,
        env = "FACEPAIR_EVENT_ENDPOINTS",
        value_name = "FACEPAIR_EVENT_ENDPOINTS",
        value_delimiter = ',',
        value_parser = http_url
    )]
    pub event_endpoints: Vec<Url>,

    /// Comma-separated signing secrets (`whsec_` and base64) for pushed events; each signs
    /// every request, so a secret can be rotated. Required with FACEPAIR_EVENT_ENDPOINTS.
    #[arg(
        long,
        env = "FACEPAIR_EVENT_SECRETS",
        value_name = "FACEPAIR_EVENT_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub event_secrets: Vec<SecretString>,

    /// Lets event endpoints be plain http and resolve to loopback, private or link-local
    /// addresses: for the sandbox and tests only.
    #[arg(
        long,
        env = "FACEPAIR_EVENT_ALLOW_PRIVATE_HTTP",
        value_name = "FACEPAIR_EVENT_ALLOW_PRIVATE_HTTP",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub event_allow_private_http: bool,

    /// Timeout of one pushed event's request, 1 to 30 seconds.
    #[arg(
        long = "event-timeout-seconds",
        env = "FACEPAIR_EVENT_TIMEOUT_SECONDS",
        value_name = "FACEPAIR_EVENT_TIMEOUT_SECONDS",
        value_parser = Unit::Seconds.range(1..=30),
        default_value = "10"
    )]
    pub event_timeout: Duration,

    /// Comma-separated waits before each retry of a failed push (each spread by ±20 %, never
    /// shorter than the endpoint's Retry-After); once spent the delivery is `failed`.
    #[arg(
        long = "event-retry-schedule-seconds",
        env = "FACEPAIR_EVENT_RETRY_SCHEDULE_SECONDS",
        value_name = "FACEPAIR_EVENT_RETRY_SCHEDULE_SECONDS",
        value_delimiter = ',',
        value_parser = Unit::Seconds.range(1..=86_400),
        default_value = "5s,30s,2m,10m,30m,1h,3h,6h,12h"
    )]
    pub event_retry_schedule: Vec<Duration>,

    /// How often each instance looks for events to number and deliveries due, in
    /// milliseconds (10 to 10000).
    #[arg(
        long = "event-poll-interval-ms",
        env = "FACEPAIR_EVENT_POLL_INTERVAL_MS",
        value_name = "FACEPAIR_EVENT_POLL_INTERVAL_MS",
        value_parser = Unit::Milliseconds.range(10..=10_000),
        default_value = "200"
    )]
    pub event_poll_interval: Duration,

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
    pub public_url: Option<Url>,
    pub api_keys: Vec<SecretString>,
    pub idenfy_base_url: Url,
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
    /// Origins as `scheme://host[:port]`.
    pub frame_ancestors: Vec<String>,
    pub return_url: Option<Url>,
    /// Shown on the pairing page: whose sign-in the code belongs to.
    pub platform_name: Option<String>,
    pub retention: Retention,
    /// `None`: expiry is recorded at once from the clock, without asking iDenfy.
    pub reconcile_after: Option<Duration>,
    pub limits: Limits,
    pub trusted_proxies: TrustedProxies,
    /// HTTP worker threads; `None`: one per CPU.
    pub workers: Option<usize>,
    pub events: Events,
}

/// Outbound events: where they are pushed, how they are signed, retried and timed.
#[derive(Debug, Clone)]
pub struct Events {
    pub endpoints: Vec<Url>,
    pub secrets: Vec<WebhookSecret>,
    pub allow_private_http: bool,
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub poll_interval: Duration,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            secrets: Vec::new(),
            allow_private_http: false,
            timeout: Duration::from_secs(10),
            retry_schedule: [5, 30, 120, 600, 1800, 3600, 10_800, 21_600, 43_200]
                .map(Duration::from_secs)
                .to_vec(),
            poll_interval: Duration::from_millis(200),
        }
    }
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

/// How duration settings read, for `facepair serve --help`.
pub const DURATIONS: &str = "Durations: a plain number counts in the unit the setting's name ends in \
    (FACEPAIR_RECONCILE_GRACE_SECONDS=30); 90s, 5m, 2h, 1h 30m or 7d are read too.";

/// The unit a duration setting's name ends in (`_MS`, `_SECONDS`, `_HOURS`, `_DAYS`): a plain
/// number counts in it, as it always has; anything else is read by humantime (`90s`, `2m`,
/// `1h 30m`, `7d`) and must be a whole number of the unit.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Milliseconds,
    Seconds,
    Hours,
    Days,
}

impl Unit {
    fn nanos(self) -> u128 {
        const SECOND: u128 = 1_000_000_000;
        match self {
            Unit::Milliseconds => SECOND / 1000,
            Unit::Seconds => SECOND,
            Unit::Hours => 3600 * SECOND,
            Unit::Days => 86_400 * SECOND,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Milliseconds => "milliseconds",
            Unit::Seconds => "seconds",
            Unit::Hours => "hours",
            Unit::Days => "days",
        }
    }

    /// A value parser for durations of `range` units.
    fn range(
        self,
        range: RangeInclusive<u64>,
    ) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
        move |s| self.parse(s, &range)
    }

    fn parse(self, s: &str, range: &RangeInclusive<u64>) -> Result<Duration, String> {
        let s = s.trim();
        let d = match s.parse::<u64>() {
            Ok(n) => self.times(n).ok_or("is too long")?,
            Err(_) => humantime::parse_duration(s).map_err(|e| {
                format!(
                    "is neither a number of {} nor a duration like 90s, 5m or 2h: {e}",
                    self.name()
                )
            })?,
        };
        if d.as_nanos() % self.nanos() != 0 {
            return Err(format!("must be a whole number of {}", self.name()));
        }
        let count = d.as_nanos() / self.nanos();
        if !u64::try_from(count).is_ok_and(|c| range.contains(&c)) {
            return Err(match *range.end() {
                u64::MAX => format!("must be at least {} {}", range.start(), self.name()),
                end => format!("must be {} to {end} {}", range.start(), self.name()),
            });
        }
        Ok(d)
    }

    fn times(self, n: u64) -> Option<Duration> {
        match self {
            Unit::Milliseconds => Some(Duration::from_millis(n)),
            Unit::Seconds => Some(Duration::from_secs(n)),
            Unit::Hours => n.checked_mul(3600).map(Duration::from_secs),
            Unit::Days => n.checked_mul(86_400).map(Duration::from_secs),
        }
    }
}

/// `off`, or what `parse` reads.
trait OrOff {
    fn or_off(
        self,
    ) -> impl Fn(&str) -> Result<Option<Duration>, String> + Clone + Send + Sync + 'static;
}

impl<P> OrOff for P
where
    P: Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static,
{
    fn or_off(
        self,
    ) -> impl Fn(&str) -> Result<Option<Duration>, String> + Clone + Send + Sync + 'static {
        move |s| match s.trim() {
            "off" => Ok(None),
            s => self(s).map(Some),
        }
    }
}

/// An absolute `http` or `https` URL.
fn http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("must be an http(s) URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("must be an http(s) URL, not {other}:")),
    }
}

/// FACEPAIR_PLATFORM_NAME: printable, 1 to 60 characters, trimmed.
fn platform_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    let count = s.chars().count();
    if !(1..=60).contains(&count) {
        return Err(format!("must be 1 to 60 characters, not {count}"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(s.to_owned())
}

/// One entry of FACEPAIR_FRAME_ANCESTORS: an http(s) origin as CSP and postMessage expect it
/// (`https://platform.example`, no path; `https://*.platform.example` for CSP). An empty
/// entry (a stray comma) reads as "" and is skipped.
fn origin(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(String::new());
    }
    let not_origin = "is not an origin like https://platform.example";
    let url = http_url(s).map_err(|e| format!("{not_origin}: {e}"))?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{not_origin}: it has a path"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{not_origin}: it has a user name"));
    }
    // WHATWG URLs allow `;`, `'` and `,` in a host, which would end the CSP directive
    let host_name = |d: &str| {
        d.strip_prefix("*.").unwrap_or(d).split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    };
    match url.host() {
        Some(url::Host::Domain(d)) if !host_name(d) => {
            Err(format!("{not_origin}: {d:?} is not a host name"))
        }
        _ => Ok(url.origin().ascii_serialization()),
    }
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
    fn events(&self) -> Result<Events, ConfigError> {
        use secrecy::ExposeSecret;
        let secrets = self
            .event_secrets
            .iter()
            .filter(|s| !s.expose_secret().trim().is_empty())
            .enumerate()
            .map(|(i, s)| {
                WebhookSecret::parse(s.expose_secret().trim())
                    .map_err(|e| bad("FACEPAIR_EVENT_SECRETS", format!("entry {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !self.event_endpoints.is_empty() && secrets.is_empty() {
            return Err(bad(
                "FACEPAIR_EVENT_SECRETS",
                "is required with FACEPAIR_EVENT_ENDPOINTS",
            ));
        }
        for url in &self.event_endpoints {
            crate::domain::outbound::check_endpoint_url(url, self.event_allow_private_http)
                .map_err(|e| bad("FACEPAIR_EVENT_ENDPOINTS", format!("{url}: {e}")))?;
        }
        Ok(Events {
            endpoints: self.event_endpoints.clone(),
            secrets,
            allow_private_http: self.event_allow_private_http,
            timeout: self.event_timeout,
            retry_schedule: self.event_retry_schedule.clone(),
            poll_interval: self.event_poll_interval,
        })
    }

    /// The settings, after the checks that span several variables or concern secrets; each
    /// variable's own range and form were checked as it was parsed.
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
        if self.max_attempts_per_scan_ref_hour_total < self.max_attempts_per_scan_ref_hour {
            return Err(bad(
                "FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR_TOTAL",
                "must be at least FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR",
            ));
        }
        let events = self.events()?;
        let days = |d: Duration| chrono::Duration::from_std(d).expect("at most 36500 days");
        Ok(Settings {
            listen: self.listen,
            public_url: self.public_url.clone(),
            api_keys,
            idenfy_base_url: self.idenfy_base_url.clone(),
            idenfy_api_key: self.idenfy_api_key.clone(),
            idenfy_api_secret: self.idenfy_api_secret.clone(),
            idenfy_signing_keys,
            idenfy_timeout: self.idenfy_timeout,
            code_lifetime: self.code_lifetime,
            max_attempts_per_login: self.max_attempts_per_login,
            max_attempts_per_scan_ref_hour: self.max_attempts_per_scan_ref_hour,
            max_attempts_per_scan_ref_hour_total: self.max_attempts_per_scan_ref_hour_total,
            approval_ttl: self.approval_ttl,
            poll_interval_seconds: self.poll_interval_seconds,
            webhook_max_bytes: self.webhook_max_bytes,
            expiry_interval: self.expiry_interval.max(Duration::from_millis(50)),
            frame_ancestors: self
                .frame_ancestors
                .iter()
                .filter(|o| !o.is_empty())
                .cloned()
                .collect(),
            return_url: self.return_url.clone(),
            platform_name: self.platform_name.clone(),
            reconcile_after: self.reconcile_grace,
            limits: Limits {
                logins_per_api_key_per_minute: self.logins_per_api_key_per_minute.max(1),
                logins_per_client_ip_per_hour: self.logins_per_client_ip_per_hour.max(1),
                watch_misses_per_ip: self.watch_misses_per_ip.max(1),
                watch_codes_per_ip_per_hour: self.watch_codes_per_ip_per_hour.max(1),
                watch_codes_per_token_per_hour: self.watch_codes_per_token_per_hour.max(1),
            },
            trusted_proxies,
            workers: self.workers.filter(|w| *w > 0),
            events,
            retention: Retention {
                identity: days(self.retention),
                delivery_bodies: days(self.delivery_body_retention),
                every: (!self.purge_interval.is_zero()).then_some(self.purge_interval),
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
        parse(extra).unwrap().serve.settings()
    }

    /// The message a value refused as it is parsed stops start-up with.
    fn refused(flag: &str) -> String {
        match parse(&[flag]) {
            Ok(_) => panic!("{flag} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    fn parse(extra: &[&str]) -> Result<Cli, clap::Error> {
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

    #[test]
    fn ranges_are_checked_as_variables_are_read_and_named_in_the_message() {
        for (flag, variable, wanted) in [
            (
                "--poll-interval-seconds=0",
                "FACEPAIR_POLL_INTERVAL_SECONDS",
                "1..=60",
            ),
            (
                "--poll-interval-seconds=61",
                "FACEPAIR_POLL_INTERVAL_SECONDS",
                "1..=60",
            ),
            (
                "--webhook-max-bytes=1023",
                "FACEPAIR_WEBHOOK_MAX_BYTES",
                "1024..=1048576",
            ),
            (
                "--max-attempts-per-login=0",
                "FACEPAIR_MAX_ATTEMPTS_PER_LOGIN",
                "1..",
            ),
            (
                "--max-attempts-per-scan-ref-hour=0",
                "FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR",
                "1..",
            ),
            (
                "--idenfy-timeout-seconds=31",
                "FACEPAIR_IDENFY_TIMEOUT_SECONDS",
                "1 to 30 seconds",
            ),
            (
                "--idenfy-timeout-seconds=0",
                "FACEPAIR_IDENFY_TIMEOUT_SECONDS",
                "1 to 30 seconds",
            ),
            (
                "--approval-ttl-seconds=9",
                "FACEPAIR_APPROVAL_TTL_SECONDS",
                "10 to 3600 seconds",
            ),
            (
                "--approval-ttl-seconds=2h",
                "FACEPAIR_APPROVAL_TTL_SECONDS",
                "10 to 3600 seconds",
            ),
            (
                "--code-lifetime-seconds=0",
                "FACEPAIR_CODE_LIFETIME_SECONDS",
                "1 to 2592000 seconds",
            ),
            (
                "--code-lifetime-seconds=31d",
                "FACEPAIR_CODE_LIFETIME_SECONDS",
                "1 to 2592000 seconds",
            ),
            (
                "--retention-days=0",
                "FACEPAIR_RETENTION_DAYS",
                "1 to 36500 days",
            ),
            (
                "--delivery-body-retention-days=36501",
                "FACEPAIR_DELIVERY_BODY_RETENTION_DAYS",
                "1 to 36500 days",
            ),
            (
                "--reconcile-grace-seconds=3601",
                "FACEPAIR_RECONCILE_GRACE_SECONDS",
                "0 to 3600 seconds",
            ),
            (
                "--reconcile-grace-seconds=soon",
                "FACEPAIR_RECONCILE_GRACE_SECONDS",
                "nor a duration like 90s",
            ),
            (
                "--reconcile-grace-seconds=1500ms",
                "FACEPAIR_RECONCILE_GRACE_SECONDS",
                "whole number of seconds",
            ),
            (
                "--retention-days=36h",
                "FACEPAIR_RETENTION_DAYS",
                "whole number of days",
            ),
            (
                "--purge-interval-hours=-1",
                "FACEPAIR_PURGE_INTERVAL_HOURS",
                "number of hours",
            ),
        ] {
            let e = refused(flag);
            assert!(e.contains(variable) && e.contains(wanted), "{flag}: {e}");
        }
    }

    #[test]
    fn durations_are_plain_numbers_in_their_unit_or_humantime() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.reconcile_after, Some(Duration::from_secs(30)));
        assert_eq!(s.approval_ttl, Duration::from_secs(120));
        assert_eq!(s.code_lifetime.seconds(), 600);
        assert_eq!(s.retention.identity, chrono::Duration::days(90));
        assert_eq!(s.retention.every, Some(Duration::from_secs(24 * 3600)));
        let s = settings(&[
            "--reconcile-grace-seconds=off",
            "--approval-ttl-seconds=2m",
            "--code-lifetime-seconds=1h 30m",
            "--idenfy-timeout-seconds=30",
            "--retention-days=2w",
            "--delivery-body-retention-days=7",
            "--purge-interval-hours=0",
            "--expiry-interval-ms=10",
        ])
        .unwrap();
        assert_eq!(s.reconcile_after, None);
        assert_eq!(s.approval_ttl, Duration::from_secs(120));
        assert_eq!(s.code_lifetime.seconds(), 5400);
        assert_eq!(s.idenfy_timeout, Duration::from_secs(30));
        assert_eq!(s.retention.identity, chrono::Duration::days(14));
        assert_eq!(s.retention.delivery_bodies, chrono::Duration::days(7));
        assert_eq!(s.retention.every, None);
        assert_eq!(
            s.expiry_interval,
            Duration::from_millis(50),
            "at least 50 ms"
        );
        for grace in ["0", " 45 ", "45s", "1h"] {
            let s = settings(&[&format!("--reconcile-grace-seconds={grace}")]).unwrap();
            assert!(s.reconcile_after.is_some(), "{grace}");
        }
    }

    #[test]
    fn urls_must_be_http_and_absolute() {
        for (flag, variable) in [
            ("--public-url", "FACEPAIR_PUBLIC_URL"),
            ("--idenfy-base-url", "FACEPAIR_IDENFY_BASE_URL"),
            ("--return-url", "FACEPAIR_RETURN_URL"),
        ] {
            for url in [
                "ivs.idenfy.com",
                "ftp://ivs.idenfy.com",
                "https://",
                "/path",
            ] {
                let e = refused(&format!("{flag}={url}"));
                assert!(
                    e.contains(variable) && e.contains("http(s) URL"),
                    "{url}: {e}"
                );
            }
            settings(&[&format!("{flag}=https://facepair.example:8443/base")]).unwrap();
        }
        let s = settings(&["--return-url=http://127.0.0.1:9/platform/done"]).unwrap();
        assert_eq!(
            s.return_url.unwrap().as_str(),
            "http://127.0.0.1:9/platform/done"
        );
        assert_eq!(
            settings(&[]).unwrap().idenfy_base_url.as_str(),
            "https://ivs.idenfy.com/"
        );
    }

    #[test]
    fn frame_ancestors_are_origins() {
        let s = settings(&[
            "--frame-ancestors= https://Platform.Example/ ,,http://127.0.0.1:9000,https://*.platform.example,",
        ])
        .unwrap();
        assert_eq!(
            s.frame_ancestors,
            [
                "https://platform.example",
                "http://127.0.0.1:9000",
                "https://*.platform.example"
            ]
        );
        assert!(
            settings(&["--frame-ancestors="])
                .unwrap()
                .frame_ancestors
                .is_empty()
        );
        for origin in [
            "platform.example",
            "https://platform.example/login",
            "https://platform.example?x=1",
            "https://user@platform.example",
            "javascript:alert(1)",
            "https://platform.example;script-src *",
            "https://platform.example;script-src",
            "https://platform.example'",
            "https://platform.example%3Bscript-src",
            "https://*",
        ] {
            let e = refused(&format!("--frame-ancestors={origin}"));
            assert!(
                e.contains("FACEPAIR_FRAME_ANCESTORS") && e.contains("not an origin"),
                "{origin}: {e}"
            );
        }
    }

    #[test]
    fn the_total_budget_is_at_least_the_per_address_one() {
        let e = settings(&[
            "--max-attempts-per-scan-ref-hour=20",
            "--max-attempts-per-scan-ref-hour-total=19",
        ])
        .unwrap_err();
        assert_eq!(e.variable, "FACEPAIR_MAX_ATTEMPTS_PER_SCAN_REF_HOUR_TOTAL");
    }
}
