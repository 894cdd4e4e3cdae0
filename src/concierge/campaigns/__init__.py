"""Campaigns: definitions, triggers, the due queue, templates, contact policy and the worker."""
