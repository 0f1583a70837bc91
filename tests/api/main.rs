//! Black-box tests of the HTTP API against real PostgreSQL (one database per test).

mod create;
mod helpers;
mod lifecycle;
mod ops;
mod watch;
mod webhook;
