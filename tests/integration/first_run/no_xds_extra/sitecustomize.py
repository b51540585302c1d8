"""Put this directory on PYTHONPATH to run Python as after a base install: the modules of the ``grpc``,
``xds`` and ``consul`` extras (grpc, protobuf, the xDS protos, py-consul) cannot be imported — a meta-path
finder refuses them — without uninstalling anything.
"""

import sys

BLOCKED = ("grpc", "grpc_csds", "google.protobuf", "envoy", "xds", "udpa", "validate", "consul")


class _RefuseExtras:
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if any(name == blocked or name.startswith(blocked + ".") for blocked in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, _RefuseExtras())
