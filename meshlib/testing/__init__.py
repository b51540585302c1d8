"""meshlib.testing"""
