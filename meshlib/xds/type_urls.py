"""xDS v3 type URLs of the resources meshlib serves and reads, and of the typed configs inside them."""

from __future__ import annotations

PREFIX = "type.googleapis.com/"

LISTENER = PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_CONFIGURATION = PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = PREFIX + "envoy.config.cluster.v3.Cluster"
CLUSTER_LOAD_ASSIGNMENT = PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"

# Resource types in the order an ADS server should send them (CDS before EDS, LDS before RDS).
RESOURCE_TYPES = (CLUSTER, CLUSTER_LOAD_ASSIGNMENT, LISTENER, ROUTE_CONFIGURATION)

HTTP_CONNECTION_MANAGER = PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = PREFIX + "envoy.extensions.filters.http.router.v3.Router"
HTTP_FAULT = PREFIX + "envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS = PREFIX + "envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY = PREFIX + "envoy.extensions.filters.http.cors.v3.CorsPolicy"
LOCAL_RATE_LIMIT = PREFIX + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
FILTER_CONFIG = PREFIX + "envoy.config.route.v3.FilterConfig"
HTTP_PROTOCOL_OPTIONS = PREFIX + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
PREVIOUS_HOSTS = PREFIX + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
PREVIOUS_PRIORITIES = PREFIX + "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"

# Well-known filter / extension names (what istiod writes in ``name`` fields).
HCM_FILTER_NAME = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER_NAME = "envoy.filters.http.router"
FAULT_FILTER_NAME = "envoy.filters.http.fault"
CORS_FILTER_NAME = "envoy.filters.http.cors"
LOCAL_RATE_LIMIT_FILTER_NAME = "envoy.filters.http.local_ratelimit"
HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
PREVIOUS_HOSTS_NAME = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES_NAME = "envoy.retry_priorities.previous_priorities"


def short_name(type_url: str) -> str:
    """``type.googleapis.com/envoy.config.cluster.v3.Cluster`` → ``Cluster`` (for messages)."""
    return type_url.rsplit(".", 1)[-1]
