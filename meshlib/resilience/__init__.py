"""meshlib.resilience"""
