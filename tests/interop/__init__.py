"""Interop with real xDS clients (grpcio proxyless, Envoy) against the meshlib control plane."""
