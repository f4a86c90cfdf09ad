"""Real Hazelcast members for the tests: started as Java subprocesses on free loopback ports.

The member jar (open-source ``com.hazelcast:hazelcast``, 5.4.0, main class com.hazelcast.core.server.HazelcastMemberStarter: the CP subsystem is
Enterprise-only from 5.5) is fetched once by ``scripts/test.sh`` into ``.cache/hazelcast/``
(ignored by git); when it is missing and Maven is installed, the helper fetches it itself.
Without Java or the jar the fixture *fails*, it never skips: CI runs these tests.

Every member binds 127.0.0.1 only, joins by TCP-IP with the explicit member list (multicast
off), and has phone-home off: nothing leaves the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSION = "5.4.0"
CACHE = REPO / ".cache" / "hazelcast"
JAR = CACHE / f"hazelcast-{VERSION}.jar"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def member_jar() -> Path:
    jar = Path(os.environ.get("DOLPHIND_HAZELCAST_JAR", JAR))
    if jar.exists():
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(f"{jar} is missing and Maven is not installed: run scripts/test.sh")
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([mvn, "-q", "dependency:copy",
                    f"-Dartifact=com.hazelcast:hazelcast:{VERSION}",
                    f"-DoutputDirectory={CACHE}"], check=True, timeout=600)
    return jar


def member_xml(cluster: str, port: int, members: list[int], cp_members: int,
               session_ttl_s: int = 10) -> str:
    """A loopback-only member config; with ``cp_members`` >= 3 the CP subsystem is on."""
    peers = "\n".join(f"<member>127.0.0.1:{p}</member>" for p in members)
    cp = f"""
    <cp-subsystem>
        <cp-member-count>{cp_members}</cp-member-count>
        <group-size>{cp_members}</group-size>
        <session-time-to-live-seconds>{session_ttl_s}</session-time-to-live-seconds>
        <session-heartbeat-interval-seconds>1</session-heartbeat-interval-seconds>
        <missing-cp-member-auto-removal-seconds>60</missing-cp-member-auto-removal-seconds>
    </cp-subsystem>""" if cp_members else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<hazelcast xmlns="http://www.hazelcast.com/schema/config"
           xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
           xsi:schemaLocation="http://www.hazelcast.com/schema/config
           http://www.hazelcast.com/schema/config/hazelcast-config-5.4.xsd">
    <cluster-name>{cluster}</cluster-name>
    <properties>
        <property name="hazelcast.phone.home.enabled">false</property>
        <property name="hazelcast.socket.bind.any">false</property>
        <property name="hazelcast.merge.first.run.delay.seconds">5</property>
        <property name="hazelcast.wait.seconds.before.join">0</property>
    </properties>
    <network>
        <port auto-increment="false">{port}</port>
        <interfaces enabled="true"><interface>127.0.0.1</interface></interfaces>
        <join>
            <auto-detection enabled="false"/>
            <multicast enabled="false"/>
            <tcp-ip enabled="true">{peers}</tcp-ip>
        </join>
    </network>{cp}
</hazelcast>
"""


@dataclass
class Member:
    port: int
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("wb")  # "is STARTED" must come from this process
        self.proc = subprocess.Popen(
            ["java", "-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-Djava.net.preferIPv4Stack=true", f"-Dhazelcast.config={self.config}",
             "-cp", str(member_jar()), "com.hazelcast.core.server.HazelcastMemberStarter"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()

    def kill(self) -> None:
        """kill -9: the member vanishes without a goodbye (a crash, a pulled cable)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def started(self) -> bool:
        return self.log.exists() and b"is STARTED" in self.log.read_bytes()


@dataclass
class Cluster:
    """``size`` members of one cluster on free loopback ports (CP on when ``cp``)."""

    root: Path
    size: int = 1
    cp: bool = False
    name: str = field(default_factory=lambda: f"dolphin-test-{os.getpid()}-{time.monotonic_ns()}")
    session_ttl_s: int = 10
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ports = [free_port() for _ in range(self.size)]
        for i, port in enumerate(ports):
            cfg = self.root / f"member-{i}.xml"
            cfg.write_text(member_xml(self.name, port, ports, self.size if self.cp else 0,
                                      self.session_ttl_s))
            self.members.append(Member(port, cfg, self.root / f"member-{i}.log"))

    @property
    def addresses(self) -> list[str]:
        return [m.address for m in self.members]

    def start(self, timeout: float = 90.0) -> "Cluster":
        for m in self.members:
            m.start()
        self.wait_started(self.members, timeout)
        return self

    def wait_started(self, members: list[Member], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        for m in members:
            while not m.started():
                if m.proc is None or m.proc.poll() is not None:
                    raise RuntimeError(f"member {m.address} exited:\n{self.tail(m)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"member {m.address} not started:\n{self.tail(m)}")
                time.sleep(0.2)

    def restart(self, member: Member, timeout: float = 90.0) -> None:
        member.kill()
        member.start()
        self.wait_started([member], timeout)

    @staticmethod
    def tail(m: Member, n: int = 4000) -> str:
        return m.log.read_bytes()[-n:].decode(errors="replace") if m.log.exists() else ""

    def stop(self) -> None:
        for m in self.members:
            m.kill()

    def toml(self, extra: str = "") -> str:
        """The daemon's [statebus] section for this cluster."""
        members = ", ".join(f'"{a}"' for a in self.addresses)
        return f"""
[statebus]
kind = "hazelcast"
cluster_name = "{self.name}"
members = [{members}]
{extra}
"""
