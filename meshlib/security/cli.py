"""``meshlib ca`` subcommands: create a mesh CA and issue X.509-SVIDs from the command line.

::

    meshlib ca init --out ca/                                     # root CA for cluster.local
    meshlib ca init --trust-domain example.org --out ca/
    meshlib ca init --intermediate-of ca/ --out ca-int/           # intermediate signed by ca/
    meshlib ca issue --ca ca-int/ --spiffe-id spiffe://cluster.local/ns/default/sa/reviews \\
        --dns reviews.default.svc.cluster.local --ttl 24h --out certs/reviews/
    meshlib ca issue --ca ca/ --namespace default --service-account reviews --out certs/reviews/

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
    issue.add_argument("--ttl", default="24h", help="certificate lifetime (default 24h)")
    issue.add_argument("--out", required=True, metavar="DIR", help="output dir: cert-chain.pem, key.pem, root-cert.pem")
    issue.set_defaults(run=run_ca_issue)


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
    except (SecurityError, ValueError) as exc:
        print(f"meshlib ca init: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"meshlib ca init: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 1
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
        bundle = ca.issue_bundle(spiffe_id, dns_names=args.dns, ttl=parse_ttl(args.ttl))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_private_file(out / WORKLOAD_KEY_FILE, bundle.private_key_pem)
        (out / WORKLOAD_CHAIN_FILE).write_bytes(bundle.cert_chain_pem)
        (out / WORKLOAD_ROOT_FILE).write_bytes(bundle.trust_bundle_pem)
    except (SecurityError, ValueError) as exc:
        print(f"meshlib ca issue: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"meshlib ca issue: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 1
    print(f"meshlib ca issue: {spiffe_id} in {out} (valid until {bundle.not_after.isoformat()})")
    return 0
