"""`inheritune train MODEL --data DIR --out RUN [--tokens N | --steps N] [options]`: the train step.

Every TrainConfig field is an option (``--seq-len``) and a key of the ``--config`` YAML recipe;
options given on the command line override the recipe. Distributed: launch with
``torchrun --nproc_per_node=K -m inheritune train ...``.
"""
from __future__ import annotations

import argparse
import os

from inheritune.training.config import FIELDS

HELP = {
    "seq_len": "context length of training windows (default 512)",
    "batch_size": "micro-batch per rank (default 4)",
    "tokens_per_step": "global tokens per optimizer step; gradients accumulate to reach it (default: one micro-batch per rank)",
    "steps": "optimizer steps to train",
    "tokens": "training tokens (steps = ceil(tokens / tokens_per_step))",
    "warmup_steps": "linear warmup steps (default min(2000, 10%% of steps))",
    "weight_decay": "AdamW weight decay on >=2-D weights (default 0.1)",
    "eval_every": "validation every K steps (default ~10 per run; always at step 0 and the end)",
    "checkpoint_every": "checkpoint every K steps (default: eval_every; always at the end)",
    "precision": "auto (bf16 autocast on CPU and bf16 GPUs) | bf16 | fp32",
    "on_nonfinite": "stop (default) or skip the batch on a non-finite loss",
    "fsdp": "shard parameters with FSDP2 fully_shard instead of DDP",
    "peak_flops": "per-device peak FLOP/s for MFU (default: measured with a matmul at start)",
    "trust_remote_code": "let the model's own code (auto_map in config.json) run when loading it (default False)",
    "distill_from": "teacher model for knowledge distillation (same tokenizer; in grow, 'reference' = the reference)",
    "distill_alpha": "distillation weight: loss = alpha*T^2*KL(teacher||student) + (1-alpha)*CE (default 1.0)",
    "distill_temperature": "T, the softmax temperature of the KL term (default 1.0)",
    "teacher_cache": "auto (default: under $INHERITUNE_CACHE or ~/.cache/inheritune when it fits the disk) | off | "
                     "FOLDER: where the teacher's hidden states are stored once per training window and read back by "
                     "every later run on the same windows (exact: the loss is unchanged)",
    "teacher_states": "hidden (default: the teacher's last hidden states, exact) | top:K (its K most likely tokens, "
                      "approximate, see training/loss.py's TopK: smaller cache, cheaper loss)",
    "train_blocks": "blocks that train at the full lr: all (default) | last:K | cuts:K (K blocks on each side of "
                    "every cut a derived model has) | indices like 0-3,20; the final norm trains too",
    "rest_lr_scale": "lr multiplier of everything outside --train-blocks; 0 (default) freezes it: no gradient, "
                     "no optimizer state",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on prepared token data (the recipe's train step)")
    p.add_argument("model", help="model folder, .gguf file, alias or hub id")
    p.add_argument("--data", required=True, help="prepared data folder (inheritune data prepare)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, final model)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest valid checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out: the new run is built beside it (.NAME.new) and swapped in when "
                        "complete, so a failure keeps the old one; rerun the same command to continue it after a kill")
    p.add_argument("--tokenizer", metavar="REF", help="tokenizer to save with the model (default: the model's)")
    add_train_options(p)
    p.set_defaults(func=run)


def add_train_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Every TrainConfig field (but ``skip``) as an option, plus ``--config`` to read them from YAML.

    Shared by `train` and `grow`, so both accept the same options with the same meaning.
    """
    p.add_argument("--config", help="YAML recipe whose keys are the training options (seq_len: 1024, ...)")
    group = p.add_argument_group("training options")
    for f in FIELDS.values():
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = HELP.get(f.name, "")
        text = text if "default" in text else f"{text} (default {f.default!r})".strip()
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=text)
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif f.type.startswith("tuple"):
            group.add_argument(flag, type=float, nargs=2, metavar=("B1", "B2"), **kwargs)
        else:
            group.add_argument(flag, type=str, **kwargs)  # converted (with a one-line error) by make_config


def given_options(args: argparse.Namespace) -> dict:
    """The training options given on the command line, as the strings typed (``make_config``
    converts them like YAML values); the others keep ``--config``'s or TrainConfig's value."""
    return {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}


def run(args: argparse.Namespace) -> int:
    from inheritune.training import TrainingInterrupted, train

    try:
        result = train(args.model, args.data, args.out, args.config, resume=args.resume, overwrite=args.overwrite,
                       tokenizer=args.tokenizer, **given_options(args))
    except TrainingInterrupted as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"inheritune: {e}")
        return 130
    finally:
        from inheritune.training.distributed import teardown

        teardown()
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 speaks for the run
    print(f"trained {result.steps} steps ({result.tokens} tokens) in {result.wall_time:.1f}s: "
          f"val loss {result.val_history[0]['val_loss']:.4f} -> {result.final_val_loss:.4f}; model -> {result.model_dir}")
    return 0
