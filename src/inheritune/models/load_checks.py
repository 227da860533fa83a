"""What a loaded model must hold: exactly its files' tensors. transformers fills tensors the config
implies but the file lacks with random values, so every load asks for its loading report and
refuses missing, unexpected and mismatched tensors in one line naming the tensor, the file and
both shapes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors import safe_open
from transformers import (
    PreTrainedModel,
)

from inheritune.error_lines import one_line
from inheritune.errors import InherituneError
from inheritune.models.families import declared_layers
from inheritune.models.model_source import Source, where

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def _layers(keys) -> int:
    """How many blocks a set of tensor names covers (distinct block indices)."""
    return len({int(m.group(1)) for m in map(_LAYER.search, keys) if m})


def _weight_files(source: Source) -> dict[str, str]:
    """Tensor name -> the file holding it, from the safetensors headers (read, not loaded)."""
    if source.kind != "folder":
        return {}
    folder = Path(source.location)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            return {k: str(folder / v) for k, v in json.loads(index.read_text())["weight_map"].items()}
        except (OSError, ValueError, KeyError, AttributeError):
            return {}
    files = {}
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(path, framework="pt") as f:
                files.update({k: str(path) for k in f.keys()})  # noqa: SIM118 -- safe_open is no dict: keys() only
        except Exception:  # a broken file: transformers' own error names it
            continue
    return files


def _file_of(key: str, files: dict[str, str], source: Source) -> str:
    """The file that holds (or should hold) ``key``: its shard, the only file, or the reference."""
    if key in files:
        return files[key]
    matches = [f for k, f in files.items() if key.endswith("." + k) or k.endswith("." + key)]
    if matches:
        return matches[0]
    distinct = sorted(set(files.values()))
    if len(distinct) == 1:
        return distinct[0]
    index = Path(source.location) / "model.safetensors.index.json"
    return str(index) if source.kind == "folder" and index.is_file() else where(source)


def _natural(key: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _shape(shape) -> str:
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


def _details(config, count: int, keys) -> str:
    """ " (and 23 more tensors; the config names 6 layers, the file holds 4)", the parts that apply."""
    parts = [f"and {count - 1} more tensors"] if count > 1 else []
    configured, held = declared_layers(config), _layers(keys)
    if configured is not None and held and held != configured:
        parts.append(f"the config names {configured} layers, the file holds {held}")
    return f" ({'; '.join(parts)})" if parts else ""


def check_loaded(model: PreTrainedModel, info: dict, source: Source) -> None:
    """Refuse a load whose report has missing, unexpected or mismatched tensors, in one line."""
    missing = sorted(info.get("missing_keys") or (), key=_natural)
    unexpected = sorted(info.get("unexpected_keys") or (), key=_natural)
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda m: _natural(m[0]))
    errors = [e for e in info.get("error_msgs") or () if str(e).strip()]
    if not (missing or unexpected or mismatched or errors):
        return
    files = _weight_files(source)
    expected = list(model.state_dict())
    if mismatched:
        key, in_file, in_model = mismatched[0]
        more = f" (and {len(mismatched) - 1} more tensors)" if len(mismatched) > 1 else ""
        raise InherituneError(
            f"{key} has shape {_shape(in_file)} in {_file_of(key, files, source)} but the config "
            f"implies {_shape(in_model)}{more}: the weights do not match config.json"
        )
    if missing:
        detail = _details(model.config, len(missing), set(expected) - set(missing))
        raise InherituneError(
            f"{missing[0]} is missing from {_file_of(missing[0], files, source)}{detail}: "
            "refusing to fill it with random weights"
        )
    if unexpected:
        detail = _details(model.config, len(unexpected), set(expected) | set(unexpected))
        raise InherituneError(
            f"{unexpected[0]} is in {_file_of(unexpected[0], files, source)} but the config implies "
            f"no such tensor{detail}: the weights do not match config.json"
        )
    raise InherituneError(f"could not load the weights of {where(source)}: {one_line(str(errors[0]), 300)}")
