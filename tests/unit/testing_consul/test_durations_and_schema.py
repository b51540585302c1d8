"""Go durations and the case-insensitive body decoder of the Consul emulator."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlib.testing.consul.config_entries import ConfigEntryError, decode_entry, validate_entry
from meshlib.testing.consul.durations import DurationError, format_go_duration, parse_go_duration
from meshlib.testing.consul.registration import RegistrationError, decode_registration
from meshlib.testing.consul.schema import INT, STR, DecodeError, ListOf, Obj, decode


@pytest.mark.parametrize(
    ("nanos", "text"),
    [(0, "0s"), (1, "1ns"), (1_500, "1.5µs"), (1_500_000, "1.5ms"), (1_000_000_000, "1s"), (1_500_000_000, "1.5s"),
     (60_000_000_000, "1m0s"), (90_000_000_000, "1m30s"), (3_600_000_000_000, "1h0m0s"),
     (5_400_000_000_000, "1h30m0s"), (-2_000_000_000, "-2s")],
)
def test_format_matches_go(nanos: int, text: str) -> None:
    assert format_go_duration(nanos) == text


@pytest.mark.parametrize(
    ("text", "nanos"),
    [("10s", 10_000_000_000), ("1m30s", 90_000_000_000), ("1.5h", 5_400_000_000_000), ("500ms", 500_000_000),
     ("0", 0), ("250us", 250_000), ("2µs", 2_000), (15_000_000_000, 15_000_000_000)],
)
def test_parse_accepts_go_text_and_nanoseconds(text: object, nanos: int) -> None:
    assert parse_go_duration(text) == nanos


@pytest.mark.parametrize("text", ["", "10", "ten seconds", "1d", "s", True, None, "9" * 80 + "h"])
def test_parse_rejects_what_go_rejects(text: object) -> None:
    with pytest.raises(DurationError):
        parse_go_duration(text)


@given(st.integers(min_value=0, max_value=10**15))
def test_format_then_parse_round_trips(nanos: int) -> None:
    assert parse_go_duration(format_go_duration(nanos)) == nanos


def test_decode_matches_any_key_spelling_and_reports_paths() -> None:
    schema = Obj({"ServiceSubset": STR, "Items": ListOf(Obj({"Port": INT}))})
    assert decode({"service_subset": "v1", "ITEMS": [{"port": "80"}]}, schema, strict=True) == {
        "ServiceSubset": "v1", "Items": [{"Port": 80}]}
    with pytest.raises(DecodeError) as caught:
        decode({"Items": [{"Port": "eighty"}]}, schema, strict=True)
    assert caught.value.path == "Items[0].Port"
    with pytest.raises(DecodeError, match="has invalid keys: Colour"):
        decode({"Colour": "red"}, schema, strict=True)
    assert decode({"Colour": "red"}, schema, strict=False) == {}


def test_decode_limits_depth() -> None:
    nested: dict[str, object] = {}
    schema: Obj = Obj({"A": STR})
    for _ in range(20):
        schema = Obj({"A": schema})
        nested = {"A": nested}
    with pytest.raises(DecodeError, match="nested too deeply"):
        decode(nested, schema, strict=True)


def test_registration_defaults() -> None:
    spec = decode_registration({"name": "web", "checks": [{"ttl": "5s"}, {"http": "http://x/", "interval": "1s"}]})
    assert spec.service.service_id == "web"
    assert spec.service.weights == {"Passing": 1, "Warning": 1}
    assert [(c.check_id, c.type, c.status) for c in spec.checks] == [
        ("service:web:1", "ttl", "critical"), ("service:web:2", "http", "critical")]
    assert spec.checks[1].timeout_ns == 10_000_000_000
    assert spec.checks[1].definition["Timeout"] == "10s"
    with pytest.raises(RegistrationError) as caught:
        decode_registration({"name": "web", "check": {"args": ["/bin/true"], "interval": "10s"}})
    assert caught.value.status == 500


def test_config_entry_normalisation_and_validation() -> None:
    entry = decode_entry({"kind": "service-resolver", "name": "web", "connect_timeout": 15_000_000_000,
                          "subsets": {"v1": {"only_passing": "true"}}})
    assert entry == {"Kind": "service-resolver", "Name": "web", "ConnectTimeout": "15s",
                     "Subsets": {"v1": {"OnlyPassing": True}}}
    assert validate_entry(entry) is None
    assert validate_entry({**entry, "DefaultSubset": "v2"}) == 'DefaultSubset "v2" is not a valid subset'
    assert validate_entry({"Kind": "service-router", "Name": ""}) == "Name is required"
    with pytest.raises(ConfigEntryError) as caught:
        decode_entry({"Kind": "service-router", "Name": "web", "Routes": [{"Match": {"HTTP": {"Pth": "/"}}}]})
    assert caught.value.status == 400
    assert "'Routes[0].Match.HTTP' has invalid keys: Pth" in str(caught.value)
