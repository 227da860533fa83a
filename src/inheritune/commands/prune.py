"""`inheritune prune`: its options' help; the job itself is ``inheritune.pruning.prune_job``.

Remove heads and FFNs, whole blocks, or width; save the model, report the damage soundly.
"""

from inheritune.analysis import selection
from inheritune.analysis import width_ranking as wd
from inheritune.models import budget, width_cut
from inheritune.pruning.prune_job import prune
from inheritune.pruning.prune_results import LayerPruneResult, PruneResult, WidthPruneResult

HELP = {  # the CLI's help for this command's own parameters (shared ones: inheritune.commands.HELP)
    "by": "importance (default; least important first), induction (induction heads first; FFNs by importance) "
    f"or random (by --seed); with --drop-layers (default block-influence): {selection.HELP}",
    "heads": "percent of heads to prune, globally (0-100)",
    "ffn": "percent of FFN layers to prune, globally (0-100)",
    "drop_layers": "drop K whole blocks instead (chosen on --data's train split, val loss on its val split)",
    "scores": "importance.json from `inheritune importance` (default: rank here); it must not have ranked on the "
    "scoring examples",
    "source": "which source ranks the units (default: lm, else the first)",
    "allow_overlap": "accept --scores ranked on scoring examples: warn and count them in prune.json",
    "iterative": "reach --heads/--ffn in this many steps, re-scoring importance after each (1: one-shot)",
    "physical": "with --heads/--ffn: say why a global plan stays as zeroed weights (--width-* ship smaller models)",
    "width_heads": "percent of every block's heads to cut out (whole key/value groups, or see --head-unit): a "
    "smaller config and files; needs --data",
    "width_ffn": "percent of every block's FFN neurons to cut out",
    "params": "a parameter budget: keep at most this share (0-1) of the non-embedding parameters, the cut "
    "chosen by --budget-by (default: no budget)",
    "budget_by": "depth (drop blocks, chosen by --by), width (cut every block's FFN neurons, ranked by --width-by) "
    "or both (blocks to about the square root of the share, then FFN neurons)",
    "width_by": "ranking of heads and neurons on --data's train split: activation (Minitron: mean output norm) "
    "or gradient (mean |dL/dscale|)",
    "head_unit": "group (a key/value head with its query heads) or query (the same number of query heads in "
    "every group)",
    "sweep": "also score every criterion over --steps (heads) and --ffn-steps, with 95%% intervals",
    "steps": "head sweep percentages, comma-separated",
    "ffn_steps": "FFN sweep percentages, comma-separated",
}
CHOICES = {"budget_by": budget.SHAPES, "head_unit": width_cut.HEAD_UNITS, "width_by": wd.RANKINGS}

__all__ = ["CHOICES", "HELP", "LayerPruneResult", "PruneResult", "WidthPruneResult", "prune"]
