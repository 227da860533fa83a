"""llama.cpp itself runs what ``inheritune export`` writes: logits, perplexity, tokenizer and speed.

Needs llama-cpp-python, which compiles llama.cpp from source (about 10 minutes on two cores), so it
is not a test dependency: ``make llamacpp`` installs it into the venv. Then

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_llamacpp.py [--model runs/default/arms/inheritune/model]

1. **Perplexity.** The default run's 24-layer model (``make demo``), exported to f16 and q8_0, against
   ``inheritune eval``'s yardstick on the same data folder (val split, consecutive 512-token windows,
   every token after the first predicted once): llama.cpp's mean NLL and perplexity next to
   transformers' fp32 ones, and the largest next-token logit difference on the first window.
2. **Tokenizer.** The val text, decoded, split by llama.cpp's tokenizer read from the file and by the
   model folder's tokenizer: the share of identical ids.
3. **Gemma 3.** The packaged Gemma-3-270M (18 layers) and a model of 14 of its blocks whose local/global
   layers no longer fall every 6th (the per-layer window list is what keeps them right): llama.cpp's
   logits against transformers' on a val window.
4. **Generation speed.** Batch 1, a 128-token prompt then 128 greedy tokens with llama.cpp's KV cache,
   f16 and q8_0: the reference, the 24-layer model and the 2/3-parameter depth cut (as bench_generate).

Writes benchmarks/results/llamacpp.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from inheritune.data.shards import open_data
from inheritune.evaluation.val_loss import VAL_CONTEXT, token_nll
from inheritune.models.budget import cut_within
from inheritune.models.families import FAMILIES, num_layers
from inheritune.models.gguf_export import export_gguf
from inheritune.models.loading import load_model, load_tokenizer
from inheritune.models.surgery import inherit
from inheritune.models.width_cut import cut, geometry, plan

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
PROMPT, NEW = 128, 128


def llama(path: Path, threads: int, context: int, all_logits: bool):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=context, n_batch=context, n_ubatch=context, logits_all=all_logits,
                 n_threads=threads, n_threads_batch=threads, verbose=False)


def export(model, tokenizer, folder: Path, name: str, kind: str) -> dict:
    start = time.perf_counter()
    written = export_gguf(model, tokenizer, folder / f"{name}-{kind}.gguf", kind)
    return {"path": written.path, "seconds": time.perf_counter() - start, "mb": written.bytes / 1e6}


def llama_nll(engine, tokens: np.ndarray, context: int) -> tuple[float, int, np.ndarray]:
    """Summed next-token NLL over the stream cut as the yardstick cuts it, and the first window's logits."""
    total, count, first = 0.0, 0, None
    for start in range(0, len(tokens) - 1, context):
        window = [int(t) for t in tokens[start : start + context + 1]]
        engine.reset()
        engine.eval(window[:-1])
        logits = np.array(engine.scores[: len(window) - 1], dtype=np.float64)
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        total -= float(logp[np.arange(len(window) - 1), window[1:]].sum())
        count += len(window) - 1
        first = logits if first is None else first
    return total, count, first


def agreement(mine: list[int], theirs: list[int]) -> float:
    """The share of ids the two splits have in common, in order (1.0: identical)."""
    from difflib import SequenceMatcher

    return SequenceMatcher(a=mine, b=theirs, autojunk=False).ratio()


def hf_logits(model, window: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(window[None].astype(np.int64))).logits[0].double().numpy()


def perplexity(model_dir: Path, data: Path, folder: Path, threads: int) -> tuple[list[dict], dict, list[dict]]:
    model, tokenizer = load_model(model_dir).eval(), load_tokenizer(model_dir)
    tokens = np.asarray(open_data(data).tokens("val"), dtype=np.int64)
    hf_total, hf_count = token_nll(model, tokens, VAL_CONTEXT)
    hf = {"engine": "transformers fp32 (inheritune eval)", "nll": hf_total / hf_count, "tokens": hf_count}
    hf["ppl"] = math.exp(hf["nll"])
    reference_logits = hf_logits(model, tokens[:VAL_CONTEXT])
    rows, files = [], []
    for kind in ("f16", "q8_0"):
        file = export(model, tokenizer, folder, "derived", kind)
        files.append({"model": model_dir.name, "type": kind, "export_s": file["seconds"], "mb": file["mb"]})
        engine = llama(file["path"], threads, VAL_CONTEXT, all_logits=True)
        start = time.perf_counter()
        total, count, first = llama_nll(engine, tokens, VAL_CONTEXT)
        seconds = time.perf_counter() - start
        row = {"engine": f"llama.cpp {kind}", "nll": total / count, "tokens": count, "seconds": seconds}
        row["ppl"] = math.exp(row["nll"])
        row["ppl_vs_eval"] = row["ppl"] / hf["ppl"] - 1
        row["max_logit_diff"] = float(np.abs(first - reference_logits).max())
        row["top1_agree"] = float((first.argmax(-1) == reference_logits.argmax(-1)).mean())
        rows.append(row)
        print(json.dumps(row), flush=True)
        if kind == "f16":
            text = tokenizer.decode(tokens.tolist())
            mine = engine.tokenize(text.encode(), add_bos=False, special=True)  # <|im_end|> ends documents
            theirs = tokenizer(text, add_special_tokens=False)["input_ids"]
            hf["tokenizer_same_ids"] = agreement(mine, theirs)
            hf["tokenizer_lengths"] = [len(mine), len(theirs)]
        del engine
    return [hf, *rows], hf, files


def gemma_check(data_tokens: np.ndarray, folder: Path, threads: int) -> list[dict]:
    """Gemma-3-270M whole and as 14 chosen blocks: llama.cpp's logits against transformers' (f16 file)."""
    reference = load_model("gemma3-270m").eval()
    tokenizer = load_tokenizer("gemma3-270m")
    text = load_tokenizer("smollm2-135m").decode(data_tokens[:1200].tolist())
    window = np.asarray(tokenizer(text)["input_ids"][:VAL_CONTEXT], dtype=np.int64)
    keep = [0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 13, 14, 16, 17]  # global layers 5, 11, 17 land at 5, 9, 13
    rows = []
    for name, model in (("gemma3-270m (18 layers)", reference), ("14 chosen blocks", inherit(reference, keep).eval())):
        file = export(model, tokenizer, folder, name.split()[0], "f16")
        engine = llama(file["path"], threads, VAL_CONTEXT, all_logits=True)
        engine.reset()
        engine.eval(window.tolist())
        mine = np.array(engine.scores[: len(window)], dtype=np.float64)
        theirs = hf_logits(model, window)
        kinds = model.config.layer_types
        ids = engine.tokenize(text.encode(), add_bos=True, special=False)
        row = {"model": name, "layers": num_layers(model.config), "global_layers": [i for i, k in enumerate(kinds)
               if k == "full_attention"], "export_s": file["seconds"], "mb": file["mb"],
               "max_logit_diff": float(np.abs(mine - theirs).max()),
               "top1_agree": float((mine.argmax(-1) == theirs.argmax(-1)).mean()),
               "tokenizer_same_ids": agreement(ids, tokenizer(text)["input_ids"])}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del engine
    return rows


def tiny_configs(vocab: int) -> dict:
    """A small random model of every family the export writes (shapes llama.cpp accepts)."""
    from transformers import (
        Gemma3TextConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Phi3Config,
        Qwen2Config,
        Qwen3Config,
    )

    like = {"vocab_size": vocab, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
            "num_attention_heads": 4,
                "num_key_value_heads": 2, "max_position_embeddings": 1024}
    return {
        "llama": LlamaConfig(**like), "mistral": MistralConfig(**like, sliding_window=None),
        "qwen2": Qwen2Config(**like), "qwen3": Qwen3Config(**like, head_dim=128),
        "phi3": Phi3Config(**like, pad_token_id=0),
        "gemma3_text": Gemma3TextConfig(**like | {"num_hidden_layers": 6}, head_dim=64, query_pre_attn_scalar=64,
                                        sliding_window=64,
                                        layer_types=["sliding_attention", "full_attention"] * 3),
        "gpt2": GPT2Config(vocab_size=vocab, n_embd=128, n_layer=4, n_head=4, n_positions=1024),
        "gpt_neox": GPTNeoXConfig(vocab_size=vocab, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                  num_attention_heads=4, max_position_embeddings=1024, rotary_pct=0.25),
    }


def narrowed(model, heads_percent: int, ffn_percent: int):
    """``model`` width-cut as prune --width-* cuts it: the share of key/value groups and FFN neurons cut
    out of every block, ranked at random (the shapes are what llama.cpp must read, not the ranking)."""
    heads, _, _, neurons = geometry(model.config)
    layers = num_layers(model.config)
    rng = np.random.default_rng(0)
    ranking = plan(model.config, rng.random((layers, heads)), rng.random((layers, neurons)), heads_percent,
                   ffn_percent, "group")
    return cut(model, ranking).eval()


def families(tokens: np.ndarray, folder: Path, threads: int) -> list[dict]:
    """Every exportable family, as a small random model with SmolLM2's tokenizer, whole and width-cut (half
    the FFN neurons; half the key/value groups too where the family has explicit head widths): llama.cpp's
    logits on a 256-token window against transformers', f32 and q8_0 files."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer("smollm2-135m")
    window = tokens[:256]
    rows = []
    for family, config in tiny_configs(len(tokenizer)).items():
        torch.manual_seed(0)
        whole = AutoModelForCausalLM.from_config(config).eval()
        shapes = {"whole": whole, "FFN cut": narrowed(whole, 0, 50)}
        family_row = FAMILIES[family]
        if family_row.head_width is not None and not family_row.gguf.query_is_hidden:  # else refused or no heads cut
            shapes["heads + FFN cut"] = narrowed(whole, 50, 50)
        for shape, model in shapes.items():
            theirs = hf_logits(model, window)
            for kind in ("f32", "q8_0"):
                file = export(model, tokenizer, folder, family, kind)
                engine = llama(file["path"], threads, 256, all_logits=True)
                engine.reset()
                engine.eval(window.tolist())
                mine = np.array(engine.scores[: len(window)], dtype=np.float64)
                rows.append({"family": family, "shape": shape, "type": kind,
                             "max_logit_diff": float(np.abs(mine - theirs).max()),
                             "logit_scale": float(np.abs(theirs).max()),
                             "top1_agree": float((mine.argmax(-1) == theirs.argmax(-1)).mean())})
                print(json.dumps(rows[-1]), flush=True)
                del engine
                file["path"].unlink()
    return rows


def speed(engine, reps: int) -> dict:
    prompt = [int(t) for t in torch.randint(5, 40_000, (PROMPT,), generator=torch.Generator().manual_seed(0))]

    def run(new: int) -> float:
        engine.reset()
        start = time.perf_counter()
        engine.eval(prompt)
        for _ in range(new - 1):
            engine.eval([engine.sample(top_k=1, temp=0.0)])
        return time.perf_counter() - start

    run(4)  # warm-up
    prefill = statistics.median(run(1) for _ in range(reps))
    total = statistics.median(run(NEW) for _ in range(reps))
    return {"prompt_tok_s": PROMPT / prefill, "decode_tok_s": (NEW - 1) / (total - prefill)}


def speeds(model_dir: Path, folder: Path, threads: int, reps: int) -> list[dict]:
    reference, tokenizer = load_model("smollm2-135m").eval(), load_tokenizer("smollm2-135m")
    total = num_layers(reference.config)
    depth = total - cut_within(reference.config, 2 / 3, "depth").drop_layers
    models = {f"reference ({total} layers)": reference, "24-layer default model": load_model(model_dir).eval(),
              f"2/3 parameters ({depth} layers)": inherit(reference, depth).eval()}
    rows = []
    for name, model in models.items():
        for kind in ("f16", "q8_0"):
            # llama.cpp loads no file without a vocabulary
            file = export(model, tokenizer, folder, f"speed{num_layers(model.config)}", kind)
            engine = llama(file["path"], threads, PROMPT + NEW, all_logits=False)
            row = {"model": name, "layers": num_layers(model.config), "type": kind, "mb": file["mb"]}
            rows.append(row | speed(engine, reps))
            print(json.dumps(rows[-1]), flush=True)
            del engine
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs/default/arms/inheritune/model")
    parser.add_argument("--data", type=Path, default=ROOT / "runs/default/data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--redo", nargs="*", default=[], choices=["perplexity", "gemma", "families", "speed"],
                        help="parts to measure again (the others are kept from the results file, when there)")
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"{args.model}: no model folder; run `make demo` first (or pass --model and --data)")
    torch.set_num_threads(args.threads)
    import llama_cpp

    path = RESULTS / "llamacpp.json"
    results: dict = json.loads(path.read_text()) if path.is_file() else {}
    results |= {"llama_cpp_python": llama_cpp.__version__, "threads": args.threads,
                "machine": platform.processor() or platform.machine()}
    with tempfile.TemporaryDirectory(dir=ROOT / "runs") as tmp:
        folder = Path(tmp)
        if "perplexity" in args.redo or "perplexity" not in results:
            results["perplexity"], results["eval"], results["exports"] = perplexity(args.model, args.data, folder,
                                                                                    args.threads)
            path.write_text(json.dumps(results, indent=1) + "\n")
        if "gemma" in args.redo or "gemma" not in results:
            tokens = np.asarray(open_data(args.data).tokens("val"), dtype=np.int64)
            results["gemma"] = gemma_check(tokens, folder, args.threads)
            path.write_text(json.dumps(results, indent=1) + "\n")
        if "families" in args.redo or "families" not in results:
            results["families"] = families(np.asarray(open_data(args.data).tokens("val"), dtype=np.int64), folder,
                                           args.threads)
            path.write_text(json.dumps(results, indent=1) + "\n")
        if "speed" in args.redo or "speed" not in results:
            results["speed"] = speeds(args.model, folder, args.threads, args.reps)
            results["load"] = os.getloadavg()[0]
    path.write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "llamacpp.md").write_text(report(results, args))
    print(report(results, args))


def report(results: dict, args) -> str:
    hf = results["eval"]
    lines = [f"llama.cpp through llama-cpp-python {results['llama_cpp_python']}, {args.threads} threads, "
             f"{results['machine']} (benchmarks/bench_llamacpp.py). Model: `{args.model.relative_to(ROOT)}`, data: "
             f"`{args.data.relative_to(ROOT)}` val split, {hf['tokens']:,} predicted tokens in 512-token windows.", "",
             "| engine | val NLL | perplexity | vs inheritune eval | max logit diff (window 1) | top-1 agree |",
             "|---|---|---|---|---|---|"]
    for r in results["perplexity"]:
        extra = (f"{r['ppl_vs_eval']:+.3%} | {r['max_logit_diff']:.3f} | {r['top1_agree']:.3f}" if "ppl_vs_eval" in r
                 else "- | - | -")
        lines.append(f"| {r['engine']} | {r['nll']:.4f} | {r['ppl']:.3f} | {extra} |")
    lines += ["", f"Tokenizer read from the f16 file vs the folder's, on the val text: "
              f"{hf['tokenizer_same_ids']:.4f} of ids in common, in order (lengths {hf['tokenizer_lengths']}).", "",
              "| export | type | seconds | MB |", "|---|---|---|---|"]
    lines += [f"| {e['model']} | {e['type']} | {e['export_s']:.1f} | {e['mb']:.1f} |" for e in results["exports"]]
    if "gemma" in results:
        lines += ["", "| Gemma 3 (f16 file) | layers | global layers | max logit diff | top-1 agree "
                  "| tokenizer ids in common |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {g['model']} | {g['layers']} | {g['global_layers']} | {g['max_logit_diff']:.3f} | "
                  f"{g['top1_agree']:.3f} | {g['tokenizer_same_ids']:.4f} |" for g in results["gemma"]]
    if "families" in results:
        lines += ["", "Every exported family, a small random model (4-6 layers, SmolLM2's vocabulary), whole and "
                  "width-cut (prune --width-*: half the FFN neurons, and half the key/value groups where heads have "
                  "their own width): llama.cpp's logits against transformers' on a 256-token window.", "",
                  "| family | shape | GGUF | max logit diff | largest logit | top-1 agree |", "|---|---|---|---|---|---|"]
        lines += [f"| {f['family']} | {f.get('shape', 'whole')} | {f['type']} | {f['max_logit_diff']:.2g} | "
                  f"{f['logit_scale']:.2f} | {f['top1_agree']:.3f} |" for f in results["families"]]
    if "speed" in results:
        base = {r["type"]: r["decode_tok_s"] for r in results["speed"] if r["model"].startswith("reference")}
        lines += ["", f"Batch 1, {PROMPT}-token prompt, {NEW} greedy tokens, llama.cpp KV cache, median of "
                  f"{args.reps}.", "", "| model | layers | GGUF | MB | prompt tok/s | decode tok/s | decode speed-up |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['layers']} | {r['type']} | {r['mb']:.0f} | {r['prompt_tok_s']:.0f} | "
                  f"{r['decode_tok_s']:.1f} | {r['decode_tok_s'] / base[r['type']]:.2f}x |" for r in results["speed"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
