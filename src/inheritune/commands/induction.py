"""`inheritune induction`: its options' help; the job itself is ``inheritune.analysis.induction_job``.

``induction``: prefix-matching and copying score per head on repeated random tokens.
"""

from inheritune.analysis.induction_job import InductionResult, induction

HELP = {  # the CLI's help for this command's own parameters (shared ones: inheritune.commands.HELP)
    "seg_len": "distinct random tokens per segment",
    "repeats": "times the segment is repeated",
    "exclude": "share of lowest and of highest token ids left out",
    "top": "how many top induction heads to list",
}

__all__ = ["HELP", "InductionResult", "induction"]
