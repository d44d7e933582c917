"""Reading CSV / JSONL manifests into rows (`manifest` builder), and clip frames from folders."""

import csv
import dataclasses
import json
import os
import re

import numpy as np

from jaxav.data.builders import common
from jaxav.errors import DatasetError

_PATH_KEYS = ("path", "file", "filename", "audio", "wav")
_LABEL_KEYS = ("labels", "label")
_FRAME_KEYS = ("frames", "frames_dir", "video")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass
class Row:
    """One manifest entry: audio path (absolute, and as written), labels, split, frames folder."""

    path: str
    shown: str
    labels: list[str]
    split: str
    frames: str | None
    line: int


def _split_labels(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        items = re.split(r"[;,]", str(value))
    return [s.strip() for s in items if s.strip()]


def _first(record: dict, keys: tuple[str, ...]):
    for key in keys:
        if key in record and record[key] not in (None, ""):
            return record[key]
    return None


def _records(path: str) -> list[tuple[int, dict]]:
    """(line number, {lower-case column: value}) for each entry of a CSV/TSV/JSONL/JSON file."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read manifest {path} ({e})") from e
    ext = os.path.splitext(path)[1].lower()
    stripped = text.lstrip()
    if ext == ".json" or (ext not in (".csv", ".tsv", ".jsonl", ".ndjson") and stripped[:1] == "["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"cannot read manifest {path}: invalid JSON ({e})") from e
        data = data.get("data", data) if isinstance(data, dict) else data
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DatasetError(
                f"manifest {path}: expected a list of objects (or {{'data': [...]}})"
            )
        return [(i + 1, {str(k).lower(): v for k, v in r.items()}) for i, r in enumerate(data)]
    if ext in (".jsonl", ".ndjson") or (ext not in (".csv", ".tsv") and stripped[:1] == "{"):
        out = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"manifest {path} line {i}: invalid JSON ({e.msg})") from e
            if not isinstance(record, dict):
                raise DatasetError(f"manifest {path} line {i}: expected a JSON object")
            out.append((i, {str(k).lower(): v for k, v in record.items()}))
        return out
    delimiter = "\t" if ext == ".tsv" else ","
    try:
        reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
        rows = []
        for record in reader:
            if None in record:
                raise DatasetError(
                    f"manifest {path} line {reader.line_num}: more fields than the header has; "
                    'quote a field holding commas ("dog,cat") or separate labels with ";"'
                )
            rows.append(
                (reader.line_num, {k.strip().lower(): (v or "").strip() for k, v in record.items()})
            )
    except csv.Error as e:
        raise DatasetError(f"cannot read manifest {path}: malformed CSV ({e})") from e
    header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    if header and not set(header) & set(_PATH_KEYS):
        raise DatasetError(
            f"manifest {path} has no 'path' column (header: {header}); the first row must "
            "name the columns: path[,labels][,split][,frames]"
        )
    return rows


def read_manifest(path: str, default_split: str | None = None) -> list[Row]:
    """Parses a manifest into `Row`s (paths resolved against the manifest's folder).

    Split of a row: its `split` value, else `default_split`, else `train` when it has labels and
    `unlabeled` when not. Unlabelled rows need no label column at all.

    Raises:
      DatasetError: unreadable file, no `path` column/key, an unknown split, no rows.
    """
    base = os.path.dirname(os.path.abspath(path))
    records = _records(path)
    if not records:
        raise DatasetError(f"manifest {path} has no rows")
    if default_split is not None and common.canonical_split(default_split) is None:
        raise DatasetError(f"unknown split {default_split!r}; use one of {common.SPLITS}")
    rows = []
    for line, record in records:
        shown = _first(record, _PATH_KEYS)
        if shown is None:
            raise DatasetError(
                f"manifest {path} line {line}: no 'path' (columns: {sorted(record)})"
            )
        shown = str(shown)
        labels = _split_labels(_first(record, _LABEL_KEYS))
        split_value = _first(record, ("split",))
        if split_value is not None:
            split = common.canonical_split(str(split_value))
            if split is None:
                raise DatasetError(
                    f"manifest {path} line {line}: unknown split {split_value!r}; "
                    f"use one of {', '.join(common.SPLITS)}"
                )
        elif default_split is not None:
            split = common.canonical_split(default_split)
        else:
            split = "train" if labels else "unlabeled"
        frames = _first(record, _FRAME_KEYS)
        rows.append(
            Row(
                path=os.path.join(base, os.path.expanduser(shown)),
                shown=shown,
                labels=labels,
                split=split,
                frames=os.path.join(base, os.path.expanduser(str(frames))) if frames else None,
                line=line,
            )
        )
    return rows


def load_frames(folder: str, size: int, max_frames: int) -> np.ndarray:
    """Image files of `folder` (sorted by name) -> uint8[T, size, size, 3], T <= max_frames.

    More than `max_frames` images are subsampled evenly. Raises ValueError with the reason.
    """
    from PIL import Image  # optional dependency (comes with matplotlib)

    if not os.path.isdir(folder):
        raise ValueError(f"missing frames folder {folder}")
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f"no frames ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    if len(names) > max_frames:
        names = [names[i] for i in np.linspace(0, len(names) - 1, max_frames).round().astype(int)]
    frames = []
    for name in names:
        try:
            with Image.open(os.path.join(folder, name)) as im:
                im = im.convert("RGB").resize((size, size), Image.BILINEAR)
                frames.append(np.asarray(im, np.uint8))
        except Exception as e:  # noqa: BLE001 - PIL raises many types for bad images
            raise ValueError(f"cannot decode frame {name} ({e})") from e
    return np.stack(frames)
