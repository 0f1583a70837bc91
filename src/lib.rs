//! facepair: log people in on desktop platforms with iDenfy face authentication and a short
//! digit code.

pub mod app;
pub mod config;
pub mod dev;
pub mod domain;
pub mod error;
pub mod http;
pub mod idenfy;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod ops;
pub mod service;
pub mod sim;
pub mod store;
pub mod telemetry;

pub use app::Application;
pub use config::Settings;

/// The schema migrations, applied by `facepair migrate` and at the start of `facepair dev`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
