"""`inheritune run [RECIPE.yaml] --out RUN`: the whole recipe, from data to a report comparing the arms
(``inheritune.run``; ``--show-default`` and ``--check`` are ``default_recipe_text()`` and ``load_recipe()``)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a recipe end to end: data, grow until matched, scratch arms, report")
    p.add_argument("recipe", nargs="?", help="recipe YAML (default: the embedded default, see --show-default)")
    p.add_argument("--out", help="run folder (rerun the same command to resume)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run in --out started with another recipe: the new one is built beside it "
                        "(.NAME.new) and swapped in when complete; rerun the same command to continue it after a kill")
    p.add_argument("--show-default", action="store_true", help="print the embedded default recipe and exit")
    p.add_argument("--check", action="store_true", help="only check the recipe and exit")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let the reference's own code (auto_map) run: same as train.trust_remote_code in the recipe")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inheritune.recipe import default_recipe_text, load_recipe

    if args.show_default:
        print(default_recipe_text(), end="")
        return 0
    recipe = load_recipe(args.recipe)  # every key checked before any work
    from inheritune.pipeline import check_inputs, run as run_recipe

    if args.check:
        if args.trust_remote_code:
            recipe.train["trust_remote_code"] = True
        checked = check_inputs(recipe)  # the same checks as a run makes first (tokenizers, not weights)
        print(f"recipe {args.recipe or '(default)'} is valid: reference {recipe.reference}")
        print("".join(f"  checked {line}\n" for line in checked), end="")
        return 0

    run_recipe(recipe, out=args.out, overwrite=args.overwrite, trust_remote_code=args.trust_remote_code)
    return 0
