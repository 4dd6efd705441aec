-- audit_events loses its foreign key to orgs. The check ran as a trigger per inserted row and
-- cost Postgres 5.4 of 18.8 µs per stored event (bench/audit.md). It guarded nothing the flush
-- does not: the flush stores only events whose org exists and counts the others
-- (warden_journal_dropped_total{kind="audit_orphan"}), and orgs are never deleted (an apply
-- changes the orgs it declares and removes none).
ALTER TABLE audit_events DROP CONSTRAINT audit_events_org_id_fkey;
