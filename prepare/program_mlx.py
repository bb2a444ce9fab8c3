"""The handed-off MLX model: exported with `mx.export_function`, read back with `mx.import_function`.

`write_mlx` traces `model(idx)` on one fixed batch shape (batch, seq_len) of int32 tokens and
writes into the hand-off folder:

    program.json    {"format", "version", "framework": "mlx", "batch", "seq_len"}
    program.mlxfn   MLX's serialised graph: its primitives and constant arrays

The evaluator reads `program.mlxfn` with `mx.import_function`, MLX's C++ reader, which builds a
graph from a closed table of MLX primitives and the constants stored in the same file: no
Python of the agent's is imported or run, and an imported function has no state (every call is
a pure function of its inputs). `load_mlx` also lists the primitives of one traced call
(`mx.export_to_dot` on its lazy output) and refuses (`ProgramError`) any outside
`ALLOWED_PRIMITIVES`: custom Metal kernels (arbitrary GPU code) and random-number primitives.
Still open (ARCHITECTURE.md): MLX's reader parses an untrusted binary in C++, and its Gather does
not bounds-check indices, so a crafted program could read memory next to its own arrays.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from prepare.program import FORMAT, PROGRAM_FILE, VERSION, ProgramError, positive_int, read_header

MLX_FILE = "program.mlxfn"

#: primitives (as MLX prints them) an evaluated MLX program may use: pure, deterministic math
# fmt: off
ALLOWED_PRIMITIVES = frozenset({
    "Abs", "Add", "AddMM", "Arange", "ArcCos", "ArcCosh", "ArcSin", "ArcSinh", "ArcTan", "ArcTan2",
    "ArcTanh", "ArgPartition", "ArgReduce", "ArgSort", "AsType", "AsStrided", "BitwiseAnd", "BitwiseOr",
    "BitwiseXor", "LeftShift", "RightShift", "BitwiseInvert", "BlockMaskedMM", "Broadcast",
    "BroadcastAxes", "Ceil", "Concatenate", "Conjugate", "Contiguous", "Convolution", "Copy", "Cos",
    "Cosh", "CumSum", "CumProd", "CumMax", "CumMin", "CumLogaddexp", "Depends", "Divide", "DivMod",
    "DynamicSlice", "DynamicSliceUpdate", "Equal", "Erf", "ErfInv", "Exp", "ExpandDims", "Expm1",
    "Flatten", "Floor", "Full", "Gather", "GatherAxis", "GatherMM", "Greater", "GreaterEqual", "Imag",
    "Less", "LessEqual", "Load", "Log", "Log2", "Log10", "Log1p", "LogicalNot", "LogicalAnd",
    "LogicalOr", "LogAddExp", "LogSumExp", "Matmul", "Maximum", "Minimum", "Multiply", "Negative",
    "NotEqual", "NumberOfElements", "Pad", "Partition", "Power", "Real", "Remainder", "Reshape", "Sum",
    "Prod", "Min", "Max", "And", "Or", "Round", "Scatter", "ScatterAxis", "Select", "Sigmoid", "Sign",
    "Sin", "Sinh", "Slice", "SliceUpdate", "Softmax", "Sort", "Split", "Square", "Sqrt", "Rsqrt",
    "StopGradient", "Subtract", "Squeeze", "Tan", "Tanh", "Transpose", "Unflatten", "View", "RMSNorm",
    "LayerNorm", "RoPE", "ScaledDotProductAttention",
})
# fmt: on


def write_mlx(model: Any, batch: int, seq_len: int, folder: Path) -> dict[str, Any]:
    """Export `model` (idx (batch, seq_len) int32 -> logits) into `folder`; returns the header."""
    import mlx.core as mx

    folder.mkdir(parents=True, exist_ok=True)
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        example = mx.zeros((batch, seq_len), dtype=mx.int32)
        mx.export_function(str(folder / MLX_FILE), lambda idx: model(idx), example)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    header = {"format": FORMAT, "version": VERSION, "framework": "mlx", "batch": batch, "seq_len": seq_len}
    (folder / PROGRAM_FILE).write_text(json.dumps(header))
    return header


class MlxProgram:
    """`program(idx)` -> logits for an imported MLX function of fixed shape (batch, seq_len)."""

    def __init__(self, function: Any, batch: int, seq_len: int) -> None:
        self.function, self.batch, self.seq_len = function, batch, seq_len

    def __call__(self, idx: Any) -> Any:
        out = self.function(idx)
        if not isinstance(out, (list, tuple)) or len(out) != 1:
            raise ProgramError("the MLX program must return one array (the logits)")
        return out[0]


def load_mlx(folder: Path) -> MlxProgram:
    """Import and check an MLX program; every problem is a ProgramError."""
    import mlx.core as mx

    header = read_header(folder)
    if header.get("framework") != "mlx":
        raise ProgramError(f"{PROGRAM_FILE} is not an MLX program")
    batch, seq_len = positive_int(header, "batch"), positive_int(header, "seq_len")
    path = folder / MLX_FILE
    if path.is_symlink() or not path.is_file():
        raise ProgramError(f"{MLX_FILE} is missing or not a regular file")
    try:
        function: Any = mx.import_function(str(path))
        lazy = function(mx.zeros((batch, seq_len), dtype=mx.int32))
    except (RuntimeError, ValueError) as exc:
        raise ProgramError(f"MLX cannot import {MLX_FILE}: {exc}") from None
    program = MlxProgram(function, batch, seq_len)
    used = primitives(list(lazy) if isinstance(lazy, (list, tuple)) else [lazy])
    refused = sorted(used - ALLOWED_PRIMITIVES)
    if refused:
        raise ProgramError(
            f"the MLX program uses {', '.join(refused)}, not on the evaluator's list of primitives"
        )
    return program


def primitives(outputs: list[Any]) -> set[str]:
    """The names of the primitives in the (unevaluated) graph behind `outputs`."""
    import mlx.core as mx

    with tempfile.TemporaryDirectory(prefix="ar-mlx-dot-") as tmp:
        dot = Path(tmp) / "graph.dot"
        mx.export_to_dot(str(dot), *outputs)
        text = dot.read_text()
    return {name.split(" ")[0] for name in re.findall(r'label ="([^"]+)"', text)}
