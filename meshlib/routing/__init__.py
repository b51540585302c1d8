"""meshlib.routing: VirtualService HTTP routing, decided in-process as Envoy would.

Control path: :meth:`RouteTable.compile` turns a snapshot's route
configurations into indexed, precompiled tables. Request path (pure, no
locks, no I/O; randomness injected): :meth:`RouteTable.route` selects the
virtual host and the first matching route, :func:`pick_destination` draws the
weighted destination, and the functions of :mod:`meshlib.routing.actions`
work out rewrites, redirects, header edits and mirrors.
"""

from meshlib.routing.actions import (
    apply_header_ops,
    authority_from_header_ops,
    is_internal_header,
    mirrors_to_send,
    redirect_location,
    rewrite_authority,
    rewrite_path,
    shadow_authority,
    should_mirror,
)
from meshlib.routing.match import RequestPredicate, compile_match, compile_string_match
from meshlib.routing.table import RouteHit, RouteTable
from meshlib.routing.weighted import WeightedPicker, destination_percents, pick_destination

__all__ = [
    "RequestPredicate",
    "RouteHit",
    "RouteTable",
    "WeightedPicker",
    "apply_header_ops",
    "authority_from_header_ops",
    "compile_match",
    "compile_string_match",
    "destination_percents",
    "is_internal_header",
    "mirrors_to_send",
    "pick_destination",
    "redirect_location",
    "rewrite_authority",
    "rewrite_path",
    "shadow_authority",
    "should_mirror",
]
