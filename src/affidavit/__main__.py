"""``python -m affidavit`` runs the command-line interface."""

from __future__ import annotations

from affidavit.cli.main import run

if __name__ == "__main__":
    run()
