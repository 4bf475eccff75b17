"""``python -m triage``: the same CLI as the ``triage`` command."""

from triage.cli import app

if __name__ == "__main__":  # guard: worker processes started with spawn re-import __main__
    app()
