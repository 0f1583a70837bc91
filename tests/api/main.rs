//! Black-box tests of the HTTP API against real PostgreSQL (one database per test).

mod abuse;
mod binding;
mod browser;
mod create;
mod e2e;
mod faults;
mod helpers;
mod layers;
mod lifecycle;
mod live;
mod logs;
mod migrations;
mod model;
mod ops;
mod ops_tools;
mod outage;
mod outbound;
mod pool;
mod sdk;
mod sim_conformance;
mod watch;
mod webhook;
