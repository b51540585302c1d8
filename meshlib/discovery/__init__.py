"""meshlib.discovery"""
