"""PyYAML for the ops checks (check_compose.py, check_dashboard.py).

PyYAML comes from Debian's `python3-yaml` (scripts/test.sh installs it), which
serves /usr/bin/python3. When the `python3` first on PATH is another
interpreter without PyYAML (pyenv, a venv), the calling script is run again
under /usr/bin/python3 instead of failing.
"""

import os
import sys

DEBIAN_PYTHON = "/usr/bin/python3"

try:
    import yaml
except ImportError:
    if os.access(DEBIAN_PYTHON, os.X_OK) and os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PYTHON):
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON, *sys.argv])
    sys.exit(f"{os.path.basename(sys.argv[0])}: PyYAML is missing: apt-get install python3-yaml")


def load(path: str):
    """Parse one YAML file (anchors, aliases and merge keys resolved)."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)
