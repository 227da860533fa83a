"""Commands as library functions: each takes exactly its CLI command's arguments (same names, same
defaults), checks them before touching its output folder, writes that folder atomically and
returns a typed result (``to_json``/``from_json``; ``summary()``, what the CLI prints).

The CLI (``inheritune.cli``) is generated from the functions: their signatures and type hints, the
parameters' help in each command module's ``HELP`` (and ``CHOICES``), falling back to ``HELP``
here for the parameters several commands share.
"""

from inheritune.analysis.selection import HELP as SELECTORS
from inheritune.evaluation import suite

MODEL = "alias (smollm2-135m, gemma3-270m), model folder (e.g. a run's final/), .gguf file or hub id"

HELP = {
    "model": MODEL,
    "reference": MODEL,
    "out": "output folder (what it holds: see above; train, grow and run resume when rerun)",
    "overwrite": "replace a non-empty --out: the new one is built beside it and swapped in when complete",
    "trust_remote_code": "allow the model's (or tokenizer's) own code to run",
    "config": "YAML whose keys are the training options (seq_len: 1024, ...); options given here override it",
    "tokenizer": "tokenizer to use (default: the model's; gives a weights-only model one)",
    "device": "cpu, cuda or cuda:N",
    "device_map": "'auto': spread a model too large for one device over every GPU (then CPU), with accelerate",
    "data": "prepared data folder (inheritune data prepare); analyses read its val split",
    "text": "UTF-8 text file, tokenized with the model's tokenizer",
    "tasks": f"multiple-choice tasks, comma-separated: {', '.join(suite.task_names())} or any of lm-eval's "
    "(e.g. arc_easy)",
    "include_path": "a folder of your own lm-eval task YAMLs, usable as --tasks (default: lm-eval's tasks only)",
    "examples": "LM windows and task prompts per source",
    "max_task_tokens": "task prompts keep their last N tokens",
    "shots": "solved questions before each task query (importance, study: one source per count, comma-separated)",
    "seq_len": "tokens per sequence (LM window)",
    "sequences": "analyze's sequences N",
    "seed": "seed of the sampling",
    "batch_size": "sequences per forward pass (default: as many as a quarter of the free memory holds)",
    "by": f"which blocks to keep: {SELECTORS}",
    "seeds": "random repeated sequences (one per seed) that induction averages over",
}
CHOICES = {"device_map": ["auto"]}
