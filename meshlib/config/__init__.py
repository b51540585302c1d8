"""meshlib.config"""
