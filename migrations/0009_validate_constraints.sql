-- constraints added NOT VALID by earlier migrations, checked against existing rows without
-- holding the lock that adding them took
set local lock_timeout = '5s';
alter table logins validate constraint logins_state_length;
alter table attempts validate constraint attempts_outcome_source_check;
alter table deliveries validate constraint deliveries_verdict_check;
alter table rate_limits validate constraint rate_limits_hits_within_cap;
