"""Offline evaluation of the models and of the decisions built on them."""
