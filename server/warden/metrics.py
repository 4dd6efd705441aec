"""Every Prometheus metric Warden exports, defined once. Label values come from fixed sets:
gRPC method names, status code names, and warden.v1.Reason names."""

from prometheus_client import Counter, Gauge, Histogram, Info

BUILD_INFO = Info("warden_build", "Warden version")

RPC_DURATION = Histogram(
    "warden_rpc_duration_seconds",
    "Time to answer one RPC, by method and gRPC status code.",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DECISIONS = Counter(
    "warden_decisions_total", "Authorize decisions by outcome and reason.", ["decision", "reason"]
)
USAGE_RECORDS = Counter(
    "warden_usage_records_total", "RecordUsage calls stored, by whether they were retries.",
    ["duplicate"],
)
MESH_SETTLEMENTS = Counter(
    "warden_mesh_settlements_total",
    "Usage settled from answers seen through Envoy's ext_proc: reported (the answer's usage), "
    "counted (a stream's chunks), cut (a stream ended at its reservation), failed (an HTTP "
    "error) or not_stored (settling failed; the reservation settles when it expires).",
    ["how"],
)
AUDIT_EVENTS = Counter("warden_audit_events_total", "Audit events acknowledged.")
DECISION_LOG = Counter(
    "warden_decision_log_total",
    "Authorize explanations: logged, sampled_out (by the audit setting) or journal_full.",
    ["outcome"],
)
COMPONENT_UP = Gauge(
    "warden_component_up", "1 when a component passes its health check.", ["component"]
)
CACHE_HITS = Counter("warden_cache_hits_total", "Cache lookups answered in process.", ["cache"])
CACHE_MISSES = Counter(
    "warden_cache_misses_total", "Cache lookups that read the database.", ["cache"]
)
CACHE_INVALIDATIONS = Counter(
    "warden_cache_invalidations_total",
    "Cache entries dropped: exact (a change notification named them), full (the change feed "
    "reconnected) or admin_write (this sidecar made a change).",
    ["cache", "how"],
)
CACHE_ENTRIES = Gauge("warden_cache_entries", "Entries held per cache.", ["cache"])
CHANGE_FEED_LOSSES = Counter(
    "warden_change_feed_losses_total",
    "Times the change notification connection was lost after listening.",
)
CACHE_STALE_SERVES = Counter(
    "warden_cache_stale_serves_total",
    "Lookups answered from the last value read because the database was unreachable.",
    ["cache"],
)
LEASE_GRANTS = Counter(
    "warden_lease_grants_total",
    "Quota lease requests to the database, by result: full, partial (the quota had less left "
    "than asked), empty, or unavailable (the database could not be reached).",
    ["result"],
)
DB_ROUND_TRIPS = Counter(
    "warden_db_round_trips_total",
    "Database calls made by the data plane, by purpose (lease, adjust, flush, expire, settle, "
    "alert). A flush carrying audit events is one call of five round trips or more (a "
    "transaction around its COPYs: one into audit_events, one into the temporary table, or "
    "both); any other, one.",
    ["op"],
)
BUDGET_ALERTS = Counter(
    "warden_budget_alerts_total",
    "Budget alert events raised: a budget's counted spend first reached its "
    "alert_threshold_percent in a period (counted by the sidecar that recorded the event).",
)
FAIL_OPEN_ADMITS = Counter(
    "warden_fail_open_admits_total",
    "Quota checks passed beyond the allowance held because the database was unreachable and "
    "the policy fails open.",
)
RESERVATIONS_EXPIRED = Counter(
    "warden_reservations_expired_total",
    "Reservations settled at their reserved amount because RecordUsage never came within the "
    "TTL (counted by the sidecar whose sweep settled them).",
)
JOURNAL_PENDING = Gauge(
    "warden_journal_pending_records",
    "Decisions, usage and audit batches written to the local journal but not yet applied to "
    "the database.",
)
JOURNAL_PENDING_BYTES = Gauge(
    "warden_journal_pending_bytes",
    "Bytes of the local journal not yet applied to the database (audit events are refused "
    "from WARDEN_JOURNAL_MAX_BYTES on).",
)
JOURNAL_OLDEST = Gauge(
    "warden_journal_oldest_seconds",
    "Age of the oldest journal record not yet applied to the database (0 when none).",
)
JOURNAL_REFUSED = Counter(
    "warden_journal_refused_events_total",
    "Audit events refused with RESOURCE_EXHAUSTED because the journal was full.",
)
JOURNAL_FLUSH_FAILURES = Counter(
    "warden_journal_flush_failures_total", "Journal batches the database did not take (retried)."
)
JOURNAL_DROPPED = Counter(
    "warden_journal_dropped_total",
    "Journal records given up for good: decisions whose request id another sidecar had already "
    "logged (conflict), usage naming no logged request (orphan) and audit events of an org the "
    "database does not have (audit_orphan), refused by the database; records holding a value "
    "the database cannot store, set aside in the journal's rejected.jsonl (rejected); and, "
    "when the journal is read at start, damaged stretches inside a segment that were skipped, "
    "the records after them kept (corrupt, one per stretch), and segments ending in a torn "
    "record (torn_tail).",
    ["kind"],
)
AUDIT_PARTITIONS = Counter(
    "warden_audit_partitions_total",
    "Monthly audit_events partitions created ahead of time (created) or, past "
    "WARDEN_AUDIT_RETENTION_DAYS, detached and dropped whole (dropped), by this sidecar.",
    ["change"],
)
CIRCUIT_REPORTS = Counter(
    "warden_circuit_reports_total",
    "Reports of settled calls' outcomes to the shared circuits: reported, or dropped while the "
    "database was away.", ["result"])
CIRCUIT_TRANSITIONS = Counter(
    "warden_circuit_transitions_total",
    "Circuits this sidecar's reports moved: to open (a threshold was reached, or a probe "
    "failed) or to closed (a probe succeeded).", ["to"])
CIRCUIT_PROBES = Counter(
    "warden_circuit_probes_total", "Probes of open circuits this sidecar claimed.")
