-- The newest event position numbered when a configured endpoint was disabled as 'no longer
-- configured'. Configured again, the endpoint is queued every event numbered after it (a day's
-- worth at most), however late an event written before the disabling was numbered.

set local lock_timeout = '5s';

alter table event_endpoints add column disabled_after_position bigint;

-- endpoints disabled before this column: what the earlier rule (a minute's margin) took
update event_endpoints e
set disabled_after_position = (select coalesce(max(o.position), 0) from outbound_events o
                               where o.created_at < e.disabled_at - interval '1 minute')
where disabled_reason = 'no longer configured';
