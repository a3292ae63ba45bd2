"""`python -m flowstore`: the same command as the `flowstore` console script."""

from flowstore.console import flowstore

flowstore()
