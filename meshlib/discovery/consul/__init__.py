"""Consul as a configuration source.

- :mod:`.state` — :class:`ConsulState`, the raw Consul state one snapshot is compiled from.
- :mod:`.bexpr` — an evaluator for go-bexpr filter expressions (``?filter=``, resolver subset ``Filter``).
- :mod:`.catalog` — ``/v1/health/service`` entries → endpoints with Consul's health semantics.
- :mod:`.entries` — parsing and validation of L7 config entries.
- :mod:`.chain` — the discovery-chain compiler (router → splitter → resolver), as Consul's.
- :mod:`.compile` — compiled chains → :class:`meshlib.config.model.MeshSnapshot`.
"""

from meshlib.discovery.consul.state import ConsulState

__all__ = ["ConsulState"]
