"""Make ``echomtl`` importable in a job whose environment lacks it (``snakemake --use-conda``).

The conda environment (environment.yml) holds the third-party packages only; there, the package
is imported from this checkout's ``src/``. Where echomtl is installed (``make setup``, a wheel),
nothing changes. Snakemake puts this folder on ``sys.path`` of every script job.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("echomtl") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
