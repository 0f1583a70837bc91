-- The newest event position numbered when a configured endpoint was disabled as 'no longer
-- configured'. Configured again, the endpoint is queued every event numbered after it (a day's
-- worth at most), however late an event written before the disabling was numbered. Endpoints
-- disabled before this column have none; the catch-up then goes by the time of the disabling.

set local lock_timeout = '5s';

alter table event_endpoints add column disabled_after_position bigint;
