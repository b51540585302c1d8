"""Hostile input to the identity parsers: only their documented errors, never a traceback."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.admin.host_check import host_name, is_trusted_host
from meshlib.security.bundle import load_pem_certificates
from meshlib.security.ca_service import BootstrapTokens
from meshlib.security.errors import CertificateInvalid, SecurityError
from meshlib.security.node_identity import NodeIdRule
from meshlib.security.workload_api import split_der_certificates
from meshlib.xds.channel_creds import ChannelCredentialsError, XdsChannelCredentials


@given(st.binary(max_size=512))
def test_der_splitting(data: bytes) -> None:
    try:
        parts = split_der_certificates(data)
    except CertificateInvalid:
        return
    assert b"".join(parts) == data


@given(st.binary(max_size=512))
def test_pem_loading(data: bytes) -> None:
    with contextlib.suppress(CertificateInvalid):
        load_pem_certificates(data)


@settings(max_examples=50)
@given(st.text(max_size=400))
def test_tokens_and_node_map_files(tmp_path_factory: object, text: str) -> None:
    path = Path(tmp_path_factory.mktemp("f")) / "file"  # type: ignore[attr-defined]
    path.write_text(text, encoding="utf-8", errors="replace")
    for load in (BootstrapTokens.from_file, lambda p: NodeIdRule.from_file("cluster.local", p)):
        with contextlib.suppress(SecurityError):
            load(path)


@given(
    st.lists(
        st.one_of(st.none(), st.integers(), st.dictionaries(st.text(max_size=10), st.text(max_size=10))), max_size=4
    )
)
def test_channel_creds(creds: list[object]) -> None:
    with contextlib.suppress(ChannelCredentialsError):
        XdsChannelCredentials.from_bootstrap(creds)


@given(st.text(max_size=100))
def test_host_header(host: str) -> None:
    assert isinstance(host_name(host), str)
    assert isinstance(is_trusted_host(host, frozenset()), bool)
