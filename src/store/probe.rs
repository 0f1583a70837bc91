//! Why a pool found no connection. sqlx 0.9.1's pool retries a refused connection until its
//! acquire timeout and then reports only `PoolTimedOut`; facepair opens one connection of its
//! own to learn what PostgreSQL, or the network, answers.

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::time::Instant;

/// How long the probe's own connection may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one probe's answer stands for every pool of the process: an outage adds one
/// connection attempt per second, not one per failed request.
const REUSED_FOR: Duration = Duration::from_secs(1);

/// Why `pool` timed out: all its connections were busy, or what opening a new one answers.
pub async fn why_pool_timed_out(pool: &PgPool) -> String {
    let max = pool.options().get_max_connections();
    if pool.size() >= max {
        return format!("all {max} of the pool's connections are in use");
    }
    why_no_connection(&pool.connect_options()).await
}

/// What opening a connection with `options` answers, naming where it went (never the
/// password), e.g. "a new connection to PostgreSQL at 127.0.0.1:5432 fails: error
/// communicating with database: Connection refused (os error 111)".
pub async fn why_no_connection(options: &PgConnectOptions) -> String {
    static LAST: LazyLock<tokio::sync::Mutex<Option<(Instant, String, String)>>> =
        LazyLock::new(|| tokio::sync::Mutex::new(None));
    let target = target(options);
    let mut last = LAST.lock().await;
    if let Some((at, to, why)) = &*last
        && *to == target
        && at.elapsed() < REUSED_FOR
    {
        return why.clone();
    }
    let why = match tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            format!("PostgreSQL at {target} accepts a new connection")
        }
        Ok(Err(e)) => format!(
            "a new connection to PostgreSQL at {target} fails: {}",
            crate::telemetry::error_chain(&e)
        ),
        Err(_) => format!(
            "a new connection to PostgreSQL at {target} takes longer than {} s",
            PROBE_TIMEOUT.as_secs()
        ),
    };
    *last = Some((Instant::now(), target, why.clone()));
    why
}

/// host:port/database, or the socket's path.
fn target(options: &PgConnectOptions) -> String {
    let (host, port) = (options.get_host(), options.get_port());
    let place = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None if host.starts_with('/') => format!("{host}/.s.PGSQL.{port}"),
        None if host.contains(':') => format!("[{host}]:{port}"),
        None => format!("{host}:{port}"),
    };
    match options.get_database() {
        Some(database) => format!("{place}/{database}"),
        None => place,
    }
}
