"""The admin (debug) view of a mesh: Envoy-like JSON endpoints and an HTML page.

::

    from meshlib.admin import admin_app, run_admin

    app = admin_app(mesh)                    # an aiohttp web.Application
    await run_admin(mesh, port=15000)        # or serve it until cancelled

Endpoints: ``/`` (page), ``/config_dump``, ``/clusters`` (``?format=text``),
``/routes``, ``/stats`` (Envoy's text; ``?format=json|prometheus``, ``?filter=``),
``/stats/prometheus``, ``/status``, ``/ready``, ``/server_info``, ``/help``; and
``meshlib admin --attach URL`` (:mod:`meshlib.admin.attach`) reads a running one.
"""

from meshlib.admin.app import AdminServer, admin_app, run_admin, start_admin
from meshlib.admin.config_dump import clusters_view, config_dump, routes_view

__all__ = [
    "AdminServer",
    "admin_app",
    "clusters_view",
    "config_dump",
    "routes_view",
    "run_admin",
    "start_admin",
]
