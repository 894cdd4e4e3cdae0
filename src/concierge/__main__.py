"""``python -m concierge`` runs the CLI."""

from concierge.cli.main import app

app(prog_name="concierge")
