-- pgbench script: the SQL one BeginRecovery runs on PostgreSQL for an email that is not
-- enrolled (what recovery-bench's BeginRecovery phase sends: a fresh email and client IP per
-- call), statement for statement as recovery-service issues them (read from the server log with
-- log_statement = 'all'; see crates/storage/src/ops/{limits,recovery_flow,mod,audit}.rs and
-- crates/recovery-service/src/domain/recovery_flow.rs):
--   1-3. three rate-limit hits (per IP per minute, per IP per hour, per email per hour), each an
--        upsert in its own implicit transaction;
--   4.   the enrollment lookup by canonical email;
--   5.   one transaction: the flow; the advisory lock that orders one address's audit events
--        (the keyed hash of the typed address: apply_effects in ops/mod.rs); its outbox row
--        (the verification code, written `void` for an unknown email); the head probe (by the
--        event's own id, as a known account's newest row is one probe), the anchor row the
--        address's keyed hash picks (one of 256, `~xx`: ops/audit.rs), the audit event linked
--        on its own, and the anchor moved to it.
-- Keys are random so that, like the tool's calls, no two transactions share a row; they have the
-- service's shape and length but `-` for `:` (pgbench would read `:name` as a variable).
--
--   pgbench -n -M prepared -c 8 -j 2 -T 10 -f bench/pgbench/begin_recovery.sql DBNAME_OR_URL
--
-- against a database the service migrated (recovery-bench --pgbench does exactly this), or one
-- prepared with setup.sql. It adds rows: use a throwaway database.

\set ip random(1, 2000000000)
\set mail random(1, 2000000000)
\set salt random(1, 2000000000)

INSERT INTO "rate_limit_buckets" ("bucket_key", "window_start", "count", "expires_at")
VALUES ('begin-min-ip-pgb' || :ip::text || '.' || :client_id::text, (extract(epoch from now()) * 1000)::bigint / 60000 * 60000, 1, (extract(epoch from now()) * 1000)::bigint / 60000 * 60000 + 60000)
ON CONFLICT ("bucket_key", "window_start") DO UPDATE SET "count" = "rate_limit_buckets"."count" + 1
WHERE "rate_limit_buckets"."count" < 10 RETURNING "count";

INSERT INTO "rate_limit_buckets" ("bucket_key", "window_start", "count", "expires_at")
VALUES ('begin-hour-ip-pgb' || :ip::text || '.' || :client_id::text, (extract(epoch from now()) * 1000)::bigint / 3600000 * 3600000, 1, (extract(epoch from now()) * 1000)::bigint / 3600000 * 3600000 + 3600000)
ON CONFLICT ("bucket_key", "window_start") DO UPDATE SET "count" = "rate_limit_buckets"."count" + 1
WHERE "rate_limit_buckets"."count" < 20 RETURNING "count";

INSERT INTO "rate_limit_buckets" ("bucket_key", "window_start", "count", "expires_at")
VALUES ('begin-hour-email-pgb' || :mail::text || '.' || :client_id::text || '@bench.example', (extract(epoch from now()) * 1000)::bigint / 3600000 * 3600000, 1, (extract(epoch from now()) * 1000)::bigint / 3600000 * 3600000 + 3600000)
ON CONFLICT ("bucket_key", "window_start") DO UPDATE SET "count" = "rate_limit_buckets"."count" + 1
WHERE "rate_limit_buckets"."count" < 5 RETURNING "count";

SELECT "account_id", "email", "email_lookup", "code_id", "code_hash", "hash_key_id", "hash_params", "generation", "created_at", "code_created_at", "updated_at", "last_used_at", "use_count", "locked_until", "revoked_at", "sealed_keyset"
FROM "recovery_enrollments"
WHERE "email_lookup" = 'pgb' || :mail::text || '.' || :client_id::text || '@bench.example' AND "code_hash" IS NOT NULL LIMIT 1;

BEGIN;
INSERT INTO "recovery_flows" ("flow_id", "email_lookup", "account_id", "generation", "email_code_mac", "mac_key_id", "email_code_expires_at", "email_attempts", "recovery_attempts", "verified_at", "completed_at", "created_at", "expires_at", "client_ip", "client_user_agent", "zk_login_state", "zk_previous_login_state")
VALUES ('fl_' || substr(md5(:salt::text || '.' || :client_id::text || clock_timestamp()::text), 1, 26), 'pgb' || :mail::text || '.' || :client_id::text || '@bench.example', NULL, NULL, md5(:salt::text || 'a') || md5(:salt::text || 'b'), 'k0f656f71', (extract(epoch from now()) * 1000)::bigint + 900000, 0, 0, NULL, NULL, (extract(epoch from now()) * 1000)::bigint, (extract(epoch from now()) * 1000)::bigint + 1800000, '10.0.0.1', 'recovery-bench', NULL, NULL)
RETURNING "flow_id";
SELECT pg_advisory_xact_lock(hashtextextended(md5('pgb' || :mail::text || '.' || :client_id::text), 7242));
INSERT INTO "notification_outbox" ("message_id", "kind", "account_id", "recipient", "payload", "status", "attempts", "next_attempt_at", "lease_owner", "lease_until", "last_error", "created_at", "sent_at")
VALUES ('msg_' || substr(md5(:salt::text || 'v' || :client_id::text || clock_timestamp()::text), 1, 26), 'verification_code', NULL, 'void-' || md5('pgb' || :mail::text || '.' || :client_id::text), 'v1.k0f656f71.' || repeat(md5(:salt::text || 'p'), 5), 'void', 0, (extract(epoch from now()) * 1000)::bigint, NULL, NULL, NULL, (extract(epoch from now()) * 1000)::bigint, NULL)
RETURNING "id";
SELECT "seq", "event_id", "account_id", "kind", "occurred_at", "client_ip", "client_user_agent", "details", "chain_key_id", "chain_hash"
FROM "audit_events" WHERE "event_id" = 'ev_' || substr(md5(:salt::text || 'e' || :client_id::text), 1, 26) LIMIT 1;
SELECT "account_id", "head_seq", "head_link", "key_id", "mac", "verified_seq", "verified_link", "verified_key_id", "verified_mac"
FROM "audit_heads" WHERE "account_id" = '~' || substr(md5('pgb' || :mail::text || '.' || :client_id::text), 1, 2) LIMIT 1;
INSERT INTO "audit_events" ("event_id", "account_id", "kind", "occurred_at", "client_ip", "client_user_agent", "details", "chain_key_id", "chain_hash")
VALUES ('ev_' || substr(md5(:salt::text || 'e' || :client_id::text || clock_timestamp()::text), 1, 26), '', 'RECOVERY_STARTED', (extract(epoch from now()) * 1000)::bigint, '10.0.0.1', 'recovery-bench', '{"caller":"trusted","flow_id":"fl_pgbench"}', 'k0f656f71', md5(:salt::text || 'c') || md5(:salt::text || 'd'))
RETURNING "seq";
INSERT INTO "audit_heads" ("account_id", "head_seq", "head_link", "key_id", "mac", "verified_seq", "verified_link", "verified_key_id", "verified_mac")
VALUES ('~' || substr(md5('pgb' || :mail::text || '.' || :client_id::text), 1, 2), 1, md5(:salt::text || 'c') || md5(:salt::text || 'd'), 'k0f656f71', md5(:salt::text || 'm') || md5(:salt::text || 'n'), NULL, NULL, NULL, NULL)
ON CONFLICT ("account_id") DO UPDATE SET "head_seq" = "excluded"."head_seq", "head_link" = "excluded"."head_link", "key_id" = "excluded"."key_id", "mac" = "excluded"."mac"
RETURNING "account_id";
COMMIT;
