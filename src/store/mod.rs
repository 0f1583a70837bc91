//! SQL, one module per table family. Small functions over a connection or executor; a login's state
//! changes touch several tables in one statement (`changes`); the caller holds the transaction.

pub mod attempts;
pub mod changes;
pub mod deliveries;
pub mod events;
pub mod limits;
pub mod logins;

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};

/// An advisory lock key: the first 8 bytes of SHA-256 over `namespace` and `value`.
pub fn lock_key(namespace: &str, value: &[u8]) -> i64 {
    let digest = Sha256::new()
        .chain_update(namespace)
        .chain_update([0])
        .chain_update(value)
        .finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Begins a transaction holding the advisory lock `key` until it ends, in one round trip: the
/// lock rides on the `BEGIN` (a number formatted here, nothing from outside).
pub async fn begin_locked(
    pool: &PgPool,
    key: i64,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(sqlx::AssertSqlSafe(format!(
        "begin; select pg_advisory_xact_lock({key})"
    )))
    .await
}
