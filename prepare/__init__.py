"""prepare: the immutable data and metric pipeline every experiment is judged by.

    from prepare import (MAX_SEQ_LEN, TIME_BUDGET, EVAL_TOKENS, VOCAB_SIZE, DEVICE,
                         Tokenizer, make_dataloader, make_dataloader_numpy, hand_off)

The UPPERCASE values are the *active* device profile of constants.py (AUTORESEARCH_DEVICE,
else cuda when torch sees a GPU, else cpu), with AUTORESEARCH_TIME_BUDGET replacing
TIME_BUDGET. The dataset and cache come from AUTORESEARCH_DATASET / AUTORESEARCH_CACHE.

`import prepare` imports neither torch nor mlx (the harness imports it): every name above
is resolved on first access, and device detection happens only then.

A train file ends with `hand_off(model, batch_size)`: the harness evaluates the handed-off model
in a separate process (`python -m prepare.evaluate_program`), with causality probes; one whose
metric is accuracy on additions (`[integrity] evaluator = "arith"`) ends with
`hand_off_decoder(model, batch_size)` instead (`prepare.evaluate_arith`: greedy decoding). The
in-process `evaluate_bpb(model, tokenizer, batch_size)` computes the same number for a live model
(tests, notebooks, benchmarks); it needs the validation data, which a judged train run cannot see.

Modules: env (active settings), constants (profiles, top level), datasets (cache, manifest,
check_ready, prepare_dataset), arithmetic, sources (climbmix download, text:PATH), shards,
tokenizer, dataloader, evalset (the pinned rows), evaluate / evaluate_mlx (the metric),
handoff, program / program_mlx (the model as data), causality (the probes), evaluate_program
(the evaluator), evaluate_arith (the greedy-decoding evaluator), basemodel (finetune's pretrained
checkpoint), launch (torchrun for multi-process runs), cli.
"""

from __future__ import annotations

import importlib
from typing import Any

_PROFILE_NAMES = ("MAX_SEQ_LEN", "TIME_BUDGET", "EVAL_TOKENS", "VOCAB_SIZE", "TIMEOUT")
_LAZY = {
    "Tokenizer": ("prepare.tokenizer", "Tokenizer"),
    "make_dataloader": ("prepare.dataloader", "make_dataloader"),
    "make_dataloader_numpy": ("prepare.dataloader", "make_dataloader_numpy"),
    "hand_off": ("prepare.handoff", "hand_off"),
    "hand_off_decoder": ("prepare.evaluate_arith", "hand_off_decoder"),
    "evaluate_bpb": ("prepare.evaluate", "evaluate_bpb"),
}

__all__ = ["DEVICE", *_PROFILE_NAMES, *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _PROFILE_NAMES:
        from prepare import env

        return env.active_profile()[name]
    if name == "DEVICE":
        from prepare import env

        return env.device()
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # functions and classes do not depend on the environment: cache them
        return value
    raise AttributeError(f"module 'prepare' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
