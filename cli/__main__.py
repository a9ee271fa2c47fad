"""``python -m cli`` is the ``backprop`` command."""

from cli.main import app

app()
