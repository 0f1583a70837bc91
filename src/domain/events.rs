//! What a login's events say happened: the `kind` of each row of the events table and the
//! `event:` name of each Server-Sent Event.

use serde::Serialize;

use super::AttemptStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum EventKind {
    LoginCreated,
    AttemptIssued,
    AttemptSucceeded,
    AttemptFailed,
    AttemptCanceled,
    AttemptExpired,
    AttemptSuperseded,
    LoginCanceled,
    LoginRedeemed,
    /// An approval was not redeemed in time.
    ApprovalExpired,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        Self::LoginCreated,
        Self::AttemptIssued,
        Self::AttemptSucceeded,
        Self::AttemptFailed,
        Self::AttemptCanceled,
        Self::AttemptExpired,
        Self::AttemptSuperseded,
        Self::LoginCanceled,
        Self::LoginRedeemed,
        Self::ApprovalExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginCreated => "login_created",
            Self::AttemptIssued => "attempt_issued",
            Self::AttemptSucceeded => "attempt_succeeded",
            Self::AttemptFailed => "attempt_failed",
            Self::AttemptCanceled => "attempt_canceled",
            Self::AttemptExpired => "attempt_expired",
            Self::AttemptSuperseded => "attempt_superseded",
            Self::LoginCanceled => "login_canceled",
            Self::LoginRedeemed => "login_redeemed",
            Self::ApprovalExpired => "approval_expired",
        }
    }

    /// The event of an attempt reaching `status`.
    pub fn attempt(status: AttemptStatus) -> Self {
        match status {
            AttemptStatus::Pending => Self::AttemptIssued,
            AttemptStatus::Succeeded => Self::AttemptSucceeded,
            AttemptStatus::Failed => Self::AttemptFailed,
            AttemptStatus::Canceled => Self::AttemptCanceled,
            AttemptStatus::Expired => Self::AttemptExpired,
            AttemptStatus::Superseded => Self::AttemptSuperseded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_each() {
        for kind in EventKind::ALL {
            super::super::assert_named(kind, kind.as_str());
        }
    }
}
