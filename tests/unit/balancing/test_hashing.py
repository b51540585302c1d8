from __future__ import annotations

import xxhash
from multidict import CIMultiDict

from meshlib.balancing import request_hash
from meshlib.balancing.hashing import cookie_value, rotl64
from meshlib.config.model import HashPolicy
from meshlib.request import RequestView


def _h(text: str) -> int:
    return xxhash.xxh64_intdigest(text.encode())


def _req(
    headers: dict[str, str] | None = None, query: dict[str, str] | None = None, ip: str = ""
) -> RequestView:
    return RequestView("GET", "svc", "/", headers=headers or {}, query=query or {}, source_ip=ip)


def test_rotl64() -> None:
    assert rotl64(1) == 2
    assert rotl64(1 << 63) == 1
    assert rotl64(0x8000_0000_0000_0001) == 3


def test_single_policies() -> None:
    req = _req({"x-user": "alice", "cookie": "a=1; session=xyz; b=2"}, {"shard": "7"}, "10.1.1.1")
    assert request_hash([HashPolicy("header", "X-User")], req) == _h("alice")
    assert request_hash([HashPolicy("cookie", "session")], req) == _h("xyz")
    assert request_hash([HashPolicy("source_ip")], req) == _h("10.1.1.1")
    assert request_hash([HashPolicy("query_parameter", "shard")], req) == _h("7")


def test_nothing_to_hash_is_none() -> None:
    policies = [HashPolicy("header", "x-user"), HashPolicy("cookie", "s"), HashPolicy("source_ip")]
    assert request_hash(policies, _req()) is None
    assert request_hash([], _req()) is None


def test_combination_rotates_then_xors() -> None:
    req = _req({"x-a": "1", "x-b": "2"})
    got = request_hash([HashPolicy("header", "x-a"), HashPolicy("header", "x-b")], req)
    assert got == rotl64(_h("1")) ^ _h("2")
    # Identical policies do not cancel out (that is what the rotation is for).
    same = request_hash([HashPolicy("header", "x-a"), HashPolicy("header", "x-a")], req)
    assert same == rotl64(_h("1")) ^ _h("1") != 0


def test_missing_policy_is_skipped_in_combination() -> None:
    req = _req({"x-b": "2"})
    assert request_hash([HashPolicy("header", "x-a"), HashPolicy("header", "x-b")], req) == _h("2")


def test_terminal_stops_once_a_hash_exists() -> None:
    req = _req({"x-a": "1", "x-b": "2"})
    policies = [HashPolicy("header", "x-a", terminal=True), HashPolicy("header", "x-b")]
    assert request_hash(policies, req) == _h("1")
    # A terminal policy without a value does not stop the walk…
    policies = [HashPolicy("header", "x-missing", terminal=True), HashPolicy("header", "x-b")]
    assert request_hash(policies, req) == _h("2")
    # …but one after an earlier hash stops it even when it has no value itself.
    policies = [
        HashPolicy("header", "x-a"),
        HashPolicy("header", "x-missing", terminal=True),
        HashPolicy("header", "x-b"),
    ]
    assert request_hash(policies, req) == _h("1")


def test_multidict_headers_case_insensitive_and_repeated() -> None:
    headers: CIMultiDict[str] = CIMultiDict([("X-User", "b"), ("x-user", "a")])
    req = RequestView("GET", "svc", "/", headers=headers)
    assert request_hash([HashPolicy("header", "x-user")], req) == _h("ab")
    single: CIMultiDict[str] = CIMultiDict([("X-User", "alice")])
    assert request_hash([HashPolicy("header", "x-user")], RequestView("GET", "s", "/", headers=single)) == _h(
        "alice"
    )


def test_cookie_parsing() -> None:
    assert cookie_value("a=1; b=2", "b") == "2"
    assert cookie_value("a=1;b=2", "b") == "2"
    assert cookie_value('a="quoted"', "a") == "quoted"
    assert cookie_value("ab=1", "a") is None
    assert cookie_value("a", "a") is None
    assert cookie_value("a=; b=2", "a") == ""
