"""autoresearch: an autonomous experiment loop for ML research.

The harness asks an agent to edit the mutable file(s) of one experiment, runs the
experiment under a fixed budget, reads the metric from its summary block, keeps the
git commit if it improved and resets it otherwise, and logs every attempt to a TSV.
ARCHITECTURE.md says how the layers and modules fit together.
"""

__version__ = "0.1.0"
