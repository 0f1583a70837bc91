-- Abuse limits kept in PostgreSQL so they hold across instances, and griefing protection.

-- fixed-window counters: one row per bucket ("api_key:<id>", "client_ip:<ip>", "watch_miss:<ip>")
create table rate_limits (
    bucket        text        primary key,
    window_start  timestamptz not null,
    hits          integer     not null
);

create index rate_limits_window_idx on rate_limits (window_start);

-- failed attempts that do not count toward the login's budget: the selfie came from another
-- network than the desktop's, so a stranger typing the victim's code cannot lock them out
alter table logins add column attempts_forgiven integer not null default 0;
alter table logins add constraint logins_attempts_forgiven_nonnegative check (attempts_forgiven >= 0);
