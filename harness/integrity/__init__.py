"""Integrity: the defences that make a kept metric mean something.

sandbox (the run inside bubblewrap namespaces: a read-only view, one scratch folder, no network,
its own PID namespace), checks (static checks on every edit before it runs), guard (immutable
files hashed before a run and restored after it), provenance (a printed metric counts only if
prepare's evaluator recorded it). ARCHITECTURE.md says what each stops and what it does not.

May import: harness.agents, harness.edits (same layer), harness.settings, harness.detect,
harness.store, harness.errors, harness.credentials. Never harness.night, harness.review or
harness.commands.
"""
