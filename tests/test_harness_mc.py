"""A multiple-choice lm-eval task (here a custom one on local files) works in importance and prune
like an offline suite task: lettered questions, dev/rank/score splits."""
from __future__ import annotations

import json
import random

import pytest
import yaml

from conftest import save_tiny, tiny_model
from inheritune import evaluate
from inheritune.cli import main
from inheritune.analysis.importance_job import importance
from inheritune.errors import InherituneError
from inheritune.evaluation import harness_mc, suite


def _task_folder(folder, n: int = 60):
    """``toy_sums`` (multiple choice, ``n`` documents: a quarter train, the rest test), ``toy_echo``
    (generation) and ``toy_missing`` (its data file is not there, as a hub task's data is not offline)."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        a, b = rng.randrange(50), rng.randrange(50)
        choices = [str(a + b + d) for d in rng.sample(range(3), 3)]
        rows.append({"question": f"What is {a} plus {b}? ({i})", "choices": choices, "answer": choices.index(str(a + b))})
    files = {"train": rows[:n // 4], "test": rows[n // 4:]}
    for split, docs in files.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in docs))
    common = {"dataset_path": "json", "training_split": "train", "test_split": "test",
              "dataset_kwargs": {"data_files": {s: str(folder / f"{s}.jsonl") for s in files}},
              "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{answer}}"}
    (folder / "toy_sums.yaml").write_text(yaml.safe_dump({
        "task": "toy_sums", "output_type": "multiple_choice", "doc_to_choice": "{{choices}}",
        "metric_list": [{"metric": "acc"}], **common}))
    missing = {**common, "dataset_kwargs": {"data_files": {"train": str(folder / "gone.jsonl"),
                                                           "test": str(folder / "gone.jsonl")}}}
    (folder / "toy_missing.yaml").write_text(yaml.safe_dump({
        "task": "toy_missing", "output_type": "multiple_choice", "doc_to_choice": "{{choices}}", **missing}))
    (folder / "toy_echo.yaml").write_text(yaml.safe_dump({
        "task": "toy_echo", "output_type": "generate_until", "metric_list": [{"metric": "exact_match"}], **common}))
    return rows


@pytest.fixture
def toy_tasks(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    folder = tmp_path / "tasks"
    folder.mkdir()
    rows = _task_folder(folder)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    monkeypatch.setattr(harness_mc, "harness_manager", lambda include_path=None: manager)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    suite.clear_caches()
    yield rows
    suite.clear_caches()


def test_an_lm_eval_task_becomes_lettered_questions_split_like_the_suite(toy_tasks):
    splits = {name: suite.questions("toy_sums", name) for name in suite.SPLITS}
    ids = {name: {q.id for q in qs} for name, qs in splits.items()}
    assert len(ids["dev"]) >= suite.DEV_PER_SUBJECT and ids["rank"] and ids["score"]
    assert sum(len(ids[n]) for n in ("dev", "rank", "score")) == 60 and not ids["rank"] & ids["score"]
    assert ids["test"] == ids["rank"] | ids["score"] and not ids["dev"] & ids["test"]
    by_text = {r["question"]: r for r in toy_tasks}
    for q in splits["test"]:
        row = by_text[q.question.removeprefix("Question: ")]
        assert q.options == tuple(row["choices"]) and q.answer == row["answer"]
    prompt = suite.prompts("toy_sums", 3, shots=2, split="score")[0]
    assert prompt.text.startswith("The following are multiple choice questions (with answers) about toy sums.")
    assert prompt.text.count("Answer:") == 3 and prompt.text.endswith("\nC. " + prompt.text.split("\nC. ")[-1])
    assert prompt.options == (" A", " B", " C") and prompt.answer in prompt.options


def test_importance_runs_on_an_lm_eval_task(toy_tasks, tmp_path, tokenizer, one_thread):
    r = importance(tiny_model("llama", 2), out=tmp_path / "imp", tasks=["toy_sums"], shots=(0, 1), examples=4,
                   tokenizer=tokenizer)
    assert set(r.sources) == {"toy_sums/0shot", "toy_sums/1shot"}
    for source in r.sources.values():
        assert source["loss"] > 0 and len(source["ids"]) == 4 and source["split"] == "rank"
        assert {i for i in source["ids"]} <= {q.id for q in suite.questions("toy_sums", "rank")}


def test_a_task_that_is_not_multiple_choice_or_cannot_load_is_one_clear_error(toy_tasks):
    with pytest.raises(InherituneError, match="lm-eval task toy_echo is generate_until, not multiple_choice"):
        suite.questions("toy_echo", "rank")
    with pytest.raises(InherituneError, match="unknown task 'toy_sum'.*multiple-choice lm-eval task"):
        suite.check_task("toy_sum")
    with pytest.raises(InherituneError, match="lm-eval could not load task toy_missing: .*HF hub"):
        suite.questions("toy_missing", "rank")


def test_include_path_makes_the_users_own_tasks_work_from_the_cli(tmp_path, tokenizer, capsys, monkeypatch):
    folder = tmp_path / "tasks"
    folder.mkdir()
    _task_folder(folder)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    model = save_tiny(tmp_path / "model", "llama", 2, tok=tokenizer)
    assert main(["importance", str(model), "--tasks", "toy_sums", "--shots", "0", "--examples", "3",
                 "--include-path", str(folder), "--out", str(tmp_path / "imp")]) == 0
    sources = json.loads((tmp_path / "imp" / "importance.json").read_text())["sources"]
    assert list(sources) == ["toy_sums/0shot"] and len(sources["toy_sums/0shot"]["ids"]) == 3
    assert main(["eval", str(model), "--tasks", "toy_sums", "--limit", "4", "--include-path", str(folder),
                 "--out", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["tasks"]["toy_sums"]["samples"] == 4
    capsys.readouterr()
    assert main(["importance", str(model), "--tasks", "toy_sums", "--include-path", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "imp2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"inheritune: error: --include-path {tmp_path / 'nope'} is not a folder of lm-eval task YAMLs"


def test_the_include_path_of_one_call_never_reaches_the_next(tmp_path, tokenizer, monkeypatch, one_thread):
    """Two folders define ``toy_sums`` differently (45 and 9 test documents): each evaluation and
    question lookup sees its own folder's task, and a call without a folder sees neither."""
    folders = {n: tmp_path / f"tasks{n}" for n in (60, 12)}
    rows = {}
    for n, folder in folders.items():
        folder.mkdir()
        rows[n] = {r["question"] for r in _task_folder(folder, n)}
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    model = tiny_model("llama", 1)
    for n in (60, 12, 60):  # back to the first folder too: nothing of the second is kept
        result = evaluate(model, tokenizer=tokenizer, tasks=["toy_sums"], include_path=folders[n])
        assert result.tasks["toy_sums"]["samples"] == n - n // 4  # the folder's test documents
        asked = {q.question.removeprefix("Question: ") for split in ("dev", "test")
                 for q in suite.questions("toy_sums", split, folders[n])}
        assert asked == rows[n]  # every document of the folder, train and test, and no other
    with pytest.raises(InherituneError, match="unknown task toy_sums"):
        evaluate(model, tokenizer=tokenizer, tasks=["toy_sums"])
    with pytest.raises(InherituneError, match="unknown task 'toy_sums'"):
        suite.questions("toy_sums", "test")
