"""One frozen Settings object, read from WARDEN_* variables and command-line flags once at start.

Every option is declared once in OPTIONS; the CLI builds its flags from the same table, so a
flag and its environment variable cannot drift apart. A flag wins over the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from warden.engine import DEFAULT_MAX_OUTPUT_TOKENS


class SettingsError(ValueError):
    """Raised with every problem found, one per line."""


def _address(value: str) -> str:
    if value.startswith("unix:"):
        if len(value) <= len("unix:"):
            raise ValueError("unix: needs a socket path, e.g. unix:/run/warden.sock")
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT (port 0-65535) or unix:PATH")
    return value


def _optional_address(value: str) -> str:
    return "" if value.lower() in ("", "off", "none") else _address(value)


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _auto_bool(value: str) -> bool | None:
    return None if value.strip().lower() in ("", "auto") else _bool(value)


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be an integer >= 0")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be a number >= 0")
    return number


def _share(value: str) -> float:
    number = float(value)
    if not 0 < number <= 1:
        raise ValueError("must be a share in (0, 1], e.g. 0.5")
    return number


def _window_seconds(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 3600:
        raise ValueError("must be an integer from 1 to 3600")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a number > 0")
    return number


def _optional_unix(value: str) -> str:
    if value.lower() in ("", "off", "none"):
        return ""
    if not value.startswith("unix:") or len(value) <= len("unix:"):
        raise ValueError("expected unix:PATH, or 'off'")
    return value


def _names(value: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    if any(any(c.isspace() for c in n) for n in names):
        raise ValueError("expected names separated by commas, without spaces inside a name")
    return names


def _header_names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in value.split(",") if n.strip())
    if not names or any(not n.replace("-", "").isalnum() for n in names):
        raise ValueError("expected HTTP header names separated by commas")
    return names


def _header_name(value: str) -> str:
    names = _header_names(value)
    if len(names) != 1:
        raise ValueError("expected one HTTP header name")
    return names[0]


def _rate_limit_styles(value: str) -> frozenset[str]:
    styles = frozenset(n.strip().lower() for n in value.split(",") if n.strip())
    if styles == {"none"}:
        return frozenset()
    if not styles or styles - {"openai", "ietf"}:
        raise ValueError("expected openai, ietf, both separated by a comma, or none")
    return styles


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


def _database_url(value: str) -> str:
    if value and not value.startswith(("postgres://", "postgresql://")):
        raise ValueError("expected a postgresql:// URL (or empty for the embedded server)")
    return value


def _default_data_dir() -> str:
    home_data = os.path.join(os.path.expanduser("~"), ".local", "share")
    base = os.environ.get("XDG_DATA_HOME") or home_data
    return os.path.join(base, "warden")


@dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[str], Any]
    default: str
    help: str

    @property
    def env(self) -> str:
        return "WARDEN_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("listen", _address, "127.0.0.1:50051",
           "where to serve gRPC: HOST:PORT (port 0 picks a free one) or unix:PATH"),
    Option("subject_socket", _optional_unix, "off",
           "a second listener, unix:PATH (created mode 0600), for trusted callers such as a "
           "gateway: they may name the org, app and user of a call instead of sending an API "
           "key; 'off' for none"),
    Option("tls_cert", str, "", "PEM certificate chain file; with it the gRPC listener speaks "
           "TLS; empty: plaintext"),
    Option("tls_key", str, "", "PEM private key file of the TLS certificate"),
    Option("tls_client_ca", str, "", "PEM file of CA certificates; with it every caller must "
           "present a client certificate one of them signed (mutual TLS); empty: no client "
           "certificate is asked for"),
    Option("tls_trusted_clients", _names, "", "client certificate names (subject alternative "
           "names, or the common name when there are none), comma-separated, that may name the "
           "org, app and user of a call instead of sending an API key; needs the client CA"),
    Option("tls_admin_clients", _names, "", "client certificate names, comma-separated, that "
           "may call the Admin API without the admin token; needs the client CA"),
    Option("envoy_key_headers", _header_names, "authorization,x-api-key",
           "HTTP headers that carry the Warden key of a call through Envoy (ext_authz, "
           "ext_proc), first found wins; authorization as a bearer token. All of them are "
           "removed before the request goes upstream"),
    Option("envoy_rag_sources_header", _header_name, "x-warden-rag-sources",
           "HTTP header naming, comma-separated, the document collections a call through "
           "Envoy draws on (for rag_sources policies); removed before the request goes "
           "upstream"),
    Option("envoy_rate_limit_headers", _rate_limit_styles, "openai,ietf",
           "rate-limit headers on answers through Envoy: openai (x-ratelimit-*), ietf "
           "(RateLimit-Policy and RateLimit), both comma-separated, or none"),
    Option("metrics_listen", _optional_address, "127.0.0.1:9464",
           "where to serve Prometheus metrics (at /metrics): HOST:PORT, or 'off'"),
    Option("database_url", _database_url, "",
           "the PostgreSQL database shared by every sidecar, as a postgresql:// URL; empty: "
           "Warden runs its own PostgreSQL in the data directory"),
    Option("data_dir", str, "", "directory for the admin token, the key pepper, the journal of "
           "records not yet in the database, and the embedded database (default "
           "$XDG_DATA_HOME/warden or ~/.local/share/warden)"),
    Option("admin_token", str, "", "the bearer token every Admin API call must carry; empty: "
           "generated at first start into the file admin-token in the data directory "
           "(mode 0600)"),
    Option("key_pepper", str, "", "secret mixed into stored API key hashes; every sidecar of "
           "one database needs the same; empty: generated at first start into the file "
           "key-pepper in the data directory"),
    Option("migrate", _auto_bool, "auto", "bring the database schema up to date at start: "
           "true, false, or auto (true with the embedded database, false with a database URL, "
           "where `warden migrate` does it)"),
    Option("db_pool_min", _positive_int, "1", "fewest database connections kept open"),
    Option("db_pool_max", _positive_int, "10", "most database connections open at once"),
    Option("db_timeout_seconds", _non_negative_float, "5",
           "seconds one database call may take before it fails"),
    Option("max_prompt_chars", _positive_int, str(512 * 1024),
           "largest prompt one call may send (its messages' text, in characters): the "
           "guardrails read all of it; a larger one is refused (INVALID_ARGUMENT)"),
    Option("max_message_bytes", _positive_int, str(4 * 1024 * 1024),
           "largest gRPC message accepted, in bytes; a larger one is refused "
           "(RESOURCE_EXHAUSTED)"),
    Option("shutdown_grace_seconds", _non_negative_float, "10",
           "seconds calls in progress may take to finish after SIGTERM or Ctrl-C"),
    Option("health_interval_seconds", _non_negative_float, "2",
           "seconds between checks of the database, which the gRPC health service reports"),
    Option("log_level", _log_level, "INFO", "the least severe log records written (JSON lines "
           "on stderr): DEBUG, INFO, WARNING or ERROR; DEBUG adds the embedded PostgreSQL's "
           "own start-up output"),
    Option("cache_ttl_seconds", _non_negative_float, "60",
           "how long a cached key, user or policy set may be used without a change "
           "notification (a safety net: changes are pushed within milliseconds); 0 disables "
           "the cache"),
    Option("cache_max_entries", _positive_int, "100000",
           "entries kept in each cache (API keys, users, policy sets)"),
    Option("reservation_ttl_seconds", _positive_float, "600",
           "seconds an allowed call's reservation waits for its RecordUsage; after that it is "
           "settled at the amount reserved"),
    Option("lease_timeout_seconds", _positive_float, "1",
           "seconds Authorize waits for the database to grant this sidecar a share of a quota "
           "before treating the database as away (each limit's failure_mode then decides)"),
    Option("journal_flush_seconds", _positive_float, "1",
           "how often the decisions, usage and audit events recorded on local disk (the "
           "journal in the data directory) are written to the database"),
    Option("journal_max_bytes", _positive_int, str(256 * 1024 * 1024),
           "bytes of journal not yet written to the database at which Audit and StreamAudit "
           "are refused (RESOURCE_EXHAUSTED); decisions and usage are never refused"),
    Option("default_max_output_tokens", _positive_int, str(DEFAULT_MAX_OUTPUT_TOKENS),
           "output tokens reserved for, and imposed on, a call that sets no max_output_tokens "
           "while a token limit or budget counts output tokens"),
    Option("quota_retention_days", _positive_float, "35",
           "days usage counters are kept once no limit window or budget period counts them"),
    Option("audit_retention_days", _non_negative_int, "180",
           "days audit events are kept (by event time); they are dropped a month at a time "
           "once all of that month is older, so some stay up to a month longer; 0 keeps them "
           "forever"),
    Option("circuit_error_rate", _share, "0.5",
           "share of failed calls of one provider's model within the circuit window that "
           "opens its circuit (calls are then routed to the next fallback), for circuits "
           "without their own (Admin.SetCircuit)"),
    Option("circuit_min_calls", _positive_int, "20",
           "calls the circuit window must hold before its error rate can open a circuit"),
    Option("circuit_window_seconds", _window_seconds, "30",
           "seconds of outcomes the error rate of a circuit is taken over"),
    Option("circuit_consecutive_failures", _non_negative_int, "5",
           "failures in a row that open a circuit, whatever the window holds (0: off)"),
    Option("circuit_cooldown_seconds", _positive_float, "30",
           "seconds an opened circuit stays open before one probe call is let through"),
    Option("circuit_probe_seconds", _positive_float, "60",
           "seconds a probe call may take to report its outcome before another is tried"),
)


@dataclass(frozen=True)
class Settings:
    listen: str
    subject_socket: str
    tls_cert: str
    tls_key: str
    tls_client_ca: str
    tls_trusted_clients: frozenset[str]
    tls_admin_clients: frozenset[str]
    envoy_key_headers: tuple[str, ...]
    envoy_rag_sources_header: str
    envoy_rate_limit_headers: frozenset[str]
    metrics_listen: str
    database_url: str
    data_dir: str
    admin_token: str
    key_pepper: str
    migrate: bool | None
    db_pool_min: int
    db_pool_max: int
    db_timeout_seconds: float
    max_prompt_chars: int
    max_message_bytes: int
    shutdown_grace_seconds: float
    health_interval_seconds: float
    log_level: str
    cache_ttl_seconds: float
    cache_max_entries: int
    reservation_ttl_seconds: float
    lease_timeout_seconds: float
    journal_flush_seconds: float
    journal_max_bytes: int
    default_max_output_tokens: int
    quota_retention_days: float
    audit_retention_days: int
    circuit_error_rate: float
    circuit_min_calls: int
    circuit_window_seconds: int
    circuit_consecutive_failures: int
    circuit_cooldown_seconds: float
    circuit_probe_seconds: float

    @property
    def embedded_database(self) -> bool:
        return not self.database_url

    @property
    def migrate_on_start(self) -> bool:
        return self.embedded_database if self.migrate is None else self.migrate

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @classmethod
    def load(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] | None = None
    ) -> Settings:
        """Parse and validate; raise SettingsError listing every bad value."""
        env = os.environ if env is None else env
        overrides = overrides or {}
        values: dict[str, Any] = {}
        problems = []
        for option in OPTIONS:
            raw = overrides.get(option.name)
            source = option.flag
            if raw is None:
                raw, source = env.get(option.env, option.default), option.env
            try:
                values[option.name] = option.parse(raw)
            except ValueError as exc:
                problems.append(f"{source}={raw!r}: {exc}")
        if not problems and values["db_pool_min"] > values["db_pool_max"]:
            problems.append("WARDEN_DB_POOL_MIN must not exceed WARDEN_DB_POOL_MAX")
        if not problems and values["subject_socket"] and values["listen"].startswith("unix:"):
            # Trusted callers are told apart by their transport.
            problems.append("WARDEN_SUBJECT_SOCKET needs WARDEN_LISTEN to be HOST:PORT")
        if not problems:
            problems += _tls_problems(values)
        if problems:
            raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems))
        values["data_dir"] = values["data_dir"] or _default_data_dir()
        assert {f.name for f in fields(cls)} == set(values)
        return cls(**values)


def _tls_problems(values: dict[str, Any]) -> list[str]:
    problems = []
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        problems.append("WARDEN_TLS_CERT and WARDEN_TLS_KEY go together")
    if values["tls_cert"] and values["listen"].startswith("unix:"):
        problems.append("WARDEN_TLS_CERT needs WARDEN_LISTEN to be HOST:PORT")
    if values["tls_client_ca"] and not values["tls_cert"]:
        problems.append("WARDEN_TLS_CLIENT_CA needs WARDEN_TLS_CERT and WARDEN_TLS_KEY")
    for name in ("tls_trusted_clients", "tls_admin_clients"):
        if values[name] and not values["tls_client_ca"]:
            # A name is only worth trusting once a CA has verified the certificate carrying it.
            problems.append(f"WARDEN_{name.upper()} needs WARDEN_TLS_CLIENT_CA")
    return problems
