"""`python -m gardener` runs the command line."""
from .cli import main

main()
