-- Circuits: per provider and model, what the outcomes reported by RecordUsage and ext_proc say
-- of it, shared by every sidecar. A circuit opens when its error rate over a sliding window
-- (with a minimum number of calls) or its run of consecutive failures reaches its threshold;
-- while open, calls are routed past it. After the cool-down one sidecar claims the probe
-- (half_open): it lets one call through, and the first outcome reported then closes the
-- circuit (success) or opens it again (failure). An operator may force a circuit open or
-- closed. Every change of state is broadcast on the change feed like the cached tables.
CREATE TABLE circuits (
    provider text NOT NULL CHECK (length(provider) <= 200),
    model text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    state text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    -- An operator's override: 'open' refuses every call, 'closed' never opens; NULL: automatic.
    forced text CHECK (forced IN ('open', 'closed')),
    reason text NOT NULL DEFAULT '' CHECK (length(reason) <= 1000),
    -- This circuit's thresholds; NULL: the reporting sidecar's WARDEN_CIRCUIT_* setting.
    error_rate double precision CHECK (error_rate > 0 AND error_rate <= 1),
    min_calls integer CHECK (min_calls > 0),
    window_seconds integer CHECK (window_seconds BETWEEN 1 AND 3600),
    consecutive_failures integer CHECK (consecutive_failures >= 0),
    cooldown_seconds double precision CHECK (cooldown_seconds > 0 AND cooldown_seconds <= 86400),
    -- The failures reported in a row so far (a success ends the run).
    failure_run integer NOT NULL DEFAULT 0,
    open_time timestamptz,
    -- open: when a probe may be claimed; half_open: when an unsettled probe is given up.
    retry_time timestamptz,
    -- half_open: the sidecar that holds the probe.
    probe_owner text,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model)
);

-- Calls and failures per circuit and second, for the sliding window; older seconds than the
-- window are dropped by each report.
CREATE TABLE circuit_calls (
    provider text NOT NULL,
    model text NOT NULL,
    second bigint NOT NULL,
    calls integer NOT NULL,
    failures integer NOT NULL,
    PRIMARY KEY (provider, model, second),
    FOREIGN KEY (provider, model) REFERENCES circuits ON DELETE CASCADE
);

CREATE OR REPLACE FUNCTION warden_change_id(tbl text, r jsonb) RETURNS text LANGUAGE sql
IMMUTABLE AS $$
    SELECT CASE tbl
        WHEN 'policies' THEN (r ->> 'scope_kind') || ':' || (r ->> 'scope_id')
        WHEN 'api_keys' THEN r ->> 'prefix'
        WHEN 'user_teams' THEN r ->> 'user_id'
        WHEN 'provider_switches' THEN r ->> 'org_id'
        WHEN 'model_prices' THEN (r ->> 'provider') || '/' || (r ->> 'model')
        WHEN 'app_principals' THEN r ->> 'principal'
        WHEN 'circuits' THEN (r ->> 'provider') || '/' || (r ->> 'model')
        ELSE r ->> 'id' END
$$;
-- Only what routing reads: a report that moves nothing but the failure run stays quiet.
CREATE TRIGGER circuits_changed AFTER UPDATE ON circuits FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.forced IS DISTINCT FROM NEW.forced
          OR OLD.retry_time IS DISTINCT FROM NEW.retry_time OR OLD.reason IS DISTINCT FROM NEW.reason)
    EXECUTE FUNCTION warden_notify_change();
CREATE TRIGGER circuits_added AFTER INSERT ON circuits FOR EACH ROW
    WHEN (NEW.state <> 'closed' OR NEW.forced IS NOT NULL) EXECUTE FUNCTION warden_notify_change();
CREATE TRIGGER circuits_removed AFTER DELETE ON circuits FOR EACH ROW
    EXECUTE FUNCTION warden_notify_change();

-- One sidecar's tally of one circuit since its last report: `calls` outcomes, `failures` of
-- them failed, the last `trailing` of them in a row, `succeeded`: at least one did not fail.
-- The d_* arguments are the reporting sidecar's defaults for thresholds the circuit does not
-- set. Returns the state the report moved the circuit to ('open' or 'closed'), or NULL.
CREATE FUNCTION warden_circuit_report(
    p_provider text, p_model text, p_calls integer, p_failures integer, p_trailing integer,
    p_succeeded boolean, d_error_rate double precision, d_min_calls integer,
    d_window_seconds integer, d_consecutive integer, d_cooldown_seconds double precision
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    c circuits;
    at timestamptz := clock_timestamp();
    now_s bigint := floor(extract(epoch FROM at));
    win integer;
    run integer;
    total bigint;
    failed bigint;
    why text;
BEGIN
    INSERT INTO circuits (provider, model) VALUES (p_provider, p_model) ON CONFLICT DO NOTHING;
    SELECT * INTO c FROM circuits WHERE provider = p_provider AND model = p_model FOR UPDATE;
    win := coalesce(c.window_seconds, d_window_seconds);
    INSERT INTO circuit_calls VALUES (p_provider, p_model, now_s, p_calls, p_failures)
        ON CONFLICT (provider, model, second) DO UPDATE
        SET calls = circuit_calls.calls + excluded.calls,
            failures = circuit_calls.failures + excluded.failures;
    DELETE FROM circuit_calls
        WHERE provider = p_provider AND model = p_model AND second <= now_s - win;
    run := CASE WHEN p_succeeded THEN p_trailing ELSE c.failure_run + p_failures END;
    IF c.forced IS NULL AND c.state = 'half_open' THEN
        IF p_failures > 0 THEN
            why := 'the probe call failed';
        ELSIF p_succeeded THEN
            DELETE FROM circuit_calls WHERE provider = p_provider AND model = p_model;
            UPDATE circuits SET state = 'closed', reason = 'the probe call succeeded',
                failure_run = 0, open_time = NULL, retry_time = NULL, probe_owner = NULL,
                update_time = at
                WHERE provider = p_provider AND model = p_model;
            RETURN 'closed';
        END IF;
    ELSIF c.forced IS NULL AND c.state = 'closed' THEN
        SELECT sum(calls), sum(failures) INTO total, failed FROM circuit_calls
            WHERE provider = p_provider AND model = p_model;
        IF coalesce(c.consecutive_failures, d_consecutive) > 0
                AND run >= coalesce(c.consecutive_failures, d_consecutive) THEN
            why := format('%s calls in a row failed', run);
        ELSIF total >= coalesce(c.min_calls, d_min_calls)
                AND failed >= coalesce(c.error_rate, d_error_rate) * total THEN
            why := format('%s of the last %s calls failed within %s s', failed, total, win);
        END IF;
    END IF;
    IF why IS NOT NULL THEN
        UPDATE circuits SET state = 'open', reason = why, failure_run = run,
            open_time = coalesce(CASE WHEN c.state = 'half_open' THEN c.open_time END, at),
            retry_time = at + make_interval(secs => coalesce(c.cooldown_seconds,
                                                             d_cooldown_seconds)),
            probe_owner = NULL, update_time = at
            WHERE provider = p_provider AND model = p_model;
        RETURN 'open';
    END IF;
    UPDATE circuits SET failure_run = run WHERE provider = p_provider AND model = p_model;
    RETURN NULL;
END
$$;
