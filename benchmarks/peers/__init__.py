"""Other servers on the same weights, for side-by-side comparisons (``run --compare``)."""
