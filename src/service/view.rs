//! The login document every reader sees: platform GET, watch GET, SSE, long-poll.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::network::NetworkMatch;
use crate::domain::state::{self, LoginFacts};
use crate::domain::{AttemptStatus, LoginStatus};
use crate::store::logins::{LoginRow, Parts};

/// Who reads: the platform's backend sees identity data, a browser never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Platform,
    Browser,
}

/// Where a login stands now. A pending code past its expiry reads as expired at once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoginState {
    /// Platform only: the browser never learns the handle that redeems the login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_id: Option<Uuid>,
    pub status: LoginStatus,
    /// The platform's opaque `state` from the login's creation, if it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The language tag given at creation; the pairing component speaks it when it can.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The platform's name as given at creation, shown by the pairing component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_name: Option<String>,
    /// Where the desktop seems to be, as given at creation, shown by the pairing component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desktop_place: Option<String>,
    /// While approved: the approval must be redeemed before this time, or the login reads
    /// `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// Platform only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan_ref: Option<String>,
    /// Platform only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_ref: Option<String>,
    pub attempt: AttemptState,
    /// Codes issued so far that count toward the budget, this one included. A failure whose
    /// selfie came from another network than the desktop's does not count.
    pub attempts_used: i32,
    pub max_attempts: i32,
    /// Whether `POST .../attempts` would issue a new code now.
    pub can_request_new_code: bool,
    /// Poll no faster than this; browsers polling faster get 429 `slow_down`.
    pub poll_interval_seconds: u32,
    pub created_at: DateTime<Utc>,
    /// The server's clock when this document was made; count down from `expires_at` against
    /// it, not against the local clock.
    pub server_time: DateTime<Utc>,
    /// The sequence number of the last event; SSE `id:` uses the same numbers.
    pub event_seq: i32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptState {
    pub id: Uuid,
    /// 1 for the login's first code, 2 for the next, ...
    pub number: i32,
    pub status: AttemptStatus,
    /// The code to show; present only while the attempt is pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digit_string: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// Tries iDenfy allows within this session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempt_count: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// iDenfy's failReason for a failed attempt, e.g. `FACE_MISMATCH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    /// Once the selfie came: how the phone's network relates to the desktop's. A phone on
    /// another network may be a person tricked into typing someone else's code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_match: Option<NetworkMatch>,
}

/// The attempt and login status as of `now`, derived by the domain rules: a code or an
/// approval past its time reads expired before the expiry task records it.
pub fn effective(row: &LoginRow, now: DateTime<Utc>) -> (AttemptStatus, LoginStatus) {
    let attempt = state::effective(row.attempt.status, row.attempt.expires_at, now);
    let login = state::login_status(LoginFacts {
        current_attempt: attempt,
        attempts_used: row.budget_used(),
        max_attempts: row.max_attempts,
        redeemed: row.redeemed_at.is_some(),
        canceled: row.canceled_at.is_some(),
        approval_expired: approval_lapsed(row, now),
    });
    (attempt, login)
}

/// The approval may no longer be redeemed: its time passed (an approval recorded without one
/// has none), or the expiry task recorded it so, whatever this instance's clock says.
fn approval_lapsed(row: &LoginRow, now: DateTime<Utc>) -> bool {
    row.approved_at.is_some()
        && (row.approval_expires_at.is_none_or(|at| now >= at)
            || row.status == LoginStatus::Expired)
}

/// No call or webhook can change the login any more, and nothing is left to record: a final
/// status, or an approval that expired with no code left to ask for, as stored. A status the
/// clock gave before the expiry task recorded it is not settled: its event is still to come.
pub fn settled(row: &LoginRow, now: DateTime<Utc>) -> bool {
    let status = effective(row, now).1;
    status == row.status
        && (status.is_final()
            || (status == LoginStatus::Expired
                && state::may_issue_code(status, row.budget_used(), row.max_attempts).is_err()))
}

/// When the clock alone next changes the login's document (its code or its approval
/// expires), if it will.
pub fn clock_changes_at(row: &LoginRow, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match effective(row, now) {
        (AttemptStatus::Pending, _) => Some(row.attempt.expires_at),
        (_, LoginStatus::Approved) => row.approval_expires_at,
        _ => None,
    }
}

/// The row's code is pending as stored but its time is up: the clock expired it, and the
/// expiry is not recorded yet.
pub fn expired_by_clock(row: &LoginRow, now: DateTime<Utc>) -> bool {
    let stored = row.attempt.status;
    stored == AttemptStatus::Pending
        && state::effective(stored, row.attempt.expires_at, now) == AttemptStatus::Expired
}

impl LoginState {
    pub fn build(
        row: &LoginRow,
        now: DateTime<Utc>,
        poll_interval_seconds: u32,
        audience: Audience,
    ) -> Self {
        let (attempt_status, status) = effective(row, now);
        let platform = audience == Audience::Platform;
        Self {
            login_id: platform.then_some(row.id),
            status,
            state: row.state.clone(),
            locale: row.locale.clone(),
            platform_name: row.platform_name.clone(),
            desktop_place: row.desktop_place.clone(),
            approval_expires_at: row
                .approval_expires_at
                .filter(|_| status == LoginStatus::Approved),
            scan_ref: if platform { row.scan_ref.clone() } else { None },
            user_ref: if platform { row.user_ref.clone() } else { None },
            attempt: AttemptState {
                id: row.attempt.id,
                number: row.attempt.number,
                status: attempt_status,
                digit_string: if attempt_status == AttemptStatus::Pending {
                    row.attempt.digit_string.clone()
                } else {
                    None
                },
                expires_at: row.attempt.expires_at,
                max_attempt_count: row.attempt.idenfy_max_attempt_count,
                // a code the clock expired but the expiry task has not recorded yet ended at
                // its expiry
                finished_at: row
                    .attempt
                    .finished_at
                    .or((attempt_status != AttemptStatus::Pending)
                        .then_some(row.attempt.expires_at)),
                fail_reason: row.attempt.fail_reason.clone(),
                network_match: row.attempt.network_match,
            },
            attempts_used: row.budget_used(),
            max_attempts: row.max_attempts,
            can_request_new_code: state::may_issue_code(
                status,
                row.budget_used(),
                row.max_attempts,
            )
            .is_ok(),
            poll_interval_seconds,
            created_at: row.created_at,
            server_time: now,
            event_seq: row.event_seq,
        }
    }

    /// Changes whenever the document's meaning does: a new event, or the clock expiring the
    /// code or the approval.
    pub fn etag(&self) -> String {
        etag(self.event_seq, self.status)
    }
}

/// The document as JSON, the same bytes as serialising [`LoginState::build`]. The first
/// reader of a row for an audience and clock overlay serialises it whole and keeps it with
/// the row in two parts; later readers write only `server_time` between them.
/// `login_now` is the login's effective status at `now` ([`effective`]).
pub fn render(
    row: &LoginRow,
    now: DateTime<Utc>,
    login_now: LoginStatus,
    poll_interval_seconds: u32,
    audience: Audience,
) -> Vec<u8> {
    // for one row, only the clock's overlay (a code or an approval expired, which moves the
    // login's status off the stored one) changes the document's content
    let slot = 2 * (audience == Audience::Browser) as usize + (login_now != row.status) as usize;
    let (head, tail) = row.rendered.0[slot].get_or_init(|| {
        let whole = serde_json::to_vec(&LoginState::build(
            row,
            now,
            poll_interval_seconds,
            audience,
        ))
        .expect("a login document serialises");
        split_at_server_time(&whole)
    });
    let mut out = Vec::with_capacity(head.len() + tail.len() + 40);
    out.extend_from_slice(head);
    // as serde writes it, without its escaping of each character
    out.push(b'"');
    out.extend_from_slice(now.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
    out.push(b'"');
    out.extend_from_slice(tail);
    out
}

/// The document before and after the value of `server_time`. A string value cannot contain
/// the unescaped key, so the key is found only where it is one.
fn split_at_server_time(whole: &[u8]) -> Parts {
    const KEY: &[u8] = b"\"server_time\":\"";
    let start = whole
        .windows(KEY.len())
        .position(|w| w == KEY)
        .expect("the document has server_time")
        + KEY.len()
        - 1;
    let end = start
        + 1
        + whole[start + 1..]
            .iter()
            .position(|&b| b == b'"')
            .expect("server_time is a string")
        + 1;
    (whole[..start].into(), whole[end..].into())
}

/// The ETag of a login's document, from the login's event sequence and its effective status
/// (which the clock alone moves): a reader can compare it without building the document.
pub fn etag(event_seq: i32, login: LoginStatus) -> String {
    format!("\"{}-{}\"", event_seq, login.as_str())
}

#[cfg(test)]
mod tests {
    use chrono::Timelike as _;

    use super::*;

    fn row(attempt_status: AttemptStatus, expires_in_secs: i64) -> LoginRow {
        let expires_at = Utc::now() + chrono::Duration::seconds(expires_in_secs);
        LoginRow::sample(uuid::Uuid::now_v7(), attempt_status, expires_at)
    }

    #[test]
    fn the_etag_without_the_document_is_the_documents_etag() {
        let now = Utc::now();
        for (status, expires_in) in [
            (AttemptStatus::Pending, 60),
            (AttemptStatus::Pending, -1),
            (AttemptStatus::Failed, -1),
        ] {
            let row = row(status, expires_in);
            for audience in [Audience::Platform, Audience::Browser] {
                let doc = LoginState::build(&row, now, 2, audience);
                let without_document = etag(row.event_seq, effective(&row, now).1);
                assert_eq!(without_document, doc.etag(), "{status:?} {expires_in}");
            }
        }
        // the clock alone changes it: a pending code past its expiry reads as expired
        assert_ne!(
            etag(1, effective(&row(AttemptStatus::Pending, 60), now).1),
            etag(1, effective(&row(AttemptStatus::Pending, -1), now).1)
        );
    }

    #[test]
    fn an_approval_past_its_time_reads_expired_and_the_browser_never_sees_the_login_id() {
        let now = Utc::now();
        let mut approved = row(AttemptStatus::Succeeded, -60);
        approved.status = LoginStatus::Approved;
        approved.attempt.id = uuid::Uuid::now_v7();
        approved.approved_at = Some(now);
        approved.approval_expires_at = Some(now + chrono::Duration::seconds(30));
        let doc = LoginState::build(&approved, now, 2, Audience::Platform);
        assert_eq!(doc.status, LoginStatus::Approved);
        assert_eq!(doc.approval_expires_at, approved.approval_expires_at);
        assert_eq!(doc.login_id, Some(approved.id));
        assert_eq!(
            clock_changes_at(&approved, now),
            approved.approval_expires_at
        );
        let later = now + chrono::Duration::seconds(31);
        let doc = LoginState::build(&approved, later, 2, Audience::Platform);
        assert_eq!(doc.status, LoginStatus::Expired);
        assert_eq!(doc.approval_expires_at, None);
        assert!(!doc.can_request_new_code || doc.attempts_used < doc.max_attempts);
        let browser = LoginState::build(&approved, now, 2, Audience::Browser);
        assert_eq!(browser.login_id, None);
        let json = serde_json::to_string(&browser).unwrap();
        assert!(!json.contains(&approved.id.to_string()), "{json}");
    }

    #[test]
    fn only_a_pending_code_past_its_time_is_expired_by_the_clock() {
        let now = Utc::now();
        assert!(expired_by_clock(&row(AttemptStatus::Pending, -1), now));
        assert!(!expired_by_clock(&row(AttemptStatus::Pending, 60), now));
        for ended in [AttemptStatus::Failed, AttemptStatus::Expired] {
            assert!(!expired_by_clock(&row(ended, -1), now), "{ended:?}");
        }
    }

    #[test]
    fn a_rendered_document_is_the_serialised_document_at_every_read() {
        let expires_at = Utc::now() + chrono::Duration::seconds(30);
        let mut rows = Vec::new();
        for status in [
            AttemptStatus::Pending,
            AttemptStatus::Succeeded,
            AttemptStatus::Failed,
            AttemptStatus::Canceled,
        ] {
            let mut row = LoginRow::sample(uuid::Uuid::now_v7(), status, expires_at);
            // identity data with characters JSON escapes, including the key being searched
            row.user_ref = Some(r#"a"server_time":"x" \ é"#.into());
            row.attempt.fail_reason =
                (status == AttemptStatus::Failed).then(|| "FACE_MISMATCH".into());
            if status == AttemptStatus::Succeeded {
                // an approval that lapses within the reads
                row.status = LoginStatus::Approved;
                row.approved_at = Some(expires_at - chrono::Duration::seconds(60));
                row.approval_expires_at = Some(expires_at);
                row.state = Some("opaque \"state\"".into());
            }
            rows.push(row);
        }
        // before the code's expiry, across it, and long after: the memo holds both variants;
        // and clocks whose fraction of a second has 9, 6, 3 and no digits
        let mut reads = [-20, -1, 0, 1, 25, 31, 300]
            .map(|s| expires_at + chrono::Duration::seconds(s))
            .to_vec();
        let whole_second = expires_at.with_nanosecond(0).unwrap();
        for nanos in [0, 5_000, 7_000_000, 123_456_789] {
            reads.push(whole_second + chrono::Duration::nanoseconds(nanos));
        }
        for row in &rows {
            for audience in [Audience::Platform, Audience::Browser] {
                for _ in 0..2 {
                    for &now in &reads {
                        let expected =
                            serde_json::to_vec(&LoginState::build(row, now, 2, audience)).unwrap();
                        let rendered = render(row, now, effective(row, now).1, 2, audience);
                        assert_eq!(
                            String::from_utf8(rendered).unwrap(),
                            String::from_utf8(expected).unwrap(),
                            "{:?} {audience:?} at {now}",
                            row.attempt.status
                        );
                    }
                }
            }
        }
    }
}
