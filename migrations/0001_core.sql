-- facepair core schema: logins, their attempts, the append-only event log, and every
-- webhook delivery as received. Times are timestamptz; constraints are named so the
-- application can map a violation to an API error.

create table logins (
    id                 uuid        primary key,
    scan_ref           text        not null,
    user_ref           text,
    locale             text,
    lifetime_seconds   integer     not null,
    max_attempts       integer     not null,
    -- the desktop that asked, for the audit trail and the phishing signal
    client_ip          inet,
    user_agent         text,
    -- SHA-256 prefix of the platform API key that created the login (never the key)
    api_key_id         text        not null,
    watch_token_hash   bytea       not null,
    status             text        not null,
    event_seq          integer     not null default 0,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    approved_at        timestamptz,
    redeemed_at        timestamptz,
    canceled_at        timestamptz,
    -- the last watch-token poll that was answered, for the slow_down rule
    watch_polled_at    timestamptz,
    constraint logins_watch_token_hash_key unique (watch_token_hash),
    constraint logins_status_check check (status in
        ('pending', 'approved', 'redeemed', 'failed', 'expired', 'canceled', 'exhausted')),
    constraint logins_scan_ref_length check (char_length(scan_ref) between 1 and 40),
    constraint logins_user_ref_length check (char_length(user_ref) <= 200),
    constraint logins_lifetime_range check (lifetime_seconds between 1 and 2592000),
    constraint logins_max_attempts_positive check (max_attempts >= 1),
    constraint logins_redeemed_after_approval check (redeemed_at is null or approved_at is not null)
);

create index logins_scan_ref_created_idx on logins (scan_ref, created_at desc);
create index logins_user_ref_created_idx on logins (user_ref, created_at desc) where user_ref is not null;
create index logins_created_idx on logins (created_at desc);

create table attempts (
    id                 uuid        primary key,
    login_id           uuid        not null,
    -- 1 for the first code of a login, 2 for the next, ...
    number             integer     not null,
    idenfy_token       text        not null,
    -- kept only while the attempt is pending
    digit_string       text,
    idenfy_max_attempt_count integer,
    status             text        not null default 'pending',
    created_at         timestamptz not null default now(),
    expires_at         timestamptz not null,
    finished_at        timestamptz,
    -- who decided the outcome: webhook, clock, platform, reconciliation
    outcome_source     text,
    -- from the webhook
    idenfy_status      text,
    fail_reason        text,
    risk_tags          text[],
    idenfy_session_id  text,
    client_id          text,
    phone_ip           text,
    face_photo_url     text,
    constraint attempts_login_fk foreign key (login_id) references logins (id) on delete cascade,
    constraint attempts_login_number_key unique (login_id, number),
    constraint attempts_idenfy_token_key unique (idenfy_token),
    constraint attempts_status_check check (status in
        ('pending', 'succeeded', 'failed', 'canceled', 'expired', 'superseded')),
    constraint attempts_outcome_source_check check (outcome_source in
        ('webhook', 'clock', 'platform', 'reconciliation')),
    constraint attempts_digit_string_only_while_pending check (digit_string is null or status = 'pending'),
    constraint attempts_finished_when_terminal check ((status = 'pending') = (finished_at is null))
);

-- at most one pending attempt per login
create unique index attempts_one_pending_per_login on attempts (login_id) where status = 'pending';
-- the expiry task scans only pending attempts
create index attempts_pending_expiry_idx on attempts (expires_at) where status = 'pending';
create index attempts_login_idx on attempts (login_id, number);
create index attempts_created_idx on attempts (created_at);

create table deliveries (
    id                 uuid        primary key,
    received_at        timestamptz not null default now(),
    body               bytea,
    body_sha256        bytea       not null,
    content_type       text,
    event_type         text,
    -- which configured signing key verified it (0-based, in configuration order)
    signing_key_index  integer     not null,
    -- parsed from the body where it parsed
    token              text,
    idenfy_status      text,
    verdict            text        not null,
    attempt_id         uuid,
    login_id           uuid,
    detail             text,
    constraint deliveries_verdict_check check (verdict in
        ('applied', 'duplicate', 'unknown_token', 'scan_ref_mismatch', 'attempt_terminal', 'late', 'unknown_status', 'unparseable')),
    constraint deliveries_attempt_fk foreign key (attempt_id) references attempts (id) on delete set null,
    constraint deliveries_login_fk foreign key (login_id) references logins (id) on delete set null
);

create index deliveries_body_sha256_idx on deliveries (body_sha256);
create index deliveries_attempt_idx on deliveries (attempt_id) where attempt_id is not null;
create index deliveries_login_idx on deliveries (login_id, received_at) where login_id is not null;
create index deliveries_received_idx on deliveries (received_at);

create table events (
    login_id           uuid        not null,
    seq                integer     not null,
    kind               text        not null,
    source             text        not null,
    login_status       text        not null,
    attempt_id         uuid,
    delivery_id        uuid,
    detail             jsonb       not null default '{}',
    created_at         timestamptz not null default now(),
    constraint events_pkey primary key (login_id, seq),
    constraint events_login_fk foreign key (login_id) references logins (id) on delete cascade,
    constraint events_source_check check (source in
        ('platform', 'webhook', 'clock', 'reconciliation', 'watch'))
);

create index events_created_idx on events (created_at);
