-- no-transaction
-- A login's first unsettled delivery to an endpoint, which the claim looks up for each one it
-- takes. The predicate says "not settled" where the due index says "pending" (the same rows)
-- so that only this index covers the lookup: without statistics PostgreSQL may cost both
-- alike and read the endpoint's whole due range for each delivery claimed.
create index concurrently event_deliveries_unsettled_idx
    on event_deliveries (endpoint_id, login_id, position)
    where state not in ('delivered', 'failed', 'skipped');
