"""Nothing left behind (issue 24): a kill at any moment of a write or a deletion leaves no visibly
named half output and no hidden copy for good (the next command on that output removes what a dead
command left, in one line); a finished run resumed with a changed setting is refused like an
unfinished one; an empty text file, a task YAML that does not parse and a library's chatter each
end as the one error line.

A kill is a child Python that calls ``os._exit(9)`` at the chosen moment (nothing of it runs after),
so its temporaries belong to a dead process, as after a SIGKILL.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import generated_text, make_data_dir, make_tokenizer, save_tiny
from inheritune.cli import main
from inheritune.errors import InherituneError
from inheritune.atomic import atomic_dir, atomic_write_json, build_dir, check_output_dir, claim, resumes
from inheritune.leftovers import clean_leftovers
from inheritune.error_lines import held_back
from inheritune.commands.train import train
from inheritune.training import checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FAST = dict(seq_len=32, batch_size=4, lr=3e-3, precision="fp32", progress=False, peak_flops=1e12)
REMOVED = "inheritune: removed what an interrupted command left in "


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matmuls: two threads only contend


def _killed(code: str, *args) -> None:
    """Run ``code`` (``sys.argv[1:]`` = ``args``) in a child Python that must die by ``os._exit(9)``."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=ENV,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 9, r.stderr[-3000:]


def _hidden(folder: Path) -> list[str]:
    """Every hidden entry under ``folder``, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _version(out: Path, version: str) -> None:
    """``out`` as a finished output whose one file says which version it is."""
    out.mkdir(parents=True)
    (out / "version").write_text(version)


# --- class 2: a killed write or deletion of an output --------------------------------------------

# The moment a kill lands in ``atomic_dir(out)`` replacing version 1 by version 2, and the version
# ``out`` must hold once the next command has dealt with what it left.
ATOMIC_DIR_KILLS = {
    "writing": ("os.replace", 1, "1"),  # before the swap: version 2 was never complete
    "between the renames": ("os.replace", 2, "1"),  # out renamed away, version 2 not yet in: put 1 back
    "before deleting the old one": ("os.replace", 3, "2"),  # swapped; the old one still under its swap name
    "while deleting the old one": ("shutil.rmtree", 1, "2"),  # swapped; the old one half deleted
}
KILL_AT_CALL = """
    import os, shutil, sys
    from pathlib import Path
    from inheritune.atomic import atomic_dir

    module, name = sys.argv[2].split(".")
    real, calls = getattr(os if module == "os" else shutil, name), []

    def dying(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == int(sys.argv[3]):
            if name == "rmtree":  # a kill mid-deletion: some files already gone
                next(Path(path).iterdir()).unlink()
            os._exit(9)
        return real(path, *args, **kwargs)

    setattr(os if module == "os" else shutil, name, dying)
    out = Path(sys.argv[1])
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "version").write_text("2")
        (tmp / "more").write_text("2")
    os._exit(0)
"""


@pytest.mark.parametrize("moment", sorted(ATOMIC_DIR_KILLS))
def test_a_killed_atomic_write_is_undone_or_removed_by_the_next_command_on_that_output(moment, tmp_path, capsys):
    out = tmp_path / "case" / "out"
    _version(out, "1")
    call, nth, expected = ATOMIC_DIR_KILLS[moment]
    _killed(KILL_AT_CALL, out, call, nth)
    assert _hidden(out.parent), "the kill left nothing to clean"
    # A command refused on that output says only why (the leftovers wait for one that runs) ...
    capsys.readouterr()
    with pytest.raises(InherituneError, match="not empty"):
        check_output_dir(out, overwrite=False)
    assert capsys.readouterr().err == "" and _hidden(out.parent)
    # ... the next one that writes it starts from the right version, with nothing beside it.
    check_output_dir(out, overwrite=True)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
    assert (out / "version").read_text() == expected
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(REMOVED + str(out.parent)) and ".out." in err, err
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "version").write_text("3")
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"] and _files(out) == {"version": b"3"}
    assert capsys.readouterr().err == ""  # nothing more to say


def test_a_killed_file_write_leaves_the_file_as_it_was_and_the_next_write_removes_its_temporary(tmp_path, capsys):
    path = tmp_path / "result.json"
    atomic_write_json(path, {"v": 1})
    _killed("""
        import os, sys
        from inheritune.atomic import atomic_write_json
        os.fsync = lambda fd: os._exit(9)  # the data is written, not yet renamed into place
        atomic_write_json(sys.argv[1], {"v": 2})
    """, path)
    assert json.loads(path.read_text()) == {"v": 1} and len(_hidden(tmp_path)) == 1
    atomic_write_json(path, {"v": 3})
    assert _hidden(tmp_path) == [] and json.loads(path.read_text()) == {"v": 3}
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(REMOVED) and ".result.json.tmp-" in err, err


def test_a_replacement_killed_while_being_deleted_is_never_taken_for_one_to_continue(tmp_path, capsys):
    """``claim`` deletes a replacement built with other settings: a kill then must not leave a
    ``.NAME.new`` whose stamp survived its checkpoints (a rerun would continue it)."""
    out, work = tmp_path / "out", tmp_path / ".out.new"
    _version(out, "1")
    work.mkdir()
    (work / "stamp.json").write_text(json.dumps({"seed": 1}))
    (work / "checkpoints").mkdir()
    _killed("""
        import os, shutil, sys
        from pathlib import Path
        from inheritune.atomic import claim

        real = shutil.rmtree

        def dying(path, *args, **kwargs):
            real(Path(path) / "checkpoints")  # killed before the stamp goes
            os._exit(9)

        shutil.rmtree = dying
        out = Path(sys.argv[1])
        claim(out, out.with_name(".out.new"), "stamp.json", {"seed": 2}, "seed 2", resuming=False)
    """, out)
    assert not work.exists() and not resumes(work, "stamp.json", {"seed": 1}, "seed 1", overwrite=False)
    assert build_dir(out, continuing=False) == work and _hidden(tmp_path) == []
    assert capsys.readouterr().err.startswith(REMOVED)
    assert not claim(out, work, "stamp.json", {"seed": 2}, "seed 2", resuming=False)
    assert _files(out) == {"version": b"1"} and _files(work) == {"stamp.json": b'{\n  "seed": 2\n}\n'}


def test_a_rerun_that_continues_an_output_removes_what_a_kill_left_deep_inside_it(tmp_path, capsys):
    """A rerun may never redo the write a kill stopped (grow's model folder of a finished round)."""
    out = tmp_path / "out"
    _version(out / "rounds" / "1" / "model", "1")
    _killed(KILL_AT_CALL, out / "rounds" / "1" / "model", "os.replace", 1)
    assert _hidden(out)
    assert build_dir(out, continuing=False) == tmp_path / ".out.new" and _hidden(out)  # not ours to walk
    capsys.readouterr()
    assert build_dir(out, continuing=True) == out and _hidden(out) == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rounds/1/.model.tmp-" in err, err


def test_only_the_leftovers_of_dead_commands_are_removed(tmp_path, capsys):
    out = tmp_path / "out"
    _version(out, "1")
    # A command still writing ``out`` (another process, alive) keeps its temporary ...
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        from inheritune.atomic import atomic_dir
        with atomic_dir(sys.argv[1], overwrite=True) as tmp:
            print(tmp, flush=True)
            sys.stdin.readline()
    """), str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        live = Path(writer.stdout.readline().strip())
        # ... so does this process's own, and what is not ours to judge: made on another host, or a
        # user's file named like one; an older version's temporary is judged by its age.
        with atomic_dir(out, overwrite=True) as own:
            other_host = tmp_path / ".out.tmp-elsewhere-999999999-abcd1234"
            users = tmp_path / ".out.tmp-my-draft"
            older, newer = tmp_path / ".out.tmp-abcd1234", tmp_path / ".out.tmp-efgh5678"
            for path in (other_host, users, older, newer):
                path.mkdir()
            os.utime(older, (0, 0))
            capsys.readouterr()
            assert clean_leftovers(tmp_path, "out") == [older]
            assert all(p.exists() for p in (live, own, other_host, users, newer))
            (own / "version").write_text("2")
        assert capsys.readouterr().err.count("\n") == 1
    finally:
        writer.kill()
        writer.wait()
    assert live.exists()
    assert clean_leftovers(tmp_path, "out") == [live]  # its writer is dead now
    assert (out / "version").read_text() == "2"


def test_a_cli_command_killed_while_writing_cleans_up_when_rerun(tmp_path, capsys):
    """``data prepare --overwrite`` killed mid-write, rerun: one line says what it removed."""
    model = save_tiny(tmp_path / "model", "llama", 1, tok=make_tokenizer())
    source = tmp_path / "docs.txt"
    source.write_text("\n\n".join(generated_text(60)), encoding="utf-8")
    out = tmp_path / "case" / "data"
    argv = ["data", "prepare", source, "--tokenizer", model, "--out", out, "--val-tokens", "200"]
    assert main([str(a) for a in argv]) == 0
    before = _files(out)
    _killed("""
        import os, sys
        from inheritune.cli import main
        from inheritune.data import prepare_job as prepare
        prepare._manifest = lambda *args, **kwargs: os._exit(9)  # the shards are written, the manifest not
        main(sys.argv[1:])
    """, *argv, "--overwrite")
    assert _files(out) == before and len(_hidden(out.parent)) == 1
    capsys.readouterr()
    assert main([str(a) for a in argv] + ["--overwrite"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith(REMOVED)] == [
        f"{REMOVED}{out.parent}: {_name(err)}"] and _name(err).startswith(".data.tmp-"), err
    assert sorted(p.name for p in out.parent.iterdir()) == ["data"]


def _name(err: str) -> str:
    return err.split(REMOVED, 1)[1].split(": ", 1)[1].splitlines()[0]


# --- class 1: checkpoint rotation ----------------------------------------------------------------

FAKE_SAVES = """
    import os, shutil, sys
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from inheritune.training import checkpoint

    class Model:  # what checkpoint.save needs of a model: it writes its weights
        def save_pretrained(self, folder, safe_serialization=True, state_dict=None):
            save_file({"w": torch.zeros(2)}, Path(folder) / "model.safetensors")

    def kill_in_rmtree(path, *args, **kwargs):  # mid-deletion: the trainer state already gone
        (Path(path) / checkpoint.STATE).unlink()
        os._exit(9)

    def kill_in_save(obj, path, *args, **kwargs):  # mid-write of the new checkpoint
        Path(path).write_bytes(b"half")
        os._exit(9)

    run, where = Path(sys.argv[1]), sys.argv[2]
    for step in (1, 2, 3):
        if step == 3 and where == "deleting":
            shutil.rmtree = kill_in_rmtree
        if step == 3 and where == "writing":
            torch.save = kill_in_save
        checkpoint.save(run, step, Model(), None, {"step": step}, keep=2)
"""


@pytest.mark.parametrize("where", ["deleting", "writing"])
def test_a_kill_during_checkpoint_rotation_never_leaves_a_checkpoint_without_its_state(where, tmp_path, capsys):
    run = tmp_path / "run"
    _killed(FAKE_SAVES, run, where)
    visible = sorted(checkpoint.checkpoint_dir(run).glob("step-*"))
    assert visible and all((folder / checkpoint.STATE).is_file() for folder in visible)
    assert len(_hidden(run)) == 1
    newest = {"deleting": "step-0000003", "writing": "step-0000002"}[where]
    assert checkpoint.latest(run).folder.name == newest  # the leftover is never a candidate
    capsys.readouterr()
    checkpoint.clean_partial(run)
    assert _hidden(run) == [] and capsys.readouterr().err.startswith(REMOVED)


def test_a_training_run_killed_while_rotating_checkpoints_resumes_clean(tmp_path, capsys):
    tok = make_tokenizer()
    model = save_tiny(tmp_path / "model", "llama", 2, tok=tok)
    data = make_data_dir(tmp_path / "data", tok, n_docs=60, val_docs=8)
    run = tmp_path / "run"
    options = dict(steps=6, eval_every=2, checkpoint_every=2, keep_checkpoints=1, **FAST)
    _killed("""
        import json, os, shutil, sys
        from pathlib import Path
        from inheritune.commands.train import train
        from inheritune.training import checkpoint

        real = shutil.rmtree

        def dying(path, *args, **kwargs):
            if ".deleting-" in Path(path).name:  # rotating out step 2 at step 4
                (Path(path) / checkpoint.STATE).unlink()
                os._exit(9)
            return real(path, *args, **kwargs)

        shutil.rmtree = dying
        train(sys.argv[1], sys.argv[2], sys.argv[3], **json.loads(sys.argv[4]))
    """, model, data, run, json.dumps(options))
    assert [p.name for p in checkpoint.checkpoint_dir(run).glob("step-*")] == ["step-0000004"]
    assert len(_hidden(run)) == 1
    capsys.readouterr()
    result = train(model, data, run, resume=True, **options)
    assert result.steps == 6 and _hidden(run) == []
    removed = [line for line in capsys.readouterr().err.splitlines() if line.startswith(REMOVED)]
    assert len(removed) == 1 and removed[0].startswith(f"{REMOVED}{tmp_path}: run/checkpoints/.step-0000002.deleting-")


# --- class 3: resuming a finished run ------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished distillation run (alpha 1, T 1) and what it was trained with."""
    root = tmp_path_factory.mktemp("finished")
    tok = make_tokenizer()
    student = save_tiny(root / "student", "llama", 2, seed=1, tok=tok)
    teacher = save_tiny(root / "teacher", "llama", 3, seed=2, tok=tok)
    data = make_data_dir(root / "data", tok, n_docs=60, val_docs=8)
    options = dict(steps=2, eval_every=2, distill_from=str(teacher), **FAST)
    result = train(student, data, root / "run", **options)
    return root, student, data, options, result


@pytest.mark.parametrize("change", [dict(distill_alpha=0.5), dict(distill_temperature=2.0), dict(lr=1e-3),
                                    dict(seed=1), dict(distill_from=None), dict(grad_clip=0.5),
                                    dict(tokens_per_step=256, batch_size=8)], ids=lambda change: ",".join(change))
def test_a_finished_run_resumed_with_a_changed_setting_is_refused_naming_it(change, finished):
    root, student, data, options, _ = finished
    stored = (root / "run" / "result.json").read_text()
    key = sorted(change)[0]
    with pytest.raises(InherituneError, match=rf"was started with {key}=.*, not {change[key]}; resume with the same"):
        train(student, data, root / "run", resume=True, **{**options, **change})
    assert (root / "run" / "result.json").read_text() == stored


def test_a_finished_run_resumed_with_the_same_results_settings_returns_its_result(finished, capsys):
    root, student, data, options, result = finished
    again = train(student, data, root / "run", resume=True, **{**options, "eval_every": 1, "log_every": 3})
    assert again.val_history == result.val_history
    capsys.readouterr()
    argv = ["train", student, "--data", data, "--out", root / "run", "--steps", "2", "--distill-from",
            options["distill_from"], "--distill-alpha", "0.5", "--seq-len", "32", "--batch-size", "4",
            "--lr", "3e-3", "--precision", "fp32", "--no-progress", "--resume"]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was started with distill_alpha=1.0, not 0.5" in err, err


# --- class 4: empty text, broken task YAMLs, library chatter ----------------------------------------

EMPTY_TEXTS = {"byte-order mark": b"\xef\xbb\xbf", "mark and whitespace": b"\xef\xbb\xbf \n\n\t\r\n",
               "whitespace": b" \n \n"}


@pytest.mark.parametrize("content", sorted(EMPTY_TEXTS))
def test_a_text_file_of_only_a_byte_order_mark_or_whitespace_is_reported_empty(content, tmp_path, tokenizer, capsys):
    from inheritune.analysis.sampling import tokens_from
    from inheritune.data.sources import documents

    path = tmp_path / "only.txt"
    path.write_bytes(EMPTY_TEXTS[content])
    with pytest.raises(InherituneError, match=rf"^{re.escape(str(path))} is empty$"):
        list(documents(str(path)))
    with pytest.raises(InherituneError, match=rf"^{re.escape(str(path))} is empty$"):
        tokens_from(None, path, tokenizer)
    model = save_tiny(tmp_path / "model", "llama", 1, tok=tokenizer)
    capsys.readouterr()
    assert main(["data", "prepare", str(path), "--tokenizer", str(model), "--out", str(tmp_path / "data")]) == 2
    assert capsys.readouterr().err == f"inheritune: error: {path} is empty\n"
    assert not (tmp_path / "data").exists()


def test_a_byte_order_mark_is_not_text(tmp_path):
    from inheritune.data.sources import documents

    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfHello there.")
    (tmp_path / "b.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "first"}\n{"text": "second"}\n')
    assert list(documents(str(tmp_path / "a.txt"))) == ["Hello there."]
    assert list(documents(str(tmp_path / "b.jsonl"))) == ["first", "second"]


def _tasks(folder: Path) -> Path:
    """A folder of the user's lm-eval tasks: ``toy_mc`` (multiple choice) and ``toy_gen`` (generation)
    on local files, ``toy_missing`` whose data file is not there."""
    folder.mkdir()
    rows = [{"question": f"What is {i} plus 1?", "choices": [str(i + 1), str(i + 2)], "answer": 0} for i in range(20)]
    (folder / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = {"dataset_path": "json", "test_split": "train", "doc_to_text": "Q: {{question}}\nA:",
              "doc_to_target": "{{answer}}", "dataset_kwargs": {"data_files": {"train": str(folder / "docs.jsonl")}}}
    (folder / "toy_mc.yaml").write_text(yaml.safe_dump({"task": "toy_mc", "output_type": "multiple_choice",
                                                        "doc_to_choice": "{{choices}}", **common}))
    (folder / "toy_gen.yaml").write_text(yaml.safe_dump({"task": "toy_gen", "output_type": "generate_until",
                                                         "metric_list": [{"metric": "exact_match"}], **common}))
    missing = {**common, "dataset_kwargs": {"data_files": {"train": str(folder / "gone.jsonl")}}}
    (folder / "toy_missing.yaml").write_text(yaml.safe_dump({"task": "toy_missing", "doc_to_choice": "{{choices}}",
                                                             "output_type": "multiple_choice", **missing}))
    return folder


BROKEN_YAMLS = {
    "bad syntax": ("task: toy_broken\n  output_type: [multiple_choice\n", "mapping values are not allowed"),
    "not a mapping": ("- task: toy_broken\n", "Expected YAML dict"),
    "missing include": ("include: base.yaml\ntask: toy_broken\n", "No such file or directory"),
}


@pytest.fixture(scope="module")
def user_tasks(tmp_path_factory, tokenizer):
    """The tasks folder (one for the module: lm-eval indexes it, with all of its own, once) and a model."""
    from inheritune.evaluation import suite

    root = tmp_path_factory.mktemp("user-tasks")
    yield _tasks(root / "tasks"), save_tiny(root / "model", "llama", 1, tok=tokenizer)
    suite.clear_caches()


@pytest.fixture
def broken_yaml(user_tasks, request):
    """``sub/broken.yaml`` in the tasks folder, holding ``request.param``'s text, for one test."""
    path = user_tasks[0] / "sub" / "broken.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(BROKEN_YAMLS[request.param][0])
    yield path
    path.unlink()


@pytest.mark.parametrize("command", ["importance", "eval"])
@pytest.mark.parametrize("broken_yaml", sorted(BROKEN_YAMLS), indirect=True)
def test_a_task_yaml_that_does_not_parse_is_named_not_called_an_unknown_task(command, broken_yaml, user_tasks,
                                                                            tmp_path, capfd, request):
    folder, model = user_tasks
    out = ["--out", str(tmp_path / "out")] if command == "importance" else []
    capfd.readouterr()
    assert main([command, str(model), "--tasks", "toy_broken", "--include-path", str(folder), *out]) == 2
    err = capfd.readouterr().err
    why = BROKEN_YAMLS[request.node.callspec.params["broken_yaml"]][1]
    assert err.count("\n") == 1 and f"task YAML {broken_yaml} in --include-path does not parse: " in err, err
    assert why in err and "unknown task" not in err and not (tmp_path / "out").exists(), err


@pytest.mark.parametrize("broken_yaml", ["bad syntax"], indirect=True)
def test_a_broken_yaml_beside_a_good_task_does_not_stop_it(broken_yaml, user_tasks):
    from inheritune.evaluation import harness_mc

    assert harness_mc.known("toy_mc", user_tasks[0])


def test_a_failing_task_load_prints_only_the_error_line(user_tasks, tmp_path):
    """Run as a user would (a fresh process, real stderr): lm-eval's notices and datasets' progress
    bars while the task loads must not precede the one error line."""
    folder, model = user_tasks
    for task, message in (("toy_gen", "lm-eval task toy_gen is generate_until, not multiple_choice"),
                          ("toy_missing", "lm-eval could not load task toy_missing: ")):
        r = subprocess.run([sys.executable, "-m", "inheritune", "importance", str(model), "--tasks", task,
                            "--include-path", str(folder), "--out", str(tmp_path / "out")],
                           capture_output=True, text=True, env={**ENV, "HF_DATASETS_CACHE": str(tmp_path / "hf")})
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("inheritune: error: ") and message in r.stderr, r.stderr


def test_library_output_is_shown_once_a_block_succeeds_and_dropped_when_it_fails(capsys):
    """Also what goes through a library's own log handler, which holds the stderr it found."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("lm_eval.test_leftovers")
    logging.getLogger("lm_eval").addHandler(handler)
    try:
        capsys.readouterr()
        with pytest.raises(ValueError), held_back():
            logger.error("a notice before the failure")
            print("a progress bar", file=sys.stderr)
            print("a note", file=sys.stdout)
            raise ValueError("the failure")
        assert stream.getvalue() == "" and capsys.readouterr() == ("", "")
        with held_back():
            logger.error("a notice")
            print("a progress bar", file=sys.stderr)
        assert stream.getvalue() == "" and capsys.readouterr().err == "a notice\na progress bar\n"
        assert handler.stream is stream
    finally:
        logging.getLogger("lm_eval").removeHandler(handler)


# ---- class 1: every input checked before anything is created or renamed ------------------------------

@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A reference and its data, a teacher with the same tokenizer, one with another, and a finished grow run."""
    root = tmp_path_factory.mktemp("teachers")
    tok = make_tokenizer()
    reference = save_tiny(root / "reference", "llama", 3, seed=2, tok=tok)
    other = save_tiny(root / "other-teacher", "llama", 3, seed=3, tok=make_tokenizer(300))
    data = make_data_dir(root / "data", tok)
    return root, reference, other, data


def _grow_argv(reference, data, out, *extra) -> list[str]:
    return ["grow", str(reference), "--data", str(data), "--out", str(out), "--start-layers", "1", "--max-layers", "1",
            "--tokens-per-round", "128", "--seq-len", "32", "--precision", "fp32", "--peak-flops", "1e12",
            "--no-progress", *extra]


@pytest.mark.parametrize("teacher, cause", [("missing", "the teacher (distill_from) no such model"),
                                            ("other", "tokenizer mismatch")])
def test_grow_refuses_a_bad_teacher_before_making_a_replacement(teachers, teacher, cause, tmp_path, capsys):
    root, reference, other, data = teachers
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("a previous run")
    name = str(root / "nowhere") if teacher == "missing" else str(other)
    code = main(_grow_argv(reference, data, out, "--overwrite", "--distill-from", name))
    err = capsys.readouterr().err
    assert code == 2 and cause in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and [p.name for p in out.iterdir()] == ["keep.txt"]


def _recipe(root: Path, reference: Path, teacher: str, path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "reference": str(reference), "data": {"sources": [str(root / "docs.jsonl")], "val_tokens": 500},
        "train": {"seq_len": 32, "batch_size": 4, "precision": "fp32", "peak_flops": 1e12, "progress": False},
        "grow": {"start_layers": 1, "max_layers": 1, "tokens_per_round": 128},
        "distill": {"enabled": True, "teacher": teacher}}))
    return path


@pytest.mark.parametrize("teacher, cause", [("missing", "no such model"),
                                            ("other", "its tokenizer differs from the reference")])
@pytest.mark.parametrize("mode", ["fresh", "check", "overwrite"])
def test_run_names_a_bad_teacher_key_before_creating_anything(teachers, teacher, cause, mode, tmp_path, capsys):
    root, reference, other, data = teachers
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in generated_text(40)))
    name = str(root / "nowhere") if teacher == "missing" else str(other)
    recipe = _recipe(root, reference, name, tmp_path / "r.yaml")
    out = tmp_path / "out"
    if mode == "overwrite":
        out.mkdir()
        (out / "keep.txt").write_text("a previous run")
    argv = ["run", str(recipe), "--check"] if mode == "check" else ["run", str(recipe), "--out", str(out)]
    code = main(argv + (["--overwrite"] if mode == "overwrite" else []))
    err = capsys.readouterr().err
    assert code == 2 and f"recipe key 'distill.teacher' ({name})" in err and cause in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out", "r.yaml"] if mode == "overwrite" else ["r.yaml"])
    if mode == "overwrite":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_run_check_says_what_it_checked(teachers, tmp_path, capsys):
    root, reference, other, data = teachers
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in generated_text(40)))
    recipe = _recipe(root, reference, str(reference), tmp_path / "r.yaml")
    assert main(["run", str(recipe), "--check"]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out and "checked data.sources" in out and f"checked reference {reference}" in out
