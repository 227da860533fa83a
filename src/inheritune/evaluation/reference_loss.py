"""The reference's val loss on a prepared data folder: the one yardstick every train run reports,
cached under a key of reference, val set and yardstick (the reference's forward pass over the val
set is not free, and every arm compares against the same number).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from transformers import PreTrainedModel

from inheritune.atomic import (
    atomic_write_json,
    read_json,
)
from inheritune.data.shards import TokenData
from inheritune.evaluation.val_loss import YARDSTICK, val_loss
from inheritune.models.families import num_layers
from inheritune.models.loading import parameter_count


def data_key(data: TokenData) -> str:
    """Identifies the validation set: tokenizer plus the val split's shards and sizes."""
    val = json.dumps(data.manifest["splits"]["val"], sort_keys=True)
    return hashlib.sha256(f"{data.fingerprint}|{val}".encode()).hexdigest()[:16]


def reference_val_loss(model: PreTrainedModel, name: str, data: TokenData, cache: Path, batch_size: int = 8) -> dict:
    """The reference's val loss: the same yardstick every train run reports.

    Cached in ``cache`` under a key of reference, val set and yardstick: the 30-layer forward
    pass over the val set is not free, and every arm compares against the same number.
    """
    key = {"reference": name, "data": data_key(data), "yardstick": YARDSTICK}
    if cache.is_file():
        stored = read_json(cache, "reference cache")
        if stored.get("key") == key:
            return stored["result"]
    start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = val_loss(model.to(device), data, batch_size=batch_size)  # type: ignore[arg-type]  # wraps: .to unbound
    model.to("cpu")  # type: ignore[arg-type]  # functools.wraps types PreTrainedModel.to unbound
    result.update(layers=num_layers(model.config), params=parameter_count(model), wall_time=time.perf_counter() - start)
    atomic_write_json(cache, {"key": key, "result": result})
    return result
