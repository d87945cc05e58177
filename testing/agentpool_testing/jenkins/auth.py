"""Accounts and the permissions the controller checks, named as Jenkins names them.

A provisioner's service account is rarely an administrator: Jenkins lists only the queue
items whose job it may read, and answers 403 on exactly the call whose permission it lacks
(``AccessDeniedException3``: ``svc is missing the Agent/Create permission``). Tests give
accounts any subset of these permissions to see that agentpool (and its doctor) cope.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field


class Permission(enum.Enum):
    """A Jenkins permission: its id (``X-Required-Permission``) and its group/name title."""

    READ = ("hudson.model.Hudson.Read", "Overall/Read")
    JOB_READ = ("hudson.model.Item.Read", "Job/Read")
    AGENT_CREATE = ("hudson.model.Computer.Create", "Agent/Create")
    AGENT_DELETE = ("hudson.model.Computer.Delete", "Agent/Delete")
    AGENT_CONNECT = ("hudson.model.Computer.Connect", "Agent/Connect")
    AGENT_DISCONNECT = ("hudson.model.Computer.Disconnect", "Agent/Disconnect")
    ADMINISTER = ("hudson.model.Hudson.Administer", "Overall/Administer")

    @property
    def id(self) -> str:
        return self.value[0]

    @property
    def title(self) -> str:
        return self.value[1]

    @classmethod
    def parse(cls, text: str) -> Permission:
        """``Agent/Create``, ``AGENT_CREATE`` or ``hudson.model.Computer.Create``."""
        wanted = text.strip()
        for perm in cls:
            if wanted in (perm.title, perm.name, perm.id) or wanted.upper() == perm.name:
                return perm
        names = ", ".join(p.title for p in cls)
        raise ValueError(f"unknown permission {text!r} (one of {names})")


ALL = frozenset(Permission)
# What ``anonymous_read`` grants anonymous callers (Jenkins' "allow anonymous read access").
ANONYMOUS_READ = frozenset({Permission.READ, Permission.JOB_READ})


class AccessDeniedError(Exception):
    """``AccessDeniedException3``: the caller lacks ``permission``; answered with 403."""

    def __init__(self, user: str, permission: Permission) -> None:
        super().__init__(f"{user} is missing the {permission.title} permission")
        self.user = user
        self.permission = permission


@dataclass(frozen=True)
class Account:
    """A user with an API token (and perhaps a password), and what it may do.

    ``readable_jobs`` grants Job/Read on those jobs only (a project-based matrix entry);
    Job/Read in ``permissions`` grants it on every job. Overall/Administer implies all.
    """

    name: str
    token: str
    password: str | None = None
    permissions: frozenset[Permission] = ALL
    readable_jobs: frozenset[str] = field(default_factory=frozenset)

    def has(self, permission: Permission) -> bool:
        return Permission.ADMINISTER in self.permissions or permission in self.permissions

    def may_read_job(self, job: str) -> bool:
        return self.has(Permission.JOB_READ) or job in self.readable_jobs

    def check(self, permission: Permission) -> None:
        if not self.has(permission):
            raise AccessDeniedError(self.name, permission)


def permissions_of(names: Iterable[str | Permission]) -> frozenset[Permission]:
    return frozenset(p if isinstance(p, Permission) else Permission.parse(p) for p in names)


ANONYMOUS = Account("anonymous", token="", permissions=frozenset())
