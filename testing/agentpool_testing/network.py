"""Where containers on the engine's default bridge reach this machine, asked of the engine.

Agents run on the default bridge and reach the controller, the artifact server and the
demo at the bridge's gateway. That address is the engine's choice (``--bip``, an existing
``docker0``, the default-address-pools), so it is read from the engine, never assumed.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import docker


class BridgeGatewayError(RuntimeError):
    """The engine's default bridge has no IPv4 gateway we could determine."""


def bridge_gateway(client: docker.DockerClient | None = None) -> str:
    """The IPv4 gateway of the engine's ``bridge`` network (``client``: default from the env).

    ``docker network inspect bridge`` names it in ``IPAM.Config[].Gateway``; engines that
    leave it out there (Docker 20.10 does for the default bridge) still tell each attached
    container its gateway, and otherwise give the bridge the first address of its subnet.
    """
    if client is None:
        try:
            own = docker.from_env()
        except docker.errors.DockerException as exc:
            raise BridgeGatewayError(f"no Docker engine answers: {exc}") from exc
        try:
            return bridge_gateway(own)
        finally:
            own.close()
    try:
        network = client.networks.get("bridge")
    except docker.errors.DockerException as exc:
        raise BridgeGatewayError(f"cannot inspect the engine's bridge network: {exc}") from exc
    attrs: dict[str, Any] = network.attrs or {}
    configs = [c for c in (attrs.get("IPAM") or {}).get("Config") or [] if isinstance(c, dict)]
    for config in configs:
        gateway = str(config.get("Gateway") or "").split("/")[0]
        if _is_ipv4(gateway):
            return gateway
    for container_id in attrs.get("Containers") or {}:
        try:
            settings = client.containers.get(container_id).attrs["NetworkSettings"]["Networks"]["bridge"]
        except (docker.errors.DockerException, KeyError, TypeError):
            continue
        gateway = str(settings.get("Gateway") or "")
        if _is_ipv4(gateway):
            return gateway
    for config in configs:
        try:
            subnet = ipaddress.ip_network(str(config.get("Subnet") or ""), strict=False)
        except ValueError:
            continue
        if subnet.version == 4 and subnet.num_addresses > 2:
            return str(subnet.network_address + 1)
    raise BridgeGatewayError(
        "the engine's bridge network names no IPv4 gateway or subnet "
        f"(IPAM config: {configs}); agents on it could not reach this machine"
    )


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now (for servers that must know theirs up front)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
