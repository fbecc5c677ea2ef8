"""The Prometheus exporter's listen address (moved from the slow test_prometheus.py)."""

from __future__ import annotations

from tests.conftest import ROOT

PLUGINS = ROOT / "plugins"


def test_the_exporter_binds_to_loopback_unless_told():
    import sys

    sys.path.insert(0, str(PLUGINS / "anubis-prometheus"))
    from anubis_prometheus import parse_address

    assert parse_address("") == ("127.0.0.1", 9464)
    assert parse_address("9000") == ("127.0.0.1", 9000)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_address("[::1]:9000") == ("::1", 9000)
