"""ensure_image and copy_image against fake hosts (the adapter edge swapped, nothing else)."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from pathlib import Path

import pytest

from agentpool.adapters.docker import DockerHost, _connect_reason, _split_tag
from agentpool.adapters.images import REPORT_EVERY, copy_image, ensure_image
from agentpool.errors import DockerError

MiB = 1 << 20


class FakeHost(DockerHost):
    """A host whose images are a dict; switches make pulls work or loads corrupt."""

    def __init__(
        self, name: str, images: dict[str, bytes] | None = None, *, pull_works: bool = False
    ) -> None:
        super().__init__(name, "unix:///nonexistent")
        self.images = dict(images or {})
        self.pull_works = pull_works
        self.registry: dict[str, bytes] = {}
        self.corrupt = False
        self.in_flight = 0  # chunks handed out by export and not yet consumed by a load
        self.max_in_flight = 0
        self.pulls = 0
        self.export_closed = False
        self.refuse_load = False

    def image_id(self, image: str) -> str | None:
        data = self.images.get(image)
        return None if data is None else f"sha256:{hash(data) & 0xFFFFFFFF:08x}"

    def image_size(self, image: str) -> int | None:
        data = self.images.get(image)
        return None if data is None else len(data)

    def export_image(self, image: str, chunk_size: int = MiB) -> Generator[bytes, None, None]:
        data = self.images[image]
        try:
            for i in range(0, len(data), chunk_size // 4):
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                yield data[i : i + chunk_size // 4]
        finally:
            self.export_closed = True

    def load_image(self, chunks: Iterable[bytes]) -> list[str]:
        received = bytearray()
        for chunk in chunks:
            if self.refuse_load:
                raise DockerError("server-error", f"{self.name}: load image: no space left on device")
            received += chunk
        name = "agent:1"
        self.images[name] = b"x" + bytes(received) if self.corrupt else bytes(received)
        return [name]

    def pull_image(self, image: str, timeout: float) -> None:
        self.pulls += 1
        if not self.pull_works:
            raise DockerError("not-found", f"{self.name}: pull {image}: lookup registry: no such host")
        self.images[image] = b"pulled"


class CountingTarget(FakeHost):
    """Consumes chunks as they come, telling the source each one is gone."""

    source: FakeHost

    def load_image(self, chunks: Iterable[bytes]) -> list[str]:
        def consumed() -> Iterator[bytes]:
            for chunk in chunks:
                self.source.in_flight -= 1
                yield chunk

        return super().load_image(consumed())


def test_present_image_is_left_alone() -> None:
    target = FakeHost("a", {"agent:1": b"abc"}, pull_works=True)
    assert ensure_image(target, "agent:1", sources=[FakeHost("b")]).how == "present"
    assert target.pulls == 0


def test_pull_first_when_a_registry_answers() -> None:
    target, source = FakeHost("a", pull_works=True), FakeHost("b", {"agent:1": b"abc"})
    result = ensure_image(target, "agent:1", sources=[source])
    assert (result.how, result.bytes) == ("pulled", 0)


def test_copy_streams_in_chunks_with_progress_when_the_pull_fails() -> None:
    data = bytes(range(256)) * (5 * MiB // 256 + 7)
    source = FakeHost("b", {"agent:1": data})
    target = CountingTarget("a")
    target.source = source
    seen: list[tuple[int, int | None]] = []
    result = ensure_image(
        target, "agent:1", sources=[target, FakeHost("c"), source], progress=lambda d, e: seen.append((d, e))
    )
    assert (result.how, result.source, result.bytes) == ("copied", "b", len(data))
    assert "no such host" in result.pull_error
    assert target.image_id("agent:1") == source.image_id("agent:1")
    assert source.max_in_flight == 1  # never more than one chunk held between the two engines
    assert [d for d, _ in seen] == [*range(REPORT_EVERY, len(data), REPORT_EVERY), len(data)]
    assert {e for _, e in seen} == {len(data)}


def test_a_copy_that_arrives_different_is_an_error() -> None:
    source, target = FakeHost("b", {"agent:1": b"abc"}), FakeHost("a")
    target.corrupt = True
    with pytest.raises(DockerError, match="expected sha256:"):
        copy_image(source, target, "agent:1")


def test_archive_when_no_host_has_it(tmp_path: Path) -> None:
    archive = tmp_path / "agent.tar"
    archive.write_bytes(b"tarball")
    target = FakeHost("a")
    result = ensure_image(target, "agent:1", sources=[FakeHost("b")], archive=str(archive), pull=False)
    assert (result.how, result.source, result.bytes) == ("loaded", str(archive), 7)


def test_every_way_tried_is_named_when_none_works(tmp_path: Path) -> None:
    with pytest.raises(DockerError) as missing:
        ensure_image(FakeHost("a"), "agent:1", sources=[FakeHost("b")])
    text = str(missing.value)
    assert "a: image agent:1 missing" in text
    assert "pull: a: pull agent:1: lookup registry: no such host" in text
    assert "no other host has it and no image archive is configured" in text
    with pytest.raises(DockerError, match=r"archive: image archive .*nope\.tar: No such file"):
        ensure_image(FakeHost("a"), "agent:1", archive=str(tmp_path / "nope.tar"), pull=False)


@pytest.mark.parametrize(
    ("image", "split"),
    [
        ("agentpool/dind-agent:latest", ("agentpool/dind-agent", "latest")),
        ("registry:5000/team/agent", ("registry:5000/team/agent", "latest")),
        ("registry:5000/team/agent:v2", ("registry:5000/team/agent", "v2")),
        ("busybox", ("busybox", "latest")),
        ("a/b@sha256:0123", ("a/b@sha256:0123", None)),
    ],
)
def test_split_tag(image: str, split: tuple[str, str | None]) -> None:
    assert _split_tag(image) == split


def test_connect_reason_keeps_the_cause() -> None:
    text = (
        "HTTPSConnectionPool(host='10.0.0.5', port=2376): Max retries exceeded with url: /version "
        "(Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] "
        "certificate verify failed: IP address mismatch')))"
    )
    reason = _connect_reason(ConnectionError(text))
    assert reason.startswith("SSLError(") and "IP address mismatch" in reason
    assert _connect_reason(OSError()) == "OSError"


def test_ssh_target_follows_ssh_config(tmp_path: Path) -> None:
    from agentpool.adapters.docker import ssh_target

    config = tmp_path / "config"
    assert ssh_target("ssh://ci@build-4:2222", config) == ("build-4", 2222)
    config.write_text(
        "Host b4\n  HostName 10.0.0.14\n  Port 2200\nHost jump\n  ProxyCommand ssh -W %h:%p bastion\n"
    )
    assert ssh_target("ssh://ci@b4", config) == ("10.0.0.14", 2200)
    assert ssh_target("ssh://ci@b4:22", config) == ("10.0.0.14", 22)
    assert ssh_target("ssh://ci@jump", config) is None
    assert ssh_target("ssh://other", config) == ("other", 22)


def test_a_refused_load_closes_the_source_stream_and_the_next_host_is_asked() -> None:
    first, second = FakeHost("b", {"agent:1": b"a" * MiB}), FakeHost("c", {"agent:1": b"a" * MiB})
    target = FakeHost("a")
    target.refuse_load = True
    with pytest.raises(DockerError) as failed:
        ensure_image(target, "agent:1", sources=[first, second], pull=False)
    assert first.export_closed and second.export_closed
    assert "copy from b: a: load image: no space left on device" in str(failed.value)
    assert "copy from c:" in str(failed.value)
