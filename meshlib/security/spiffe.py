"""SPIFFE IDs (``spiffe://trust-domain/path``), parsed and validated per the SPIFFE-ID standard.

Rules enforced (spiffe/spiffe ``standards/SPIFFE-ID.md``):

- scheme ``spiffe`` (case-insensitive), no userinfo, port, query or fragment;
- trust domain non-empty, at most 255 bytes, only ``[a-z0-9.-_]`` after lower-casing;
- path optional; segments non-empty, not ``.``/``..``, only ``[a-zA-Z0-9.-_]``, no trailing ``/``,
  no percent-encoding; the whole ID at most 2048 bytes. Paths are case-sensitive.

Istio's workload identity is ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``::

    >>> sid = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/reviews")
    >>> sid.trust_domain, sid.namespace, sid.service_account
    ('cluster.local', 'default', 'reviews')
    >>> str(SpiffeId.for_workload("default", "reviews"))
    'spiffe://cluster.local/ns/default/sa/reviews'
    >>> sid.principal                       # AuthorizationPolicy ``principals`` form
    'cluster.local/ns/default/sa/reviews'
"""

from __future__ import annotations

from dataclasses import dataclass

from meshlib.security.errors import InvalidSpiffeId

MAX_SPIFFE_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255
DEFAULT_TRUST_DOMAIN = "cluster.local"
SCHEME_PREFIX = "spiffe://"

_TRUST_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` lower-cased, or raise :class:`InvalidSpiffeId` naming the broken rule."""
    if not trust_domain:
        raise InvalidSpiffeId("trust domain is empty")
    if len(trust_domain.encode()) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeId(f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    lowered = trust_domain.lower()
    bad = sorted({c for c in lowered if c not in _TRUST_DOMAIN_CHARS})
    if bad:
        raise InvalidSpiffeId(
            f"trust domain {trust_domain[:80]!r} contains {''.join(bad)[:20]!r}: only letters, digits, '.', '-', '_'"
        )
    return lowered


def validate_path(path: str) -> str:
    """Validate a SPIFFE ID path (``""`` or ``/seg/seg``) and return it unchanged."""
    if not path:
        return path
    if not path.startswith("/"):
        raise InvalidSpiffeId(f"path {path[:80]!r} must start with '/'")
    if path.endswith("/"):
        raise InvalidSpiffeId("path must not end with '/'")
    for segment in path[1:].split("/"):
        if not segment:
            raise InvalidSpiffeId("path contains an empty segment ('//')")
        if segment in (".", ".."):
            raise InvalidSpiffeId(f"path segment {segment!r} is not allowed")
        bad = sorted({c for c in segment if c not in _PATH_CHARS})
        if bad:
            raise InvalidSpiffeId(
                f"path segment {segment[:80]!r} contains {''.join(bad)[:20]!r}: only letters, digits, '.', '-', '_'"
            )
    return path


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A validated SPIFFE ID: a trust domain (lower case) and a path (``""`` or ``/a/b``).

    Build one with :meth:`parse`, :meth:`for_workload` or :meth:`for_trust_domain`; the
    constructor validates too, so every instance is valid. ``str()`` gives the URI.
    """

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        lowered = validate_trust_domain(self.trust_domain)
        if lowered != self.trust_domain:
            object.__setattr__(self, "trust_domain", lowered)
        validate_path(self.path)
        if len(self.uri.encode()) > MAX_SPIFFE_ID_BYTES:
            raise InvalidSpiffeId(f"SPIFFE ID is longer than {MAX_SPIFFE_ID_BYTES} bytes")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse ``spiffe://td/path``; raise :class:`InvalidSpiffeId` saying what is wrong.

        >>> SpiffeId.parse("SPIFFE://Example.ORG/Payments")
        SpiffeId(trust_domain='example.org', path='/Payments')
        """
        if not isinstance(text, str):
            raise InvalidSpiffeId(f"SPIFFE ID must be a string, got {type(text).__name__}")
        if len(text.encode()) > MAX_SPIFFE_ID_BYTES:
            raise InvalidSpiffeId(f"SPIFFE ID is longer than {MAX_SPIFFE_ID_BYTES} bytes")
        if not text[: len(SCHEME_PREFIX)].lower() == SCHEME_PREFIX:
            raise InvalidSpiffeId(f"{text[:80]!r} does not start with 'spiffe://'")
        rest = text[len(SCHEME_PREFIX) :]
        for char, what in (("?", "a query"), ("#", "a fragment"), ("%", "percent-encoding")):
            if char in rest:
                raise InvalidSpiffeId(f"SPIFFE ID {text[:80]!r} must not contain {what}")
        slash = rest.find("/")
        authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        if "@" in authority:
            raise InvalidSpiffeId("SPIFFE ID must not contain userinfo ('@')")
        if ":" in authority:
            raise InvalidSpiffeId("SPIFFE ID must not contain a port (':')")
        return cls(authority, path)

    @classmethod
    def for_workload(cls, namespace: str, service_account: str, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> SpiffeId:
        """Istio's workload identity ``spiffe://<td>/ns/<namespace>/sa/<service_account>``."""
        if not namespace or not service_account:
            raise InvalidSpiffeId("namespace and service account must be non-empty")
        return cls(trust_domain, f"/ns/{namespace}/sa/{service_account}")

    @classmethod
    def for_trust_domain(cls, trust_domain: str) -> SpiffeId:
        """The trust domain's own ID (no path), as carried by CA certificates."""
        return cls(trust_domain, "")

    @property
    def uri(self) -> str:
        """The ID as a URI string."""
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"

    def __str__(self) -> str:
        return self.uri

    @property
    def segments(self) -> tuple[str, ...]:
        """Path segments, e.g. ``('ns', 'default', 'sa', 'reviews')``."""
        return tuple(self.path[1:].split("/")) if self.path else ()

    @property
    def is_istio_workload(self) -> bool:
        """True for the Istio form ``/ns/<ns>/sa/<sa>``."""
        seg = self.segments
        return len(seg) == 4 and seg[0] == "ns" and seg[2] == "sa"

    @property
    def namespace(self) -> str | None:
        """The ``ns`` of an Istio-form ID, else None."""
        return self.segments[1] if self.is_istio_workload else None

    @property
    def service_account(self) -> str | None:
        """The ``sa`` of an Istio-form ID, else None."""
        return self.segments[3] if self.is_istio_workload else None

    @property
    def principal(self) -> str:
        """The ID without ``spiffe://``, the form AuthorizationPolicy ``principals`` use."""
        return f"{self.trust_domain}{self.path}"

    def member_of(self, trust_domain: str) -> bool:
        """True when this ID belongs to ``trust_domain`` (compared case-insensitively)."""
        return self.trust_domain == trust_domain.lower()
