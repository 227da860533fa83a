"""`inheritune analyze`: its options' help; the job itself is ``inheritune.analysis.analyze_job``.

``analyze``: lazy layers, layer redundancy and how many layers to inherit, as a folder.
"""

from inheritune.analysis.analyze_job import AnalyzeResult, analyze

HELP = {  # the CLI's help for this command's own parameters (shared ones: inheritune.commands.HELP)
    "tau": "energy share of the approximate rank",
    "lazy_rank": "lazy if max-over-heads rank <= this fraction of T",
    "lazy_mass": "... and mean heaviest-column share >= this",
    "bi_share": "secondary rule: cumulative Block Influence share",
    "min_depth": "recommendation: look for the first lazy layer from this fraction of depth on",
    "bos": "start every sequence with the BOS token (then T-1 sampled tokens)",
}

__all__ = ["HELP", "AnalyzeResult", "analyze"]
