"""`inheritune importance`: its options' help; the job itself is ``inheritune.analysis.importance_job``.

Gradient head importance and FFN knock-out importance per task x shot count.
"""

from inheritune.analysis.importance_job import ImportanceResult, importance

__all__ = ["ImportanceResult", "importance"]
