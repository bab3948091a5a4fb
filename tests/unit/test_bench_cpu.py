"""The benchmarks' CPU meter: who used the machine's cores while a benchmark measured."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import CpuMeter, _command_group

BURN = """
import sys, time
sys.stdin.readline()
end = time.process_time() + 0.4
while time.process_time() < end:
    pass
print("burnt", flush=True)
sys.stdin.read()
"""


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_processes_are_grouped_by_their_command_line() -> None:
    python = "/work/.venv/bin/python"
    assert _command_group(f"{python} -m infra.cli serve --port 8080") == "contact-centre serve"
    assert _command_group(f"{python} -m infra.cli worker relay") == "contact-centre worker relay"
    assert (
        _command_group(f"{python} -m infra.cli webhooks dispatch --data-dir /d")
        == "contact-centre webhooks dispatch"
    )
    assert _command_group("postgres: cc bench 127.0.0.1(5432) idle") == "PostgreSQL"
    assert _command_group("/usr/lib/postgresql/15/bin/postgres -D /tmp/pg") == "PostgreSQL"
    assert _command_group("/usr/bin/java -Xmx768m -cp /jars/* kafka.Kafka s.properties") == (
        "Kafka broker"
    )
    assert _command_group("/usr/bin/java -jar other.jar") == "other"
    assert _command_group("") == "other"


def test_the_meter_charges_each_process_group_with_the_cpu_it_burnt() -> None:
    # a child that looks like a contact-centre command to the meter (one no other process
    # runs) burns 0.4 s of CPU once told to, says so, then waits to be told to end (a
    # process gone before the meter stops is not seen)
    with subprocess.Popen(
        [sys.executable, "-c", BURN, "infra.cli", "cpu-probe"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:  # leaving closes its pipes (it ends) and waits for it
        assert child.stdin is not None
        assert child.stdout is not None
        meter = CpuMeter()
        meter.start()
        child.stdin.write("go\n")
        child.stdin.flush()
        _burn(0.3)  # this process: the benchmark's client
        assert child.stdout.readline() == "burnt\n"
        meter.stop()
    # each has its own CPU time, not the other's (nor the machine's)
    assert 0.28 <= meter.used["bench client"] < 0.6
    assert 0.38 <= meter.used["contact-centre cpu-probe"] < 0.7

    lines = meter.report(100, "interaction", main="contact-centre cpu-probe")
    assert lines[0].startswith("CPU (")
    assert "contact-centre cpu-probe" in lines[0]
    # per interaction, the probe's share of the CPU used
    probe_ms = 1000 * meter.used["contact-centre cpu-probe"] / 100
    assert f"(contact-centre cpu-probe {probe_ms:.2f} ms)" in lines[1]
