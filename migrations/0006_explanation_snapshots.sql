-- What repeats from one decision's explanation to the next (each result's policy, scope, type
-- and mode; each limit's policy, scope, metric and limit), stored once per org and content.
-- An authorize.decision event's attributes name theirs by id ("snapshot"); Admin's readers
-- join it back in (engine/audit.py: explanation, expand). A few rows per org (one per set of
-- policies a call met), kept for as long as any event may refer to them: never deleted.
CREATE TABLE explanation_snapshots (
    org_id      text NOT NULL,
    id          text NOT NULL,  -- a hash of the body's JSON
    body        jsonb NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
