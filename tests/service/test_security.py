"""The security profile → Docker SDK kwargs translation shared by the executor and doctor."""

from __future__ import annotations

import pytest

from agentpool.security import (
    CAPABILITIES,
    host_config_fields,
    host_config_kwargs,
    missing_capabilities,
    normalise_capability,
)


def test_privileged_asks_for_privileged_only() -> None:
    assert host_config_kwargs("privileged", []) == {"privileged": True}


def test_capabilities_adds_all_minus_dropped_and_unconfines() -> None:
    kwargs = host_config_kwargs("capabilities", ["SYS_RESOURCE", "cap_sys_time"])
    assert kwargs == {
        "cap_add": ["ALL"],
        "cap_drop": ["SYS_RESOURCE", "SYS_TIME"],
        "security_opt": ["apparmor=unconfined", "seccomp=unconfined"],
        "device_cgroup_rules": ["a *:* rwm"],
    }
    assert "privileged" not in kwargs


def test_capabilities_without_drops() -> None:
    assert host_config_kwargs("capabilities", [])["cap_drop"] == []


def test_sysbox_uses_the_runtime() -> None:
    assert host_config_kwargs("sysbox", []) == {"runtime": "sysbox-runc"}


@pytest.mark.parametrize("profile", ["privileged", "sysbox"])
def test_cap_drop_outside_capabilities_is_refused(profile: str) -> None:
    with pytest.raises(ValueError, match="cap_drop applies only to security: capabilities"):
        host_config_kwargs(profile, ["SYS_RESOURCE"])


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(
        ValueError, match=r"unknown security profile 'root'.*privileged, capabilities, sysbox"
    ):
        host_config_kwargs("root", [])


def test_unknown_capability_is_named() -> None:
    with pytest.raises(ValueError, match="unknown capability 'SYS_EVERYTHING'"):
        host_config_kwargs("capabilities", ["SYS_EVERYTHING"])


def test_normalise_capability_accepts_the_usual_spellings() -> None:
    assert normalise_capability(" cap_net_admin ") == "NET_ADMIN"
    assert normalise_capability("CAP_NET_ADMIN") == "NET_ADMIN"
    assert normalise_capability("NET_ADMIN") == "NET_ADMIN"


def test_missing_capabilities_reads_a_capbnd_mask() -> None:
    # This VM's bounding set: every capability up to 40 except SYS_RESOURCE (bit 24).
    assert missing_capabilities(0x000001FFFEFFFFFF, last_cap=40) == ["SYS_RESOURCE"]
    assert missing_capabilities((1 << 41) - 1, last_cap=40) == []
    assert missing_capabilities(0, last_cap=2) == ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH"]
    assert len(CAPABILITIES) == 41


def test_capabilities_unconfines_system_paths_through_raw_fields() -> None:
    assert host_config_fields("capabilities") == {"MaskedPaths": [], "ReadonlyPaths": []}
    assert host_config_fields("privileged") == {}
    assert host_config_fields("sysbox") == {}
