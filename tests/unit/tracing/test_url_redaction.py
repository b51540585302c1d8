"""url.full hides credential-carrying query values (OTel semantic conventions) and userinfo."""

from __future__ import annotations

import pytest
from yarl import URL

from meshlib.tracing.client_spans import _url_full
from meshlib.tracing.url_redaction import redact_query, redact_url_query


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a=1&sig=abc", "a=1&sig=REDACTED"),
        ("Signature=x&AWSAccessKeyId=y", "Signature=REDACTED&AWSAccessKeyId=REDACTED"),
        ("X-Amz-Signature=s&X-Amz-Date=d", "X-Amz-Signature=REDACTED&X-Amz-Date=d"),
        ("X-Goog-Signature=s", "X-Goog-Signature=REDACTED"),
        ("access_token=t&TOKEN=u&page=2", "access_token=REDACTED&TOKEN=REDACTED&page=2"),
        ("q=token&signature", "q=token&signature"),  # a value named token / a key without value: untouched
        ("sig=", "sig="),
        ("", ""),
    ],
)
def test_redact_query(raw: str, expected: str) -> None:
    assert redact_query(raw) == expected


def test_redact_url_keeps_fragment_and_path() -> None:
    assert redact_url_query("https://s3/b/k?X-Amz-Signature=abc#frag") == "https://s3/b/k?X-Amz-Signature=REDACTED#frag"
    assert redact_url_query("https://s3/b/k") == "https://s3/b/k"


def test_url_full_redacts_userinfo_and_query_values() -> None:
    url = URL("http://alice:pw@reviews:9080/r?sig=abc&q=1")
    assert _url_full(url) == "http://REDACTED:REDACTED@reviews:9080/r?sig=REDACTED&q=1"
    assert _url_full(URL("http://reviews:9080/r?q=1")) == "http://reviews:9080/r?q=1"
