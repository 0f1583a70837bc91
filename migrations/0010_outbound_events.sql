-- Outbound events: what a platform is told (the feed GET /v1/events and Standard Webhooks
-- pushed to endpoints), their deliveries and every attempt. All tables are new (exempt from
-- the migrations rule); nothing existing is altered.

-- One row per public event, written in the transaction of the change it reports, beside its
-- `events` row. `serial` is taken at insert; `position` (the feed's cursor) is given by the
-- sequencer once the row has committed, so a late commit gets a later position, never a
-- skipped one.
create table outbound_events (
    id          uuid        primary key default gen_random_uuid(),
    serial      bigserial   not null,
    position    bigint,
    login_id    uuid        not null,
    seq         integer     not null,
    type        text        not null,
    created_at  timestamptz not null default now(),
    constraint outbound_events_event_fk foreign key (login_id, seq)
        references events (login_id, seq) on delete cascade,
    constraint outbound_events_position_key unique (position),
    constraint outbound_events_type_check check (type in
        ('login.created', 'login.code_issued', 'login.approved', 'login.failed', 'login.expired',
         'login.canceled', 'login.exhausted', 'login.redeemed'))
);
create index outbound_events_unpositioned_idx on outbound_events (serial) where position is null;
create index outbound_events_created_idx on outbound_events (created_at);

-- Where events are pushed. `config` endpoints come from FACEPAIR_EVENT_ENDPOINTS (their
-- secrets from FACEPAIR_EVENT_SECRETS, never stored); `api` ones from POST
-- /v1/event-endpoints, with their own secrets (whsec_...). `types` null means every type.
create table event_endpoints (
    id              uuid        primary key default gen_random_uuid(),
    url             text        not null,
    origin          text        not null default 'config',
    types           text[],
    secrets         text[],
    created_at      timestamptz not null default now(),
    -- a failing endpoint waits until then before its next delivery (per-endpoint backoff)
    retry_at        timestamptz,
    disabled_at     timestamptz,
    disabled_reason text,
    constraint event_endpoints_url_key unique (url),
    constraint event_endpoints_origin_check check (origin in ('config', 'api')),
    constraint event_endpoints_secrets_check check ((origin = 'api') = (secrets is not null))
);

-- One event to one endpoint. `state`: pending (due at next_attempt_at; leased while an
-- instance is sending it), delivered, failed (retries spent), skipped (no longer matters: an
-- approval that expired before it could be delivered).
create table event_deliveries (
    endpoint_id     uuid        not null,
    event_id        uuid        not null,
    login_id        uuid        not null,
    position        bigint      not null,
    state           text        not null default 'pending',
    attempts        integer     not null default 0,
    next_attempt_at timestamptz not null default now(),
    leased_until    timestamptz,
    created_at      timestamptz not null default now(),
    finished_at     timestamptz,
    constraint event_deliveries_pkey primary key (endpoint_id, event_id),
    constraint event_deliveries_endpoint_fk foreign key (endpoint_id)
        references event_endpoints (id) on delete cascade,
    constraint event_deliveries_event_fk foreign key (event_id)
        references outbound_events (id) on delete cascade,
    constraint event_deliveries_state_check check (state in
        ('pending', 'delivered', 'failed', 'skipped'))
);
-- each endpoint's due deliveries, in the order they are claimed
create index event_deliveries_due_idx on event_deliveries (endpoint_id, next_attempt_at, position)
    where state = 'pending';
create index event_deliveries_login_idx on event_deliveries (endpoint_id, login_id, position)
    where state = 'pending';
create index event_deliveries_event_idx on event_deliveries (event_id);

-- Every request sent: its answer's status (null: none came), latency and a short excerpt.
create table event_delivery_attempts (
    id               bigserial   primary key,
    endpoint_id      uuid        not null,
    event_id         uuid        not null,
    attempted_at     timestamptz not null default now(),
    status_code      integer,
    latency_ms       integer     not null,
    error            text,
    response_excerpt text,
    constraint event_delivery_attempts_delivery_fk foreign key (endpoint_id, event_id)
        references event_deliveries (endpoint_id, event_id) on delete cascade
);
create index event_delivery_attempts_delivery_idx
    on event_delivery_attempts (endpoint_id, event_id, attempted_at);

-- For ops: each delivery with its endpoint, event and last attempt.
create view event_delivery_status as
select o.position, o.id as event_id, o.type, o.login_id, o.created_at as event_created_at,
       e.url as endpoint_url, d.endpoint_id, d.state, d.attempts, d.next_attempt_at,
       d.finished_at, a.status_code as last_status_code, a.latency_ms as last_latency_ms,
       a.error as last_error, a.response_excerpt as last_response_excerpt,
       a.attempted_at as last_attempted_at
from event_deliveries d
join outbound_events o on o.id = d.event_id
join event_endpoints e on e.id = d.endpoint_id
left join lateral (
    select * from event_delivery_attempts x
    where x.endpoint_id = d.endpoint_id and x.event_id = d.event_id
    order by x.attempted_at desc, x.id desc limit 1
) a on true;
