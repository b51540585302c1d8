"""A small model of Consul's ACL system: tokens with prefix rules.

Enough to test a client's token handling: the token travels in
``X-Consul-Token``, ``Authorization: Bearer`` or ``?token=``; an unknown token
is ``403 ACL not found``; a write without the permission is ``403 Permission
denied: token with AccessorID '…' lacks permission 'service:write' on "web"``;
reads are *filtered* (entries the token may not see are dropped, with
``X-Consul-Results-Filtered-By-ACLs: true``), as Consul does.

>>> token = AclToken("s3cret", rules={"service": {"web": "write", "": "read"}, "node": {"": "read"}})
>>> token.allows("service", "web", "write"), token.allows("service", "db", "write")
(True, False)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

_RANK = {"deny": -1, "read": 1, "write": 2}


@dataclass(frozen=True)
class AclToken:
    """A token: ``rules[resource][name_prefix] = "read" | "write" | "deny"`` (longest prefix wins).

    Resources used by the emulator: ``service``, ``node``, ``agent``, ``operator``, ``mesh``.
    """

    secret_id: str
    rules: dict[str, dict[str, str]] = field(default_factory=dict)
    management: bool = False
    accessor_id: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.accessor_id:
            object.__setattr__(self, "accessor_id", str(uuid.uuid5(uuid.NAMESPACE_OID, self.secret_id)))

    @classmethod
    def management_token(cls, secret_id: str) -> AclToken:
        return cls(secret_id, management=True, description="Initial Management Token")

    def allows(self, resource: str, name: str, access: str) -> bool:
        if self.management:
            return True
        rules = self.rules.get(resource) or {}
        best: str | None = None
        for prefix in rules:
            if name.startswith(prefix) and (best is None or len(prefix) > len(best)):
                best = prefix
        if best is None:
            return False
        return _RANK.get(rules[best], -1) >= _RANK[access]


class AclDenied(Exception):
    """A 403 with Consul's body text."""


class AclPolicy:
    """The emulator's ACL state: off, or on with a set of tokens and a default policy."""

    def __init__(self) -> None:
        self.enabled = False
        self.default_policy = "deny"
        self.tokens: dict[str, AclToken] = {}

    def enable(self, tokens: list[AclToken], default_policy: str = "deny") -> None:
        if default_policy not in ("allow", "deny"):
            raise ValueError("default_policy must be 'allow' or 'deny'")
        self.enabled = True
        self.default_policy = default_policy
        self.tokens = {t.secret_id: t for t in tokens}

    def disable(self) -> None:
        self.enabled = False
        self.tokens = {}

    def resolve(self, secret: str) -> AclToken | None:
        """The caller's token (None = anonymous); raises :class:`AclDenied` for an unknown secret."""
        if not self.enabled or not secret:
            return None
        token = self.tokens.get(secret)
        if token is None:
            raise AclDenied("ACL not found")
        return token

    def allows(self, token: AclToken | None, resource: str, name: str, access: str) -> bool:
        if not self.enabled:
            return True
        if token is None:
            return self.default_policy == "allow"
        return token.allows(resource, name, access)

    def require(self, token: AclToken | None, resource: str, name: str, access: str) -> None:
        if self.allows(token, resource, name, access):
            return
        who = "anonymous token" if token is None else f"token with AccessorID '{token.accessor_id}'"
        raise AclDenied(f'Permission denied: {who} lacks permission \'{resource}:{access}\' on "{name}"')
