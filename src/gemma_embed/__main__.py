"""`python -m gemma_embed ...` is the `gemma-embed` command (torchrun needs the module form)."""

import sys

from gemma_embed.cli import main

sys.exit(main())
