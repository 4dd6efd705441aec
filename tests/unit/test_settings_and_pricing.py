import pytest

from warden.engine.pricing import Price, cost_micros
from warden.settings import Settings, SettingsError


def test_defaults() -> None:
    s = Settings.load(env={})
    assert (s.listen, s.metrics_listen, s.embedded_database, s.migrate_on_start) == \
        ("127.0.0.1:50051", "127.0.0.1:9464", True, True)


def test_external_database_does_not_migrate_unless_asked() -> None:
    url = "postgresql://db/warden"
    assert not Settings.load(env={"WARDEN_DATABASE_URL": url}).migrate_on_start
    assert Settings.load(env={"WARDEN_DATABASE_URL": url, "WARDEN_MIGRATE": "true"}) \
        .migrate_on_start


def test_the_subject_socket_is_a_unix_socket_beside_a_tcp_listener() -> None:
    assert Settings.load(env={"WARDEN_SUBJECT_SOCKET": "unix:/run/w.sock"}).subject_socket == \
        "unix:/run/w.sock"
    with pytest.raises(SettingsError, match="WARDEN_SUBJECT_SOCKET='127.0.0.1:1'"):
        Settings.load(env={"WARDEN_SUBJECT_SOCKET": "127.0.0.1:1"})
    with pytest.raises(SettingsError, match="needs WARDEN_LISTEN to be HOST:PORT"):
        Settings.load(env={"WARDEN_SUBJECT_SOCKET": "unix:/a", "WARDEN_LISTEN": "unix:/b"})


def test_tls_settings_come_in_working_combinations() -> None:
    mtls = {"WARDEN_TLS_CERT": "s.crt", "WARDEN_TLS_KEY": "s.key", "WARDEN_TLS_CLIENT_CA": "ca",
            "WARDEN_TLS_TRUSTED_CLIENTS": "spiffe://mesh/gw, gw2",
            "WARDEN_TLS_ADMIN_CLIENTS": "ops"}
    s = Settings.load(env=mtls)
    assert (s.tls_trusted_clients, s.tls_admin_clients) == ({"spiffe://mesh/gw", "gw2"}, {"ops"})
    for env, problem in (
            ({"WARDEN_TLS_CERT": "s.crt"}, "WARDEN_TLS_CERT and WARDEN_TLS_KEY go together"),
            ({**mtls, "WARDEN_LISTEN": "unix:/w"}, "WARDEN_TLS_CERT needs WARDEN_LISTEN"),
            ({"WARDEN_TLS_CLIENT_CA": "ca"}, "WARDEN_TLS_CLIENT_CA needs WARDEN_TLS_CERT"),
            # A name means something only in a certificate the client CA verified.
            ({**mtls, "WARDEN_TLS_CLIENT_CA": ""}, "WARDEN_TLS_TRUSTED_CLIENTS needs "
             "WARDEN_TLS_CLIENT_CA"),
            ({**mtls, "WARDEN_TLS_ADMIN_CLIENTS": "a b"}, "without spaces inside a name")):
        with pytest.raises(SettingsError, match=problem):
            Settings.load(env=env)


def test_every_bad_value_is_reported_with_its_source() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load(env={"WARDEN_LISTEN": "nowhere", "WARDEN_DB_POOL_MAX": "-1",
                           "WARDEN_DATABASE_URL": "mysql://x"},
                      overrides={"log_level": "LOUD"})
    message = str(caught.value)
    for expected in ("WARDEN_LISTEN='nowhere'", "WARDEN_DB_POOL_MAX='-1'",
                     "WARDEN_DATABASE_URL='mysql://x'", "--log-level='LOUD'"):
        assert expected in message


def test_audit_retention_is_whole_days_and_zero_keeps_forever() -> None:
    assert Settings.load(env={}).audit_retention_days == 180
    assert Settings.load(env={"WARDEN_AUDIT_RETENTION_DAYS": "0"}).audit_retention_days == 0
    for bad in ("-1", "1.5", "forever"):
        with pytest.raises(SettingsError, match=f"WARDEN_AUDIT_RETENTION_DAYS='{bad}'"):
            Settings.load(env={"WARDEN_AUDIT_RETENTION_DAYS": bad})


def test_flags_win_over_environment() -> None:
    s = Settings.load(env={"WARDEN_LISTEN": "127.0.0.1:1"}, overrides={"listen": "unix:/tmp/w"})
    assert s.listen == "unix:/tmp/w"


def test_cost_rounds_up_and_prices_cached_tokens() -> None:
    price = Price(input_micros_per_million=150_000, output_micros_per_million=600_000,
                  cached_input_micros_per_million=75_000)
    assert cost_micros(price, 1000, 500, 200) == 435
    assert cost_micros(price, 1, 0, 0) == 1  # 0.15 micros rounds up
    assert cost_micros(price, 0, 0, 0) == 0
