//! Logins, attempts, the state machine and budgets. No I/O here.

pub mod network;
pub mod state;
pub mod types;
pub mod verdict;

pub use state::{AttemptEvent, AttemptStatus, IdenfyOutcome, LoginStatus, Source};
pub use types::{DigitString, Invalid, Lifetime, Locale, ScanRef, UserRef, WatchToken};
pub use verdict::Verdict;
