//! The attempt state machine and the login status derived from it. Pure: no I/O, no clock.
//!
//! Every writer (webhook, expiry task, platform calls) asks [`next`] whether an event moves an
//! attempt; none re-implements the rules.

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AttemptStatus {
    Pending,
    Succeeded,
    Failed,
    Canceled,
    Expired,
    Superseded,
}

impl AttemptStatus {
    pub const ALL: [AttemptStatus; 6] = [
        Self::Pending,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
        Self::Expired,
        Self::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Expired => "expired",
            Self::Superseded => "superseded",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != Self::Pending
    }
}

/// Who decided an attempt's outcome; kept on the attempt and on every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Source {
    Platform,
    Webhook,
    Clock,
    Reconciliation,
    Watch,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Self::Platform,
        Self::Webhook,
        Self::Clock,
        Self::Reconciliation,
        Self::Watch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Platform => "platform",
            Self::Webhook => "webhook",
            Self::Clock => "clock",
            Self::Reconciliation => "reconciliation",
            Self::Watch => "watch",
        }
    }
}

/// The terminal outcomes iDenfy reports for a face-auth session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdenfyOutcome {
    Success,
    Failed,
    Canceled,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEvent {
    /// iDenfy reported the session's end (webhook or reconciliation).
    Idenfy(IdenfyOutcome),
    /// facepair's own clock passed `expires_at`.
    ClockExpired,
    /// A fresh code was issued while this attempt was pending.
    Superseded,
    /// The platform canceled the login.
    LoginCanceled,
}

/// Where `event` takes an attempt in `status`, or `None` when it changes nothing.
/// Only pending attempts move; a terminal attempt never changes again.
pub fn next(status: AttemptStatus, event: AttemptEvent) -> Option<AttemptStatus> {
    if status.is_terminal() {
        return None;
    }
    Some(match event {
        AttemptEvent::Idenfy(IdenfyOutcome::Success) => AttemptStatus::Succeeded,
        AttemptEvent::Idenfy(IdenfyOutcome::Failed) => AttemptStatus::Failed,
        AttemptEvent::Idenfy(IdenfyOutcome::Canceled) | AttemptEvent::LoginCanceled => {
            AttemptStatus::Canceled
        }
        AttemptEvent::Idenfy(IdenfyOutcome::Expired) | AttemptEvent::ClockExpired => {
            AttemptStatus::Expired
        }
        AttemptEvent::Superseded => AttemptStatus::Superseded,
    })
}

/// A pending attempt whose `expires_at` has passed reads as expired at once, before the expiry
/// task records it.
pub fn effective(
    status: AttemptStatus,
    expires_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> AttemptStatus {
    if status == AttemptStatus::Pending && now >= expires_at {
        AttemptStatus::Expired
    } else {
        status
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum LoginStatus {
    /// The current code waits for the person.
    Pending,
    /// An attempt succeeded; the platform may redeem the login once.
    Approved,
    /// The platform consumed the approval.
    Redeemed,
    /// The current attempt failed (or the person canceled it in the app); a new code may be asked for.
    Failed,
    /// The current code expired unused, or the approval was not redeemed in time; a new code
    /// may be asked for.
    Expired,
    /// The platform canceled the login.
    Canceled,
    /// The current attempt ended without success and the attempt budget is spent.
    Exhausted,
}

impl LoginStatus {
    pub const ALL: [LoginStatus; 7] = [
        Self::Pending,
        Self::Approved,
        Self::Redeemed,
        Self::Failed,
        Self::Expired,
        Self::Canceled,
        Self::Exhausted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Redeemed => "redeemed",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Canceled => "canceled",
            Self::Exhausted => "exhausted",
        }
    }

    /// The status named `s`, as the command line takes it.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// No call or webhook can change the login any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Redeemed | Self::Canceled | Self::Exhausted)
    }
}

/// What the login's status is derived from.
#[derive(Debug, Clone, Copy)]
pub struct LoginFacts {
    pub current_attempt: AttemptStatus,
    pub attempts_used: i32,
    pub max_attempts: i32,
    pub redeemed: bool,
    pub canceled: bool,
    /// The approval was not redeemed in time.
    pub approval_expired: bool,
}

pub fn login_status(f: LoginFacts) -> LoginStatus {
    if f.canceled {
        return LoginStatus::Canceled;
    }
    if f.redeemed {
        return LoginStatus::Redeemed;
    }
    let budget_left = f.attempts_used < f.max_attempts;
    match f.current_attempt {
        AttemptStatus::Pending => LoginStatus::Pending,
        AttemptStatus::Succeeded if !f.approval_expired => LoginStatus::Approved,
        // an approval not redeemed in time reads expired, with or without budget left
        AttemptStatus::Succeeded => LoginStatus::Expired,
        _ if !budget_left => LoginStatus::Exhausted,
        AttemptStatus::Expired => LoginStatus::Expired,
        // a superseded attempt is never current; treat it like a failure if it ever is
        AttemptStatus::Failed | AttemptStatus::Canceled | AttemptStatus::Superseded => {
            LoginStatus::Failed
        }
    }
}

/// Why a new code cannot be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRefusal {
    Approved,
    Redeemed,
    Canceled,
    BudgetExhausted,
}

/// May a new code be issued for a login in `status` that has used `attempts_used` of
/// `max_attempts`? A pending code may be superseded while budget remains.
pub fn may_issue_code(
    status: LoginStatus,
    attempts_used: i32,
    max_attempts: i32,
) -> Result<(), CodeRefusal> {
    match status {
        LoginStatus::Approved => Err(CodeRefusal::Approved),
        LoginStatus::Redeemed => Err(CodeRefusal::Redeemed),
        LoginStatus::Canceled => Err(CodeRefusal::Canceled),
        LoginStatus::Exhausted => Err(CodeRefusal::BudgetExhausted),
        LoginStatus::Pending | LoginStatus::Failed | LoginStatus::Expired => {
            if attempts_used >= max_attempts {
                Err(CodeRefusal::BudgetExhausted)
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVENTS: [AttemptEvent; 7] = [
        AttemptEvent::Idenfy(IdenfyOutcome::Success),
        AttemptEvent::Idenfy(IdenfyOutcome::Failed),
        AttemptEvent::Idenfy(IdenfyOutcome::Canceled),
        AttemptEvent::Idenfy(IdenfyOutcome::Expired),
        AttemptEvent::ClockExpired,
        AttemptEvent::Superseded,
        AttemptEvent::LoginCanceled,
    ];

    #[test]
    fn every_state_and_event_pair() {
        use AttemptStatus::*;
        let expected_from_pending = [
            Succeeded, Failed, Canceled, Expired, Expired, Superseded, Canceled,
        ];
        for (event, want) in EVENTS.iter().zip(expected_from_pending) {
            assert_eq!(next(Pending, *event), Some(want), "{event:?}");
        }
        for status in AttemptStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in EVENTS {
                assert_eq!(next(status, event), None, "{status:?} + {event:?}");
            }
        }
    }

    #[test]
    fn one_name_each() {
        for s in AttemptStatus::ALL {
            super::super::assert_named(s, s.as_str());
        }
        for s in LoginStatus::ALL {
            super::super::assert_named(s, s.as_str());
            assert_eq!(LoginStatus::parse(s.as_str()), Some(s));
        }
        for s in Source::ALL {
            super::super::assert_named(s, s.as_str());
        }
        assert_eq!(LoginStatus::parse("PENDING"), None);
    }

    #[test]
    fn clock_expiry_only_touches_pending() {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let later = t + chrono::Duration::seconds(1);
        assert_eq!(
            effective(AttemptStatus::Pending, t, later),
            AttemptStatus::Expired
        );
        assert_eq!(
            effective(AttemptStatus::Pending, t, t),
            AttemptStatus::Expired
        );
        assert_eq!(
            effective(AttemptStatus::Pending, later, t),
            AttemptStatus::Pending
        );
        assert_eq!(
            effective(AttemptStatus::Succeeded, t, later),
            AttemptStatus::Succeeded
        );
    }

    #[test]
    fn login_status_table() {
        let f = |current, used, redeemed, canceled| LoginFacts {
            current_attempt: current,
            attempts_used: used,
            max_attempts: 3,
            redeemed,
            canceled,
            approval_expired: false,
        };
        let lapsed = |used| LoginFacts {
            approval_expired: true,
            ..f(AttemptStatus::Succeeded, used, false, false)
        };
        use AttemptStatus as A;
        use LoginStatus as L;
        assert_eq!(login_status(f(A::Pending, 1, false, false)), L::Pending);
        assert_eq!(login_status(f(A::Pending, 3, false, false)), L::Pending);
        assert_eq!(login_status(f(A::Succeeded, 3, false, false)), L::Approved);
        assert_eq!(login_status(f(A::Succeeded, 1, true, false)), L::Redeemed);
        assert_eq!(login_status(f(A::Failed, 1, false, false)), L::Failed);
        assert_eq!(login_status(f(A::Canceled, 2, false, false)), L::Failed);
        assert_eq!(login_status(f(A::Expired, 2, false, false)), L::Expired);
        assert_eq!(login_status(f(A::Failed, 3, false, false)), L::Exhausted);
        assert_eq!(login_status(f(A::Expired, 3, false, false)), L::Exhausted);
        assert_eq!(login_status(f(A::Canceled, 1, false, true)), L::Canceled);
        assert_eq!(login_status(lapsed(1)), L::Expired);
        assert_eq!(login_status(lapsed(3)), L::Expired);
        let redeemed_in_time = LoginFacts {
            redeemed: true,
            ..lapsed(1)
        };
        assert_eq!(login_status(redeemed_in_time), L::Redeemed);
    }

    fn any_attempt_status() -> impl Strategy<Value = AttemptStatus> {
        proptest::sample::select(AttemptStatus::ALL.to_vec())
    }

    fn any_event() -> impl Strategy<Value = AttemptEvent> {
        proptest::sample::select(EVENTS.to_vec())
    }

    proptest! {
        /// Whatever sequence of events arrives, an attempt moves at most once and never leaves
        /// a terminal state.
        #[test]
        fn at_most_one_move(start in any_attempt_status(), events in proptest::collection::vec(any_event(), 0..12)) {
            let mut status = start;
            let mut moves = 0;
            for event in events {
                if let Some(to) = next(status, event) {
                    prop_assert!(!status.is_terminal());
                    prop_assert!(to.is_terminal());
                    status = to;
                    moves += 1;
                }
            }
            prop_assert!(moves <= 1);
            if start.is_terminal() { prop_assert_eq!(status, start); }
        }

        /// A new code is offered exactly when the login may still change and budget remains.
        #[test]
        fn new_code_rule(status in proptest::sample::select(LoginStatus::ALL.to_vec()), used in 0..6i32, max in 1..6i32) {
            let allowed = may_issue_code(status, used, max).is_ok();
            let expected = matches!(status, LoginStatus::Pending | LoginStatus::Failed | LoginStatus::Expired) && used < max;
            prop_assert_eq!(allowed, expected);
        }
    }
}
