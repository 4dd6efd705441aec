-- Settlement is exact whichever sidecar a RecordUsage reaches; a replayed journal is told apart
-- from a request id reused by another call; usage can be stored without a price.
--
-- The sidecar that made a reservation (its owner, requests.sidecar_id) is the only one that
-- refunds it: into the lease the allowance came from when that lease still holds the bucket,
-- else into the bucket here. When the usage stored for a request came from another sidecar,
-- the row is marked refund_pending, the owner is told (NOTIFY warden_refunds, its sidecar id),
-- and it claims the row with its next journal flush (warden_apply_journal returns it) and
-- settles it as if it had received the RecordUsage itself. A refund is thus made once, by one sidecar, whichever sidecars the settlement (and
-- its retries) reached, and nothing is left stranded: a pending refund whose reservation
-- expired (its owner is gone) is settled here by warden_expire.
--
-- warden_flush stays as it was, for sidecars of an earlier version during an upgrade.

ALTER TABLE requests
    -- The sidecar that decided (data dir's sidecar-id): the owner of the reservation.
    ADD COLUMN sidecar_id text NOT NULL DEFAULT '',
    -- One id per decision (an allowed call's reservation id is its decision id). A replay
    -- carries the same id and create_time; another call reusing the request id does not.
    ADD COLUMN decision_id text NOT NULL DEFAULT '',
    -- The price the reservation was made at when the price table had none for the routed
    -- model (a budget's default price): {"input", "output", "cached_input"} micros per million.
    ADD COLUMN price jsonb;

ALTER TABLE usage
    ADD COLUMN refund_pending boolean NOT NULL DEFAULT false,
    -- 'unpriced': tokens stored, cost unknown (no price, and no budget counts the call).
    ALTER COLUMN cost_micros DROP NOT NULL,
    DROP CONSTRAINT usage_cost_source_check,
    ADD CONSTRAINT usage_cost_source_check
        CHECK (cost_source IN ('reported', 'priced', 'reserved', 'unpriced')),
    ADD CONSTRAINT usage_cost_known CHECK ((cost_micros IS NULL) = (cost_source = 'unpriced'));
CREATE INDEX usage_refund_pending_idx ON usage (org_id, request_id) WHERE refund_pending;

-- The decision log's foreign keys go, as audit_events' did (0005): each ran as a trigger per
-- inserted row, re-planned every time inside the journal's apply (force_custom_plan), and
-- cost Postgres about 40% of its time per flushed decision. They guarded nothing the apply
-- does not check in bulk: a decision is stored only when its org exists, usage only when its
-- request is logged (the others are counted), and neither orgs nor requests are deleted.
ALTER TABLE requests DROP CONSTRAINT requests_org_id_fkey;
ALTER TABLE usage DROP CONSTRAINT usage_org_id_request_id_fkey;

-- Actual minus reserved for each leased part of a reservation (a fail-open part was owed,
-- not leased: nothing to settle).
CREATE FUNCTION warden_settlement_deltas(p_reserved jsonb, p_input bigint, p_output bigint,
                                         p_cost bigint)
RETURNS TABLE (policy_id text, bucket_start timestamptz, delta bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT p ->> 'policy_id', (p ->> 'bucket_start')::timestamptz,
           CASE p ->> 'metric'
               WHEN 'REQUESTS' THEN 1
               WHEN 'INPUT_TOKENS' THEN p_input
               WHEN 'OUTPUT_TOKENS' THEN p_output
               WHEN 'TOTAL_TOKENS' THEN p_input + p_output
               ELSE coalesce(p_cost, (p ->> 'amount')::bigint) END - (p ->> 'amount')::bigint
    FROM jsonb_array_elements(p_reserved) p
    WHERE p ->> 'bucket_start' IS NOT NULL
$$;

-- Apply one batch of a sidecar's journal exactly once (as warden_flush did), and hand that
-- sidecar the settlements of its reservations that other sidecars stored (`refunds`: the
-- usage rows with their reservations' parts), which it settles itself.
CREATE FUNCTION warden_apply_journal(p_requests jsonb, p_usage jsonb, p_sidecar text)
RETURNS TABLE (requests_logged bigint, requests_conflicting bigint, usage_stored bigint,
               usage_orphaned bigint, refunds jsonb)
LANGUAGE plpgsql
-- Plans made while the tables were nearly empty (sequential scans) must not be reused as they
-- grow.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    logged bigint;
    conflicting bigint;
    stored bigint;
    orphaned bigint;
    adj jsonb;
    claimed jsonb;
    owners text[];
BEGIN
    WITH r AS (
        SELECT * FROM jsonb_to_recordset(p_requests) AS r(
            org_id text, request_id text, app_id text, api_key_id text, user_id text,
            model text, provider text, decision text, reason text, input_tokens bigint,
            max_output_tokens bigint, create_time timestamptz, reservation_id text,
            reserved jsonb, reserved_cost_micros bigint, expire_time timestamptz,
            decision_id text, price jsonb)),
    ins AS (
        INSERT INTO requests (org_id, request_id, app_id, api_key_id, user_id, model,
                              provider, decision, reason, input_tokens, max_output_tokens,
                              create_time, reservation_id, reserved, reserved_cost_micros,
                              expire_time, sidecar_id, decision_id, price)
        SELECT r.org_id, r.request_id, r.app_id, r.api_key_id, r.user_id, r.model,
               r.provider, r.decision, r.reason, r.input_tokens, r.max_output_tokens,
               r.create_time, r.reservation_id, r.reserved, r.reserved_cost_micros,
               r.expire_time, p_sidecar, coalesce(r.decision_id, ''), r.price
        FROM r WHERE EXISTS (SELECT 1 FROM orgs o WHERE o.id = r.org_id)
        ON CONFLICT (org_id, request_id) DO NOTHING
        RETURNING org_id, request_id)
    SELECT (SELECT count(*) FROM ins),
           -- Not logged, and not the very decision logged before (a replay).
           (SELECT count(*) FROM r
            WHERE NOT EXISTS (SELECT 1 FROM ins i
                              WHERE i.org_id = r.org_id AND i.request_id = r.request_id)
              AND NOT EXISTS (SELECT 1 FROM requests q
                              WHERE q.org_id = r.org_id AND q.request_id = r.request_id
                                AND q.decision_id = coalesce(r.decision_id, '')
                                AND q.create_time = r.create_time))
    INTO logged, conflicting;

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
        -- The owner's own settlements carry their adjustments (what it did not settle in its
        -- leases); another sidecar's leave the whole of it to the owner.
        SELECT u.*, r.sidecar_id <> p_sidecar AS elsewhere, r.sidecar_id AS owner
        FROM u JOIN requests r
            ON r.org_id = u.org_id AND r.request_id = u.request_id AND r.decision = 'allow'),
    saved AS (
        INSERT INTO usage AS s (org_id, request_id, input_tokens, output_tokens,
                               cached_input_tokens, cost_micros, cost_source, model, provider,
                               outcome, latency_ms, record_time, refund_pending)
        SELECT org_id, request_id, input_tokens, output_tokens, cached_input_tokens,
               cost_micros, cost_source, model, provider, outcome, latency_ms, record_time,
               elsewhere
        FROM known
        ON CONFLICT (org_id, request_id) DO UPDATE SET
            input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,
            cached_input_tokens = EXCLUDED.cached_input_tokens,
            cost_micros = EXCLUDED.cost_micros, cost_source = EXCLUDED.cost_source,
            model = EXCLUDED.model, provider = EXCLUDED.provider, outcome = EXCLUDED.outcome,
            latency_ms = EXCLUDED.latency_ms, record_time = EXCLUDED.record_time,
            refund_pending = EXCLUDED.refund_pending
            WHERE s.outcome = 'expired'
        RETURNING s.org_id, s.request_id),
    won AS (SELECT k.* FROM known k JOIN saved USING (org_id, request_id)),
    settled AS (
        UPDATE requests r SET settle_time = w.record_time FROM won w
        WHERE r.org_id = w.org_id AND r.request_id = w.request_id
        RETURNING 1)
    SELECT (SELECT count(*) FROM saved), (SELECT count(*) FROM u) - (SELECT count(*) FROM known),
           (SELECT coalesce(jsonb_agg(a), '[]')
            FROM won w, jsonb_array_elements(coalesce(w.adjustments, '[]')) a
            WHERE NOT w.elsewhere),
           (SELECT array_agg(DISTINCT w.owner) FROM won w WHERE w.elsewhere),
           (SELECT count(*) FROM settled)
    INTO stored, orphaned, adj, owners;

    -- Delivered when this transaction commits: the owners claim what is held for them.
    PERFORM pg_notify('warden_refunds', o) FROM unnest(owners) o;

    IF jsonb_array_length(adj) > 0 THEN
        PERFORM warden_adjust(
            array(SELECT a ->> 'policy_id' FROM jsonb_array_elements(adj) a),
            array(SELECT (a ->> 'bucket_start')::timestamptz FROM jsonb_array_elements(adj) a),
            array(SELECT (a ->> 'delta')::bigint FROM jsonb_array_elements(adj) a));
    END IF;

    -- This sidecar's reservations that others settled, while it may still settle them.
    WITH mine AS (
        UPDATE usage s SET refund_pending = false
        FROM requests r
        WHERE s.refund_pending AND r.org_id = s.org_id AND r.request_id = s.request_id
          AND r.sidecar_id = p_sidecar AND r.expire_time > now()
        RETURNING to_jsonb(s) || jsonb_build_object('reserved', r.reserved) AS refund)
    SELECT coalesce(jsonb_agg(refund), '[]') INTO claimed FROM mine;

    RETURN QUERY SELECT logged, conflicting, stored, orphaned, claimed;
END
$$;

-- As before, and also: a pending refund whose reservation expired is settled here, its owner
-- having had the whole TTL to claim it (a sidecar that is gone never will).
CREATE OR REPLACE FUNCTION warden_expire(p_limit int) RETURNS bigint LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    n bigint;
    policies text[];
    starts timestamptz[];
    deltas bigint[];
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

    WITH orphaned AS (
        UPDATE usage s SET refund_pending = false
        FROM requests r
        WHERE s.refund_pending AND r.org_id = s.org_id AND r.request_id = s.request_id
          AND r.expire_time <= now()
        RETURNING s.input_tokens, s.output_tokens, s.cost_micros, r.reserved),
    d AS (
        SELECT x.* FROM orphaned o,
             warden_settlement_deltas(o.reserved, o.input_tokens, o.output_tokens,
                                      o.cost_micros) x
        WHERE x.delta <> 0)
    SELECT array_agg(d.policy_id), array_agg(d.bucket_start), array_agg(d.delta)
    INTO policies, starts, deltas FROM d;
    IF policies IS NOT NULL THEN
        PERFORM warden_adjust(policies, starts, deltas);
    END IF;
    RETURN n;
END
$$;
