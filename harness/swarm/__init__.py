"""The swarm layer: one night on many GPUs and hosts, as a family of worker nights.

`local` starts one worker process per GPU of this host (`--gpus`); `cluster` one Ray actor per
GPU of a Ray cluster (`--ray`). Either way each worker is an ordinary `autoresearch run` on its
own tag `<tag>-<worker>`, joined to the family's shared ledger (`harness.store.family`), and
`link_for` gives a worker its end of that ledger. Ray places the actors; nothing here schedules.

May import: harness.settings, harness.options, harness.store, harness.errors (and Ray, lazily,
in `cluster`). Never harness.night or harness.review (its siblings: a worker's night runs in a
process of its own) or harness.commands, its only caller.
"""

from __future__ import annotations

from harness.errors import ConfigError
from harness.settings import Settings
from harness.store.family import Link, local_link


def link_for(settings: Settings) -> Link | None:
    """A worker's link to its family's coordinator, or None for a night on its own."""
    if not settings.family:
        return None
    if not settings.worker:
        raise ConfigError("--family is set by the --gpus or --ray driver for its workers, with --worker")
    if settings.coordinator:
        from harness.swarm.relay import connect

        return connect(settings.coordinator, settings.worker)
    return local_link(
        settings.repo_root, settings.family, settings.worker, settings.metric, settings.direction
    )
