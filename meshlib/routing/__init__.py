"""meshlib.routing"""
