"""How an evaluator ends: a summary block for people, then the one result line the harness reads.

Both evaluators (`prepare.evaluate_program` for val_bpb, `prepare.evaluate_arith` for accuracy)
end through `conclude`: it runs the evaluation, turns a refusal into a `reason`, prints the
summary block (`---`, `key: value`) and, last, the result line

    @@autoresearch evaluation {"<metric>": ..., ...}      (exit status 0)
    @@autoresearch evaluation {"reason": "<why>: ..."}    (exit status 1)

(`harness.integrity.evaluation` reads it; the harness keeps its own copy of the marker because
it never imports prepare.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from prepare.program import ProgramError

RESULT_MARKER = "@@autoresearch evaluation"


class RunFailed(Exception):
    """The program was accepted but failed while it ran (out of memory, a bad index, wrong logits)."""


def conclude(
    evaluate: Callable[[], dict[str, Any]],
    metric: str,
    summary: Sequence[tuple[str, str, str]],
    refusals: Sequence[tuple[type[Exception], str]] = (),
) -> int:
    """Run `evaluate`; print `summary` ((label, result key, format) each) and the result line.

    A `prepare.program.ProgramError`, a `RunFailed` or one of `refusals` ((exception, why) each)
    becomes the result {"reason": "<why>: <message>"}. Returns the exit status.
    """
    reasons = [(ProgramError, "refused program"), *refusals, (RunFailed, "evaluation failed")]
    kinds: tuple[type[Exception], ...] = tuple(kind for kind, _ in reasons)
    try:
        result = evaluate()
    except kinds as exc:
        why = next(why for kind, why in reasons if isinstance(exc, kind))
        return _report({"reason": f"{why}: {exc}"}, metric)
    print("---")
    for label, key, fmt in summary:
        print(f"{label + ':':<18}{result[key]:{fmt}}")
    return _report(result, metric)


def _report(result: dict[str, Any], metric: str) -> int:
    print(f"{RESULT_MARKER} {json.dumps(result)}", flush=True)
    return 0 if metric in result else 1
