"""@grpc/grpc-js-xds (npm) as an xDS client of the meshlib control plane."""
