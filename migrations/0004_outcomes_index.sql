-- attempt_outcomes_hourly filtered by hour used to scan every attempt: the hour is now computed
-- in UTC (an immutable expression, identical to the old value for timestamptz readers) and
-- indexed, so "the last day" reads only the last day.

create or replace view attempt_outcomes_hourly as
select (date_trunc('hour', finished_at at time zone 'UTC') at time zone 'UTC') as hour,
       status                                                              as outcome,
       fail_reason,
       outcome_source,
       count(*)                                                            as attempts
from attempts
where status <> 'pending'
group by 1, 2, 3, 4;

create index attempts_finished_hour_idx
    on attempts ((date_trunc('hour', finished_at at time zone 'UTC') at time zone 'UTC'), status, fail_reason, outcome_source)
    where status <> 'pending';
