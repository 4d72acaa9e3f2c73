"""``python -m jupyter_anvil [ROOT]``: the same as ``jupyter anvil [ROOT]``."""

from jupyter_anvil.cli import main

main()
