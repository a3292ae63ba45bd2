"""`python -m trainers`: the same command as the `trainers` console script."""

from flowstore.console import trainers

trainers()
