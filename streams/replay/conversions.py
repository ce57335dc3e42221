"""The ground truth of a backtest: which lead converted when, from a CSV or JSONL file
(``--conversions``). A bad row stops the command with its line number: metrics computed
on a partly read ground truth would look right and be wrong."""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path
from typing import Any

import orjson

from schemas.times import parse_time_ms
from streams.jsonl import JsonlError, read_bytes, split_lines

from .errors import ReplayError


def load_conversions(path: Path) -> list[tuple[str, int]]:
    """``(lead_id, converted_at_ms)`` rows from a CSV file (header with ``lead_id`` and
    ``converted_at``; other columns ignored) or a JSONL file (objects with those keys).
    ``.gz`` is fine, so is a UTF-8 byte order mark."""
    try:
        data = read_bytes(path)
    except JsonlError as exc:
        raise ReplayError(str(exc)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReplayError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if text.lstrip().startswith("{"):
        return _conversions_jsonl(path, data.removeprefix(codecs.BOM_UTF8))
    return _conversions_csv(path, text)


def _conversion_row(path: Path, line: int, lead_id: Any, converted_at: Any) -> tuple[str, int]:
    if not isinstance(lead_id, str) or not lead_id:
        raise ReplayError(f"{path}: line {line}: lead_id: expected a non-empty string")
    if not isinstance(converted_at, str):
        raise ReplayError(f"{path}: line {line}: converted_at: expected an RFC 3339 string")
    try:
        return lead_id, parse_time_ms(converted_at)
    except ValueError as exc:
        raise ReplayError(f"{path}: line {line}: converted_at: {exc}") from None


def _conversions_csv(path: Path, text: str) -> list[tuple[str, int]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"lead_id", "converted_at"} - set(reader.fieldnames or ())
    if missing:
        raise ReplayError(
            f"{path}: line 1: the CSV header needs lead_id and converted_at "
            f"(missing: {', '.join(sorted(missing))})"
        )
    return [
        _conversion_row(path, reader.line_num, row["lead_id"], row["converted_at"])
        for row in reader
    ]


def _conversions_jsonl(path: Path, data: bytes) -> list[tuple[str, int]]:
    rows = []
    for line_no, line in split_lines(data):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ReplayError(f"{path}: line {line_no}: not valid JSON: {exc}") from None
        if not isinstance(record, dict):
            raise ReplayError(f"{path}: line {line_no}: expected a JSON object")
        rows.append(
            _conversion_row(path, line_no, record.get("lead_id"), record.get("converted_at"))
        )
    return rows
