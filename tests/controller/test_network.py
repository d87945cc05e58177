"""The bridge gateway is read from the engine's answers, never assumed to be the default one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import docker
import pytest

from agentpool_testing.network import BridgeGatewayError, bridge_gateway, free_port


@dataclass
class _Thing:
    attrs: dict[str, Any]


@dataclass
class _Collection:
    by_id: dict[str, dict[str, Any]]
    error: Exception | None = None

    def get(self, key: str) -> _Thing:
        if self.error is not None:
            raise self.error
        if key not in self.by_id:
            raise docker.errors.NotFound(f"no such object: {key}")
        return _Thing(self.by_id[key])


@dataclass
class FakeEngine:
    """Just enough of ``docker.DockerClient``: ``networks.get`` and ``containers.get``."""

    bridge: dict[str, Any]
    containers_by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    network_error: Exception | None = None

    @property
    def networks(self) -> _Collection:
        return _Collection({"bridge": self.bridge}, self.network_error)

    @property
    def containers(self) -> _Collection:
        return _Collection(self.containers_by_id)


def ipam(*configs: dict[str, str]) -> dict[str, Any]:
    return {"IPAM": {"Driver": "default", "Config": list(configs)}}


def gateway_of(engine: FakeEngine) -> str:
    return bridge_gateway(engine)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("configs", "expected"),
    [
        ([{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}], "172.18.0.1"),
        ([{"Subnet": "10.99.0.0/24", "Gateway": "10.99.0.254"}], "10.99.0.254"),
        # an IPv6 entry first: the IPv4 one is what agents use
        (
            [
                {"Subnet": "fd00::/64", "Gateway": "fd00::1"},
                {"Subnet": "192.168.5.0/24", "Gateway": "192.168.5.1"},
            ],
            "192.168.5.1",
        ),
    ],
)
def test_the_ipam_gateway_is_used(configs: list[dict[str, str]], expected: str) -> None:
    assert gateway_of(FakeEngine(ipam(*configs))) == expected


def test_without_an_ipam_gateway_an_attached_container_names_it() -> None:
    # Docker 20.10 shows the default bridge as {"Subnet": "172.17.0.0/16"} only
    bridge = {**ipam({"Subnet": "10.200.0.0/16"}), "Containers": {"gone": {}, "abc": {}}}
    containers = {"abc": {"NetworkSettings": {"Networks": {"bridge": {"Gateway": "10.200.3.1"}}}}}
    assert gateway_of(FakeEngine(bridge, containers)) == "10.200.3.1"


def test_otherwise_the_first_address_of_the_subnet() -> None:
    assert gateway_of(FakeEngine(ipam({"Subnet": "172.30.0.0/16"}))) == "172.30.0.1"
    assert gateway_of(FakeEngine(ipam({"Subnet": "fd00::/64"}, {"Subnet": "10.1.2.0/24"}))) == "10.1.2.1"


@pytest.mark.parametrize("bridge", [ipam(), ipam({"Subnet": "fd00::/64"}), {}, {"IPAM": None}])
def test_no_ipv4_address_is_a_clear_error(bridge: dict[str, Any]) -> None:
    with pytest.raises(BridgeGatewayError, match="names no IPv4 gateway or subnet"):
        gateway_of(FakeEngine(bridge))


def test_an_engine_that_fails_is_a_clear_error() -> None:
    engine = FakeEngine({}, network_error=docker.errors.APIError("500 Server Error"))
    with pytest.raises(BridgeGatewayError, match="cannot inspect the engine's bridge network: 500"):
        gateway_of(engine)


def test_free_port_is_bindable() -> None:
    port = free_port("127.0.0.1")
    assert 0 < port < 65536
