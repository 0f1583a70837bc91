//! Everything that speaks iDenfy: the outbound client, the webhook body, the signature.

pub mod circuit;
pub mod client;
pub mod signature;
pub mod webhook;

pub use client::{CreatedSession, Eligibility, IdenfyClient, IdenfyError, SessionRequest, outcome};
pub use webhook::{WebhookBody, WebhookStatus};
