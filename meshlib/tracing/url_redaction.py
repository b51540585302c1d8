"""Redaction of credential-carrying query values in ``url.full`` (OpenTelemetry semantic conventions).

The HTTP semantic conventions say instrumentations SHOULD replace the values of query keys
that carry credentials (``AWSAccessKeyId``, ``Signature``, ``sig``, ``X-Goog-Signature`` …) with
``REDACTED``; meshlib also redacts the common token/key parameters. Keys compare case-insensitively;
the rest of the query string is kept byte for byte::

    >>> redact_query("a=1&sig=abc&Token=t")
    'a=1&sig=REDACTED&Token=REDACTED'
"""

from __future__ import annotations

REDACTED = "REDACTED"

SENSITIVE_QUERY_KEYS = frozenset(
    k.lower()
    for k in (
        # OTel semantic conventions (url.full / url.query)
        "AWSAccessKeyId",
        "Signature",
        "sig",
        "X-Goog-Signature",
        # signed-URL schemes (S3 SigV4, GCS, Azure SAS) and bearer-style parameters
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "X-Goog-Credential",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "client_secret",
        "password",
        "code",
    )
)


def redact_query(raw_query: str) -> str:
    """``raw_query`` (without ``?``) with the values of sensitive keys replaced by ``REDACTED``."""
    parts = raw_query.split("&")
    changed = False
    for index, part in enumerate(parts):
        key, sep, value = part.partition("=")
        if sep and value and key.lower() in SENSITIVE_QUERY_KEYS:
            parts[index] = f"{key}={REDACTED}"
            changed = True
    return "&".join(parts) if changed else raw_query


def redact_url_query(url_text: str) -> str:
    """A full URL string with sensitive query values redacted (fragment kept)."""
    query_start = url_text.find("?")
    if query_start < 0:
        return url_text
    fragment_start = url_text.find("#", query_start)
    end = len(url_text) if fragment_start < 0 else fragment_start
    redacted = redact_query(url_text[query_start + 1 : end])
    return f"{url_text[: query_start + 1]}{redacted}{url_text[end:]}"
