"""The one prompt format of the offline multiple-choice tasks, and the question it shows.

``importance`` ranks heads on the suite's prompts (``inheritune.evaluation.suite``) and ``eval`` runs
the same tasks through lm-eval (``inheritune.evaluation.tasks``); both build their text from here,
so they see MMLU's 5-shot layout::

    The following are multiple choice questions (with answers) about {subject}.

    {question}
    A. {option}
    B. {option}
    Answer: B

    {query question}
    A. ...
    Answer:

and the scored continuation is the letter with its leading space (`` B``). This module sits below
the suite, its lm-eval tasks and their sampler, so that each of them reads the format from one place.
"""

from __future__ import annotations

import dataclasses
from typing import Any

HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"
TARGET_DELIMITER = " "  # between "Answer:" and the letter
FEWSHOT_DELIMITER = "\n\n"  # after each solved shot
LETTERS = "ABCDEFG"
MAX_OPTION_CHARS = 100


@dataclasses.dataclass(frozen=True)
class Prompt:
    """A scored task prompt: ``text`` ends in ``Answer:``; ``answer`` is one of ``options`` (`` A``, `` B``...).

    ``question_id`` names the query (``suite.split_ids``), so a user of the prompts can record what it saw."""

    text: str
    answer: str
    options: tuple[str, ...]
    question_id: str = ""  # empty for a prompt made outside the suite


@dataclasses.dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``id`` is stable across versions of this code that keep its text."""

    id: str
    subject: str
    question: str
    options: tuple[str, ...]
    answer: int  # index into options


def question_text(q: Question) -> str:
    """The question and its lettered options, ending in ``Answer:``."""
    lines = [q.question] + [f"{letter}. {option}" for letter, option in zip(LETTERS, q.options, strict=False)]
    return "\n".join(lines) + "\nAnswer:"


def letters(q: Question) -> tuple[str, ...]:
    return tuple(LETTERS[: len(q.options)])


def doc(task: str, q: Question) -> dict[str, Any]:
    """A question as an lm-eval document: the question's fields plus its prompt text and letters."""
    return {
        "task": task,
        "id": q.id,
        "subject": q.subject,
        "question": q.question,
        "options": list(q.options),
        "answer": q.answer,
        "text": question_text(q),
        "letters": list(letters(q)),
    }


def question(document: dict[str, Any]) -> Question:
    """The question an lm-eval document (``doc``) was made from."""
    return Question(
        document["id"],
        document["subject"],
        question=document["question"],
        options=tuple(document["options"]),
        answer=document["answer"],
    )
