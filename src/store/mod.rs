//! SQL, one module per table family. Small functions over a connection or executor; a login's state
//! changes touch several tables in one statement (`changes`); the caller holds the transaction.

pub mod attempts;
pub mod changes;
pub mod deliveries;
pub mod events;
pub mod limits;
pub mod logins;
pub mod outbound;
pub mod probe;
pub mod reservations;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

/// facepair's pool for `database`: without a ping before use (a connection that died fails
/// its query, the request gets 503 and is retried, and the pool replaces it), with [`hooks`].
pub fn pool_options(database: &crate::config::DatabaseArgs) -> PgPoolOptions {
    hooks(PgPoolOptions::new())
        .max_connections(database.db_max_connections.max(1))
        .acquire_timeout(database.db_acquire_timeout)
        .test_before_acquire(false)
}

/// Milliseconds since the Unix epoch before which opened connections are closed rather than
/// used again; 0 while PostgreSQL never said it is read-only or shutting down.
static DISCARD_OPENED_BEFORE_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// PostgreSQL answered read-only or shutting down (a failover left connections on the old
/// node): every connection open now is closed when next acquired or released.
pub fn discard_open_connections() {
    DISCARD_OPENED_BEFORE_MS.fetch_max(now_ms(), Ordering::Relaxed);
}

fn opened_after_discard(meta: &PoolConnectionMetadata) -> bool {
    let mark = DISCARD_OPENED_BEFORE_MS.load(Ordering::Relaxed);
    mark == 0 || now_ms().saturating_sub(meta.age.as_millis() as u64) > mark
}

/// What every facepair pool does. A new connection waits at most 5 s for a lock (then the
/// request answers 503 and is retried, rather than holding a pooled connection while PostgreSQL
/// is stuck) and may idle in a transaction 30 s (a backstop: no path does); both are set after
/// connecting, since PgBouncer refuses them as startup parameters. Connections
/// [`discard_open_connections`] condemned are closed (a check of a clock, no round trip).
pub fn hooks(options: PgPoolOptions) -> PgPoolOptions {
    options
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql(
                    "set lock_timeout = '5s'; set idle_in_transaction_session_timeout = '30s'",
                )
                .execute(conn)
                .await?;
                Ok(())
            })
        })
        .before_acquire(|_, meta| Box::pin(async move { Ok(opened_after_discard(&meta)) }))
        .after_release(|_, meta| Box::pin(async move { Ok(opened_after_discard(&meta)) }))
}

/// An advisory lock key: the first 8 bytes of SHA-256 over `namespace` and `value`.
pub fn lock_key(namespace: &str, value: &[u8]) -> i64 {
    let digest = Sha256::new()
        .chain_update(namespace)
        .chain_update([0])
        .chain_update(value)
        .finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Begins a transaction holding the advisory lock `key` until it ends, in one round trip.
pub async fn begin_locked(
    pool: &PgPool,
    key: i64,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    // an integer: nothing in it can be read as SQL
    begin_locking(pool, format!("select pg_advisory_xact_lock({key})")).await
}

/// Begins a transaction with `lock`, a statement taking a lock held until it ends, in one
/// round trip. sqlx counts the transaction open before sending it, so a wait that is dropped
/// or fails still ends in a `ROLLBACK` before the connection is used again.
pub(crate) async fn begin_locking(
    pool: &PgPool,
    lock: String,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(sqlx::AssertSqlSafe(format!("begin; {lock}")))
        .await
}
