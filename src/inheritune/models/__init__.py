"""Model loading, the family table, and block surgery (derive, grow)."""
