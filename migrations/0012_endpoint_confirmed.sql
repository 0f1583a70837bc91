-- When an instance configured with an endpoint (FACEPAIR_EVENT_ENDPOINTS) last said so. A
-- configured endpoint that no instance has confirmed for a while is disabled as 'no longer
-- configured', so events stop being queued for it; configured again, it is enabled again.

set local lock_timeout = '5s';

alter table event_endpoints add column confirmed_at timestamptz not null default now();
