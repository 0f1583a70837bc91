-- Binding a login to the platform that asked, and codes reserved before iDenfy is paid.
-- Constraints are added NOT VALID here and validated in 0009.

-- an approval is redeemable until this time; set when an attempt succeeds. Approvals made
-- before approvals expired end now.
alter table logins add column approval_expires_at timestamptz;
update logins set approval_expires_at = approved_at where status = 'approved';
-- the platform's opaque value, handed back to the browser with the outcome
alter table logins add column state text;
alter table logins add constraint logins_state_length check (char_length(state) <= 256) not valid;

-- where a code was asked from (an address, an IPv6 /64 or "unknown"): a scan_ref's hourly
-- budget is counted per address, so strangers cannot spend the person's own
alter table attempts add column requested_from text;

-- a code superseded from the browser is recorded with the source `watch`
alter table attempts drop constraint attempts_outcome_source_check;
alter table attempts add constraint attempts_outcome_source_check check (outcome_source in
    ('webhook', 'clock', 'platform', 'reconciliation', 'watch')) not valid;

-- a code being issued: reserved, with the budgets counted, before iDenfy is called, and
-- removed by the transaction that stores it, or released when iDenfy fails. `expires_at`
-- ends a reservation whose instance died meanwhile.
create table code_reservations (
    id             uuid        primary key,
    login_id       uuid        not null,
    scan_ref       text        not null,
    requested_from text        not null,
    created_at     timestamptz not null default now(),
    expires_at     timestamptz not null,
    constraint code_reservations_login_key unique (login_id)
);
