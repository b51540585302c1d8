"""``meshlib ca`` subcommands: create a mesh CA and issue X.509-SVIDs from the command line.

::

    meshlib ca init --out ca/                                     # root CA for cluster.local
    meshlib ca init --trust-domain example.org --out ca/
    meshlib ca init --intermediate-of ca/ --out ca-int/           # intermediate signed by ca/
    meshlib ca issue --ca ca-int/ --spiffe-id spiffe://cluster.local/ns/default/sa/reviews \\
        --dns reviews.default.svc.cluster.local --ttl 24h --out certs/reviews/
    meshlib ca issue --ca ca/ --namespace default --service-account reviews --out certs/reviews/
    meshlib ca token --spiffe-id spiffe://cluster.local/ns/default/sa/reviews --tokens tokens.txt --out reviews.token

``init`` writes Istio's ``cacerts`` layout (``ca-cert.pem``, ``ca-key.pem`` mode 0600,
``cert-chain.pem``, ``root-cert.pem``); ``issue`` writes ``cert-chain.pem`` (leaf + intermediates),
``key.pem`` (0600) and ``root-cert.pem`` — the files a ``FileCertificateSource`` or the gRPC
``file_watcher`` certificate provider watch.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from meshlib.config.durations import parse_duration


def parse_ttl(text: str) -> timedelta:
    """``24h``, ``90m``, ``30d`` (days, a meshlib convenience) or any Go duration → timedelta."""
    stripped = text.strip()
    if stripped.endswith("d") and stripped[:-1].isdigit():
        return timedelta(days=int(stripped[:-1]))
    seconds = parse_duration(stripped)
    if seconds is None or seconds <= 0:
        raise ValueError(f"invalid duration {text!r} (use e.g. 24h, 90m, 30d)")
    return timedelta(seconds=seconds)


def add_ca_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``meshlib ca init`` and ``meshlib ca issue`` on the top-level subparsers."""
    ca = sub.add_parser("ca", help="create a mesh CA and issue SPIFFE X.509-SVIDs")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)

    init = ca_sub.add_parser("init", help="create a root CA (or an intermediate of an existing CA)")
    init.add_argument("--trust-domain", default=None, help="SPIFFE trust domain (default cluster.local)")
    init.add_argument("--intermediate-of", metavar="DIR", help="sign an intermediate CA with the CA in DIR")
    init.add_argument("--ttl", default=None, help="CA lifetime (default 3650d root, 365d intermediate)")
    init.add_argument("--out", required=True, metavar="DIR", help="directory to write the CA files to")
    init.add_argument("--force", action="store_true", help="overwrite an existing CA in DIR")
    init.set_defaults(run=run_ca_init)

    issue = ca_sub.add_parser("issue", help="issue an X.509-SVID (key pair + certificate chain)")
    issue.add_argument("--ca", required=True, metavar="DIR", help="the CA directory (from `meshlib ca init`)")
    who = issue.add_mutually_exclusive_group(required=True)
    who.add_argument("--spiffe-id", help="spiffe://TD/ns/NS/sa/SA (or any SPIFFE ID in the CA's trust domain)")
    who.add_argument("--service-account", help="with --namespace: Istio's identity in the CA's trust domain")
    issue.add_argument("--namespace", default="default", help="namespace for --service-account (default default)")
    issue.add_argument("--dns", action="append", default=[], help="a DNS SAN (repeatable; grpcio checks these)")
    issue.add_argument("--ip", action="append", default=[], help="an IP SAN (repeatable; e.g. a control plane's)")
    issue.add_argument("--ttl", default="24h", help="certificate lifetime (default 24h)")
    issue.add_argument("--out", required=True, metavar="DIR", help="output dir: cert-chain.pem, key.pem, root-cert.pem")
    issue.set_defaults(run=run_ca_issue)

    token = ca_sub.add_parser("token", help="create a bootstrap token for one identity (for --ca-tokens)")
    token.add_argument("--spiffe-id", required=True, help="the identity the token proves")
    token.add_argument("--dns", action="append", default=[], help="a DNS SAN the holder may ask for (repeatable)")
    token.add_argument("--tokens", required=True, metavar="FILE", help="the control plane's tokens file (appended)")
    token.add_argument("--out", required=True, metavar="FILE", help="the workload's token file (written 0600)")
    token.set_defaults(run=run_ca_token)


def _failed(command: str, exc: Exception) -> int:
    """Print ``meshlib ca <command>: <why>`` on stderr (a file error as ``<reason>: <file>``); exit status 1."""
    why = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) else str(exc)
    print(f"meshlib ca {command}: {why}", file=sys.stderr)
    return 1


def run_ca_init(args: argparse.Namespace) -> int:
    """``meshlib ca init``: exit 0 on success, 1 with a message on failure."""
    from meshlib.security.ca import CA_KEY_FILE, DEFAULT_INTERMEDIATE_TTL, DEFAULT_ROOT_TTL, MeshCA
    from meshlib.security.errors import SecurityError

    out = Path(args.out)
    if (out / CA_KEY_FILE).exists() and not args.force:
        print(f"meshlib ca init: {out / CA_KEY_FILE} exists; use --force to replace the CA", file=sys.stderr)
        return 1
    try:
        if args.intermediate_of:
            parent = MeshCA.load(args.intermediate_of)
            if args.trust_domain and args.trust_domain.lower() != parent.trust_domain:
                raise ValueError(f"--trust-domain {args.trust_domain} differs from the parent's {parent.trust_domain}")
            ttl = parse_ttl(args.ttl) if args.ttl else DEFAULT_INTERMEDIATE_TTL
            ca = parent.create_intermediate(ttl=ttl)
        else:
            ttl = parse_ttl(args.ttl) if args.ttl else DEFAULT_ROOT_TTL
            ca = MeshCA.create_root(args.trust_domain or "cluster.local", ttl=ttl)
        ca.save(out)
    except (SecurityError, ValueError, OSError) as exc:
        return _failed("init", exc)
    kind = "intermediate" if args.intermediate_of else "root"
    expiry = ca.cert.not_valid_after_utc.isoformat()
    print(f"meshlib ca init: {kind} CA for trust domain {ca.trust_domain} in {out} (valid until {expiry})")
    return 0


def run_ca_issue(args: argparse.Namespace) -> int:
    """``meshlib ca issue``: exit 0 on success, 1 with a message on failure."""
    from meshlib.security.ca import (
        WORKLOAD_CHAIN_FILE,
        WORKLOAD_KEY_FILE,
        WORKLOAD_ROOT_FILE,
        MeshCA,
        write_private_file,
    )
    from meshlib.security.errors import SecurityError
    from meshlib.security.spiffe import SpiffeId

    try:
        ca = MeshCA.load(args.ca)
        if args.spiffe_id:
            spiffe_id = SpiffeId.parse(args.spiffe_id)
        else:
            spiffe_id = SpiffeId.for_workload(args.namespace, args.service_account, ca.trust_domain)
        bundle = ca.issue_bundle(spiffe_id, dns_names=args.dns, ip_addresses=args.ip, ttl=parse_ttl(args.ttl))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_private_file(out / WORKLOAD_KEY_FILE, bundle.private_key_pem)
        (out / WORKLOAD_CHAIN_FILE).write_bytes(bundle.cert_chain_pem)
        (out / WORKLOAD_ROOT_FILE).write_bytes(bundle.trust_bundle_pem)
    except (SecurityError, ValueError, OSError) as exc:
        return _failed("issue", exc)
    print(f"meshlib ca issue: {spiffe_id} in {out} (valid until {bundle.not_after.isoformat()})")
    return 0


def run_ca_token(args: argparse.Namespace) -> int:
    """``meshlib ca token``: a random token, appended to the tokens file and written for the workload."""
    import secrets

    from meshlib.security.ca import write_private_file
    from meshlib.security.errors import InvalidSpiffeId
    from meshlib.security.spiffe import SpiffeId

    try:
        spiffe_id = SpiffeId.parse(args.spiffe_id)
    except InvalidSpiffeId as exc:
        return _failed("token", exc)
    token = secrets.token_urlsafe(32)
    line = " ".join([str(spiffe_id), token, *args.dns]) + "\n"
    try:
        tokens = Path(args.tokens)
        if not tokens.exists():
            write_private_file(tokens, b"# <spiffe-id> <token> [dns-name ...]  (meshlib control-plane --ca-tokens)\n")
        with tokens.open("a", encoding="utf-8") as handle:
            handle.write(line)
        write_private_file(Path(args.out), token.encode() + b"\n")
    except OSError as exc:
        return _failed("token", exc)
    print(f"meshlib ca token: token for {spiffe_id} in {args.out}, registered in {args.tokens}")
    return 0


# --- control-plane and bootstrap flags -------------------------------------------------------------------


def add_control_plane_security_arguments(parser: argparse.ArgumentParser) -> None:
    """``meshlib control-plane`` flags for secure mode (mTLS ADS, node-id binding, CA)."""
    group = parser.add_argument_group("security (mTLS xDS; see docs/security.md)")
    group.add_argument("--tls-cert", metavar="FILE", help="serving certificate chain (PEM, watched for rotation)")
    group.add_argument("--tls-key", metavar="FILE", help="serving private key (PEM)")
    group.add_argument("--client-ca", metavar="FILE", help="CA bundle that verifies client certificates")
    group.add_argument("--ca", metavar="DIR", help="run as the mesh CA from DIR (`meshlib ca init`); self-issues TLS")
    group.add_argument("--ca-port", type=int, help="with --ca: a TLS-only port for bootstrap-token clients (0 = any)")
    group.add_argument("--ca-tokens", metavar="FILE", help="with --ca: bootstrap tokens ('<spiffe-id> <token> [dns]')")
    group.add_argument("--node-id-map", metavar="FILE", help="identity → allowed node ids ('<spiffe-id> <pattern>...')")
    group.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME",
        help="with --ca: a DNS name or IP clients dial (repeatable)",
    )


def control_plane_security(args: argparse.Namespace) -> object | None:
    """Build a ``ControlPlaneSecurity`` from the flags, or None (plaintext). ValueError on bad combinations."""
    tls_files = (args.tls_cert, args.tls_key, args.client_ca)
    if args.ca is None and not any(tls_files):
        for flag, value in (
            ("--ca-port", args.ca_port),
            ("--ca-tokens", args.ca_tokens),
            ("--node-id-map", args.node_id_map),
            ("--san", args.san or None),
        ):
            if value is not None:
                raise ValueError(f"{flag} needs --ca DIR or --tls-cert/--tls-key/--client-ca")
        if args.host not in ("127.0.0.1", "::1", "localhost"):
            print(
                f"meshlib control-plane: WARNING: plaintext, unauthenticated ADS on {args.host}; any process that "
                "can reach it gets the full configuration (use --ca DIR or --tls-cert/--tls-key/--client-ca)",
                file=sys.stderr,
            )
        return None
    from meshlib.security.ca import MeshCA
    from meshlib.security.ca_service import BootstrapTokens
    from meshlib.security.node_identity import NodeIdRule
    from meshlib.security.plane_security import ControlPlaneSecurity

    if args.ca is not None:
        if any(tls_files):
            raise ValueError("use either --ca DIR or --tls-cert/--tls-key/--client-ca, not both")
        ca = MeshCA.load(args.ca)
        rule = NodeIdRule.from_file(ca.trust_domain, args.node_id_map) if args.node_id_map else None
        tokens = BootstrapTokens.from_file(args.ca_tokens) if args.ca_tokens else None
        hosts = sorted({args.host, "127.0.0.1", "localhost", *args.san})
        return ControlPlaneSecurity.from_ca(ca, hosts=hosts, tokens=tokens, ca_port=args.ca_port, node_rule=rule)
    if not all(tls_files):
        raise ValueError("--tls-cert, --tls-key and --client-ca go together")
    if args.ca_port is not None or args.ca_tokens is not None:
        raise ValueError("--ca-port and --ca-tokens need --ca DIR (the CA key)")
    security = ControlPlaneSecurity.from_files(args.tls_cert, args.tls_key, client_ca=args.client_ca)
    if args.node_id_map:
        security.node_rule = NodeIdRule.from_file(security.node_rule.trust_domain, args.node_id_map)
    return security


def add_bootstrap_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """``meshlib bootstrap --certs DIR``: mTLS channel_creds + a file_watcher certificate provider."""
    parser.add_argument(
        "--certs",
        metavar="DIR",
        help="SVID files (cert-chain.pem, key.pem, root-cert.pem): mTLS to the control "
        "plane and a file_watcher certificate provider for proxyless mTLS",
    )
    parser.add_argument("--refresh-interval", default="60s", help="with --certs: file_watcher refresh (default 60s)")


def secure_bootstrap_from_args(args: argparse.Namespace, **kwargs: Any) -> dict[str, Any]:
    """The bootstrap for ``meshlib bootstrap --certs DIR``."""
    from meshlib.security.bootstrap_tls import secure_bootstrap

    for name in ("cert-chain.pem", "key.pem", "root-cert.pem"):
        if not (Path(args.certs) / name).is_file():
            raise ValueError(f"--certs {args.certs}: {name} is missing (write it with `meshlib ca issue --out DIR`)")
    return secure_bootstrap(args.xds, args.node_id, args.certs, refresh_interval=args.refresh_interval, **kwargs)


def render_security_status(status: dict[str, Any]) -> str:
    """The ``security`` / ``ca`` part of a control plane's ``/status`` for ``meshlib status``."""
    security = status.get("security") or {}
    lines = [
        f"\nsecurity: {security.get('mode')} (trust domain {security.get('trust_domain')}); "
        f"{security.get('denied_total', 0)} xDS stream(s) refused"
    ]
    for denial in (security.get("denied") or [])[-5:]:
        lines.append(f"  refused {denial.get('peer')}: {denial.get('reason')}")
    ca = status.get("ca")
    if ca:
        lines.append(f"CA: {ca.get('issued', 0)} certificate(s) issued, {ca.get('refused', 0)} refused")
        for refusal in (ca.get("recent_refusals") or [])[-5:]:
            lines.append(f"  refused {refusal.get('peer')}: {refusal.get('reason')}")
    return "\n".join(lines) + "\n"
