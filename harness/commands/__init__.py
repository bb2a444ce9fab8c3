"""The command-line front ends: one thin module per `autoresearch` subcommand, plus `main`.

Each module parses its flags, calls the library, prints the result; `main` turns the errors a
person can act on into one line and exit code 2. This is the only layer that sees both the
night and the morning side.

May import: everything below it (harness.night, harness.review, harness.agents, harness.edits,
harness.integrity, harness.settings, harness.detect, harness.store, harness.errors,
harness.credentials) and prepare. Nothing imports it but `python -m harness`.
"""
