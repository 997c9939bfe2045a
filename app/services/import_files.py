"""Reading an import file: CSV as Excel and Google Sheets save it, or JSON Lines.

Pure functions of the bytes (no database), run in a thread: once when the file is uploaded (to
refuse an unreadable file before anything is stored, and to count its rows) and again by the
worker that imports it.

- **Encoding**: UTF-8, with or without a byte order mark; anything else is refused whole.
- **CSV**: the separator is `,`, `;` or a tab, whichever the header line has most of (Excel
  writes `;` where the decimal mark is a comma); quoted fields may hold separators, quotes and
  newlines (the standard library's `csv` reads them). The first record is the header.
- **JSON Lines**: one JSON object per line; its keys are the columns.
- **Columns** are matched to fields case-insensitively, trimmed, and whatever spaces, hyphens
  or underscores separate their words (`Contact Email`, `E-Mail`, `contactEmail` are
  `contact_email`, `email`, `contact_email`); an explicit `mapping` (file column -> field,
  or null to ignore a column) takes precedence. Other columns are ignored (an export's `id`,
  `created_at` ...), but for custom fields' columns `cf.<key>` (lower-case key), kept under
  that name for the importer to check against the organization's definitions.
- **Cells** starting with `'` and then `=`, `+`, `-`, `@`, a tab or a carriage return lose the
  `'`: an export neutralises formulas that way, so exported files import unchanged. An empty
  CSV cell is an absent value.
- **Rows** are numbered from 1 in file order, the header not counted, blank lines skipped and
  not counted: row 1 is the first data record (a record whose quoted cells span several lines
  is still one row). Errors name rows this way."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.core.errors import ImportFileInvalid, ImportFormatUnsupported


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


_EXTENSIONS = {".csv": FileFormat.CSV, ".jsonl": FileFormat.JSONL, ".ndjson": FileFormat.JSONL}
_MEDIA_TYPES = {
    "text/csv": FileFormat.CSV,
    "application/csv": FileFormat.CSV,
    "application/vnd.ms-excel": FileFormat.CSV,  # what Windows browsers send for a .csv
    "application/jsonl": FileFormat.JSONL,
    "application/x-ndjson": FileFormat.JSONL,
    "application/x-jsonlines": FileFormat.JSONL,
    "application/jsonlines": FileFormat.JSONL,
}
# Formula triggers an export prefixes with `'` (OWASP CSV injection).
_NEUTRALISED = frozenset("=+-@\t\r")
_SEPARATORS = (",", ";", "\t")


def detect_format(filename: str | None, content_type: str | None) -> FileFormat:
    """The format named by the file's extension, else by its media type; neither known →
    `ImportFormatUnsupported` (415)."""
    name = (filename or "").lower()
    for extension, file_format in _EXTENSIONS.items():
        if name.endswith(extension):
            return file_format
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type in _MEDIA_TYPES:
        return _MEDIA_TYPES[media_type]
    raise ImportFormatUnsupported()


def normalise_column(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def parse_mapping(raw: str | None, fields: Sequence[str]) -> dict[str, str | None]:
    """The `mapping` form field: a JSON object from file column to field (or null: ignore the
    column). Keys are matched like headers; values must be fields of the kind."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ImportFileInvalid("`mapping` must be a JSON object.") from None
    if not isinstance(value, dict):
        raise ImportFileInvalid("`mapping` must be a JSON object.")
    mapping: dict[str, str | None] = {}
    for column, field in value.items():
        if field is not None and (not isinstance(field, str) or field not in fields):
            raise ImportFileInvalid(
                f"`mapping` maps {column!r} to {field!r}, which is not one of: "
                + ", ".join(fields)
                + "."
            )
        mapping[normalise_column(column)] = field
    return mapping


@dataclass(frozen=True, slots=True)
class Record:
    """One data row: `values` by field (absent fields left out), and for each field the file
    column it came from (for error messages); `problem` when the row itself is unreadable."""

    row: int
    values: dict[str, Any]
    columns: dict[str, str]
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedFile:
    records: list[Record]

    @property
    def rows_total(self) -> int:
        return len(self.records)


def parse(
    content: bytes,
    file_format: FileFormat,
    fields: Sequence[str],
    mapping: Mapping[str, str | None],
    required: Sequence[Sequence[str]] = (),
) -> ParsedFile:
    """Every record of the file. `required`: groups of fields of which a CSV header must
    name at least one each (checked up front, since every row would fail); a JSON Lines
    row missing them fails alone."""
    text = _decode(content)
    if file_format is FileFormat.CSV:
        return ParsedFile(list(_csv_records(text, fields, mapping, required)))
    return ParsedFile(list(_jsonl_records(text, fields, mapping)))


def _decode(content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileInvalid(
            f"The file is not UTF-8 text (byte {exc.start + 1} is not valid UTF-8); save it "
            "as CSV UTF-8 or JSON Lines."
        ) from None


CUSTOM_COLUMN = re.compile(r"^cf\.[a-z][a-z0-9_]{0,39}$")


def _field_of(column: str, fields: Sequence[str], mapping: Mapping[str, str | None]) -> str | None:
    key = normalise_column(column)
    if key in mapping:
        return mapping[key]
    if CUSTOM_COLUMN.match(column.strip()):
        return column.strip()
    bare = key.replace("_", "")
    return next((field for field in fields if field.replace("_", "") == bare), None)


def _separator(text: str) -> str:
    header = text.split("\n", 1)[0]
    counts = [header.count(separator) for separator in _SEPARATORS]
    return _SEPARATORS[counts.index(max(counts))] if max(counts) else ","


def _restore(cell: str) -> str:
    if len(cell) > 1 and cell[0] == "'" and cell[1] in _NEUTRALISED:
        return cell[1:]
    return cell


def _csv_records(
    text: str,
    fields: Sequence[str],
    mapping: Mapping[str, str | None],
    required: Sequence[Sequence[str]],
) -> Iterator[Record]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_separator(text))
    try:
        header = next((cells for cells in reader if any(c.strip() for c in cells)), None)
        if header is None:
            raise ImportFileInvalid("The file has no header row.")
        targets: list[str | None] = []
        column_of: dict[str, str] = {}
        for cell in header:
            column = _restore(cell).strip()
            field = _field_of(column, fields, mapping)
            if field is not None and field in column_of:
                raise ImportFileInvalid(
                    f"Columns {column_of[field]!r} and {column!r} both map to {field!r}."
                )
            if field is not None:
                column_of[field] = column
            targets.append(field)
        for group in required:
            if not any(field in column_of for field in group):
                raise ImportFileInvalid(
                    "The header has no column for " + " or ".join(f"`{f}`" for f in group) + "."
                )
        row = 0
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            row += 1
            values: dict[str, Any] = {}
            for field, cell in zip(targets, cells, strict=False):
                if field is not None and cell.strip():
                    values[field] = _restore(cell)
            extra = cells[len(targets) :]
            problem = (
                f"The row has {len(cells)} cells, the header {len(targets)}."
                if any(cell.strip() for cell in extra)
                else None
            )
            yield Record(row, values, column_of, problem)
    except csv.Error as exc:
        raise ImportFileInvalid(f"The CSV cannot be read: {exc}.") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _jsonl_records(
    text: str, fields: Sequence[str], mapping: Mapping[str, str | None]
) -> Iterator[Record]:
    row = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        row += 1
        try:
            value = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except (ValueError, RecursionError) as exc:
            yield Record(row, {}, {}, f"The line is not valid JSON: {exc}.")
            continue
        if not isinstance(value, dict):
            yield Record(row, {}, {}, "The line is not a JSON object.")
            continue
        values: dict[str, Any] = {}
        columns: dict[str, str] = {}
        for key, cell in value.items():
            field = _field_of(key, fields, mapping)
            if field is None:
                continue
            if field in columns:
                yield Record(
                    row, {}, {}, f"Keys {columns[field]!r} and {key!r} both map to {field!r}."
                )
                break
            columns[field] = key
            if cell is not None and cell != "":
                values[field] = cell
        else:
            yield Record(row, values, columns)
