-- Directory, API keys, policies, prices, request counters, usage and audit.
-- Ids are text chosen by the operator (or generated), so policy files can name them.

CREATE TABLE warden_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE orgs (
    id           text PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    time_zone    text NOT NULL DEFAULT 'UTC',
    currency     text NOT NULL DEFAULT 'USD',
    create_time  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE teams (
    id           text PRIMARY KEY,
    org_id       text NOT NULL REFERENCES orgs (id),
    display_name text NOT NULL DEFAULT '',
    create_time  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE apps (
    id           text PRIMARY KEY,
    org_id       text NOT NULL REFERENCES orgs (id),
    team_id      text REFERENCES teams (id),
    display_name text NOT NULL DEFAULT '',
    create_time  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX apps_org_idx ON apps (org_id, id);

CREATE TABLE users (
    id           text PRIMARY KEY,
    org_id       text NOT NULL REFERENCES orgs (id),
    display_name text NOT NULL DEFAULT '',
    create_time  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id             text PRIMARY KEY,
    org_id         text NOT NULL REFERENCES orgs (id),
    app_id         text NOT NULL REFERENCES apps (id),
    user_id        text REFERENCES users (id),
    display_name   text NOT NULL DEFAULT '',
    -- Public part of the key, used to find the row; the secret is only hashed.
    prefix         text NOT NULL UNIQUE,
    -- HMAC-SHA256 of the whole key under the server's key pepper.
    hash           bytea NOT NULL,
    allowed_models text[] NOT NULL DEFAULT '{}',
    create_time    timestamptz NOT NULL DEFAULT now(),
    expire_time    timestamptz,
    revoke_time    timestamptz,
    last_used_time timestamptz
);
CREATE INDEX api_keys_app_idx ON api_keys (app_id, id);

CREATE TABLE policies (
    id           text PRIMARY KEY,
    org_id       text NOT NULL REFERENCES orgs (id),
    scope_kind   text NOT NULL CHECK (scope_kind IN ('org', 'team', 'app', 'user', 'api_key')),
    scope_id     text NOT NULL,
    name         text NOT NULL DEFAULT '',
    policy_type  text NOT NULL,
    mode         text NOT NULL CHECK (mode IN ('enforce', 'dry_run')),
    priority     integer NOT NULL DEFAULT 0,
    locked       boolean NOT NULL DEFAULT false,
    failure_mode text NOT NULL CHECK (failure_mode IN ('fail_closed', 'fail_open')),
    -- The typed config, as the proto3 JSON of the policy's config message.
    config       jsonb NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    update_time  timestamptz NOT NULL DEFAULT now(),
    revision     bigint NOT NULL DEFAULT 1
);
CREATE INDEX policies_scope_idx ON policies (scope_kind, scope_id);

CREATE TABLE model_prices (
    provider                        text NOT NULL,
    model                           text NOT NULL,
    input_micros_per_million        bigint NOT NULL CHECK (input_micros_per_million >= 0),
    output_micros_per_million       bigint NOT NULL CHECK (output_micros_per_million >= 0),
    cached_input_micros_per_million bigint NOT NULL CHECK (cached_input_micros_per_million >= 0),
    update_time                     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model)
);

-- Fixed-window request counters; windows are aligned on the database clock.
CREATE TABLE rate_counters (
    policy_id    text NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    window_start timestamptz NOT NULL,
    count        bigint NOT NULL CHECK (count >= 0),
    PRIMARY KEY (policy_id, window_start)
);

-- One row per Authorize: the decision log the usage and audit refer to.
CREATE TABLE requests (
    org_id            text NOT NULL REFERENCES orgs (id),
    request_id        text NOT NULL,
    app_id            text NOT NULL,
    api_key_id        text NOT NULL,
    user_id           text NOT NULL DEFAULT '',
    model             text NOT NULL,
    provider          text NOT NULL DEFAULT '',
    decision          text NOT NULL CHECK (decision IN ('allow', 'deny')),
    reason            text NOT NULL,
    input_tokens      bigint NOT NULL,
    max_output_tokens bigint NOT NULL,
    create_time       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, request_id)
);

CREATE TABLE usage (
    org_id              text NOT NULL,
    request_id          text NOT NULL,
    input_tokens        bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens       bigint NOT NULL CHECK (output_tokens >= 0),
    cached_input_tokens bigint NOT NULL CHECK (cached_input_tokens >= 0),
    cost_micros         bigint NOT NULL CHECK (cost_micros >= 0),
    cost_source         text NOT NULL CHECK (cost_source IN ('reported', 'priced')),
    model               text NOT NULL,
    provider            text NOT NULL,
    outcome             text NOT NULL,
    latency_ms          bigint,
    record_time         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, request_id),
    FOREIGN KEY (org_id, request_id) REFERENCES requests (org_id, request_id)
);

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
    PRIMARY KEY (org_id, event_id)
);
CREATE INDEX audit_events_time_idx ON audit_events (org_id, event_time);
