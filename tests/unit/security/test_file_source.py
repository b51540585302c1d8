"""FileCertificateSource: Kubernetes-style atomic symlink swaps, bad updates keep the old bundle."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshlib.security import CertBundle, CertificateInvalid, MeshCA, NoCertificateYet, SpiffeId
from meshlib.security.file_source import FileCertificateSource

REVIEWS = SpiffeId.for_workload("default", "reviews")
FILES = ("cert-chain.pem", "key.pem", "root-cert.pem")


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.create_root()


def _write_version(mount: Path, name: str, bundle: CertBundle) -> None:
    """Write a version directory and swap ``..data`` to it atomically, as the kubelet does."""
    version = mount / name
    version.mkdir()
    (version / FILES[0]).write_bytes(bundle.cert_chain_pem)
    (version / FILES[1]).write_bytes(bundle.private_key_pem)
    (version / FILES[2]).write_bytes(bundle.trust_bundle_pem)
    tmp = mount / "..data_tmp"
    tmp.symlink_to(name)
    os.replace(tmp, mount / "..data")
    for file in FILES:
        if not (mount / file).is_symlink():
            (mount / file).symlink_to(Path("..data") / file)


def test_symlink_swap_is_picked_up_and_announced(tmp_path: Path, ca: MeshCA) -> None:
    first, second = ca.issue_bundle(REVIEWS), ca.issue_bundle(REVIEWS)
    _write_version(tmp_path, "..v1", first)
    source = FileCertificateSource.from_directory(tmp_path)
    with pytest.raises(NoCertificateYet):
        source.current()
    seen: list[CertBundle] = []
    source.subscribe(seen.append)
    assert source.check()
    assert source.current().cert_chain_pem == first.cert_chain_pem
    assert source.check()  # unchanged files: no new notification
    assert len(seen) == 1
    _write_version(tmp_path, "..v2", second)
    assert source.check()
    assert source.current().cert_chain_pem == second.cert_chain_pem
    assert [b.cert_chain_pem for b in seen] == [first.cert_chain_pem, second.cert_chain_pem]


def test_invalid_update_keeps_previous_bundle(tmp_path: Path, ca: MeshCA) -> None:
    good, other = ca.issue_bundle(REVIEWS), ca.issue_bundle(REVIEWS)
    _write_version(tmp_path, "..v1", good)
    source = FileCertificateSource.from_directory(tmp_path)
    assert source.check()
    # half-finished update: the new chain with the old key
    (tmp_path / "..v1" / "cert-chain.pem").write_bytes(other.cert_chain_pem)
    assert source.check()
    assert source.current().cert_chain_pem == good.cert_chain_pem
    assert source.last_error is not None and "does not match" in source.last_error
    # the key arrives: now it is valid and installed
    (tmp_path / "..v1" / "key.pem").write_bytes(other.private_key_pem)
    assert source.check()
    assert source.current().cert_chain_pem == other.cert_chain_pem
    assert source.last_error is None


def test_untrusted_or_expired_update_is_refused(tmp_path: Path, ca: MeshCA) -> None:
    good = ca.issue_bundle(REVIEWS)
    _write_version(tmp_path, "..v1", good)
    clock_now = [datetime.now(UTC)]
    source = FileCertificateSource.from_directory(tmp_path, clock=lambda: clock_now[0])
    assert source.check()
    stranger = MeshCA.create_root().issue_bundle(REVIEWS)
    (tmp_path / "..v1" / "cert-chain.pem").write_bytes(stranger.cert_chain_pem)
    (tmp_path / "..v1" / "key.pem").write_bytes(stranger.private_key_pem)
    assert source.check()
    assert "not signed by the trust bundle" in (source.last_error or "")
    assert source.current() is not None and source.current().cert_chain_pem == good.cert_chain_pem
    short = ca.issue_bundle(REVIEWS, ttl=timedelta(hours=1))
    clock_now[0] += timedelta(hours=2)
    _write_version(tmp_path, "..v2", short)
    assert source.check()
    assert "expired" in (source.last_error or "")


@pytest.mark.asyncio
async def test_start_fails_clearly_without_files(tmp_path: Path) -> None:
    source = FileCertificateSource.from_directory(tmp_path)
    with pytest.raises(CertificateInvalid, match=r"cannot read .*cert-chain\.pem"):
        await source.start()


@pytest.mark.asyncio
async def test_poller_reloads_without_restart(tmp_path: Path, ca: MeshCA) -> None:
    _write_version(tmp_path, "..v1", ca.issue_bundle(REVIEWS))
    rotated = asyncio.Event()
    source = FileCertificateSource.from_directory(tmp_path, refresh_interval_s=0.02)
    async with source:
        source.subscribe(lambda _: rotated.set())
        new = ca.issue_bundle(REVIEWS)
        _write_version(tmp_path, "..v2", new)
        async with asyncio.timeout(10):
            await rotated.wait()
        assert source.current().cert_chain_pem == new.cert_chain_pem
