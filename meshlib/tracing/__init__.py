"""meshlib.tracing"""
