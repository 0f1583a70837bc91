-- A window's cap is kept with its count, and no write may take the count past it. Hits that
-- find a window's row lock on it and queue; hits that arrive before its first insert commits
-- have no row to lock and meet this constraint instead: one that would pass the cap fails and
-- is tried again. Rows written by an instance not yet upgraded get the default: no cap.
set local lock_timeout = '5s';
alter table rate_limits add column cap integer not null default 2147483647;
alter table rate_limits add constraint rate_limits_hits_within_cap check (hits <= cap) not valid;
