-- pgbench's reference for scenario 4: the least SQL that does a creation's durable work,
-- whatever facepair itself sends. Before iDenfy is asked, one statement counts the person's
-- codes of the last hour and reserves one if the budget has room; after, one statement stores
-- the login, its attempt, its event and public event, and releases the reservation.
\set person random(1, 1000000000)
INSERT INTO code_reservations (id, login_id, scan_ref, requested_from, expires_at)
SELECT gen_random_uuid(), gen_random_uuid(), 'ref-' || :person, '198.51.100.0/24',
       now() + interval '30 seconds'
WHERE (SELECT count(*) FROM attempts a JOIN logins l ON l.id = a.login_id
       WHERE l.scan_ref = 'ref-' || :person AND a.created_at > now() - interval '1 hour')
    + (SELECT count(*) FROM code_reservations
       WHERE scan_ref = 'ref-' || :person AND expires_at > now()) < 20
RETURNING id AS reservation, login_id \gset
WITH released AS (
    DELETE FROM code_reservations WHERE id = :reservation::uuid
), login AS (
    INSERT INTO logins (id, scan_ref, lifetime_seconds, max_attempts, client_ip, api_key_id,
                        watch_token_hash, status, event_seq)
    VALUES (:login_id::uuid, 'ref-' || :person, 600, 3, '198.51.100.7', 'bench',
            sha256(convert_to(:login_id::text, 'UTF8')), 'pending', 1)
), attempt AS (
    INSERT INTO attempts (id, login_id, number, idenfy_token, digit_string,
                          idenfy_max_attempt_count, expires_at, requested_from)
    VALUES (gen_random_uuid(), :login_id::uuid, 1, 'ref-token-' || :login_id::text,
            lpad((random() * 99999999)::int::text, 8, '0'), 3, now() + interval '10 minutes',
            '198.51.100.0/24')
    RETURNING id
), event AS (
    INSERT INTO events (login_id, seq, kind, source, login_status, attempt_id, detail)
    SELECT :login_id::uuid, 1, 'login_created', 'platform', 'pending', id, '{"attempt_number": 1}'
    FROM attempt
), outbound AS (
    INSERT INTO outbound_events (login_id, seq, type) VALUES (:login_id::uuid, 1, 'login.created')
)
SELECT 1;
