"""python -m vaekit: the vaekit command (torchrun -m vaekit train ... starts it in each process)."""
import sys

from .cli import main

sys.exit(main())
