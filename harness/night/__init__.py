"""The night: the experiment loop and everything one attempt goes through.

The loop asks the proposer for an edit, commits it, runs it under the budget (runner),
reads the summary block (metrics), judges it (judge, noise), keeps or reverts the commit and
writes the row; live shows it happening.

May import: harness.agents, harness.edits, harness.integrity, harness.settings, harness.detect,
harness.store, harness.errors, harness.credentials. Never harness.review (the morning side) or
harness.commands.
"""
