-- pgbench's second reference for scenario 1: the least SQL that does a webhook's durable work,
-- whatever facepair itself sends: store the delivery, move the attempt, append the event and its
-- public event (for the feed and pushes), commit (one statement, so one round trip), then NOTIFY
-- after the commit.
-- Variables: rows (seeded attempts). Attempts are taken in order, as in bench/webhook.sql.
\set body random(1, 2000000000)
WITH attempt AS (
    UPDATE attempts SET status = 'succeeded', outcome_source = 'webhook', finished_at = now(),
           digit_string = NULL, idenfy_status = 'SUCCESS', risk_tags = '{}', idenfy_session_id = 'bench',
           client_id = 'BENCHCLIENT', phone_ip = '203.0.113.7', network_match = 'different'
    WHERE idenfy_token = (SELECT 'bench-' || nextval('bench_tokens') % :rows) AND status = 'pending'
    RETURNING id, login_id
), login AS (
    UPDATE logins l SET status = 'approved', event_seq = event_seq + 1, updated_at = now(), approved_at = now()
    FROM attempt WHERE l.id = attempt.login_id
    RETURNING l.id, l.event_seq, l.status, attempt.id AS attempt_id
), delivery AS (
    INSERT INTO deliveries (id, body, body_sha256, content_type, event_type, signing_key_index, token,
                            idenfy_status, verdict, attempt_id, login_id)
    SELECT gen_random_uuid(), convert_to(repeat('x', 420), 'UTF8'),
           sha256(('body-' || :client_id || '-' || :body)::bytea), 'application/json',
           'FACIAL_AUTHENTICATION', 0, 'bench', 'SUCCESS', 'applied', attempt_id, id
    FROM login
    RETURNING id, login_id
), event AS (
    INSERT INTO events (login_id, seq, kind, source, login_status, attempt_id, delivery_id, detail)
    SELECT login.id, event_seq, 'attempt_succeeded', 'webhook', status, attempt_id, delivery.id,
           '{"attempt_number": 1, "idenfy_status": "SUCCESS", "risk_tags": []}'
    FROM login JOIN delivery ON delivery.login_id = login.id
), outbound AS (
    INSERT INTO outbound_events (login_id, seq, type) SELECT id, event_seq, 'login.approved' FROM login
)
SELECT id AS login_id FROM login \gset
SELECT set_config('synchronous_commit', 'off', true), pg_notify('facepair_events', :login_id);
