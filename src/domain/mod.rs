//! Logins, attempts, the state machine and budgets. No I/O here.

pub mod events;
pub mod locale;
pub mod network;
pub mod outbound;
pub mod state;
pub mod types;
pub mod verdict;

pub use events::EventKind;
pub use locale::Locale;
pub use state::{AttemptEvent, AttemptStatus, IdenfyOutcome, LoginStatus, Source};
pub use types::{DigitString, Invalid, Lifetime, ScanRef, UserRef, WatchToken};
pub use verdict::Verdict;

/// Asserts that serde (JSON) and sqlx (a `text` column) both write `value` as `name`, so an
/// enum's `as_str` and its derived names cannot drift apart.
#[cfg(test)]
fn assert_named<T>(value: T, name: &str)
where
    T: serde::Serialize + for<'q> sqlx::Encode<'q, sqlx::Postgres> + std::fmt::Debug,
{
    assert_eq!(
        serde_json::to_value(&value).unwrap(),
        name,
        "{value:?} in JSON"
    );
    let mut buf = sqlx::postgres::PgArgumentBuffer::default();
    let _ = value.encode_by_ref(&mut buf).unwrap();
    assert_eq!(&buf[..], name.as_bytes(), "{value:?} in PostgreSQL");
}
