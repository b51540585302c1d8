"""meshlib.grpc"""
