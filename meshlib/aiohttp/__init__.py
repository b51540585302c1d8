"""meshlib.aiohttp"""
