"""`meshlib ca init` / `meshlib ca issue`: files, permissions, and clear failures."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from meshlib.cli import main
from meshlib.security import MeshCA, SpiffeId, verify_svid
from meshlib.security.cli import parse_ttl


def test_init_intermediate_issue_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, inter, out = tmp_path / "root", tmp_path / "int", tmp_path / "reviews"
    assert main(["ca", "init", "--trust-domain", "example.org", "--out", str(root)]) == 0
    assert main(["ca", "init", "--intermediate-of", str(root), "--out", str(inter)]) == 0
    assert (
        main(
            [
                "ca",
                "issue",
                "--ca",
                str(inter),
                "--namespace",
                "shop",
                "--service-account",
                "cart",
                "--dns",
                "cart.shop.svc",
                "--ttl",
                "2h",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "spiffe://example.org/ns/shop/sa/cart" in capsys.readouterr().out
    assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
    spiffe_id = verify_svid((out / "cert-chain.pem").read_bytes(), (root / "root-cert.pem").read_bytes())
    assert spiffe_id == SpiffeId.parse("spiffe://example.org/ns/shop/sa/cart")
    assert MeshCA.load(inter).chain[-1] == MeshCA.load(root).cert


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", "init", "--out", str(tmp_path)]) == 0
    assert main(["ca", "init", "--out", str(tmp_path)]) == 1
    assert "use --force" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ca_dir", "spiffe_id", "message"),
    [
        ("ca", "spiffe://other.org/ns/a/sa/b", "not in this CA's trust domain 'cluster.local'"),
        ("none", "spiffe://cluster.local/ns/a/sa/b", "No such file or directory"),
        ("ca", "spiffe://cluster.local/a//b", "empty segment"),
    ],
)
def test_issue_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca_dir: str, spiffe_id: str, message: str
) -> None:
    assert main(["ca", "init", "--out", str(tmp_path / "ca")]) == 0
    capsys.readouterr()
    issue = ["ca", "issue", "--ca", str(tmp_path / ca_dir), "--spiffe-id", spiffe_id, "--out", str(tmp_path / "x")]
    assert main(issue) == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1, err


def test_parse_ttl() -> None:
    assert parse_ttl("24h") == timedelta(hours=24)
    assert parse_ttl("30d") == timedelta(days=30)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_ttl("soon")


def test_token_is_registered_and_written_private(tmp_path: Path) -> None:
    from meshlib.security.ca_service import BootstrapTokens

    tokens, out = tmp_path / "tokens", tmp_path / "reviews.token"
    spiffe_id = "spiffe://cluster.local/ns/default/sa/reviews"
    assert (
        main(
            [
                "ca",
                "token",
                "--spiffe-id",
                spiffe_id,
                "--dns",
                "reviews.default.svc",
                "--tokens",
                str(tokens),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["ca", "token", "--spiffe-id", spiffe_id, "--tokens", str(tokens), "--out", str(tmp_path / "2")]) == 0
    assert out.stat().st_mode & 0o777 == 0o600 and tokens.stat().st_mode & 0o777 == 0o600
    registered = BootstrapTokens.from_file(tokens)
    assert len(registered) == 2
    entry = registered.lookup(out.read_text().strip())
    assert entry is not None and str(entry.spiffe_id) == spiffe_id
    assert entry.dns_names == frozenset({"reviews.default.svc"})
    assert main(["ca", "token", "--spiffe-id", "spiffe://x/a//b", "--tokens", str(tokens), "--out", str(out)]) == 1


def test_issue_with_ip_san_and_a_warning_for_a_readable_ca_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cryptography import x509

    assert main(["ca", "init", "--out", str(tmp_path / "ca")]) == 0
    (tmp_path / "ca" / "ca-key.pem").chmod(0o644)
    out = tmp_path / "cp"
    assert (
        main(
            [
                "ca",
                "issue",
                "--ca",
                str(tmp_path / "ca"),
                "--spiffe-id",
                "spiffe://cluster.local/ns/x/sa/cp",
                "--ip",
                "127.0.0.1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "readable by other users" in caplog.text
    leaf = x509.load_pem_x509_certificates((out / "cert-chain.pem").read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
