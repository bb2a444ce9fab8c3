"""The morning side: reading a night back (status, summary, report, plot, html, compare,
publish, transplant, the pandas API).

The renderers (plot, html) are given their data and touch neither git nor the TSV.

May import: harness.agents, harness.edits, harness.integrity, harness.settings, harness.detect,
harness.store, harness.errors, harness.credentials. Never harness.night or harness.commands.
"""
