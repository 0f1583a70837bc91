-- no-transaction
-- Replaced by event_deliveries_unsettled_idx (0014).
drop index concurrently event_deliveries_login_idx;
