-- Teams and users complete the scope chain org -> team -> app -> user -> API key; keys rotate;
-- providers and models can be switched off; every change a sidecar caches is broadcast.

-- Composite keys so that an app, a key or a membership can only name a team or user of its
-- own org.
ALTER TABLE teams ADD CONSTRAINT teams_org_id_id_key UNIQUE (org_id, id);
ALTER TABLE users ADD CONSTRAINT users_org_id_id_key UNIQUE (org_id, id);
ALTER TABLE apps DROP CONSTRAINT apps_team_id_fkey;
ALTER TABLE apps ADD CONSTRAINT apps_team_fkey
    FOREIGN KEY (org_id, team_id) REFERENCES teams (org_id, id);
ALTER TABLE api_keys DROP CONSTRAINT api_keys_user_id_fkey;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_user_fkey
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id);
-- The key this one replaced by rotation (the old key's revoke_time ends its grace period).
ALTER TABLE api_keys ADD COLUMN rotated_from text REFERENCES api_keys (id);

CREATE TABLE user_teams (
    org_id  text NOT NULL,
    user_id text NOT NULL,
    team_id text NOT NULL,
    PRIMARY KEY (user_id, team_id),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, team_id) REFERENCES teams (org_id, id) ON DELETE CASCADE
);
CREATE INDEX user_teams_team_idx ON user_teams (team_id);

-- Kill switches. model '' means every model of the provider; org_id '' means every org.
-- A switch that is off anywhere that matches wins over one that is on.
CREATE TABLE provider_switches (
    provider    text NOT NULL,
    model       text NOT NULL DEFAULT '',
    org_id      text NOT NULL DEFAULT '',
    enabled     boolean NOT NULL,
    reason      text NOT NULL DEFAULT '',
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model, org_id)
);

-- Admin calls refused for a missing or wrong token: who tried what, from where.
CREATE TABLE admin_refusals (
    id     bigserial PRIMARY KEY,
    time   timestamptz NOT NULL DEFAULT now(),
    method text NOT NULL,
    peer   text NOT NULL,
    reason text NOT NULL
);

-- Change broadcast: each sidecar LISTENs on warden_changes and drops exactly the cache entries a
-- payload names. Triggers (not the Admin code) send them, so any writer, `warden apply` or a
-- hand-written UPDATE, reaches every sidecar, and only when its transaction commits.
CREATE FUNCTION warden_change_id(tbl text, r jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE tbl
        WHEN 'policies' THEN (r ->> 'scope_kind') || ':' || (r ->> 'scope_id')
        WHEN 'api_keys' THEN r ->> 'prefix'
        WHEN 'user_teams' THEN r ->> 'user_id'
        WHEN 'provider_switches' THEN r ->> 'org_id'
        ELSE r ->> 'id' END
$$;

CREATE FUNCTION warden_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('warden_changes', json_build_object(
            'table', TG_TABLE_NAME, 'id', warden_change_id(TG_TABLE_NAME, to_jsonb(OLD)))::text);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('warden_changes', json_build_object(
            'table', TG_TABLE_NAME, 'id', warden_change_id(TG_TABLE_NAME, to_jsonb(NEW)))::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER policies_changed AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH ROW EXECUTE FUNCTION warden_notify_change();
-- last_used_time changes every minute and is not cached: it must not flush keys.
CREATE TRIGGER api_keys_changed
    AFTER INSERT OR DELETE OR UPDATE OF org_id, app_id, user_id, prefix, hash, allowed_models,
        expire_time, revoke_time ON api_keys
    FOR EACH ROW EXECUTE FUNCTION warden_notify_change();
CREATE TRIGGER apps_changed AFTER INSERT OR UPDATE OR DELETE ON apps
    FOR EACH ROW EXECUTE FUNCTION warden_notify_change();
CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION warden_notify_change();
CREATE TRIGGER user_teams_changed AFTER INSERT OR UPDATE OR DELETE ON user_teams
    FOR EACH ROW EXECUTE FUNCTION warden_notify_change();
CREATE TRIGGER provider_switches_changed AFTER INSERT OR UPDATE OR DELETE ON provider_switches
    FOR EACH ROW EXECUTE FUNCTION warden_notify_change();
