-- pgbench reference for scenario 1: the SQL that one applied webhook causes in facepair
-- (src/service/webhook.rs), statement for statement, against the same schema and data.
\set n random(0, :rows - 1)
-- one body per transaction, hashed once (facepair hashes the raw body once and passes it)
\set body random(1, 2000000000)
BEGIN;
SELECT pg_advisory_xact_lock(('x' || encode(substring(sha256(('body-' || :client_id || '-' || :body)::bytea) from 1 for 8), 'hex'))::bit(64)::bigint);
SELECT exists(SELECT 1 FROM deliveries WHERE body_sha256 = sha256(('body-' || :client_id || '-' || :body)::bytea));
SELECT id AS attempt_id, login_id FROM attempts WHERE idenfy_token = 'bench-' || :n \gset
SELECT id FROM logins WHERE id = :login_id FOR UPDATE;
SELECT l.id, l.scan_ref, l.user_ref, l.locale, l.lifetime_seconds, l.max_attempts, host(l.client_ip), l.status, l.event_seq,
       l.created_at, l.approved_at, l.redeemed_at, l.canceled_at, a.id, a.number, a.status, a.digit_string,
       a.idenfy_max_attempt_count, a.created_at, a.expires_at, a.finished_at, a.outcome_source, a.fail_reason,
       a.risk_tags, a.client_id, a.phone_ip, a.network_match
FROM logins l JOIN LATERAL (SELECT * FROM attempts WHERE login_id = l.id ORDER BY number DESC LIMIT 1) a ON true
WHERE l.id = :login_id;
UPDATE attempts SET status = 'succeeded', outcome_source = 'webhook', finished_at = now(), digit_string = NULL,
       idenfy_status = 'SUCCESS', fail_reason = NULL, risk_tags = '{}', idenfy_session_id = 'bench',
       client_id = 'BENCHCLIENT', phone_ip = '203.0.113.7', face_photo_url = NULL, network_match = 'different'
WHERE id = :attempt_id;
UPDATE logins SET status = 'approved', event_seq = event_seq + 1, updated_at = now(), approved_at = now()
WHERE id = :login_id RETURNING event_seq \gset
INSERT INTO events (login_id, seq, kind, source, login_status, attempt_id, delivery_id, detail)
VALUES (:login_id, :event_seq, 'attempt_succeeded', 'webhook', 'approved', :attempt_id, gen_random_uuid(),
        '{"attempt_number": 1, "idenfy_status": "SUCCESS", "risk_tags": []}');
INSERT INTO deliveries (id, body, body_sha256, content_type, event_type, signing_key_index, token, idenfy_status,
                        verdict, attempt_id, login_id, detail)
VALUES (gen_random_uuid(), convert_to(repeat('x', 420), 'UTF8'), sha256(('body-' || :client_id || '-' || :body)::bytea),
        'application/json', 'FACIAL_AUTHENTICATION', 0, 'bench-' || :n, 'SUCCESS', 'applied', :attempt_id, :login_id, NULL);
COMMIT;
SELECT pg_notify('facepair_events', :login_id);
