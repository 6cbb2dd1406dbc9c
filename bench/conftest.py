"""Makes the repository importable for ``pytest bench`` when rmq is not pip-installed (``pytest`` adds only bench/)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
