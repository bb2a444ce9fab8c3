"""Integrity: the defences that make a kept metric mean something.

sandbox (the run inside bubblewrap namespaces: a read-only view, one scratch folder, no network,
its own PID namespace), environment (the run's allow-listed variables), budget (training time
by the harness's clock), checks (static checks on every edit before it runs), guard (immutable
files hashed before a run and restored after it), evaluation (the metric computed by prepare's
evaluator in its own process, from the model the run handed off). ARCHITECTURE.md says what each
stops and what it does not.

May import: harness.agents, harness.edits (same layer), harness.settings, harness.detect,
harness.store, harness.errors, harness.credentials. Never harness.night, harness.review or
harness.commands.
"""
