"""The typed shapes, imported everywhere."""
