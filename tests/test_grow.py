"""grow: stops at the first matching round and not before, grows from the trained blocks plus the
reference's next ones, survives a SIGKILL in round 2, and refuses bad input in one line."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_data_dir, make_tokenizer, tiny_model
from inheritune import InherituneError, grow_until_matched
from inheritune.data.shards import open_data
from inheritune.evaluation.val_loss import val_loss
from inheritune.models.families import FAMILIES, module
from inheritune.models.loading import load_model
from inheritune.analysis.selection import scoring_windows
from inheritune.growth.grow_config import GrowConfig
from inheritune.growth.blocks import choose_blocks, round_model
from inheritune.commands.train import train
from inheritune.training import TrainConfig

REF_LAYERS = 4
# Small enough for seconds per round, long enough that the curves mean something.
CONFIG = TrainConfig(seq_len=32, batch_size=4, eval_every=4, precision="fp32", peak_flops=1e12, progress=False)
TOKENS_PER_ROUND = 8 * 128  # 8 steps of 4 x 32 tokens
GROW_ARGS = dict(start_layers=1, step_layers=1, max_layers=3, tokens_per_round=TOKENS_PER_ROUND)


def growth(**changes) -> GrowConfig:
    return GrowConfig(**{**GROW_ARGS, **changes})


def grown_to(ref, previous: Path | None, layers: int, mode: str = "reference", by: str = "first-n", data=None):
    """The model a round starts from, as grow builds it: the selector's blocks (scored on the windows
    grow draws from ``data``), then the surgery."""
    trained = load_model(previous) if previous is not None else None
    windows = scoring_windows(data, seed=CONFIG.seed) if data is not None else None
    chosen = choose_blocks(ref, trained, layers, by, windows, "grow")
    return round_model(ref, "reference", trained, chosen["blocks"], mode, seed=0)


def trained_reference(root: Path) -> tuple[Path, Path]:
    """A 4-layer reference trained for 150 steps on generated text, and the data folder it was trained on."""
    tok = make_tokenizer()
    data = make_data_dir(root / "data", tok, n_docs=400, val_docs=40)
    run = train(tiny_model("llama", REF_LAYERS, seed=1), data, root / "reference-run",
                TrainConfig(seq_len=32, batch_size=8, steps=150, lr=3e-3, eval_every=150, precision="fp32",
                            peak_flops=1e12, progress=False), tokenizer=tok)
    return run.model_dir, data


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("grow")
    reference, data = trained_reference(root)
    # Never matched (margin -100): all three rounds run, so every later test knows each round's loss.
    full = grow_until_matched(reference, data, root / "full", growth(margin=-100.0), CONFIG, log=lambda m: None)
    return root, reference, data, full


def test_never_matched_runs_to_max_layers_with_a_clear_verdict(setup):
    root, reference, data, full = setup
    assert not full.matched
    assert [r.layers for r in full.rounds] == [1, 2, 3]
    assert full.layers == 3 and full.verdict.startswith("not matched")
    assert full.tokens == 3 * TOKENS_PER_ROUND == sum(r.tokens for r in full.rounds)
    summary = json.loads((root / "full" / "summary.json").read_text())
    assert summary["rounds"] == [r.to_json() for r in full.rounds] and summary["matched"] is False
    for r in full.rounds:  # the summary's numbers are the round runs' own results
        stored = json.loads((r.run_dir / "result.json").read_text())
        assert r.val_loss == stored["final_val_loss"] and r.tokens == stored["tokens"]
    # The model handed back is the last round's, weight for weight.
    last = load_model(full.rounds[-1].run_dir / "final")
    handed = load_model(full.model_dir)
    assert all(torch.equal(v, handed.state_dict()[k]) for k, v in last.state_dict().items())
    # Training helps, and the reference's loss is measured once and cached.
    assert full.rounds[-1].val_loss < full.rounds[0].start_val_loss
    cached = json.loads((root / "full" / "reference.json").read_text())["result"]["loss"]
    ref_now = val_loss(load_model(reference), open_data(data), batch_size=CONFIG.batch_size)
    assert cached == full.reference_val_loss == pytest.approx(ref_now["loss"], abs=1e-6)


def test_stops_at_the_first_round_that_meets_the_target_and_not_before(setup):
    root, reference, data, full = setup
    losses = [r.val_loss for r in full.rounds]
    assert losses[1] < losses[0], "growing to 2 layers should lower the loss (premise of this test)"
    # A target between round 1's and round 2's losses: round 1 misses it, round 2 meets it.
    target = (losses[0] + losses[1]) / 2
    margin = target - full.reference_val_loss
    grown = grow_until_matched(reference, data, root / "stop", growth(margin=margin), CONFIG, log=lambda m: None)
    assert grown.matched and grown.layers == 2 and len(grown.rounds) == 2
    assert [r.matched for r in grown.rounds] == [False, True]
    assert [r.val_loss for r in grown.rounds] == losses[:2]  # same seeds, same curves
    assert grown.verdict.startswith("matched: 2 layers")
    # A generous margin stops after round 1.
    easy = grow_until_matched(reference, data, root / "easy", growth(margin=losses[0] - full.reference_val_loss),
                              CONFIG, log=lambda m: None)
    assert easy.matched and [r.layers for r in easy.rounds] == [1]


@pytest.mark.parametrize("mode", ["reference", "duplicate"])
def test_grown_model_keeps_trained_blocks_and_adds_the_right_new_ones(setup, mode):
    root, reference, data, full = setup
    ref = load_model(reference)
    previous = full.rounds[1].run_dir / "final"  # round 2: 2 trained layers
    trained = load_model(previous)
    grown = grown_to(ref, previous, 4, mode)
    blocks = FAMILIES["llama"].blocks
    assert grown.config.num_hidden_layers == 4
    sources = [(trained, 0), (trained, 1)] + ([(ref, 2), (ref, 3)] if mode == "reference" else [(trained, 0), (trained, 1)])
    for i, (src, j) in enumerate(sources):
        mine, theirs = module(grown, f"{blocks}.{i}").state_dict(), module(src, f"{blocks}.{j}").state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), f"block {i} is not {mode} block {j}"
    for path in ("model.embed_tokens", "model.norm", "lm_head"):  # outside the blocks: the trained model's
        assert all(torch.equal(a, b) for a, b in zip(module(grown, path).state_dict().values(),
                                                      module(trained, path).state_dict().values()))


def test_each_round_starts_from_the_grown_model(setup):
    """Round 3's step-0 val loss is exactly that of round 2's trained model grown by the reference's block 2."""
    root, reference, data, full = setup
    start = grown_to(load_model(reference), full.rounds[1].run_dir / "final", 3)
    loss = val_loss(start, open_data(data), batch_size=CONFIG.batch_size)["loss"]
    assert full.rounds[2].start_val_loss == pytest.approx(loss, abs=1e-6)


def _cli(reference, data, out, *extra) -> list[str]:
    return [sys.executable, "-m", "inheritune", "grow", str(reference), "--data", str(data), "--out", str(out),
            "--start-layers", "1", "--step-layers", "1", "--max-layers", "3", "--tokens-per-round", str(TOKENS_PER_ROUND),
            "--margin", "-100", "--seq-len", "32", "--batch-size", "4", "--eval-every", "4", "--precision", "fp32", "--peak-flops", "1e12",
            "--no-progress", *extra]


def test_killed_in_round_two_resumes_to_the_same_result(setup):
    root, reference, data, full = setup
    out = root / "killed"
    # Round 2 checkpoints every 2 steps; kill as soon as one exists, before the round can finish.
    round1 = out / "round-01-01" / "result.json"
    proc = subprocess.Popen(_cli(reference, data, out, "--checkpoint-every", "2"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((out / "round-02-02" / "checkpoints").glob("step-*")):
        assert proc.poll() is None, f"grow ended before round 2 checkpointed: {proc.stderr.read()}"
        assert time.time() < deadline, "round 2 never checkpointed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    round1_written = round1.stat().st_mtime_ns
    assert not (out / "round-02-02" / "result.json").exists() and not (out / "summary.json").exists()

    done = subprocess.run(_cli(reference, data, out, "--checkpoint-every", "2"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "round 1 (1 layers): finished earlier" in done.stdout and round1.stat().st_mtime_ns == round1_written
    summary = json.loads((out / "summary.json").read_text())
    assert [r["layers"] for r in summary["rounds"]] == [1, 2, 3]
    assert [r["val_loss"] for r in summary["rounds"]] == pytest.approx([r.val_loss for r in full.rounds], abs=1e-5)
    assert summary["reference_val_loss"] == full.reference_val_loss


def test_bad_input_is_one_line_and_touches_nothing(setup, tmp_path):
    root, reference, data, full = setup
    # Deeper than the 4-layer reference (the later options replace the earlier ones).
    r = subprocess.run(_cli(reference, data, tmp_path / "bad", "--start-layers", "5", "--max-layers", "6"),
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "has 4 layers" in r.stderr, r.stderr
    # A finished run with other settings is refused, and left as it was.
    before = (root / "full" / "summary.json").read_bytes()
    with pytest.raises(InherituneError, match=r"different settings \(train differ\)"):
        grow_until_matched(reference, data, root / "full", growth(margin=-100.0),
                           TrainConfig(**{**CONFIG.__dict__, "lr": 1e-3}), log=lambda m: None)
    assert (root / "full" / "summary.json").read_bytes() == before
    # Data tokenized with another tokenizer.
    other = make_data_dir(tmp_path / "other-data", make_tokenizer(300))
    with pytest.raises(InherituneError, match="tokenizer mismatch"):
        grow_until_matched(reference, other, tmp_path / "mismatch", growth(), CONFIG, log=lambda m: None)


def test_first_last_derives_first_and_last_blocks_and_grows_before_the_tail(setup, tmp_path):
    root, reference, data, full = setup
    ref = load_model(reference)
    blocks = FAMILIES["llama"].blocks
    first = grown_to(ref, None, 3, by="first-last:1")  # reference blocks 0, 1 and 3
    assert first.config.inheritune["blocks"] == [0, 1, 3]
    for i, j in enumerate((0, 1, 3)):
        assert all(torch.equal(a, b) for a, b in zip(module(first, f"{blocks}.{i}").state_dict().values(),
                                                      module(ref, f"{blocks}.{j}").state_dict().values()))
    previous = tmp_path / "round1"
    first.save_pretrained(previous)
    grown = grown_to(ref, previous, 4, by="first-last:1")  # 0, 1, new = ref 2, tail = ref 3
    for i, (src, j) in enumerate(((first, 0), (first, 1), (ref, 2), (first, 2))):
        assert all(torch.equal(a, b) for a, b in zip(module(grown, f"{blocks}.{i}").state_dict().values(),
                                                      module(src, f"{blocks}.{j}").state_dict().values())), i
    with pytest.raises(InherituneError, match="cannot drop 3 blocks: only 2 may go"):
        grow_until_matched(reference, data, tmp_path / "bad", growth(start_layers=1), CONFIG, by="first-last:2",
                           log=lambda m: None)


def test_grow_distils_from_the_reference_in_memory(setup, tmp_path):
    root, reference, data, full = setup
    config = TrainConfig(**{**CONFIG.__dict__, "distill_from": "reference", "distill_alpha": 0.5})
    grown = grow_until_matched(reference, data, tmp_path / "kd", growth(margin=-100.0, max_layers=2), config,
                               log=lambda m: None)
    stored = json.loads((grown.rounds[0].run_dir / "config.json").read_text())
    assert stored["config"]["distill_from"] == str(reference) and stored["train_loss"].startswith("distillation")
    assert grown.rounds[-1].val_loss < grown.rounds[0].start_val_loss


def test_overwrite_with_bad_input_leaves_the_previous_run_as_it_was(setup, tmp_path):
    root, reference, data, full = setup
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("a previous run")
    other = make_data_dir(tmp_path / "other-data", make_tokenizer(300))
    for kwargs, message in (({"data": other}, "tokenizer mismatch"),
                            ({"start_layers": 5, "max_layers": 6}, "has 4 layers")):
        args = {"reference": reference, "data": data, "growth": growth(**{k: v for k, v in kwargs.items() if k != "data"})}
        args["data"] = kwargs.get("data", data)
        with pytest.raises(InherituneError, match=message):
            grow_until_matched(out=out, config=CONFIG, overwrite=True, log=lambda m: None, **args)
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_grow_by_a_selector_adds_back_blocks_at_their_places(setup, tmp_path):
    root, reference, data, full = setup
    grown = grow_until_matched(reference, data, tmp_path / "bi", growth(margin=-100.0, start_layers=2, max_layers=3),
                               CONFIG, by="block-influence", log=lambda m: None)
    first, second = (r.blocks for r in grown.rounds)
    assert len(first) == 2 and len(second) == 3 and set(first) < set(second) and second == sorted(second)
    recorded = json.loads((tmp_path / "bi" / "round-01-02.blocks.json").read_text())
    assert recorded["blocks"] == first and recorded["selection"]["by"] == "block-influence"
    model = load_model(grown.model_dir)
    assert model.config.inheritune["blocks"] == second == grown.blocks
    ref = load_model(reference)  # the block round 2 added is the reference's, untrained
    new = next(i for i, j in enumerate(second) if j not in first)
    start = grown_to(ref, grown.rounds[0].run_dir / "final", 3, by="block-influence", data=data)
    assert all(torch.equal(a, b) for a, b in zip(module(start, f"model.layers.{new}").state_dict().values(),
                                                  module(ref, f"model.layers.{second[new]}").state_dict().values()))
    assert "selector: block-influence" in (grown.model_dir / "README.md").read_text()


def test_shrink_drops_blocks_of_the_healed_model_while_within_the_margin(setup, tmp_path):
    root, reference, data, full = setup
    easy = grow_until_matched(reference, data, tmp_path / "easy",
                              growth(direction="shrink", start_layers=3, min_layers=1, margin=100.0), CONFIG,
                              by="block-influence", log=lambda m: None)
    assert [r.layers for r in easy.rounds] == [3, 2, 1] and easy.matched and easy.layers == 1
    blocks_per_round = [set(r.blocks) for r in easy.rounds]
    assert blocks_per_round[2] < blocks_per_round[1] < blocks_per_round[0]  # each round drops the healed model's own
    # A target no round meets: shrinking stops after round 1, whose model is the answer, not matched.
    hard = grow_until_matched(reference, data, tmp_path / "hard",
                              growth(direction="shrink", start_layers=3, min_layers=1, margin=-100.0), CONFIG,
                              by="block-influence", log=lambda m: None)
    assert [r.layers for r in hard.rounds] == [3] and not hard.matched and hard.blocks == hard.rounds[0].blocks
    assert hard.rounds[0].val_loss == easy.rounds[0].val_loss  # same seed, same first round
    with pytest.raises(InherituneError, match="--min-layers \\(3\\) is above --start-layers \\(2\\)"):
        grow_until_matched(reference, data, tmp_path / "bad", growth(direction="shrink", start_layers=2, min_layers=3),
                           CONFIG, log=lambda m: None)


def test_rounds_continue_one_order_of_windows_and_an_arm_on_all_their_tokens_reads_the_teacher_cache(setup, tmp_path):
    """Round r starts where round r - 1 stopped, so a comparison arm trained on the rounds' tokens
    draws the same windows: the teacher computed them once."""
    root, reference, data, full = setup
    config = TrainConfig(**{**CONFIG.__dict__, "distill_from": "reference", "teacher_cache": str(tmp_path / "c")})
    grown = grow_until_matched(reference, data, tmp_path / "kd", growth(margin=-100.0, max_layers=2), config,
                               log=lambda m: None)
    skips = [json.loads((Path(r.run_dir) / "config.json").read_text())["config"]["skip_tokens"] for r in grown.rounds]
    assert skips == [0, TOKENS_PER_ROUND]
    arm = train(tiny_model("llama", 2, seed=7), data, tmp_path / "arm", CONFIG, tokens=2 * TOKENS_PER_ROUND,
                distill_from=str(reference), teacher=load_model(reference), teacher_cache=str(tmp_path / "c"))
    assert arm.teacher_cache.windows_computed == 0
    assert arm.teacher_cache.windows_read == 2 * TOKENS_PER_ROUND // CONFIG.seq_len
