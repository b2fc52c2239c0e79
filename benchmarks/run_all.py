"""Run every benchmark in this folder (``make bench``); each prints its figures and ratios.

Pass ``--quick`` for small sizes (a smoke run); the figures in docs/performance.md come from
full runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    """Run ``bench_*.py`` one after the other; exit non-zero when one fails."""
    here = Path(__file__).resolve().parent
    extra = sys.argv[1:]
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"\n=== {script.name} {' '.join(extra)}", flush=True)
        if subprocess.run([sys.executable, str(script), *extra], check=False).returncode:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
