"""Storage: what a night leaves on disk and in git.

git (the tag's worktree and branch; the one place that runs git for the loop), gitview
(read-mostly git for the review side), ledger (the append-only results TSV), journal (the
attempt in flight, the tag lock), atomic (durable small-file writes).

May import: harness.errors, harness.credentials. Nothing above it.
"""
