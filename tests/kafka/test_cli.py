"""The scaled-mode commands, run as users run them, and the compose file kept true."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_the_worker_commands_and_the_kafka_settings() -> None:
    result = run_cli("--help", env={})
    assert result.returncode == 0
    assert "worker" in result.stdout
    assert "CC_KAFKA_BOOTSTRAP" in result.stdout
    workers = run_cli("worker", "--help", env={})
    for kind in ("relay", "projections", "workflows"):
        assert kind in workers.stdout


def test_a_worker_without_kafka_is_a_configuration_error_not_a_traceback(tmp_path: Path) -> None:
    result = run_cli("worker", "relay", env={"CC_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "configuration error" in result.stderr
    assert "CC_KAFKA_BOOTSTRAP" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_setting_the_compose_file_uses_is_one_the_command_documents() -> None:
    compose = (ROOT / "infra" / "compose.yaml").read_text()
    used = set(re.findall(r"\b(CC_[A-Z_]+):", compose))
    assert {"CC_DATABASE_URL", "CC_MASTER_KEY", "CC_KAFKA_BOOTSTRAP"} <= used
    documented = run_cli("--help", env={}).stdout
    assert [name for name in sorted(used) if name not in documented] == []
    for command in re.findall(r'command: \["contact-centre", ([^\]]+)\]', compose):
        args = [a.strip().strip('"') for a in command.split(",")]
        words = [a for a in args if not a.startswith("-") and not a[0].isdigit()]
        assert run_cli(*words, "--help", env={}).returncode == 0, args
