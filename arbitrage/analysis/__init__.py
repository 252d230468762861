"""Offline analysis of finished runs: the score table, report and figures, eval-router, estimate.
Nothing here is imported by the run itself."""
