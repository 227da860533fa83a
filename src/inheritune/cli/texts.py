"""What a signature cannot say: each option's help text, written once.

``OPTIONS`` is keyed by parameter name, ``command.name`` where one command means more (``data
prepare`` is ``prepare``); ``TRAINING`` by TrainConfig field. ``--help`` adds every default.
"""
from __future__ import annotations

from inheritune.analysis.selection import HELP as SELECTORS
from inheritune.commands.importance import TASKS
from inheritune.data.corpora import CORPORA, MIXES
from inheritune.data.sources import ERRORS
from inheritune.evaluation.tasks import LOCAL_TASKS
from inheritune.growth.config import DIRECTIONS, GROW_MODES
from inheritune.models.surgery import INIT_CHOICES
from inheritune.models.budget import SHAPES as BUDGET_SHAPES
from inheritune.models.width import HEAD_UNITS
from inheritune.analysis.width import RANKINGS

MODEL = "alias (smollm2-135m, gemma3-270m), model folder (e.g. a run's final/), .gguf file or hub id"

OPTIONS = {
    "model": MODEL, "reference": MODEL,
    "sources": f"corpus alias ({', '.join([*CORPORA, *MIXES])}), .txt/.jsonl/.parquet file or folder, "
               "or hf:NAME[:CONFIG][@SPLIT]",
    "recipe": "recipe YAML (default: the embedded default, see --show-default)",
    "out": "output folder (what it holds: see above; train, grow and run resume when rerun)",
    "eval.out": "also write the JSON to this file (atomically)", "resume": "continue the run in --out from its latest valid checkpoint",
    "overwrite": "replace a non-empty --out: the new one is built beside it and swapped in when complete",
    "trust_remote_code": "allow the model's (or tokenizer's) own code to run",
    "config": "YAML whose keys are the training options (seq_len: 1024, ...); options given here override it",
    "tokenizer": "tokenizer to use (default: the model's; gives a weights-only model one)",
    "prepare.tokenizer": "reference whose tokenizer to use (alias, folder, .gguf, hub id)",
    "device": "cpu, cuda or cuda:N",
    "device_map": "'auto': spread a model too large for one device over every GPU (then CPU), with accelerate",
    "data": "prepared data folder (inheritune data prepare); analyses read its val split",
    "derive.data": "prepared data folder: selectors that score blocks read windows of its train split",
    "text": "UTF-8 text file, tokenized with the model's tokenizer",
    "tasks": f"multiple-choice tasks, comma-separated: {', '.join(TASKS)} or any of lm-eval's (e.g. arc_easy)",
    "eval.tasks": f"comma-separated: {', '.join(LOCAL_TASKS)} (offline) or lm-eval task names such as "
                  "arc_easy,piqa,sciq,hellaswag,lambada_openai (need the hub)",
    "include_path": "a folder of your own lm-eval task YAMLs, usable as --tasks (default: lm-eval's tasks only)",
    "examples": "LM windows and task prompts per source", "max_task_tokens": "task prompts keep their last N tokens",
    "shots": "solved questions before each task query (importance, study: one source per count, comma-separated)",
    "seq_len": "tokens per sequence (LM window)", "sequences": "analyze's sequences N",
    "seed": "seed of the sampling", "derive.seed": "seed of the fresh initialisation",
    "prepare.seed": "seed of the train/val split",
    "batch_size": "sequences per forward pass (default: as many as a quarter of the free memory holds)",
    "eval.batch_size": "sequences per forward pass",
    "tau": "energy share of the approximate rank", "lazy_rank": "lazy if max-over-heads rank <= this fraction of T",
    "lazy_mass": "... and mean heaviest-column share >= this", "bi_share": "secondary rule: cumulative Block Influence share",
    "min_depth": "recommendation: look for the first lazy layer from this fraction of depth on",
    "bos": "start every sequence with the BOS token (then T-1 sampled tokens)",
    "layers": "N (the N blocks --by keeps) or indices like 0-11,15", "init": "which block parts to inherit",
    "by": f"which blocks to keep: {SELECTORS}", "grow.by": f"which reference blocks each round holds: {SELECTORS}",
    "prune.by": "importance (default; least important first), induction (induction heads first; FFNs by importance) "
                f"or random (by --seed); with --drop-layers (default block-influence): {SELECTORS}",
    "max_tokens": "cap on train tokens (the slice of data to train on)", "text_field": "text field of .jsonl/.parquet/hf",
    "val_tokens": "validation tokens, whole documents (default: 100000, or 10%% of sources shorter than the val pool)",
    "errors": "invalid UTF-8: fail (strict) or use U+FFFD",
    "num_fewshot": "few-shot examples for every task (default: each task's own; the offline ones 5, at most 5)",
    "limit": "evaluate only the first N examples of each task (default: all)",
    "start_layers": "N: layers of the first round", "step_layers": "K: layers added (shrink: dropped) per round",
    "max_layers": "M: stop growing here (default: the reference's depth)", "min_layers": "shrink: stop here",
    "tokens_per_round": "T: training tokens per round", "margin": "E: matched when val loss <= reference + E",
    "direction": "grow (add blocks until matched) or shrink (drop blocks of the healed model while within the margin)",
    "mode": "new blocks: the reference's or copies of the model's own blocks just before them",
    "heads": "percent of heads to prune, globally (0-100)", "ffn": "percent of FFN layers to prune, globally (0-100)",
    "drop_layers": "drop K whole blocks instead (chosen on --data's train split, val loss on its val split)",
    "scores": "importance.json from `inheritune importance` (default: rank here); it must not have ranked on the "
              "scoring examples", "source": "which source ranks the units (default: lm, else the first)",
    "allow_overlap": "accept --scores ranked on scoring examples: warn and count them in prune.json",
    "iterative": "reach --heads/--ffn in this many steps, re-scoring importance after each (1: one-shot)",
    "physical": "with --heads/--ffn: say why a global plan stays as zeroed weights (--width-* ship smaller models)",
    "width_heads": "percent of every block's heads to cut out (whole key/value groups, or see --head-unit): a "
                   "smaller config and files; needs --data", "width_ffn": "percent of every block's FFN neurons to cut out",
    "params": "a parameter budget: keep at most this share (0-1) of the non-embedding parameters, the cut "
              "chosen by --budget-by (default: no budget)", "budget_by": "depth (drop blocks, chosen by --by) or width (cut every block's FFN "
              "neurons, ranked by --width-by)",
    "width_by": "ranking of heads and neurons on --data's train split: activation (Minitron: mean output norm) "
                "or gradient (mean |dL/dscale|)", "head_unit": "group (a key/value head with its query heads) or query "
                "(the same number of query heads in every group)",
    "sweep": "also score every criterion over --steps (heads) and --ffn-steps, with 95%% intervals",
    "steps": "head sweep percentages, comma-separated", "ffn_steps": "FFN sweep percentages, comma-separated",
    "seg_len": "distinct random tokens per segment", "repeats": "times the segment is repeated",
    "seeds": "random repeated sequences (one per seed) that induction averages over",
    "exclude": "share of lowest and of highest token ids left out", "top": "how many top induction heads to list",
}
CHOICES = {"budget_by": BUDGET_SHAPES, "head_unit": HEAD_UNITS, "width_by": RANKINGS, "errors": ERRORS, "init": INIT_CHOICES, "direction": DIRECTIONS, "mode": GROW_MODES, "device_map": ["auto"]}

TRAINING = {
    "seq_len": "context length of training windows", "batch_size": "micro-batch per rank",
    "tokens_per_step": "global tokens per optimizer step; gradients accumulate to reach it (default: one micro-batch "
                       "per rank)", "steps": "optimizer steps to train",
    "tokens": "training tokens (steps = ceil(tokens / tokens_per_step))",
    "warmup_steps": "linear warmup steps (default: min(2000, 10%% of steps))",
    "weight_decay": "AdamW weight decay on >=2-D weights", "grad_clip": "gradient norm clip (0: none)",
    "eval_every": "validation every K steps (default: ~10 per run; always at step 0 and the end)",
    "checkpoint_every": "checkpoint every K steps (default: eval_every; always at the end)",
    "precision": "auto (bf16 autocast where the device multiplies it natively) | bf16 | fp32",
    "on_nonfinite": "stop or skip the batch on a non-finite loss", "fsdp": "shard parameters with FSDP2, not DDP",
    "peak_flops": "per-device peak FLOP/s for MFU (default: measured with a matmul at start)",
    "trust_remote_code": "let the model's own code (auto_map in config.json) run when loading it",
    "skip_tokens": "start where a run of this many tokens (same seed) ended",
    "distill_from": "teacher model for knowledge distillation (same tokenizer; in grow, 'reference' = the reference)",
    "distill_alpha": "distillation weight: loss = alpha*T^2*KL(teacher||student) + (1-alpha)*CE",
    "distill_temperature": "T, the softmax temperature of the KL term",
    "teacher_cache": "auto (under $INHERITUNE_CACHE or ~/.cache/inheritune when it fits the disk) | off | FOLDER: "
                     "the teacher's states stored once per training window, read back by every later run on them",
    "teacher_states": "hidden (its last hidden states: exact) | top:K (its K likeliest tokens: approximate, cheaper)",
    "train_blocks": "blocks that train at the full lr: all | last:K | cuts:K (K blocks each side of every cut a "
                    "derived model has) | indices like 0-3,20; the final norm trains too",
    "rest_lr_scale": "lr multiplier of everything outside --train-blocks; 0 freezes it (no gradient or state)",
}
