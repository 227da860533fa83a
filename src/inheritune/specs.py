"""Option strings parsed once, at the boundary, into small typed values.

``--train-blocks last:4``, ``train: {train_blocks: last:4}`` and ``train(..., train_blocks="last:4")``
all become one ``TrainBlocks`` when the options are read (``options.convert``); below that boundary
code reads its parts (``.kind``, ``.k``, ``.blocks``) and never parses the text again. A value is
still its text (it prints, compares and is stored as the user wrote it), and it remembers how the
user named the option (``key``: ``--train-blocks``, ``train.train_blocks`` or ``train_blocks``), so
a check that needs a model's shape, made later but before anything is written, names the option
as typed, the value and the model: ``--train-blocks 'last:99': the model m has 4 blocks``.

The syntax of each spec is checked here; what a model makes of it is each type's ``check_*``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from inheritune.errors import InherituneError


class Spec(str):
    """An option's text with its parsed parts as attributes; ``key`` is the option as the user named it."""

    key: str
    syntax: ClassVar[str] = ""  # how it is written, for the refusal

    def __new__(cls, text: Any, key: str = "") -> Spec:
        if isinstance(text, (list, tuple)):  # a YAML or Python list of block indices
            text = ",".join(str(i) for i in text)
        obj = super().__new__(cls, str(text).strip())
        obj.key = key or cls.__name__
        obj._parse()
        return obj

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]  # copies and pickles keep the key
        return (str(self), self.key)

    def _parse(self) -> None:
        raise NotImplementedError

    def refuse(self, why: str) -> InherituneError:
        """One line: the option as typed, the value, and why (e.g. the model whose shape makes it wrong)."""
        return InherituneError(f"{self.key} '{self}': {why}")

    def _bad(self) -> InherituneError:
        return self.refuse(f"must be {self.syntax}")


def _count(text: str) -> int | None:
    """A whole number >= 1 written with digits, else None."""
    return int(text) if text.isdigit() and int(text) >= 1 else None


def block_indices(text: str) -> tuple[int, ...]:
    """``0-2,7`` -> (0, 1, 2, 7); ValueError naming what is wrong (the refusal's reason)."""
    indices: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.strip().isdigit() or (dash and not hi.strip().isdigit()):
            raise ValueError(f"must be {BlockList.syntax}")
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first:
            raise ValueError(f"the range {part.strip()} runs backwards")
        indices.extend(range(first, last + 1))
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise ValueError(f"block {repeated[0]} is listed twice")
    return tuple(indices)


class BlockList(Spec):
    """Block indices as people write them: ``0-11,27-29`` (``indices``, in the order given)."""

    syntax = "block indices like 0-11,27-29 (each once)"
    indices: tuple[int, ...]

    def _parse(self) -> None:
        try:
            self.indices = block_indices(self)
        except ValueError as e:
            raise self.refuse(str(e)) from None

    def within(self, total: int, model: str) -> list[int]:
        """The indices, each checked to be a block of ``model`` (``total`` blocks)."""
        return within(self, self.indices, total, model)


def within(spec: Spec, indices: tuple[int, ...], total: int, model: str) -> list[int]:
    """``indices`` checked to be blocks of ``model`` (``total`` blocks), refused in ``spec``'s name."""
    bad = [i for i in indices if i >= total]
    if bad:
        raise spec.refuse(f"block {bad[0]} is out of range: {model} has {total} blocks (0..{total - 1})")
    return list(indices)


class TrainBlocks(Spec):
    """What trains at the full learning rate: ``all``, ``last:K``, ``cuts:K`` or a ``BlockList``."""

    syntax = "all, last:K, cuts:K (K >= 1) or block indices like 0-3,20"
    kind: str  # all | last | cuts | list
    k: int
    blocks: BlockList | None

    def _parse(self) -> None:
        kind, colon, k = str(self).partition(":")
        self.k, self.blocks = 0, None
        if str(self) == "all":
            self.kind = "all"
        elif colon and kind in ("last", "cuts"):
            self.kind, count = kind, _count(k)
            if count is None:
                raise self._bad()
            self.k = count
        elif not colon and str(self):
            self.kind = "list"
            try:
                self.blocks = BlockList(self, self.key)
            except InherituneError:
                raise self._bad() from None
        else:
            raise self._bad()

    def check_depth(self, layers: int, model: str) -> None:
        """Refuse what ``model`` (``layers`` blocks) cannot take: more last blocks than it has, an index beyond it."""
        if self.kind == "last" and self.k > layers:
            raise self.refuse(f"{model} has {layers} blocks; last:{layers} trains them all (or use all)")
        if self.kind == "cuts" and self.k > layers:
            raise self.refuse(f"{model} has {layers} blocks; K is at most {layers}")
        if self.blocks is not None:
            self.blocks.within(layers, model)


class TeacherStates(Spec):
    """What the loss reads of a teacher: ``hidden`` (its last hidden states: exact) or ``top:K``
    (its K likeliest tokens: approximate, cheaper); ``k`` is None for hidden."""

    syntax = "hidden or top:K (K >= 1)"
    k: int | None

    def _parse(self) -> None:
        kind, colon, k = str(self).partition(":")
        if str(self) == "hidden":
            self.k = None
        elif colon and kind == "top" and _count(k) is not None:
            self.k = int(k)
        else:
            raise self._bad()

    def check_vocabulary(self, vocabulary: int, teacher: str) -> None:
        """K must leave a tail: at most the teacher's vocabulary size (read from its config)."""
        if self.k is not None and self.k > vocabulary:
            raise self.refuse(f"K is larger than the vocabulary of the teacher {teacher} ({vocabulary:,} tokens)")


class LoraTargets(Spec):
    """Which modules get LoRA adapters: ``all-linear`` (peft's: every linear layer but the LM head) or
    module names like ``q_proj,v_proj`` (``names``; None for all-linear)."""

    syntax = "all-linear or module names like q_proj,v_proj"
    names: tuple[str, ...] | None

    def _parse(self) -> None:
        if str(self) == "all-linear":
            self.names = None
            return
        names = tuple(part.strip() for part in str(self).split(","))
        if not all(name.replace("_", "").replace(".", "").isalnum() for name in names):
            raise self._bad()
        self.names = names


class Choice(Spec):
    """One of a fixed set of words (``choices``, set by each subclass beside the code that reads it)."""

    choices: ClassVar[tuple[str, ...]] = ()

    def _parse(self) -> None:
        if str(self) not in self.choices:
            raise self.refuse(f"must be one of {', '.join(self.choices)}")


HIDDEN = TeacherStates("hidden", "teacher_states")  # the defaults, as values
ALL_BLOCKS = TrainBlocks("all", "train_blocks")
ALL_LINEAR = LoraTargets("all-linear", "lora_targets")
