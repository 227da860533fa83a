"""`inheritune prepare`: its options' help; the job itself is ``inheritune.data.prepare_job``.

Raw text -> token shards with a fixed, document-level validation split.
"""

from inheritune.data.corpora import CORPORA, MIXES
from inheritune.data.prepare_job import PrepareResult, prepare_data
from inheritune.data.sources import ERRORS

HELP = {  # the CLI's help for this command's own parameters (shared ones: inheritune.commands.HELP)
    "sources": f"corpus alias ({', '.join([*CORPORA, *MIXES])}), .txt/.jsonl/.parquet file or folder, "
    "or hf:NAME[:CONFIG][@SPLIT]",
    "tokenizer": "reference whose tokenizer to use (alias, folder, .gguf, hub id)",
    "seed": "seed of the train/val split",
    "max_tokens": "cap on train tokens (the slice of data to train on)",
    "text_field": "text field of .jsonl/.parquet/hf",
    "val_tokens": "validation tokens, whole documents (default: 100000, or 10%% of sources shorter than the val pool)",
    "errors": "invalid UTF-8: fail (strict) or use U+FFFD",
}
CHOICES = {"errors": ERRORS}

__all__ = ["CHOICES", "HELP", "PrepareResult", "prepare_data"]
