"""`python -m deploycc` runs the CLI."""

from .cli import main

main()
