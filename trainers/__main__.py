"""`python -m trainers`: the same command as the `trainers` console script."""

from trainers.cli import main

main()
