-- Ops: views that answer "why could this person not log in?" directly, the network signal
-- (phone vs desktop), and retention (identity data and raw bodies are purged, outcomes kept).

alter table logins alter column scan_ref drop not null;
alter table logins add column purged_at timestamptz;
alter table logins add constraint logins_purged_has_no_identity
    check (purged_at is null or (scan_ref is null and user_ref is null and client_ip is null and user_agent is null));

-- how the phone that took the selfie relates to the desktop that asked (phishing signal):
-- same_address, same_network (/24 for IPv4, /48 for IPv6), different, unknown
alter table attempts add column network_match text;
alter table attempts add constraint attempts_network_match_check
    check (network_match in ('same_address', 'same_network', 'different', 'unknown'));

alter table deliveries add column body_purged_at timestamptz;

create index attempts_finished_idx on attempts (finished_at) where status <> 'pending';
create index attempts_network_different_idx on attempts (finished_at) where network_match = 'different';
create index deliveries_without_effect_idx on deliveries (received_at) where verdict <> 'applied';
create index logins_status_created_idx on logins (status, created_at desc);
create index logins_retention_idx on logins (created_at) where purged_at is null;

-- One row per login: where it stands and how it got there.
create view login_summaries as
select l.id                as login_id,
       l.created_at,
       l.scan_ref,
       l.user_ref,
       l.status,
       a.number            as attempts_used,
       l.max_attempts,
       a.status            as current_attempt_status,
       a.fail_reason       as current_fail_reason,
       a.expires_at        as current_expires_at,
       host(l.client_ip)   as desktop_ip,
       l.user_agent        as desktop_user_agent,
       l.approved_at,
       l.redeemed_at,
       l.canceled_at,
       l.updated_at,
       l.purged_at
from logins l
join lateral (select * from attempts where login_id = l.id order by number desc limit 1) a on true;

-- A login's story, in order: creation (with the desktop), each code issued, each webhook
-- delivery with its verdict and signing key, each state change with its source, redemption.
create view login_timeline as
select e.login_id,
       e.created_at                                   as at,
       'event'                                        as entry,
       e.seq                                          as event_seq,
       e.kind                                         as what,
       e.source,
       e.login_status,
       a.number                                       as attempt_number,
       case e.kind
           when 'login_created' then jsonb_strip_nulls(jsonb_build_object(
               'desktop_ip', host(l.client_ip), 'desktop_user_agent', l.user_agent,
               'api_key_id', l.api_key_id, 'scan_ref', l.scan_ref, 'user_ref', l.user_ref,
               'code_expires_at', to_char(a.expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))
           when 'attempt_issued' then jsonb_build_object(
               'code_expires_at', to_char(a.expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
           else '{}'::jsonb
       end || e.detail                                as detail,
       e.delivery_id
from events e
join logins l on l.id = e.login_id
left join attempts a on a.id = e.attempt_id
union all
select d.login_id,
       d.received_at,
       'delivery',
       null,
       'webhook_' || d.verdict,
       'webhook',
       null,
       a.number,
       jsonb_strip_nulls(jsonb_build_object(
           'verdict', d.verdict, 'idenfy_status', d.idenfy_status,
           'signing_key_index', d.signing_key_index, 'note', d.detail)),
       d.id
from deliveries d
left join attempts a on a.id = d.attempt_id
where d.login_id is not null;

-- Finished attempts per hour by outcome, failReason and who decided it.
create view attempt_outcomes_hourly as
select date_trunc('hour', finished_at) as hour,
       status                          as outcome,
       fail_reason,
       outcome_source,
       count(*)                        as attempts
from attempts
where status <> 'pending'
group by 1, 2, 3, 4;

-- Webhooks that changed nothing: duplicates, unknown tokens, late, unparseable, ...
create view deliveries_without_effect as
select id as delivery_id, received_at, verdict, idenfy_status, token, login_id, attempt_id,
       signing_key_index, detail as note, body_sha256
from deliveries
where verdict <> 'applied';

-- Attempts where the phone was not on the desktop's network, with iDenfy's riskTags.
create view network_mismatches as
select a.finished_at,
       a.login_id,
       l.scan_ref,
       l.user_ref,
       a.id        as attempt_id,
       a.number    as attempt_number,
       a.status    as attempt_status,
       host(l.client_ip) as desktop_ip,
       a.phone_ip,
       a.network_match,
       a.risk_tags
from attempts a
join logins l on l.id = a.login_id
where a.network_match = 'different';
