"""The training loader: deterministic windows, disjoint across ranks, exact across shard borders."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_data_dir
from inheritune.data.loader import TrainLoader
from inheritune.data.shards import open_data
from inheritune.errors import InherituneError


def _split_train(path, parts: int) -> np.ndarray:
    """Re-cut the train split into several shards (same stream) and return the stream."""
    manifest = json.loads((path / "manifest.json").read_text())
    stream = np.fromfile(path / "train-00000.bin", dtype=np.uint16)
    (path / "train-00000.bin").unlink()
    names, counts = [], []
    for i, piece in enumerate(np.array_split(stream, parts)):
        piece.tofile(path / f"train-{i:05d}.bin")
        names.append(f"train-{i:05d}.bin")
        counts.append(len(piece))
    manifest["splits"]["train"].update(shards=names, shard_tokens=counts)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return stream


@pytest.fixture(scope="module")
def data(tmp_path_factory, tokenizer):
    path = make_data_dir(tmp_path_factory.mktemp("data"), tokenizer, n_docs=120, val_docs=10)
    stream = _split_train(path, 3)
    return open_data(path), stream


def test_windows_are_stream_slices_across_shard_borders(data):
    tokens, stream = data
    loader = TrainLoader(tokens, seq_len=32, batch_size=4, sequences_per_step=4, seed=1)
    border = len(np.array_split(stream, 3)[0])
    crossed = False
    for step in range(50):
        for row in loader.batch(step, 0).numpy():
            starts = [s for s in range(len(stream) - 32) if np.array_equal(stream[s:s + 33], row)]
            assert starts, "a window is not a contiguous slice of the train stream"
            crossed |= any(s < border < s + 33 for s in starts)
    assert crossed, "no window crossed a shard border in 200 draws"


def test_same_seed_same_batches_and_ranks_split_the_single_process_batch(data):
    tokens, _ = data
    one = TrainLoader(tokens, 16, batch_size=4, sequences_per_step=8, seed=3)
    again = TrainLoader(tokens, 16, batch_size=4, sequences_per_step=8, seed=3)
    other = TrainLoader(tokens, 16, batch_size=4, sequences_per_step=8, seed=4)
    assert one.micro_steps == 2
    assert torch.equal(one.batch(5, 1), again.batch(5, 1))
    assert not torch.equal(one.batch(5, 1), other.batch(5, 1))
    # Two ranks with micro-batch 2 x 2 micro-steps = the same 8 windows as one process.
    ranks = [TrainLoader(tokens, 16, batch_size=2, sequences_per_step=8, seed=3, rank=r, world=2) for r in range(2)]
    single = torch.cat([one.batch(5, m) for m in range(2)])
    split = torch.cat([ranks[r].batch(5, m) for m in range(2) for r in range(2)])
    assert torch.equal(single, split)
    assert not torch.equal(ranks[0].batch(5, 0), ranks[1].batch(5, 0))


def test_an_epoch_visits_every_aligned_window_once(data):
    tokens, stream = data
    loader = TrainLoader(tokens, 16, batch_size=1, sequences_per_step=1, seed=0)
    offset, perm = loader._order(0)
    assert 0 <= offset < 16 and sorted(perm.tolist()) == list(range(loader.windows))
    for step in range(loader.windows):
        start = offset + 16 * int(perm[step])
        assert torch.equal(loader.batch(step, 0)[0], torch.from_numpy(stream[start:start + 17].astype(np.int64)))
    assert loader._order(1)[0] != offset or not np.array_equal(loader._order(1)[1], perm)


def test_too_little_data_is_a_one_line_error(data):
    tokens, stream = data
    with pytest.raises(InherituneError, match="too few for seq_len"):
        TrainLoader(tokens, seq_len=len(stream), batch_size=1, sequences_per_step=1)
