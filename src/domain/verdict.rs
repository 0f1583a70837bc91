//! What became of a webhook delivery.

/// What became of a delivery. Every verdict but a database failure is answered 2xx: iDenfy
/// must stop retrying something that will never change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Verdict {
    /// The attempt moved.
    Applied,
    /// The same body was received before.
    Duplicate,
    /// No attempt has this token.
    UnknownToken,
    /// The token's login is for another scanRef.
    ScanRefMismatch,
    /// iDenfy had already reported this attempt's outcome.
    AttemptTerminal,
    /// The attempt had ended on facepair's side (expired, superseded, canceled) before the
    /// outcome arrived.
    Late,
    /// `status` is not one facepair knows; kept as received.
    UnknownStatus,
    /// `type` is not AUTHENTICATION or `method` not FACE_MATCHING: not a session of the
    /// kind facepair creates.
    UnexpectedType,
    /// Not JSON, or not the webhook's shape.
    Unparseable,
}

impl Verdict {
    pub const ALL: [Verdict; 9] = [
        Self::Applied,
        Self::Duplicate,
        Self::UnknownToken,
        Self::ScanRefMismatch,
        Self::AttemptTerminal,
        Self::Late,
        Self::UnknownStatus,
        Self::UnexpectedType,
        Self::Unparseable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::UnknownToken => "unknown_token",
            Self::ScanRefMismatch => "scan_ref_mismatch",
            Self::AttemptTerminal => "attempt_terminal",
            Self::Late => "late",
            Self::UnknownStatus => "unknown_status",
            Self::UnexpectedType => "unexpected_type",
            Self::Unparseable => "unparseable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_each() {
        for verdict in Verdict::ALL {
            super::super::assert_named(verdict, verdict.as_str());
        }
    }
}
