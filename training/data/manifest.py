"""Manifests: one JSONL (or CSV) row per image, the format the build writes and users may supply.

Columns, all strings unless noted:

- `image` (required): image path, relative to the manifest's folder or absolute.
- `label`: class name, for classification.
- `caption`: text, for retrieval. Pretraining rows carry `captions` (a JSON list) instead.
- `image_id`: rows with the same `image_id` are positives of each other in retrieval training;
  it defaults to the `image` path.
- `mask`: PNG of class indices for segmentation (0 = background, i = class i - 1 in `classes.json`).
- `labels` (JSON list): class names pasted into a segmentation composite.

The build adds `key` (emoji code points), `concept` (the base emoji's key) and `style`; other
columns are kept in `ManifestRecord.fields` and otherwise ignored.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import atomic_write_text

SUFFIXES = (".jsonl", ".csv")


@dataclass(frozen=True)
class ManifestRecord:
    """One manifest row with its paths resolved against the manifest's folder."""

    image: Path
    label: str | None = None
    captions: tuple[str, ...] = ()
    image_id: str = ""
    mask: Path | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def caption(self) -> str | None:
        """The first caption, or None for rows without text."""
        return self.captions[0] if self.captions else None


def load_manifest(path: str | Path) -> list[ManifestRecord]:
    """Read a JSONL or CSV manifest, for example a user's own set to evaluate as an extra OOD set.

    Args:
        path: A `.jsonl` file (one JSON object per line) or a `.csv` file with a header row.

    Returns:
        The rows in file order.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: The suffix is unknown, a row is not valid JSON, or a row lacks `image`.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"manifest {path} has suffix {path.suffix!r}; expected one of {SUFFIXES}.")
    if not path.is_file():
        raise FileNotFoundError(
            f"manifest {path} not found; build it with `radapter data build` or fix the path."
        )
    rows = _read_jsonl(path) if path.suffix == ".jsonl" else _read_csv(path)
    return [_to_record(row, path, line) for line, row in rows]


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}:{line_number} is not valid JSON ({error.msg}); fix or remove that line."
            ) from error
        if not isinstance(row, dict):
            raise ValueError(
                f"{path}:{line_number} is a JSON {type(row).__name__}; each line must be an object."
            )
        rows.append((line_number, row))
    return rows


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        # Line 1 is the header, so data rows start at line 2.
        return [(line_number, dict(row)) for line_number, row in enumerate(reader, start=2)]


def _to_record(row: dict[str, Any], manifest: Path, line: int) -> ManifestRecord:
    image = row.get("image")
    if not image or not isinstance(image, str):
        raise ValueError(f"{manifest}:{line} has no `image` column; every row needs an image path.")
    captions = row.get("captions")
    if isinstance(captions, list):
        caption_tuple = tuple(str(text) for text in captions)
    elif row.get("caption"):
        caption_tuple = (str(row["caption"]),)
    else:
        caption_tuple = ()
    mask = row.get("mask")
    return ManifestRecord(
        image=_resolve(manifest, image),
        label=str(row["label"]) if row.get("label") not in (None, "") else None,
        captions=caption_tuple,
        image_id=str(row.get("image_id") or image),
        mask=_resolve(manifest, mask) if mask else None,
        fields=row,
    )


def _resolve(manifest: Path, value: str) -> Path:
    candidate = Path(value)
    return candidate if candidate.is_absolute() else manifest.parent / candidate


def write_manifest(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write `rows` as JSONL, sorted by `image`, with sorted keys so equal inputs give equal bytes.

    Returns:
        The number of rows written.
    """
    ordered = sorted(rows, key=lambda row: (row["image"], json.dumps(row, sort_keys=True)))
    lines = [json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")) for row in ordered]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)
