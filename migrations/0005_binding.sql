-- Binding a login to the platform that asked, and codes reserved before iDenfy is paid.
-- Constraints are added NOT VALID here and validated in 0009.

set local lock_timeout = '5s';

-- an approval is redeemable until this time; set when an attempt succeeds. An approval
-- without one (made before this migration, or by an instance not yet upgraded) reads as
-- expired at once.
alter table logins add column approval_expires_at timestamptz;
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
-- removed by the transaction that stores it, or released when iDenfy surely created nothing.
-- A session iDenfy may have created but facepair could not store is kept `spent` for the
-- hour, so it still counts in the budgets. `expires_at` ends a reservation whose instance
-- died meanwhile.
create table code_reservations (
    id             uuid        primary key,
    login_id       uuid        not null,
    scan_ref       text        not null,
    requested_from text        not null,
    spent          boolean     not null default false,
    created_at     timestamptz not null default now(),
    expires_at     timestamptz not null
);
-- one code in issue per login at a time
create unique index code_reservations_one_per_login on code_reservations (login_id) where not spent;
create index code_reservations_scan_ref_idx on code_reservations (scan_ref, expires_at);
