//! SQL, one module per table family. Small functions over a connection or executor; composite
//! changes are composed in a transaction by the caller.

pub mod attempts;
pub mod deliveries;
pub mod events;
pub mod limits;
pub mod logins;
