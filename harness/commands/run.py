"""`autoresearch run`: resolve the settings, build the agent, prepare data, run the night, publish.

`--sandbox` is settled here, before anything is written: `on` refuses to start without a
sandbox (one line, exit 2); `auto` uses it when `harness.integrity.sandbox.probe()` works and
otherwise says why not; `off` says what it gives up. The line is part of the settings printed at start.

The flags are `harness.options.OPTIONS` (the same table resolves them and lists the
AUTORESEARCH_* variables in `--help`). When the night ends normally and the tag's branch tracks
a remote (after a first `autoresearch publish`), the branch and its results are published again.

With `--gpus 0,1,...` (one host) or `--ray ADDRESS|auto` (a Ray cluster) this process becomes
the driver of a family of workers, one per GPU (`harness.swarm`); each worker is this same
command with its own tag `<tag>-<worker>`, joined to the family's shared ledger.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from harness import settings as config
from harness.agents import create_agent
from harness.errors import ConfigError
from harness.integrity.sandbox import choose
from harness.options import OPTIONS, config_files
from harness.review.publish import publish_if_upstream
from harness.settings import Settings
from harness.swarm import link_for


def add_arguments(p: argparse.ArgumentParser) -> None:
    for opt in OPTIONS:
        if opt.flag is None:
            continue
        help_text = argparse.SUPPRESS if opt.hidden else opt.help
        if opt.env:
            help_text += f" (env {opt.env})"
        if opt.switch:
            p.add_argument(opt.flag, dest=opt.dest, action="store_true", help=help_text)
        else:
            p.add_argument(
                opt.flag, dest=opt.dest, required=opt.required, metavar=opt.metavar,
                choices=opt.choices or None, help=help_text,
            )  # fmt: skip
    knobs = [
        f"  {opt.env:<32} {opt.help} (default: {opt.show(config.default_of(opt.field))}; config: {opt.key})"
        for opt in OPTIONS
        if opt.flag is None and opt.env
    ]
    files = " or ".join(str(path) for path in reversed(config_files(Path("<repo>"))))
    p.epilog = (
        "environment variables (the resolved values are printed at start):\n" + "\n".join(knobs) + "\n\n"
        f"config file: {files} (the repository's wins). Keys are the flags without their\n"
        'leading dashes and the variables without AUTORESEARCH_, e.g.  agent = "claude"  max-cost = 20  llm-timeout = 300.\n'
        "Precedence: flag > experiment.toml > config file > environment variable > default."
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def settings_from_args(args: argparse.Namespace) -> Settings:
    return config.resolve(**{opt.dest: getattr(args, opt.dest) for opt in OPTIONS if opt.flag})


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings.gpus and settings.ray:
        raise ConfigError(
            "--gpus and --ray exclude each other: --ray starts one worker per GPU of the cluster"
        )
    if settings.ray and not settings.worker:
        from harness.swarm.cluster import run_ray

        return run_ray(settings, args)
    if settings.gpus and not settings.worker:
        from harness.swarm.local import run_local

        return run_local(settings, args)
    family = link_for(settings)  # a worker of a family: its end of the shared ledger
    # Validate everything that can be bad input before anything is written.
    agent = create_agent(settings.agent, settings=settings)
    sandboxed, why = choose(settings.sandbox)  # --sandbox on without a sandbox: ConfigError, exit 2
    settings = dataclasses.replace(
        settings, sandbox="on" if sandboxed else "off", reasons={**settings.reasons, "sandbox": why}
    )
    print("autoresearch run", flush=True)
    for line in settings.describe():
        print(f"  {line}", flush=True)
    checked = agent.preflight()  # an LLM endpoint that cannot answer stops here, before anything runs
    if checked:
        print(checked, flush=True)
    built = config.ensure_dataset(settings)
    if built:
        print(built, flush=True)
    from harness.night.loop import Night

    _stop_signals_interrupt()
    code = Night(settings, agent, family).run()
    if code == 0:
        publish_if_upstream(settings.repo_root, settings.tag)  # only if the branch tracks a remote
    return code


def _stop_signals_interrupt() -> None:
    """SIGTERM (`kill <pid>`, tmux kill-session) and SIGHUP (the terminal closed) stop the night
    like Ctrl-C, so the attempt in flight gets its row."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            # The terminal is gone: writing to it now fails (EIO), and the last messages and the
            # row must still be written. Point the dead terminal's descriptors at /dev/null.
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                if os.isatty(fd):
                    os.dup2(devnull, fd)
            os.close(devnull)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGHUP, handler)
