"""meshlib.xds"""
