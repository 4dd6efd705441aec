-- Workload identities that name an app in a service mesh: the principal Envoy reports for a
-- caller it authenticated with mTLS (attributes.source.principal, e.g. a SPIFFE id). A call
-- from such a workload needs no API key. One principal names one app, across every org.
CREATE TABLE app_principals (
    principal text PRIMARY KEY CHECK (length(principal) BETWEEN 1 AND 2048),
    app_id text NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX app_principals_app ON app_principals (app_id);

CREATE OR REPLACE FUNCTION warden_change_id(tbl text, r jsonb) RETURNS text LANGUAGE sql
IMMUTABLE AS $$
    SELECT CASE tbl
        WHEN 'policies' THEN (r ->> 'scope_kind') || ':' || (r ->> 'scope_id')
        WHEN 'api_keys' THEN r ->> 'prefix'
        WHEN 'user_teams' THEN r ->> 'user_id'
        WHEN 'provider_switches' THEN r ->> 'org_id'
        WHEN 'model_prices' THEN (r ->> 'provider') || '/' || (r ->> 'model')
        WHEN 'app_principals' THEN r ->> 'principal'
        ELSE r ->> 'id' END
$$;
CREATE TRIGGER app_principals_changed AFTER INSERT OR UPDATE OR DELETE ON app_principals
    FOR EACH ROW EXECUTE FUNCTION warden_notify_change();
