-- A signed webhook whose `type` is not AUTHENTICATION or whose `method` is not FACE_MATCHING
-- (another kind of iDenfy session) is kept with the verdict 'unexpected_type' and changes
-- nothing. The new list only adds a verdict, so every stored row satisfies it; 0009
-- validates it.
set local lock_timeout = '5s';
alter table deliveries drop constraint deliveries_verdict_check;
alter table deliveries add constraint deliveries_verdict_check check (verdict in
    ('applied', 'duplicate', 'unknown_token', 'scan_ref_mismatch', 'attempt_terminal', 'late',
     'unknown_status', 'unparseable', 'unexpected_type')) not valid;
