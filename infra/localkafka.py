"""A throwaway single-node Apache Kafka broker on 127.0.0.1, for tests and benchmarks.

The broker runs from Maven artifacts: ``mvn`` copies ``org.apache.kafka:kafka_2.13`` and
its dependencies, plus the log4j SLF4J binding (without it the broker's startup errors
are silent), into ``~/.cache/contact-centre/kafka/<version>/libs`` once; nothing is
written into the repository. Each broker gets a temporary directory, is formatted with
``kafka.tools.StorageTool format --standalone`` and starts as ``kafka.Kafka`` in KRaft
combined mode (broker and controller in one process) on two free ports, with the internal
topics' replication factor 1. ``./dev test`` installs Java and Maven when missing.

    python -m infra.localkafka      # start one, print its bootstrap address, Ctrl-C stops it
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from infra.localpg import free_port

KAFKA_VERSION = "4.1.0"
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.contact-centre</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""

STARTED = "Kafka Server started"


def _die_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec so that the broker gets SIGTERM when whoever
    started it dies: a killed test run leaves no broker behind (Linux only). The libc
    lookup happens here, in the parent; after the fork the child only calls prctl."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_death_signal


_PR_SET_PDEATHSIG = 1


class KafkaUnavailableError(RuntimeError):
    """No Java or Maven, the jars could not be fetched, or the broker did not start."""


def cache_dir() -> Path:
    return Path.home() / ".cache" / "contact-centre" / "kafka"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise KafkaUnavailableError(
            f"{name} not found: ./dev test installs Java and Maven (apt-get install "
            "default-jre-headless maven), or set CC_TEST_KAFKA_BOOTSTRAP to an existing broker"
        )
    return found


def fetch_jars(version: str = KAFKA_VERSION, cache: Path | None = None) -> Path:
    """The broker's jars, fetched with Maven on first use (a lock keeps concurrent
    fetches from colliding)."""
    home = (cache or cache_dir()) / version
    libs = home / "libs"
    if (libs / ".complete").exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / ".complete").exists():
            return libs
        mvn = _tool("mvn")
        _tool("java")
        (home / "pom.xml").write_text(POM.format(kafka=version, log4j=LOG4J_VERSION))
        partial = home / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(home / "pom.xml"),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            raise KafkaUnavailableError(
                f"fetching Kafka {version} with Maven failed:\n{result.stdout[-3000:]}"
                f"\n{result.stderr[-3000:]}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        (libs / ".complete").write_text(version + "\n")
    return libs


class LocalKafka:
    """One single-node KRaft broker in a temporary directory."""

    def __init__(self, *, version: str = KAFKA_VERSION, heap_mb: int = 512) -> None:
        self.version = version
        self.heap_mb = heap_mb
        self.port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cc-kafka-"))
        self.log = self.dir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, libs: Path, *args: str) -> list[str]:
        return [
            _tool("java"),
            f"-Xms{min(256, self.heap_mb)}m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseSerialGC",  # a small broker on a small machine: no GC threads to spare
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def _write_config(self) -> Path:
        (self.dir / "log4j2.properties").write_text(LOG4J2.format(log=self.log))
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.dir / "data"),
            "auto.create.topics.enable": "false",
            # one node: every internal topic has one replica
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # tests kill workers: let groups notice quickly, and start without delay
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
        }
        path = self.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        return path

    def start(self, timeout: float = 120.0) -> str:
        libs = fetch_jars(self.version)
        config = self._write_config()
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formatted = subprocess.run(
            self._java(
                libs,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                # "=": a random id may start with "-", which argparse would take for an option
                f"--cluster-id={cluster_id}",
                "-c",
                str(config),
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if formatted.returncode != 0:
            raise KafkaUnavailableError(
                f"formatting the KRaft storage failed:\n{formatted.stdout}\n{formatted.stderr}"
            )
        with open(self.dir / "stdout.log", "wb") as out:
            self._process = subprocess.Popen(
                self._java(libs, "kafka.Kafka", str(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is for us, not the JVM
                preexec_fn=_die_with_parent(),
            )
        self._wait_started(timeout)
        return self.bootstrap

    def _wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise KafkaUnavailableError(f"the Kafka broker exited:\n{self._tail()}")
            if self.log.exists() and STARTED in self.log.read_text(errors="replace"):
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=1),
                ):
                    return
            time.sleep(0.2)
        self.stop()
        raise KafkaUnavailableError(f"the Kafka broker did not start in {timeout:.0f} s")

    def _tail(self) -> str:
        parts = []
        for name in ("stdout.log", "server.log"):
            path = self.dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._process = None
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> int:
    broker = LocalKafka()
    print(f"starting Kafka {broker.version} (jars in {cache_dir()}) ...", flush=True)
    broker.start()
    print(f"CC_KAFKA_BOOTSTRAP={broker.bootstrap}  (Ctrl-C stops and deletes it)", flush=True)
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        signal.sigwait(stop)
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
