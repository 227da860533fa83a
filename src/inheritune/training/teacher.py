"""The teacher a run distils from: loaded and checked against the data's tokens, what the fused loss
reads of it (hidden states or top-K), and the disk cache of those states (``teacher_cache``)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import PreTrainedModel

from inheritune.errors import InherituneError
from inheritune.models.loading import (
    load_config,
    load_model,
    load_tokenizer,
    model_name,
    tokenizer_fingerprint,
    vocabulary_size,
)
from inheritune.specs import TeacherStates
from inheritune.training import teacher_cache
from inheritune.training.distributed import barrier
from inheritune.training.objective import Teacher
from inheritune.training.train_config import TrainConfig


def make_teacher(config: TrainConfig, model: PreTrainedModel | None, data, student: PreTrainedModel) -> Teacher | None:
    """The distillation teacher: ``model`` when given, else loaded from ``distill_from``; its tokenizer
    must be the data's, or its distribution would be over other tokens."""
    if config.distill_from is None or config.distill_alpha == 0:
        return None  # alpha 0 is plain cross-entropy: no teacher forward at all
    if model is None:
        check_teacher(config.distill_from, data, config.trust_remote_code)
        model = load_model(config.distill_from, trust_remote_code=config.trust_remote_code)
    rows = (model.get_output_embeddings().weight.shape[0], student.get_output_embeddings().weight.shape[0])
    if rows[0] != rows[1]:
        raise InherituneError(
            f"the teacher {config.distill_from} predicts {rows[0]} tokens and the student "
            f"{rows[1]}: distillation needs one vocabulary"
        )
    return Teacher(model, config.distill_alpha, config.distill_temperature)


def states_of(teacher: Teacher | None, config: TrainConfig, fused: bool, autocast):
    """inputs -> the teacher's states the fused loss reads (hidden states, or TopK); None when the
    plain loss (FSDP, a biased head) runs the teacher on full logits itself."""
    if teacher is None or not fused:
        if teacher is not None and config.teacher_states != "hidden":
            raise InherituneError(
                f"teacher_states {config.teacher_states} needs the fused loss, which --fsdp and "
                f"biased LM heads do not use; use teacher_states hidden"
            )
        return None
    k = config.teacher_states.k
    if k is None:
        return teacher.hidden
    return lambda inputs: teacher.top_k(teacher.hidden(inputs), k, autocast or torch.float32)


def open_teacher_cache(
    config: TrainConfig, teacher: Teacher, data, autocast, env, tokens: int
) -> teacher_cache.TeacherCache | None:
    """The store of the teacher's states this run reads and fills (None: distilling without one)."""
    if config.teacher_cache == "off":
        return None
    auto = config.teacher_cache == "auto"
    root = teacher_cache.default_root() if auto else Path(config.teacher_cache)
    dtype = autocast or torch.float32  # what the fused loss computes in: states stored so are exact
    layout = teacher_cache.fields(config.teacher_states, teacher.head.shape[1], dtype)
    if auto and not teacher_cache.fits(root, tokens, teacher_cache.token_bytes(layout)):
        if env.main:
            print(
                f"inheritune: the teacher's states for {tokens:,} tokens would not fit under {root} (at most half "
                f"the free disk): distilling without a teacher cache",
                file=sys.stderr,
            )
        return None
    opened = None
    for turn in ("main", "others"):  # the main rank creates or clears the folder before the others open it
        if env.main == (turn == "main"):
            opened = teacher_cache.open_cache(
                root,
                config.distill_from or "teacher",
                teacher=teacher.model,
                data=data,
                seq_len=config.seq_len,
                dtype=dtype,
                form=config.teacher_states,
                temperature=config.distill_temperature,
                quiet=not env.main,
            )
        barrier(env)
    return opened


def check_teacher(teacher: str, data, trust_remote_code: bool = False) -> None:
    """A teacher that can be found and speaks the data's tokens, checked from its tokenizer alone
    (no weights): what train, grow and run verify before they create or rename anything."""
    try:
        tokenizer = load_tokenizer(teacher, trust_remote_code)
    except InherituneError as e:
        raise InherituneError(f"the teacher (distill_from) {e}") from None
    data.check_tokenizer(tokenizer_fingerprint(tokenizer), f"the teacher {teacher}")


def check_teacher_states(
    states: TeacherStates, teacher: str | Path | PreTrainedModel | None, trust_remote_code: bool = False
) -> None:
    """``top:K`` against the teacher's vocabulary, read from its config (no weights): before any folder is made."""
    if teacher is None or states.k is None:
        return
    states.check_vocabulary(vocabulary_size(load_config(teacher, trust_remote_code)), model_name(teacher))
