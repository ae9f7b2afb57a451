"""Seeds, one rule for every backend: a run has one seed, and each epoch draws from its own
(:func:`epoch_seed`), so that the shuffling and dropout of epoch ``k`` do not depend on whether epochs
``0..k-1`` ran in this process or before a resume."""

from __future__ import annotations

import numbers
import secrets

import numpy as np

#: seeds are integers from 0 to SEED_LIMIT - 1 in every backend (each framework takes them all)
SEED_LIMIT = 2**31


def new_seed() -> int:
    """A fresh seed for a run that was given none (it is stored, so resuming repeats it)."""
    return secrets.randbelow(SEED_LIMIT)


def check_seed(seed) -> int:
    """``seed`` is an integer from 0 to :data:`SEED_LIMIT` - 1, the one rule for every backend."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an integer from 0 to {SEED_LIMIT - 1} (2**31 - 1), got {seed!r}")
    return int(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed epoch ``epoch`` starts from: a function of the run's seed and the epoch alone; in data-parallel
    training, of the worker's ``rank`` too, so that each worker draws its own dropout masks (rank 0 those of
    one process)."""
    return int(np.random.SeedSequence([seed, epoch, *([rank] if rank else [])]).generate_state(1)[0] % 2**31)
