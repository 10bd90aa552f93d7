"""librdkafka takes the configuration ``ConfluentSource`` maps from ``KafkaSettings``:
the security settings (SASL, TLS files, an encrypted key and its password) and the
fetch settings at the bounds the settings allow. librdkafka checks its keys and loads
the certificate files when the client is created, before it connects anywhere."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException

from detector.config import KafkaSettings
from detector.sources_confluent import librdkafka_config

NOWHERE = "127.0.0.1:1"   # nothing listens there; the tests never wait for a connection


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, and a client certificate signed by it with a key encrypted by ``secret``."""
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-passout", "pass:secret", "-subj", "/CN=client",
            "-keyout", "client.key", "-out", "client.csr")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "client.pem")
    return d


def _create(kafka: KafkaSettings) -> None:
    Consumer(librdkafka_config(kafka)).close()


def _tls(pki: Path, password: str, **extra: object) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=NOWHERE, ssl_cafile=pki / "ca.pem",
                         ssl_certfile=pki / "client.pem", ssl_keyfile=pki / "client.key",
                         ssl_password=password, ssl_check_hostname=False, **extra)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls_with_an_encrypted_client_key_is_accepted(pki: Path, mechanism: str) -> None:
    _create(_tls(pki, "secret", security_protocol="SASL_SSL", sasl_mechanism=mechanism,
                 sasl_plain_username="drift", sasl_plain_password="not-a-real-secret"))
    _create(KafkaSettings(bootstrap_servers=NOWHERE, security_protocol="SASL_PLAINTEXT",
                          sasl_mechanism=mechanism, sasl_plain_username="drift",
                          sasl_plain_password="not-a-real-secret"))


def test_the_key_password_reaches_librdkafka(pki: Path) -> None:
    _create(_tls(pki, "secret", security_protocol="SSL"))
    with pytest.raises(KafkaException, match="ssl.key.location"):
        _create(_tls(pki, "wrong", security_protocol="SSL"))


def test_a_missing_ca_file_is_refused_at_creation(pki: Path) -> None:
    with pytest.raises(KafkaException, match="ssl.ca.location"):
        _create(KafkaSettings(bootstrap_servers=NOWHERE, security_protocol="SSL",
                              ssl_cafile=pki / "missing.pem"))


@pytest.mark.parametrize("fetch", [
    {"fetch_max_bytes": 1024, "max_partition_fetch_bytes": 1024, "fetch_max_wait_ms": 0},
    {"fetch_max_bytes": 1024, "max_partition_fetch_bytes": 50 * 2**20, "fetch_min_bytes": 10**6},
    {},
])
def test_fetch_settings_within_their_bounds_are_accepted(fetch: dict[str, int]) -> None:
    kafka = KafkaSettings(bootstrap_servers=NOWHERE, **fetch)
    conf = librdkafka_config(kafka)
    assert (conf["fetch.max.bytes"], conf["max.partition.fetch.bytes"]) == (
        kafka.fetch_max_bytes, kafka.max_partition_fetch_bytes)
    _create(kafka)
