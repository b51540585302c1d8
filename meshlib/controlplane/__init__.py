"""meshlib.controlplane"""
