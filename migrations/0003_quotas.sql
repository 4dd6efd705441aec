-- Quota leases, reservations and settlement (docs/quotas.md). Replaces the fixed-window
-- rate_counters of 0001: a window is now a run of buckets, and a counter counts what it has
-- handed out to sidecars (leases) plus what settlements charged past their reservations.

DROP TABLE rate_counters;

-- Sliding windows (rate limits) are split into 120 buckets; a budget has one bucket per
-- calendar period, starting at the period's start in its org's time zone.
CREATE TABLE quota_buckets (
    policy_id    text NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    bucket_start timestamptz NOT NULL,
    granted      bigint NOT NULL CHECK (granted >= 0),
    PRIMARY KEY (policy_id, bucket_start)
);

-- The decision log now carries each allowed call's reservation, so that any sidecar can
-- settle it and an unsettled one can be expired at its reserved amount.
ALTER TABLE requests
    ADD COLUMN reservation_id text NOT NULL DEFAULT '',
    -- [{"policy_id", "bucket_start", "metric", "amount"}]: what the call took from each quota.
    ADD COLUMN reserved jsonb NOT NULL DEFAULT '[]',
    -- Worst-case cost at the model's price (0 when the model has none).
    ADD COLUMN reserved_cost_micros bigint NOT NULL DEFAULT 0,
    ADD COLUMN expire_time timestamptz,
    -- When usage was stored for it (by RecordUsage or by expiry).
    ADD COLUMN settle_time timestamptz;
UPDATE requests SET settle_time = create_time WHERE decision = 'allow';
CREATE INDEX requests_unsettled_idx ON requests (expire_time)
    WHERE decision = 'allow' AND settle_time IS NULL;
CREATE INDEX requests_time_idx ON requests (org_id, create_time);

-- 'reserved': an expired reservation, settled at its reserved amount.
ALTER TABLE usage DROP CONSTRAINT usage_cost_source_check,
    ADD CONSTRAINT usage_cost_source_check
        CHECK (cost_source IN ('reported', 'priced', 'reserved'));
CREATE INDEX usage_time_idx ON usage (org_id, record_time);

-- Take up to p_want of a quota's remaining allowance (limit minus everything handed out in the
-- window) for one sidecar, after giving back p_return unspent from its ended lease of bucket
-- p_return_start and charging p_debt (allowance it spent while the database was away). One call
-- per lease, serialized per policy, so concurrent sidecars never over-grant.
-- A sliding window counts every bucket that overlaps it while the lease lives, the oldest one
-- whole: never more than the limit in any window, at the price of freeing capacity one bucket
-- late. p_at replaces the clock in tests.
CREATE FUNCTION warden_lease(p_policy text, p_limit bigint, p_want bigint, p_window interval,
                             p_period text, p_debt bigint, p_return_start timestamptz,
                             p_return bigint, p_at timestamptz DEFAULT NULL)
RETURNS TABLE (granted bigint, used bigint, bucket_start timestamptz, bucket_end timestamptz,
               reset_time timestamptz, db_now timestamptz)
LANGUAGE plpgsql
-- Plans made while the tables were nearly empty (sequential scans) must not be reused as they
-- grow: the usage foreign key check alone went from 0.5 to 4 ms a row (bench/quotas.md).
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    t timestamptz;
    tz text;
    width interval;
    b timestamptz;
    e timestamptz;
    counted_from timestamptz;
    u bigint;
    g bigint;
    oldest timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('warden.quota:' || p_policy, 0));
    IF p_return > 0 THEN
        UPDATE quota_buckets q SET granted = greatest(q.granted - p_return, 0)
        WHERE q.policy_id = p_policy AND q.bucket_start = p_return_start;
    END IF;
    t := coalesce(p_at, clock_timestamp());
    IF p_period <> '' THEN
        SELECT o.time_zone INTO tz FROM policies p JOIN orgs o ON o.id = p.org_id
        WHERE p.id = p_policy;
        b := date_trunc(p_period, t, coalesce(tz, 'UTC'));
        e := ((b AT TIME ZONE coalesce(tz, 'UTC')) + ('1 ' || p_period)::interval)
             AT TIME ZONE coalesce(tz, 'UTC');
        counted_from := b;
    ELSE
        width := p_window / 120;
        b := date_bin(width, t, timestamptz 'epoch');
        e := b + width;
        counted_from := b - p_window;
    END IF;
    SELECT coalesce(sum(q.granted), 0), min(q.bucket_start) FILTER (WHERE q.granted > 0)
    INTO u, oldest
    FROM quota_buckets q
    WHERE q.policy_id = p_policy AND q.bucket_start >= counted_from AND q.bucket_start <= b;
    g := least(greatest(p_want, 0), greatest(p_limit - u - p_debt, 0));
    IF g + p_debt > 0 THEN
        INSERT INTO quota_buckets AS q (policy_id, bucket_start, granted)
        VALUES (p_policy, b, g + p_debt)
        ON CONFLICT (policy_id, bucket_start) DO UPDATE SET granted = q.granted + EXCLUDED.granted;
        oldest := least(oldest, b);
    END IF;
    RETURN QUERY SELECT g, u + g + p_debt, b, e,
        CASE WHEN p_period <> '' OR oldest IS NULL THEN e ELSE oldest + p_window + width END, t;
END
$$;

-- Give back (negative delta) or charge (positive) allowance of given buckets: unspent leases,
-- refunds of settled reservations, and usage past a reservation. Deltas for a deleted policy
-- are dropped; a bucket never goes below zero.
CREATE FUNCTION warden_adjust(p_policies text[], p_starts timestamptz[], p_deltas bigint[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE quota_buckets q SET granted = greatest(q.granted + d.delta, 0)
    FROM (SELECT x.p, x.s, sum(x.d)::bigint AS delta
          FROM unnest(p_policies, p_starts, p_deltas) AS x(p, s, d) GROUP BY x.p, x.s) d
    WHERE d.delta < 0 AND q.policy_id = d.p AND q.bucket_start = d.s;
    INSERT INTO quota_buckets AS q (policy_id, bucket_start, granted)
        SELECT x.p, x.s, sum(x.d)::bigint FROM unnest(p_policies, p_starts, p_deltas) AS x(p, s, d)
        WHERE EXISTS (SELECT 1 FROM policies p WHERE p.id = x.p)
        GROUP BY x.p, x.s HAVING sum(x.d) > 0
    ON CONFLICT (policy_id, bucket_start) DO UPDATE SET granted = q.granted + EXCLUDED.granted;
END
$$;

-- Apply one batch of a sidecar's journal (server/warden/journal.py) exactly once: decisions
-- are logged once per (org, request id); usage is stored once per request and settles its
-- reservation (its counter adjustments are applied only when the row is stored). A settlement
-- replaces an expiry that got there first. Usage naming no logged request is not stored and
-- is counted in usage_orphaned.
CREATE FUNCTION warden_flush(p_requests jsonb, p_usage jsonb)
RETURNS TABLE (requests_logged bigint, requests_conflicting bigint, usage_stored bigint,
               usage_orphaned bigint)
LANGUAGE plpgsql
-- Plans made while the tables were nearly empty (sequential scans) must not be reused as they
-- grow: the usage foreign key check alone went from 0.5 to 4 ms a row (bench/quotas.md).
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    logged bigint;
    offered bigint;
    stored bigint;
    orphaned bigint;
    adj jsonb;
BEGIN
    INSERT INTO requests (org_id, request_id, app_id, api_key_id, user_id, model, provider,
                          decision, reason, input_tokens, max_output_tokens, create_time,
                          reservation_id, reserved, reserved_cost_micros, expire_time)
    SELECT r.org_id, r.request_id, r.app_id, r.api_key_id, r.user_id, r.model, r.provider,
           r.decision, r.reason, r.input_tokens, r.max_output_tokens, r.create_time,
           r.reservation_id, r.reserved, r.reserved_cost_micros, r.expire_time
    FROM jsonb_to_recordset(p_requests) AS r(
        org_id text, request_id text, app_id text, api_key_id text, user_id text, model text,
        provider text, decision text, reason text, input_tokens bigint,
        max_output_tokens bigint, create_time timestamptz, reservation_id text, reserved jsonb,
        reserved_cost_micros bigint, expire_time timestamptz)
    WHERE EXISTS (SELECT 1 FROM orgs o WHERE o.id = r.org_id)
    ON CONFLICT (org_id, request_id) DO NOTHING;
    GET DIAGNOSTICS logged = ROW_COUNT;
    offered := jsonb_array_length(p_requests);

    UPDATE api_keys k SET last_used_time = m.t
    FROM (SELECT r.api_key_id, max(r.create_time) AS t
          FROM jsonb_to_recordset(p_requests) AS r(api_key_id text, create_time timestamptz)
          WHERE r.api_key_id <> '' GROUP BY r.api_key_id) m
    WHERE k.id = m.api_key_id
      AND (k.last_used_time IS NULL OR k.last_used_time < m.t - interval '1 minute');

    WITH u AS (
        SELECT DISTINCT ON (x.org_id, x.request_id) x.*
        FROM jsonb_to_recordset(p_usage) AS x(
            org_id text, request_id text, input_tokens bigint, output_tokens bigint,
            cached_input_tokens bigint, cost_micros bigint, cost_source text, model text,
            provider text, outcome text, latency_ms bigint, record_time timestamptz,
            adjustments jsonb)
        ORDER BY x.org_id, x.request_id, x.record_time),
    known AS (
        SELECT u.* FROM u JOIN requests r
            ON r.org_id = u.org_id AND r.request_id = u.request_id AND r.decision = 'allow'),
    saved AS (
        INSERT INTO usage AS s (org_id, request_id, input_tokens, output_tokens,
                               cached_input_tokens, cost_micros, cost_source, model, provider,
                               outcome, latency_ms, record_time)
        SELECT org_id, request_id, input_tokens, output_tokens, cached_input_tokens,
               cost_micros, cost_source, model, provider, outcome, latency_ms, record_time
        FROM known
        ON CONFLICT (org_id, request_id) DO UPDATE SET
            input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,
            cached_input_tokens = EXCLUDED.cached_input_tokens,
            cost_micros = EXCLUDED.cost_micros, cost_source = EXCLUDED.cost_source,
            model = EXCLUDED.model, provider = EXCLUDED.provider, outcome = EXCLUDED.outcome,
            latency_ms = EXCLUDED.latency_ms, record_time = EXCLUDED.record_time
            WHERE s.outcome = 'expired'
        RETURNING s.org_id, s.request_id),
    settled AS (
        UPDATE requests r SET settle_time = k.record_time
        FROM known k JOIN saved USING (org_id, request_id)
        WHERE r.org_id = k.org_id AND r.request_id = k.request_id
        RETURNING 1)
    SELECT (SELECT count(*) FROM saved), (SELECT count(*) FROM u) - (SELECT count(*) FROM known),
           (SELECT coalesce(jsonb_agg(a), '[]') FROM known k JOIN saved USING (org_id, request_id),
                   jsonb_array_elements(k.adjustments) a),
           (SELECT count(*) FROM settled)
    INTO stored, orphaned, adj;

    IF jsonb_array_length(adj) > 0 THEN
        PERFORM warden_adjust(
            array(SELECT a ->> 'policy_id' FROM jsonb_array_elements(adj) a),
            array(SELECT (a ->> 'bucket_start')::timestamptz FROM jsonb_array_elements(adj) a),
            array(SELECT (a ->> 'delta')::bigint FROM jsonb_array_elements(adj) a));
    END IF;
    RETURN QUERY SELECT logged, offered - logged, stored, orphaned;
END
$$;

-- Settle reservations whose TTL passed without RecordUsage, at their reserved amount. Any
-- sidecar may run it; rows are claimed with SKIP LOCKED, and a late settlement still replaces
-- the expiry (warden_flush).
CREATE FUNCTION warden_expire(p_limit int) RETURNS bigint LANGUAGE plpgsql
-- Plans made while the tables were nearly empty (sequential scans) must not be reused as they
-- grow: the usage foreign key check alone went from 0.5 to 4 ms a row (bench/quotas.md).
SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    n bigint;
BEGIN
    WITH due AS (
        UPDATE requests r SET settle_time = now()
        FROM (SELECT org_id, request_id FROM requests
              WHERE decision = 'allow' AND settle_time IS NULL AND expire_time < now()
              ORDER BY expire_time LIMIT p_limit FOR UPDATE SKIP LOCKED) d
        WHERE r.org_id = d.org_id AND r.request_id = d.request_id
        RETURNING r.*),
    saved AS (
        INSERT INTO usage (org_id, request_id, input_tokens, output_tokens, cached_input_tokens,
                           cost_micros, cost_source, model, provider, outcome, record_time)
        SELECT org_id, request_id, input_tokens, max_output_tokens, 0, reserved_cost_micros,
               'reserved', model, provider, 'expired', now()
        FROM due
        ON CONFLICT (org_id, request_id) DO NOTHING
        RETURNING 1)
    SELECT count(*) INTO n FROM saved;
    RETURN n;
END
$$;

-- Prices are cached by every sidecar: broadcast their changes like the other cached tables.
CREATE OR REPLACE FUNCTION warden_change_id(tbl text, r jsonb) RETURNS text LANGUAGE sql
IMMUTABLE AS $$
    SELECT CASE tbl
        WHEN 'policies' THEN (r ->> 'scope_kind') || ':' || (r ->> 'scope_id')
        WHEN 'api_keys' THEN r ->> 'prefix'
        WHEN 'user_teams' THEN r ->> 'user_id'
        WHEN 'provider_switches' THEN r ->> 'org_id'
        WHEN 'model_prices' THEN (r ->> 'provider') || '/' || (r ->> 'model')
        ELSE r ->> 'id' END
$$;
CREATE TRIGGER model_prices_changed AFTER INSERT OR UPDATE OR DELETE ON model_prices
    FOR EACH ROW EXECUTE FUNCTION warden_notify_change();
