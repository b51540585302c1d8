"""Errors raised by :mod:`meshlib.security`.

::

    MeshError
    └── SecurityError                 base of every identity / certificate error
        ├── InvalidSpiffeId           a string is not a valid SPIFFE ID (says which rule it breaks)
        ├── CertificateInvalid        a certificate, key or chain is malformed or fails verification
        │   └── CertificateExpired    ... because it is outside its validity period
        ├── IdentityMismatch          the peer's SPIFFE ID is not the expected one / not in the trust domain
        ├── NoCertificateYet          a CertificateSource has no credentials (not started, or first fetch failed)
        └── IssuanceRefused           the CA refused to issue (caller not authenticated / not allowed)
"""

from __future__ import annotations

from meshlib.errors import MeshError


class SecurityError(MeshError):
    """Base class of identity and certificate errors."""


class InvalidSpiffeId(SecurityError, ValueError):
    """A string is not a valid SPIFFE ID; the message names the rule it breaks."""


class CertificateInvalid(SecurityError):
    """A certificate, private key or chain is malformed or fails verification."""


class CertificateExpired(CertificateInvalid):
    """A certificate is not yet valid or no longer valid."""


class IdentityMismatch(SecurityError):
    """A verified peer does not carry the expected SPIFFE identity / trust domain."""


class NoCertificateYet(SecurityError):
    """A certificate source has no credentials yet (not started, or the first load failed)."""


class IssuanceRefused(SecurityError):
    """The CA refused to issue a certificate; the message says why."""
