"""Byte-for-byte scans of everything the product wrote, for plaintext personal data."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg


def needles(*values: str) -> list[bytes]:
    """The byte patterns a value could be stored as: UTF-8 as given, lower and upper case."""
    found: set[bytes] = set()
    for value in values:
        for variant in {value, value.lower(), value.upper()}:
            found.add(variant.encode())
    return sorted(found)


def scan_files(root: Path, patterns: Iterable[bytes]) -> list[str]:
    """Every (file, pattern) hit under ``root``."""
    hits = []
    patterns = list(patterns)
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        hits.extend(f"{path}: {p!r}" for p in patterns if p in data)
    return hits


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def scan_postgres(url: str, patterns: Iterable[bytes]) -> tuple[list[str], list[str]]:
    """Every (table, pattern) hit in every table of the database; also returns the tables."""
    patterns = list(patterns)
    hits: list[str] = []
    with psycopg.connect(url) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                blob = b"\x00".join(_as_bytes(v) for v in row)
                hits.extend(f"{table}: {p!r}" for p in patterns if p in blob)
    return hits, tables
