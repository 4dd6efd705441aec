-- audit_events partitioned by month of event_time (UTC months), so that retention drops whole
-- partitions instead of deleting rows. The existing rows are moved: a new table, a copy, a
-- swap of names, in this migration's one transaction. Design: docs/audit.md.

ALTER TABLE audit_events RENAME TO audit_events_unpartitioned;
ALTER TABLE audit_events_unpartitioned RENAME CONSTRAINT audit_events_pkey
    TO audit_events_unpartitioned_pkey;
ALTER TABLE audit_events_unpartitioned RENAME CONSTRAINT audit_events_org_id_fkey
    TO audit_events_unpartitioned_org_id_fkey;
ALTER INDEX audit_events_time_idx RENAME TO audit_events_unpartitioned_time_idx;

-- A unique key of a partitioned table must contain the partition key, so (org_id, event_id)
-- alone can no longer be one. A replayed journal record carries the event_time it was
-- accepted with, so this key stores each replayed event once; the flush also skips an id the
-- org already has (warden.ledger), which catches a caller's retry that let the sidecar assign
-- a new time.
CREATE TABLE audit_events (
    org_id       text NOT NULL REFERENCES orgs (id),
    event_id     text NOT NULL,
    app_id       text NOT NULL,
    event_time   timestamptz NOT NULL,
    receive_time timestamptz NOT NULL DEFAULT now(),
    action       text NOT NULL,
    request_id   text NOT NULL DEFAULT '',
    user_id      text NOT NULL DEFAULT '',
    model        text NOT NULL DEFAULT '',
    provider     text NOT NULL DEFAULT '',
    attributes   jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (org_id, event_id, event_time)
) PARTITION BY RANGE (event_time);
-- An org's events over a time range, in (event_time, event_id) order for keyset pages.
CREATE INDEX audit_events_time_idx ON audit_events (org_id, event_time, event_id);
-- One app's events over a time range: apps send the events, and an org may have hundreds.
CREATE INDEX audit_events_app_idx ON audit_events (org_id, app_id, event_time, event_id);
-- A request's story. Other filters (user, action, model) narrow a time range's scan.
CREATE INDEX audit_events_request_idx ON audit_events (org_id, request_id);

-- Whatever falls outside every monthly partition lands here instead of failing the flush (a
-- failed flush would hold up the journal); warden_audit_partitions moves it into its month.
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

-- The partition for the UTC month starting at `month`; false if it already exists. Rows of
-- that month already in the default partition are moved into it.
CREATE FUNCTION warden_audit_partition(month timestamp) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    name  text := 'audit_events_' || to_char(month, 'YYYYMM');
    lower timestamptz := month AT TIME ZONE 'UTC';
    upper timestamptz := (month + interval '1 month') AT TIME ZONE 'UTC';
BEGIN
    IF month <> date_trunc('month', month) THEN
        RAISE EXCEPTION 'warden_audit_partition: % is not the start of a month', month;
    END IF;
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM audit_events_default
               WHERE event_time >= lower AND event_time < upper) THEN
        -- Postgres refuses a partition whose rows sit in the default partition: fill it
        -- first, then attach it.
        EXECUTE format('CREATE TABLE %I (LIKE audit_events INCLUDING DEFAULTS)', name);
        EXECUTE format('WITH moved AS (DELETE FROM audit_events_default WHERE event_time >= %L'
                       ' AND event_time < %L RETURNING *) INSERT INTO %I SELECT * FROM moved',
                       lower, upper, name);
        EXECUTE format('ALTER TABLE audit_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       name, lower, upper);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
                       name, lower, upper);
    END IF;
    RETURN true;
END $$;

-- Make sure the partitions exist for the month before `at` (events may be up to 30 days old),
-- its month and `months_ahead` months after, and for every month with rows in the default
-- partition; return how many were created. Idempotent and cheap when there is nothing to do;
-- concurrent callers wait for each other (advisory lock), then find the work done.
CREATE FUNCTION warden_audit_partitions(at timestamptz, months_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    first  timestamp := date_trunc('month', (at AT TIME ZONE 'UTC') - interval '1 month');
    last   timestamp := date_trunc('month', at AT TIME ZONE 'UTC')
                        + make_interval(months => months_ahead);
    months timestamp[];
    month  timestamp;
    made   integer := 0;
BEGIN
    SELECT array_agg(m ORDER BY m) INTO months FROM (
        SELECT generate_series(first, last, interval '1 month') AS m
        UNION
        SELECT DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC')
        FROM audit_events_default WHERE isfinite(event_time)) s
    WHERE to_regclass('audit_events_' || to_char(m, 'YYYYMM')) IS NULL;
    IF months IS NULL THEN
        RETURN 0;  -- the common case: no lock taken
    END IF;
    PERFORM pg_advisory_xact_lock(6287397007893283924);  -- 'WARDAUDT', shared with retention
    -- Creating and attaching partitions takes this lock anyway; taking it first, before the
    -- default partition's, keeps the order the same as an insert's.
    LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE;
    FOREACH month IN ARRAY months LOOP
        IF warden_audit_partition(month) THEN
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END $$;

-- Detach and drop every monthly partition whose months ended at or before `at - keep`; return
-- their names. Whole partitions only: rows are never deleted one by one. The default partition
-- is never dropped (warden_audit_partitions empties it into monthly ones).
CREATE FUNCTION warden_audit_drop_partitions(at timestamptz, keep interval)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    PERFORM pg_advisory_xact_lock(6287397007893283924);
    FOR part IN
        SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_events'::regclass
          AND substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
              <= at - keep
        ORDER BY 1
    LOOP
        EXECUTE format('ALTER TABLE audit_events DETACH PARTITION %I', part.name);
        EXECUTE format('DROP TABLE %I', part.name);
        RETURN NEXT part.name;
    END LOOP;
END $$;

-- Every month the existing rows fall in, then the months around now; then the rows, each
-- straight into its partition.
SELECT warden_audit_partition(m) FROM (
    SELECT DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC') AS m
    FROM audit_events_unpartitioned WHERE isfinite(event_time)) s;
SELECT warden_audit_partitions(now(), 3);
INSERT INTO audit_events (org_id, event_id, app_id, event_time, receive_time, action, request_id,
                          user_id, model, provider, attributes)
SELECT org_id, event_id, app_id, event_time, receive_time, action, request_id, user_id, model,
       provider, attributes
FROM audit_events_unpartitioned;
DROP TABLE audit_events_unpartitioned;
