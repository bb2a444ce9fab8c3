"""Storage: what a night leaves on disk and in git.

paths (where every file of a tag lives), git (Repo, the one git class, and the tag's
ratchet), ledger (the append-only results TSV, kept in memory), journal (the attempt in flight,
the tag lock), atomic (durable small-file writes and the one inter-process lock).

May import: harness.errors, harness.credentials. Nothing above it.
"""
