-- A window's cap is kept with its count, and no write may take the count past it. Hits that
-- find a window's row lock on it and queue; hits that arrive before its first insert commits
-- have no row to lock, and meet this constraint instead (and are counted again, refused).
alter table rate_limits add column cap integer;
update rate_limits set cap = greatest(hits, 1);
alter table rate_limits alter column cap set not null;
alter table rate_limits add constraint rate_limits_hits_within_cap check (hits <= cap) not valid;
