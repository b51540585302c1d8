"""Ask the mesh where a request would go, without sending it.

    python examples/explain_decision.py

Uses the embedded default mesh (the bookinfo demo's rules).
"""

from __future__ import annotations

import json

import meshlib


def main() -> dict[str, object]:
    mesh = meshlib.Mesh.from_files()
    decision = mesh.explain("GET", "http://reviews:9080/reviews/1", {"end-user": "jason"})
    print(json.dumps(decision, indent=2))
    return decision


if __name__ == "__main__":
    main()
