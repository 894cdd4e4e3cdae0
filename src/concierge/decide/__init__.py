"""Decide: recommendations.

Candidates -> filters -> rules -> blended ranking -> diversity -> reasons.
"""
