"""Pruning jobs: global head/FFN masks (``unit_masks``), whole blocks and width (``structural_cuts``),
run by ``prune_job`` and described by ``prune_results``."""
