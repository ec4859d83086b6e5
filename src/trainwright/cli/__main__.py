"""``python -m trainwright.cli ...`` (e.g. under ``torchrun -m trainwright.cli``)."""
import sys

from .main import main

sys.exit(main())
