"""Rule-based audiences over profile fields and predictions, evaluated incrementally."""
