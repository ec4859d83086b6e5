"""A fingerprint of the train dataset, stored in every checkpoint, so that resuming with a grown, shrunk or changed
dataset is refused instead of silently training some rows twice and others never.

``data_fingerprint(dataset)`` is cheap (computed once per ``train()``, never a pass over the rows):

* ``num_rows``;
* ``rows_sha256``: a hash of up to 64 rows spread evenly over the dataset (first and last included), read
  without any transform (``with_format(None)`` for a ``datasets.Dataset``), for a ``datasets.Dataset`` or a
  list/tuple of rows. Other map-style datasets are not indexed (their ``__getitem__`` may be slow or random);
* ``lengths_sha256``: a hash of every row's length when the lengths are cheap to read (an Arrow
  ``input_ids``/length column, a list of rows) — a changed truncation shows here even in rows not sampled;
* ``arrow_fingerprint``: the ``datasets.Dataset._fingerprint``, recorded for the message only: datasets falls
  back to a random one when it cannot hash a transform, so a different value alone does not refuse a resume.

``fingerprint_mismatches(saved, now)`` names what changed, for the resume check.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from .samplers import dataset_lengths

_SAMPLE_ROWS = 64


def _jsonable(value):
    """Tensors and arrays as lists, bytes and images by content; anything else by its type only (a repr may hold
    a memory address, which would differ from one process to the next)."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, (bytes, bytearray)):
        return hashlib.sha256(value).hexdigest()
    tobytes = getattr(value, "tobytes", None)  # PIL images
    if callable(tobytes):
        try:
            return hashlib.sha256(tobytes()).hexdigest()
        except Exception:
            pass
    return f"<{type(value).__name__}>"


def _rows(dataset, indices: list[int]):
    if hasattr(dataset, "with_format") and hasattr(dataset, "column_names"):  # datasets.Dataset: raw rows
        return dataset.with_format(None)[indices]
    if isinstance(dataset, (list, tuple)):
        return [dataset[i] for i in indices]
    return None


def data_fingerprint(dataset: Any, length_column_name: str = "length") -> dict | None:
    """See the module docstring; None for a dataset without a length (an iterable dataset)."""
    try:
        n = len(dataset)
    except TypeError:
        return None
    fp: dict = {"num_rows": int(n)}
    arrow = getattr(dataset, "_fingerprint", None)
    if isinstance(arrow, str):
        fp["arrow_fingerprint"] = arrow
    if n:
        indices = sorted({int(i) for i in np.linspace(0, n - 1, min(n, _SAMPLE_ROWS))})
        try:
            rows = _rows(dataset, indices)
        except Exception:  # a dataset that cannot be read this way: the length alone is checked
            rows = None
        if rows is not None:
            text = json.dumps(rows, sort_keys=True, default=_jsonable, separators=(",", ":"))
            fp["rows_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        try:
            lengths = dataset_lengths(dataset, length_column_name, allow_slow=False)
        except Exception:
            lengths = None
        if lengths is not None:
            fp["lengths_sha256"] = hashlib.sha256(np.ascontiguousarray(lengths, dtype=np.int64).tobytes()).hexdigest()
    return fp


def fingerprint_mismatches(saved: dict | None, now: dict | None) -> list[str]:
    """What differs between the checkpoint's train dataset and this one (empty when either is unknown)."""
    if not isinstance(saved, dict) or not isinstance(now, dict):
        return []
    out = []
    if saved.get("num_rows") != now.get("num_rows"):
        change = "grew" if (now.get("num_rows") or 0) > (saved.get("num_rows") or 0) else "shrank"
        out.append(f"train_dataset {change}: checkpoint {saved.get('num_rows')} rows, now {now.get('num_rows')}")
        return out
    changed = [what for key, what in (("rows_sha256", "row contents"), ("lengths_sha256", "row lengths"))
               if saved.get(key) and now.get(key) and saved[key] != now[key]]
    if changed:
        arrow = ""
        if saved.get("arrow_fingerprint") and now.get("arrow_fingerprint"):
            arrow = f"; Arrow fingerprint {saved['arrow_fingerprint']} then, {now['arrow_fingerprint']} now"
        out.append(f"train_dataset changed: same {now.get('num_rows')} rows but different {' and '.join(changed)}"
                   f"{arrow}")
    return out
