"""Decide: recommendations (candidates → filters → rules → blended ranking → diversity → reasons)."""
