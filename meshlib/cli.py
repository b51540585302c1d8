"""The ``meshlib`` command line.

``meshlib validate PATH...``             every config error with file:line and field; exit 1 on any
``meshlib explain [--config PATH]... [-H name:value]... METHOD URL``
                                         the routing decision as JSON, nothing sent
``meshlib demo [--requests N]``          the self-contained bookinfo demo
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from meshlib.errors import ConfigInvalid


def _validate(args: argparse.Namespace) -> int:
    from meshlib.config import validate_paths

    problems = validate_paths(args.paths)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} error(s)", file=sys.stderr)
        return 1
    print(f"ok: {', '.join(args.paths)}")
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
    try:
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
    from meshlib.demo import run_demo

    return asyncio.run(run_demo(requests=args.requests))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshlib", description="An in-process service mesh for Python.")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check Istio YAML files; exit 1 on any error")
    validate.add_argument("paths", nargs="+", help="files or directories")
    validate.set_defaults(run=_validate)

    explain = sub.add_parser("explain", help="print the routing decision for a request as JSON")
    explain.add_argument("--config", action="append", default=[], help="file or directory (default: embedded)")
    explain.add_argument("-H", "--header", action="append", default=[], help="request header name:value")
    explain.add_argument("--namespace", default="default", help="the calling workload's namespace")
    explain.add_argument("method")
    explain.add_argument("url")
    explain.set_defaults(run=_explain)

    demo = sub.add_parser("demo", help="run the bookinfo demo on the embedded default mesh")
    demo.add_argument("--requests", type=int, default=200, help="anonymous requests to send (default 200)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
