"""meshlib.balancing"""
