-- pgbench reference for scenario 1: the SQL that one applied webhook causes in facepair
-- (src/service/webhook.rs, src/store/deliveries.rs, src/store/changes.rs), round trip for
-- round trip, against the same schema and data.
-- Variables: rows (seeded attempts), notify (1 or 0).
-- Every transaction takes the next pending attempt (the sequence bench_tokens), as every
-- webhook facepair is sent is for another attempt: an attempt drawn at random would, as the
-- runs go on, more and more often be one already finished, whose update then changes nothing
-- one body per transaction, hashed once (facepair hashes the raw body once and passes it)
\set body random(1, 2000000000)
-- 1. the attempt, its login and the login's current attempt, and whether the body was stored
-- before: one read, no lock, no transaction (deliveries::find_by_token)
SELECT l.id AS login_id, l.scan_ref, l.user_ref, l.locale, l.lifetime_seconds, l.max_attempts, l.attempts_forgiven,
       host(l.client_ip), l.status, l.event_seq, l.created_at, l.approved_at, l.redeemed_at, l.canceled_at,
       a.id AS attempt_id, a.number, a.status, a.digit_string, a.idenfy_max_attempt_count, a.created_at, a.expires_at,
       a.finished_at, a.outcome_source, a.fail_reason, a.risk_tags, a.client_id, a.phone_ip, a.network_match,
       t.id AS claimed, t.idenfy_token AS token,
       exists(SELECT 1 FROM deliveries WHERE body_sha256 = sha256(('body-' || :client_id || '-' || :body)::bytea)) AS seen
FROM attempts t JOIN logins l ON l.id = t.login_id
JOIN LATERAL (SELECT * FROM attempts WHERE login_id = l.id ORDER BY number DESC LIMIT 1) a ON true
WHERE t.idenfy_token = (SELECT 'bench-' || nextval('bench_tokens') % :rows) \gset
-- 2. the change: login (only if its event number is still the one read), attempt, event,
-- outbound event and the delivery (raw, with its verdict) in one statement, committed alone
WITH changed AS (
    UPDATE logins SET status = 'approved', event_seq = event_seq + 1, updated_at = now(), approved_at = now(),
           redeemed_at = redeemed_at, canceled_at = canceled_at, attempts_forgiven = attempts_forgiven
    WHERE id = :login_id AND event_seq = :event_seq RETURNING id, event_seq, status
), delivery AS (
    SELECT gen_random_uuid() AS id
), finished AS (
    UPDATE attempts SET status = 'succeeded', outcome_source = 'webhook', finished_at = now(), digit_string = NULL,
           idenfy_status = 'SUCCESS', fail_reason = NULL, risk_tags = '{}', idenfy_session_id = 'bench',
           client_id = 'BENCHCLIENT', phone_ip = '203.0.113.7', face_photo_url = NULL, network_match = 'different'
    WHERE id = :attempt_id AND status = 'pending' AND EXISTS (SELECT FROM changed)
), event AS (
    INSERT INTO events (login_id, seq, kind, source, login_status, attempt_id, delivery_id, detail)
    SELECT changed.id, event_seq, 'attempt_succeeded', 'webhook', status, :attempt_id, delivery.id,
           '{"attempt_number": 1, "idenfy_status": "SUCCESS", "risk_tags": []}' FROM changed, delivery
    RETURNING login_id, seq
), outbound AS (
    INSERT INTO outbound_events (login_id, seq, type)
    SELECT login_id, seq, 'login.approved' FROM event
), stored AS (
    INSERT INTO deliveries (id, body, body_sha256, content_type, event_type, signing_key_index, token, idenfy_status,
                            verdict, attempt_id, login_id, detail)
    SELECT delivery.id, convert_to(repeat('x', 420), 'UTF8'), sha256(('body-' || :client_id || '-' || :body)::bytea),
           'application/json', 'FACIAL_AUTHENTICATION', 0, :token::text, 'SUCCESS', 'applied', :attempt_id::uuid,
           :login_id::uuid, NULL
    FROM changed, delivery
)
SELECT seq FROM event;
-- 5. the NOTIFY, in its own round trip after the commit, committed without waiting for the
-- disk (facepair's NOTIFY connections set synchronous_commit = off when they connect; a
-- NOTIFY stores nothing). facepair sends its NOTIFYs in batches, on a connection of its own
-- per HTTP worker (one statement for every webhook committed meanwhile), so above one
-- client it spends less on them than this; run with -D notify=0 the reference leaves them
-- out altogether and is an upper bound
\if :notify
SELECT set_config('synchronous_commit', 'off', true), pg_notify('facepair_events', :login_id);
\endif
