"""Contract test kits shipped with Concierge: subclass them in the tests of each model, channel
and store backend (see STYLE.md, convention 7)."""
