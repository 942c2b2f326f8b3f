"""Errors the pipeline reports to the user in one line."""


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive training steps had a non-finite loss or gradient (``train.max_nonfinite_steps``)."""
