"""The ``meshlib`` command line.

``meshlib validate [--strict] PATH...``  every config error and warning with file:line and field; exit 1 on
                                         any error (and, with --strict, on any warning)
``meshlib validate --consul ADDR``       every rejected Consul config entry (kind, name, field); exit 1 on any
``meshlib explain [--config PATH]... [-H name:value]... METHOD URL``
                                         the routing decision as JSON, nothing sent
``meshlib demo [--scenes A,B] [--fast] [--serve]``
                                         the bookinfo demo, scene by scene; --serve keeps services + admin up
``meshlib control-plane --config PATH... [--port 15010] [--status-port 15014] [--bind-address 127.0.0.1]``
                                         serve the files over ADS (xDS), hot-reloaded, until SIGINT/SIGTERM
``meshlib control-plane --consul ADDR [--config OVERLAY...]``
                                         serve Consul's services and config entries over ADS (explain too: --consul)
``meshlib bootstrap --xds HOST:PORT --node-id ID [--cluster C] [--locality r/z/s]``
                                         print a gRPC xDS bootstrap (for GRPC_XDS_BOOTSTRAP[_CONFIG])
``meshlib status --control-plane HOST:STATUSPORT``
                                         the control plane's connected clients as a table
``meshlib admin [--config PATH]... [--port 15000] [--host 127.0.0.1]``
                                         the debug view over HTTP (page at /), hot-reloaded, until Ctrl-C
``meshlib admin --attach URL [--filter REGEX]``
                                         print a running admin endpoint's state (e.g. ``meshlib demo --serve``)

Without a path, ``validate``, ``explain`` and ``admin`` use the embedded default mesh. A command that
needs an optional extra (``control-plane``: ``xds``) says which in one line instead of a traceback.
``meshlib ca init|issue|token ...``      a mesh CA, SPIFFE X.509-SVIDs, bootstrap tokens (meshlib/security/cli.py)
``meshlib consul-dev [--port 8500] [--load FILE]``
                                         the in-memory Consul emulator (HTTP API) in the foreground
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from meshlib.errors import ConfigInvalid, MeshError


def _validate(args: argparse.Namespace) -> int:
    from meshlib.config import validate_paths

    if args.consul is not None:
        from meshlib.discovery.consul.cli import validate_command

        return validate_command(args)
    if not args.paths:  # like explain and admin: the embedded default mesh
        from meshlib.mesh import default_config_path

        args.paths = [str(default_config_path())]
    problems = validate_paths(args.paths)
    for problem in problems:
        print(problem)
    errors = sum(1 for p in problems if not p.is_warning)
    warnings = len(problems) - errors
    if errors or (warnings and args.strict):
        print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
        return 1
    suffix = f" ({warnings} warning(s))" if warnings else ""
    print(f"ok: {', '.join(args.paths)}{suffix}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from meshlib.mesh import Mesh

    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            print(f"meshlib explain: -H wants name:value, got {item!r}", file=sys.stderr)
            return 2
        headers[name.strip().lower()] = value.strip()
    if args.consul is not None:
        from meshlib.discovery.consul.cli import explain_command

        return explain_command(args, headers)
    try:
        if args.inbound:
            labels = dict(label.partition("=")[::2] for label in args.label)
            mesh = Mesh.from_files(*args.config, namespace=args.namespace, labels=labels)
            result = mesh.explain_inbound(
                args.method, args.url, headers, principal=args.principal, source_ip=args.source_ip
            )
        else:
            mesh = Mesh.from_files(*args.config, namespace=args.namespace)
            result = mesh.explain(args.method, args.url, headers)
    except ConfigInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"meshlib explain: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from meshlib.demo import print_serving, run_demo, scene_names, serve_demo

    if args.serve:
        try:
            asyncio.run(serve_demo(admin_port=args.admin_port, seed=args.seed, on_ready=print_serving,
                                   handle_signals=True))
        except OSError as exc:
            print(f"meshlib demo: {exc}", file=sys.stderr)
            return 1
        return 0
    scenes = [name.strip() for name in args.scenes.split(",") if name.strip()] if args.scenes else None
    unknown = [name for name in scenes or [] if name not in scene_names()]
    if unknown:
        print(f"meshlib demo: unknown scene(s) {', '.join(unknown)}; choose from {', '.join(scene_names())}",
              file=sys.stderr)
        return 2
    requests = args.requests if args.requests is not None else (40 if args.fast else 100)
    return asyncio.run(run_demo(scenes, requests=requests, seed=args.seed))


def _control_plane(args: argparse.Namespace) -> int:
    import logging

    from meshlib.controlplane import ControlPlane, run_control_plane

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def ready(plane: ControlPlane) -> None:
        status = f", status on http://{args.host}:{plane.status_port}/status" if plane.status_port else ""
        secure = plane.status().get("security")
        if secure:
            status += ", mTLS"
            if secure["ca_port"]:
                status += f", CA for bootstrap tokens on {args.host}:{secure['ca_port']}"
        print(f"meshlib control-plane: ADS on {plane.address}{status}", flush=True)

    status_port = None if args.status_port < 0 else args.status_port
    paths = [path for group in args.config or [] for path in group]  # --config A B --config C
    source = None
    if args.consul is not None:  # Consul is the source; --config paths are an Istio overlay on it
        from meshlib.discovery.consul.cli import control_plane_source

        source = control_plane_source(args, paths)
    elif not paths:
        print("meshlib control-plane: give --config PATH... or --consul ADDR", file=sys.stderr)
        return 2
    from meshlib.security.cli import control_plane_security

    try:
        security: Any = control_plane_security(args)  # None: plaintext ADS
    except (MeshError, ValueError) as exc:
        print(f"meshlib control-plane: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            run_control_plane(
                paths, port=args.port, status_port=status_port, bind_address=args.bind_address,
                host=args.host, on_ready=ready, source=source, security=security,
            )
        )
    except ConfigInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as exc:  # a port in use (aiohttp: OSError, grpc.aio: RuntimeError)
        print(f"meshlib control-plane: {exc}", file=sys.stderr)
        return 1
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    from meshlib.config.model import Locality
    from meshlib.xds import BootstrapError, grpc_bootstrap

    try:
        locality = Locality.parse(args.locality) if args.locality else None
        if args.certs:
            from meshlib.security.cli import secure_bootstrap_from_args

            bootstrap = secure_bootstrap_from_args(args, cluster=args.cluster, locality=locality)
        else:
            bootstrap = grpc_bootstrap(args.xds, args.node_id, cluster=args.cluster, locality=locality)
    except (BootstrapError, ValueError) as exc:
        print(f"meshlib bootstrap: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(bootstrap, indent=2))
    return 0


def _status(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from meshlib.controlplane import render_status_table

    address = args.control_plane
    url = address if "://" in address else f"http://{address}"
    url = url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            status = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"meshlib status: cannot read {url}: {reason}", file=sys.stderr)
        return 1
    print(render_status_table(status), end="")
    errors = status.get("config_errors") or []
    if errors:
        version = status.get("config_version")
        print(f"\nconfig edit rejected ({len(errors)} error(s)); version {version} stays in force:")
        for error in errors:
            print(f"  {error}")
    warnings = status.get("config_warnings") or []
    if warnings:
        print(f"\nconfigured but not served to clients ({len(warnings)}):")
        for warning in warnings:
            print(f"  {warning}")
    if status.get("security"):
        from meshlib.security.cli import render_security_status

        print(render_security_status(status), end="")
    return 0


def _admin(args: argparse.Namespace) -> int:
    from meshlib.admin import AdminServer, run_admin
    from meshlib.mesh import Mesh

    if args.attach:
        from meshlib.admin.attach import attach

        return attach(args.attach, stats_filter=args.filter)
    try:
        mesh = Mesh.from_files(*args.config, namespace=args.namespace)
    except ConfigInvalid as exc:
        print(exc, file=sys.stderr)
        return 1

    def ready(server: AdminServer) -> None:
        print(f"meshlib admin: {server.url} (config version {mesh.snapshot.version})", flush=True)

    async def serve() -> None:
        async with mesh:  # hot reload: the page follows edits to the files
            await run_admin(mesh, args.host, args.port, on_ready=ready, handle_signals=True)

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"meshlib admin: {exc}", file=sys.stderr)
        return 1
    return 0


def _consul_arguments(parser: argparse.ArgumentParser) -> None:
    from meshlib.discovery.consul.cli import add_consul_arguments

    add_consul_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshlib", description="An in-process service mesh for Python.",
        epilog="New here? `meshlib demo` shows what the mesh does; `meshlib demo --serve` keeps it up to play with.",
    )
    parser.add_argument("--version", action="version", version=f"meshlib {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check Istio YAML files; exit 1 on any error")
    validate.add_argument("paths", nargs="*", help="files or directories (default: the embedded default mesh)")
    _consul_arguments(validate)
    validate.add_argument(
        "--strict", action="store_true",
        help="also exit 1 on warnings (Istio analyzer findings such as IST0101; settings not run in process)",
    )
    validate.set_defaults(run=_validate)

    explain = sub.add_parser("explain", help="print the routing decision for a request as JSON")
    explain.add_argument("--config", action="append", default=[], help="file or directory (default: embedded)")
    explain.add_argument("-H", "--header", action="append", default=[], help="request header name:value")
    explain.add_argument(
        "--namespace", default="default", help="the calling workload's namespace (with --inbound: the receiving one's)"
    )
    explain.add_argument(
        "--inbound", action="store_true",
        help="which AuthorizationPolicy allows or denies the request arriving at this workload (Istio's order)",
    )
    explain.add_argument("--label", action="append", default=[], help="with --inbound: a workload label key=value")
    explain.add_argument("--principal", default="", help="with --inbound: the caller's SPIFFE ID (none: plaintext)")
    explain.add_argument("--source-ip", default="", help="with --inbound: the caller's address")
    explain.add_argument("method", help="HTTP method, e.g. GET")
    explain.add_argument("url", help="the URL as the app would call it, e.g. http://reviews:9080/reviews/1")
    _consul_arguments(explain)
    explain.set_defaults(run=_explain)

    demo = sub.add_parser("demo", help="run the bookinfo demo on the embedded default mesh, scene by scene")
    demo.add_argument("--scenes", metavar="A,B", help="run only these scenes: canary, headers, fault, retries, "
                      "outlier, breaker, trace, metrics (default: all)")
    demo.add_argument("--fast", action="store_true", help="less traffic per scene (40 requests per step)")
    demo.add_argument("--requests", type=int, default=None, help="requests per canary step (default 100)")
    demo.add_argument("--seed", type=int, default=7, help="the mesh's random seed (default 7)")
    demo.add_argument("--serve", action="store_true",
                      help="keep the services and the admin page up (no scenes) until Ctrl-C")
    demo.add_argument("--admin-port", type=int, default=15000, help="admin port with --serve (default 15000)")
    demo.set_defaults(run=_demo)

    cp = sub.add_parser("control-plane", help="serve Istio YAML over xDS (ADS), hot-reloaded")
    cp.add_argument("--config", action="append", nargs="+", help="files or directories (with --consul: overlay)")
    _consul_arguments(cp)
    cp.add_argument("--port", type=int, default=15010, help="ADS port (default 15010; 0 = any free port)")
    cp.add_argument("--status-port", type=int, default=15014, help="/status port (default 15014; -1 = off)")
    cp.add_argument("--host", default="127.0.0.1", help="address ADS and /status listen on (default 127.0.0.1)")
    cp.add_argument(
        "--bind-address", default="127.0.0.1", help="where Envoy clients' outbound listeners bind (default 127.0.0.1)"
    )
    from meshlib.security.cli import add_bootstrap_tls_arguments, add_control_plane_security_arguments

    add_control_plane_security_arguments(cp)
    cp.set_defaults(run=_control_plane)

    boot = sub.add_parser("bootstrap", help="print a gRPC xDS bootstrap as JSON")
    boot.add_argument("--xds", required=True, metavar="HOST:PORT", help="the control plane's ADS address")
    boot.add_argument("--node-id", required=True, help="the node id the client announces")
    boot.add_argument("--cluster", default="", help="the node cluster")
    boot.add_argument("--locality", default="", metavar="REGION/ZONE/SUBZONE", help="the node locality")
    add_bootstrap_tls_arguments(boot)
    boot.set_defaults(run=_bootstrap)

    status = sub.add_parser("status", help="show a control plane's clients and sync state (like istioctl proxy-status)")
    status.add_argument("--control-plane", required=True, metavar="HOST:STATUSPORT", help="the /status endpoint")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    status.set_defaults(run=_status)
    admin = sub.add_parser("admin", help="serve the debug view (page, config_dump, clusters, routes, stats)")
    admin.add_argument("--config", action="append", default=[], help="file or directory (default: embedded)")
    admin.add_argument("--namespace", default="default", help="the workload's namespace")
    admin.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; no auth)")
    admin.add_argument("--port", type=int, default=15000, help="port (default 15000, as Envoy's admin; 0 = any)")
    admin.add_argument("--attach", metavar="URL", help="instead of serving, print the state of a running admin "
                       "endpoint, e.g. http://127.0.0.1:15000 (meshlib demo --serve)")
    admin.add_argument("--filter", metavar="REGEX", help="with --attach: only stats whose name matches (RE2)")
    admin.set_defaults(run=_admin)
    from meshlib.security.cli import add_ca_parser  # `meshlib ca init|issue`

    add_ca_parser(sub)
    from meshlib.testing.consul.cli import add_consul_dev_parser  # `meshlib consul-dev`

    add_consul_dev_parser(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meshlib")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from meshlib import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    from meshlib.extras import MissingExtra

    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        sys.stdout.flush()
    except MissingExtra as exc:
        print(f"meshlib {args.command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (``meshlib explain ... | head``): not an error worth a traceback. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
    return code


if __name__ == "__main__":
    sys.exit(main())
