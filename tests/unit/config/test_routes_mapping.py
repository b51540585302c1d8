"""VirtualService http rules → model Routes: every field group."""

from __future__ import annotations

from pathlib import Path

from meshlib.config.model import (
    ISTIO_DEFAULT_RETRY,
    CorsPolicy,
    DirectResponse,
    FaultPolicy,
    HeaderOps,
    Labels,
    Mirror,
    Redirect,
    Rewrite,
    Route,
    StringMatch,
    WeightedCluster,
)

from .helpers import snapshot

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
"""


def routes(tmp_path: Path, http: str, *, port: int = 9080, host: str = REVIEWS) -> tuple[Route, ...]:
    """Compile one VirtualService for reviews with ``http`` rules; return reviews' routes."""
    text = DR + "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n"
    text += "spec:\n  hosts: [reviews]\n  http:\n" + "\n".join(
        "  " + line for line in http.strip("\n").splitlines()
    )
    snap = snapshot(tmp_path, text)
    vhost = next(v for v in snap.route_configs[str(port)].virtual_hosts if v.name == f"{host}:{port}")
    return vhost.routes


def test_matches(tmp_path: Path) -> None:
    (route,) = routes(
        tmp_path,
        """
- name: jason
  match:
  - name: m0
    uri: {prefix: /Reviews}
    ignoreUriCase: true
    method: {exact: GET}
    authority: {regex: "reviews(:[0-9]+)?"}
    scheme: {exact: http}
    headers:
      End-User: {exact: jason}
      x-present: {}
    withoutHeaders:
      x-debug: {prefix: "1"}
    queryParams:
      Mode: {regex: "a|b"}
  - uri: {regex: "/r/[0-9]+"}
    ignoreUriCase: true
  route:
  - destination: {host: reviews, subset: v2}
""",
    )
    first, second = route.matches
    assert first.name == "m0"
    assert first.uri == StringMatch("prefix", "/Reviews", ignore_case=True)
    assert first.method == StringMatch("exact", "GET")
    assert first.authority == StringMatch("regex", "reviews(:[0-9]+)?")
    assert first.scheme == StringMatch("exact", "http")
    assert first.headers == (
        ("end-user", StringMatch("exact", "jason")),
        ("x-present", StringMatch("present")),
    )
    assert first.without_headers == (("x-debug", StringMatch("prefix", "1")),)
    assert first.query_params == (("Mode", StringMatch("regex", "a|b")),)
    assert second.uri == StringMatch("regex", "/r/[0-9]+")  # ignoreUriCase does not apply to regex
    assert route.source.virtual_service == "default/reviews"
    assert route.source.rule_name == "jason"
    assert route.source.rule_index == 0
    assert route.source.file.endswith("mesh/a.yaml")
    assert route.source.line > 0


def test_destinations_weights_and_ports(tmp_path: Path) -> None:
    (route,) = routes(
        tmp_path,
        """
- route:
  - destination: {host: reviews, subset: v1}
    weight: 75
    headers:
      request: {set: {X-Version: v1}}
  - destination: {host: reviews, subset: v2, port: {number: 9080}}
    weight: 25
  - destination: {host: ratings.default.svc.cluster.local}
    weight: 0
""",
    )
    assert route.destinations == (
        WeightedCluster(
            f"outbound|9080|v1|{REVIEWS}", REVIEWS, 9080, "v1", 75, headers=route.destinations[0].headers
        ),
        WeightedCluster(f"outbound|9080|v2|{REVIEWS}", REVIEWS, 9080, "v2", 25),
        WeightedCluster(f"outbound|9080||{RATINGS}", RATINGS, 9080, "", 0),  # kept; the router drops it
    )
    assert route.destinations[0].headers.request.set == (("x-version", "v1"),)


def test_single_destination_defaults_to_weight_100(tmp_path: Path) -> None:
    (route,) = routes(tmp_path, "- route:\n  - destination: {host: ratings}\n")
    assert route.destinations == (WeightedCluster(f"outbound|9080||{RATINGS}", RATINGS, 9080, "", 100),)


def test_defaults_retry_and_no_timeout(tmp_path: Path) -> None:
    (route,) = routes(tmp_path, "- route:\n  - destination: {host: reviews}\n")
    assert route.retry == ISTIO_DEFAULT_RETRY
    assert route.timeout_s is None
    assert route.fault is None
    assert route.mirrors == ()
    assert route.cors is None


def test_timeout_and_retries(tmp_path: Path) -> None:
    first, second, third, fourth = routes(
        tmp_path,
        """
- match: [{uri: {prefix: /a}}]
  route: [{destination: {host: reviews}}]
  timeout: 1.5s
  retries:
    attempts: 4
    perTryTimeout: 250ms
    retryOn: "gateway-error, 503,409,connect-failure"
    retryRemoteLocalities: true
    backoff: 100ms
- match: [{uri: {prefix: /b}}]
  route: [{destination: {host: reviews}}]
  retries: {attempts: 0}
- match: [{uri: {prefix: /c}}]
  route: [{destination: {host: reviews}}]
  retries: {attempts: 3, retryIgnorePreviousHosts: false}
- match: [{uri: {prefix: /d}}]
  route: [{destination: {host: reviews}}]
  retries: {attempts: 1, retryOn: "5xx,retriable-status-codes,502"}
""",
    )
    assert first.timeout_s == 1.5
    retry = first.retry
    assert retry is not None
    assert retry.num_retries == 4
    assert retry.per_try_timeout_s == 0.25
    assert retry.retry_on == ("gateway-error", "connect-failure", "retriable-status-codes")
    assert retry.retriable_status_codes == (503, 409)
    assert retry.retry_remote_localities is True
    assert retry.backoff_base_s == 0.1
    assert retry.backoff_max_s == 1.0
    assert retry.previous_hosts is True
    assert second.timeout_s is None
    assert second.retry is None
    assert third.retry is not None
    assert third.retry.retry_on == ISTIO_DEFAULT_RETRY.retry_on
    assert third.retry.num_retries == 3
    assert third.retry.previous_hosts is False
    assert fourth.retry is not None
    assert fourth.retry.retry_on == ("5xx", "retriable-status-codes")
    assert fourth.retry.retriable_status_codes == (502,)


def test_fault(tmp_path: Path) -> None:
    first, second, third = routes(
        tmp_path,
        """
- match: [{uri: {prefix: /a}}]
  route: [{destination: {host: reviews}}]
  fault:
    delay: {fixedDelay: 7s, percentage: {value: 12.5}}
    abort: {httpStatus: 503, percentage: {value: 100}}
- match: [{uri: {prefix: /b}}]
  route: [{destination: {host: reviews}}]
  fault:
    delay: {fixedDelay: 1ms, percent: 30}
    abort: {grpcStatus: UNAVAILABLE}
- route: [{destination: {host: reviews}}]
  fault:
    abort: {grpcStatus: 8, percentage: {value: 5}}
""",
    )
    assert first.fault == FaultPolicy(7.0, 12.5, 503, None, 100.0)
    assert second.fault == FaultPolicy(0.001, 30.0, None, 14, 0.0)  # unset percentage: never fires
    assert third.fault == FaultPolicy(None, 0.0, None, 8, 5.0)


def test_mirrors(tmp_path: Path) -> None:
    first, second, third, fourth = routes(
        tmp_path,
        """
- match: [{uri: {prefix: /a}}]
  route: [{destination: {host: reviews}}]
  mirror: {host: ratings}
- match: [{uri: {prefix: /b}}]
  route: [{destination: {host: reviews}}]
  mirror: {host: reviews, subset: v2}
  mirrorPercentage: {value: 25}
- match: [{uri: {prefix: /c}}]
  route: [{destination: {host: reviews}}]
  mirror: {host: ratings}
  mirrorPercentage: {value: 0}
- route: [{destination: {host: reviews}}]
  mirrors:
  - destination: {host: ratings}
  - destination: {host: reviews, subset: v1}
    percentage: {value: 10}
""",
    )
    assert first.mirrors == (Mirror(f"outbound|9080||{RATINGS}", RATINGS, 9080, "", 100.0),)
    assert second.mirrors == (Mirror(f"outbound|9080|v2|{REVIEWS}", REVIEWS, 9080, "v2", 25.0),)
    assert third.mirrors == ()
    assert fourth.mirrors == (
        Mirror(f"outbound|9080||{RATINGS}", RATINGS, 9080, "", 100.0),
        Mirror(f"outbound|9080|v1|{REVIEWS}", REVIEWS, 9080, "v1", 10.0),
    )


def test_rewrite_redirect_direct_response_headers_cors(tmp_path: Path) -> None:
    first, second, third, fourth = routes(
        tmp_path,
        """
- match: [{uri: {prefix: /old}}]
  rewrite: {uri: /new, authority: ratings}
  route: [{destination: {host: ratings}}]
  headers:
    request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [X-C]}
    response: {remove: [server]}
  corsPolicy:
    allowOrigins: [{exact: "https://a.example"}, {regex: "https://.*\\\\.b\\\\.example"}]
    allowMethods: [GET, POST]
    allowHeaders: [x-h]
    exposeHeaders: [x-e]
    maxAge: 24h
    allowCredentials: true
- match: [{uri: {regex: "/v1/(.*)"}}]
  rewrite:
    uriRegexRewrite: {match: "/v1/(.*)", rewrite: "/v2/\\\\1"}
  route: [{destination: {host: reviews}}]
- match: [{uri: {exact: /moved}}]
  redirect: {uri: /here, authority: other, scheme: https, port: 8443, redirectCode: 308}
- directResponse:
    status: 418
    body: {bytes: aGVsbG8=}
""",
    )
    assert first.rewrite == Rewrite(uri="/new", authority="ratings")
    assert first.headers.request == HeaderOps(set=(("x-a", "1"),), add=(("x-b", "2"),), remove=("x-c",))
    assert first.headers.response == HeaderOps(remove=("server",))
    assert first.cors == CorsPolicy(
        allow_origins=(
            StringMatch("exact", "https://a.example"),
            StringMatch("regex", "https://.*\\.b\\.example"),
        ),
        allow_methods=("GET", "POST"),
        allow_headers=("x-h",),
        expose_headers=("x-e",),
        max_age_s=86400.0,
        allow_credentials=True,
    )
    assert second.rewrite == Rewrite(uri_regex=("/v1/(.*)", "/v2/\\1"))
    assert third.redirect == Redirect("/here", "other", "https", 8443, "", 308)
    assert third.destinations == ()
    assert fourth.direct_response == DirectResponse(418, b"hello")


def test_redirect_defaults_to_301_and_string_body(tmp_path: Path) -> None:
    first, second = routes(
        tmp_path,
        """
- match: [{uri: {exact: /a}}]
  redirect: {derivePort: FROM_REQUEST_PORT, scheme: https}
- directResponse: {status: 200, body: {string: ok}}
""",
    )
    assert first.redirect == Redirect(scheme="https", derive_port="FROM_REQUEST_PORT", code=301)
    assert second.direct_response == DirectResponse(200, b"ok")


def test_source_labels_are_kept_on_surviving_matches(tmp_path: Path) -> None:
    (route,) = routes(
        tmp_path,
        """
- match: [{sourceLabels: {}, uri: {prefix: /}}]
  route: [{destination: {host: reviews}}]
""",
    )
    assert route.matches[0].source_labels == Labels()
