"""The handed-off torch model as data, and the evaluator's interpreter for it.

A train file ends with `prepare.hand_off(model, batch_size)`; for a torch model that calls
`write_torch`, which exports the *uncompiled* model with `torch.export` on one fixed batch shape
(batch, seq_len), lowers it to plain ATen operations (`run_decompositions({})`: autocast regions
become explicit casts) and writes two files into the hand-off folder:

    program.json   {"format", "version", "framework": "torch", "batch", "seq_len", "input",
                    "output", "tensors": [{name, dtype, shape, offset, nbytes}],
                    "nodes": [{name, op, args, kwargs}]}
    tensors.bin    the parameters, buffers and constants, raw little-endian bytes

The evaluator (`prepare.evaluate_program`, its own process) treats both files as hostile input:
they come out of a process that ran the agent's code, which may have written them itself.
`load_torch` therefore never unpickles, never evaluates a string and never imports anything the
files name. It parses JSON, reads raw bytes into tensors of a listed dtype, and resolves each
node's `op` against `ALLOWED_OPS`, a list of ATen operators that are pure functions of their
inputs. Refused (`ProgramError`, the crash reason `refused program: ...`):

* any operator outside that list: custom ops (`mylib::peek`), higher-order ops (control flow,
  FlexAttention, user Triton kernels), anything that would need the agent's Python to run;
* any schema that writes to an input (`add_`, `copy_`, `index_put_`, `out=` variants): the
  program must be stateless, so that a probe row cannot be told from the row it copies by
  what the program saw before (torch.export turns a buffer the model mutates into a `copy_`
  at the end of the graph, which is how a stateful model shows up here);
* random and uninitialised-memory operators (`rand*`, `bernoulli`, `dropout`, `empty*`): the
  metric must be a function of the weights, and fresh memory may hold the evaluator's data;
* file access (`from_file`), a malformed file, a name used before it is defined.

`TorchProgram(idx)` then runs the nodes in order on the evaluator's device (every device the
program names maps to it), freeing each intermediate after its last use. What it cannot check
is what the allowed operators compute: whether the logits depend on future tokens is the
causality probes' job (`prepare.causality`).

Why not `torch.export.save` / `torch.export.load`: that loader unpickles tensors
(`weights_only=False` fallbacks), evaluates shape expressions with `sympy.sympify` and `exec`s
the program's guard code, so a crafted archive runs arbitrary Python in the evaluator.
"""

from __future__ import annotations

import json
import math
import operator
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "autoresearch-program"
VERSION = 1
PROGRAM_FILE = "program.json"
TENSORS_FILE = "tensors.bin"
MAX_PROGRAM_BYTES = 256 << 20  # program.json: nodes and metadata only
MAX_NODES = 200_000

DTYPES = (
    "float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool",
    "complex64", "complex128",
)  # fmt: skip
LAYOUTS = ("strided",)
MEMORY_FORMATS = ("contiguous_format", "preserve_format", "channels_last")

#: ATen operator packets a program may call (any overload that is pure and not seeded-random).
# fmt: off
ALLOWED_OPS = frozenset({
    "abs", "add", "sub", "rsub", "mul", "div", "neg", "reciprocal", "pow", "sqrt", "rsqrt", "exp",
    "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "tanh", "sinh", "cosh",
    "asin", "acos", "atan", "atan2", "sigmoid", "erf", "erfc", "erfinv", "sign", "sgn", "floor", "ceil",
    "round", "trunc", "frac", "clamp", "clamp_min", "clamp_max", "clip", "maximum", "minimum", "fmax",
    "fmin", "remainder", "fmod", "floor_divide", "where", "lerp", "addcmul", "addcdiv", "square",
    "hypot", "logaddexp", "logaddexp2", "xlogy", "nan_to_num", "copysign", "isnan", "isinf", "isfinite",
    "logical_and", "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or",
    "__and__", "__or__", "__xor__", "__invert__", "__lshift__", "__rshift__",
    "bitwise_xor", "bitwise_not", "eq", "ne", "lt", "le", "gt", "ge", "masked_fill", "relu", "relu6",
    "gelu", "silu", "mish", "elu", "selu", "celu", "leaky_relu", "hardtanh", "hardsigmoid", "hardswish",
    "softplus", "glu", "prelu", "threshold", "log_sigmoid_forward", "softmax", "_softmax",
    "log_softmax", "_log_softmax", "layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm",
    "group_norm", "native_group_norm", "_native_batch_norm_legit_no_training", "linear", "matmul", "mm",
    "bmm", "addmm", "addbmm", "baddbmm", "addmv", "mv", "dot", "einsum", "t", "outer",
    "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "embedding", "index_select", "gather", "index", "take",
    "take_along_dim", "one_hot", "view", "_unsafe_view", "reshape", "permute", "transpose", "expand",
    "squeeze", "unsqueeze", "flatten", "unflatten", "slice", "select", "narrow", "split",
    "split_with_sizes", "chunk", "unbind", "cat", "concat", "stack", "repeat", "repeat_interleave",
    "tile", "roll", "flip", "movedim", "alias", "clone", "contiguous", "detach", "lift_fresh_copy",
    "_to_copy", "to", "diagonal", "tril", "triu", "constant_pad_nd", "pad", "unfold", "as_strided",
    "view_as_real", "view_as_complex", "complex", "real", "imag", "polar", "sum", "mean", "amax",
    "amin", "max", "min", "prod", "var", "std", "var_mean", "std_mean", "linalg_vector_norm", "norm",
    "logsumexp", "argmax", "argmin", "cumsum", "cumprod", "cummax", "cummin", "logcumsumexp", "all",
    "any", "topk", "sort", "argsort", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like",
    "arange", "linspace", "scalar_tensor", "eye", "fill", "convolution", "conv1d", "conv2d", "scatter",
    "scatter_add", "index_put", "index_add", "bucketize", "searchsorted", "_assert_tensor_metadata",
})
# fmt: on


class ProgramError(Exception):
    """A handed-off program the evaluator refuses; the message says why (`refused program: ...`)."""


# ---------------------------------------------------------------------------------------------
# Writing (in the train process, through prepare.hand_off)
# ---------------------------------------------------------------------------------------------


def write_torch(model: Any, batch: int, seq_len: int, folder: Path) -> dict[str, Any]:
    """Export `model` (idx (batch, seq_len) int64 -> logits) into `folder`; returns the program header.

    Under an active autocast (the train file's `with autocast: hand_off(...)`) the model is
    exported inside that autocast, so the program computes in the same dtypes the model was
    evaluated in before. torch.compile wrappers are bypassed: the uncompiled model is exported.
    """
    import torch

    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    example = torch.zeros((batch, seq_len), dtype=torch.long, device=device)
    wrapped = _with_ambient_autocast(model, device.type)
    compiled = {m: m._compiled_call_impl for m in model.modules() if getattr(m, "_compiled_call_impl", None)}
    was_training = model.training
    model.eval()
    try:
        for m in compiled:
            m._compiled_call_impl = None
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations, not the model's
            exported = torch.export.export(wrapped, (example,)).run_decompositions({})
    finally:
        for m, impl in compiled.items():
            m._compiled_call_impl = impl
        model.train(was_training)
    header, tensors = _to_document(exported, batch, seq_len)
    folder.mkdir(parents=True, exist_ok=True)
    offset = 0
    with open(folder / TENSORS_FILE, "wb") as f:
        for entry, tensor in zip(header["tensors"], tensors, strict=True):
            data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            entry["offset"], entry["nbytes"] = offset, len(data)
            f.write(data)
            offset += len(data)
    (folder / PROGRAM_FILE).write_text(json.dumps(header))
    return header


def _with_ambient_autocast(model: Any, device_type: str) -> Any:
    import torch

    if not torch.is_autocast_enabled(device_type):
        return model
    dtype = torch.get_autocast_dtype(device_type)

    class Autocast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, idx: Any) -> Any:
            with torch.autocast(device_type, dtype=dtype):
                return self.model(idx)

    return Autocast()


def _to_document(exported: Any, batch: int, seq_len: int) -> tuple[dict[str, Any], list[Any]]:
    """The JSON header (offsets still unset) and the tensors, in order, of an ExportedProgram."""
    from torch.export.graph_signature import InputKind, OutputKind

    sig = exported.graph_signature
    tensors: list[Any] = []
    entries: list[dict[str, Any]] = []
    placeholder_of: dict[str, str] = {}  # state target -> placeholder name
    user_inputs = []
    for spec in sig.input_specs:
        name = spec.arg.name
        if spec.kind == InputKind.USER_INPUT:
            user_inputs.append(name)
            continue
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            value = exported.state_dict.get(spec.target)
            if value is None:  # a non-persistent buffer lives with the constants
                value = exported.constants[spec.target]
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            value = exported.constants[spec.target]
        else:
            raise ProgramError(
                f"the model takes a {spec.kind.name.lower()} input ({spec.target}); only tensors can be handed off"
            )
        placeholder_of[spec.target] = name
        tensors.append(value)
        entries.append(
            {"name": name, "dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape)}
        )
    if len(user_inputs) != 1:
        raise ProgramError(f"the model must take one input (idx), it takes {len(user_inputs)}")
    nodes: list[dict[str, Any]] = []
    for node in exported.graph.nodes:
        if node.op == "call_function":
            nodes.append(
                {
                    "name": node.name,
                    "op": _op_name(node.target),
                    "args": _encode(node.args),
                    "kwargs": {k: _encode(v) for k, v in node.kwargs.items()},
                }
            )
    outputs = []
    for spec in sig.output_specs:
        if spec.kind == OutputKind.USER_OUTPUT:
            outputs.append(spec.arg.name)
        elif spec.kind in (OutputKind.BUFFER_MUTATION, OutputKind.USER_INPUT_MUTATION):
            # the model changes its own state: written as what it is, an in-place copy
            target = placeholder_of.get(spec.target, user_inputs[0])
            nodes.append(
                {"name": f"state_{len(nodes)}", "op": "aten.copy_.default",
                 "args": [{"n": target}, {"n": spec.arg.name}], "kwargs": {}}
            )  # fmt: skip
        else:
            raise ProgramError(
                f"the model's graph has a {spec.kind.name.lower()} output; only logits can be handed off"
            )
    if len(outputs) != 1:
        raise ProgramError(f"the model must return one tensor (the logits), it returns {len(outputs)}")
    header = {
        "format": FORMAT, "version": VERSION, "framework": "torch", "batch": batch, "seq_len": seq_len,
        "input": user_inputs[0], "output": outputs[0], "tensors": entries, "nodes": nodes,
    }  # fmt: skip
    return header, tensors


def _op_name(target: Any) -> str:
    import torch

    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._opname}.{target._overloadname}"
    return f"python.{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def _encode(value: Any) -> Any:
    import torch
    import torch.fx

    if isinstance(value, torch.fx.Node):
        return {"n": value.name}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": value.type}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    raise ProgramError(
        f"the exported graph holds a {type(value).__name__} argument, which cannot be handed off"
    )


# ---------------------------------------------------------------------------------------------
# Reading and running (in the evaluator)
# ---------------------------------------------------------------------------------------------


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, refusing symlinks, devices, FIFOs and anything over `limit`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ProgramError(f"cannot open {path.name}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ProgramError(f"{path.name} is not a regular file")
        if st.st_size > limit:
            raise ProgramError(f"{path.name} has {st.st_size} bytes, more than the {limit} allowed")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(st.st_size)
    finally:
        os.close(fd)


def read_header(folder: Path) -> dict[str, Any]:
    """program.json, checked for its format marker (both frameworks write one)."""
    try:
        header = json.loads(read_regular(folder / PROGRAM_FILE, MAX_PROGRAM_BYTES))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProgramError(f"{PROGRAM_FILE} is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ProgramError(f"{PROGRAM_FILE} is not a version-{VERSION} {FORMAT} file")
    return header


@dataclass(frozen=True)
class _Node:
    name: str
    op: Callable[..., Any]
    args: Any
    kwargs: Any
    frees: tuple[str, ...]  # values whose last use is this node


class TorchProgram:
    """A validated program: `program(idx)` -> logits, on `device`; `batch`, `seq_len` its fixed shape."""

    def __init__(
        self, header: dict[str, Any], tensors: dict[str, Any], nodes: list[_Node], device: Any
    ) -> None:
        self.batch, self.seq_len = header["batch"], header["seq_len"]
        self.input, self.output = header["input"], header["output"]
        self.tensors = tensors
        self.nodes = nodes
        self.device = device

    def __call__(self, idx: Any) -> Any:
        env: dict[str, Any] = dict(self.tensors)
        env[self.input] = idx
        for node in self.nodes:
            args = _decode(node.args, env, self.device)
            kwargs = {k: _decode(v, env, self.device) for k, v in node.kwargs.items()}
            env[node.name] = node.op(*args, **kwargs)
            for name in node.frees:
                del env[name]
        return env[self.output]


def load_torch(folder: Path, device: Any, *, allow_state: bool = False) -> TorchProgram:
    """Read and validate a torch program from `folder`; every problem is a ProgramError.

    `allow_state` (tests only) runs in-place operators instead of refusing them: it is how the
    test suite shows what a stateful program could do without this check.
    """
    import torch

    header = read_header(folder)
    if header.get("framework") != "torch":
        raise ProgramError(f"{PROGRAM_FILE} is not a torch program")
    for key in ("input", "output"):
        if not isinstance(header.get(key), str):
            raise ProgramError(f"{PROGRAM_FILE} lacks its {key!r} name")
    positive_int(header, "batch"), positive_int(header, "seq_len")
    entries, raw_nodes = header.get("tensors"), header.get("nodes")
    if not isinstance(entries, list) or not isinstance(raw_nodes, list) or len(raw_nodes) > MAX_NODES:
        raise ProgramError(
            f"{PROGRAM_FILE} lacks a tensor list or a node list (or has over {MAX_NODES} nodes)"
        )
    blob = read_regular(folder / TENSORS_FILE, 1 << 40)
    tensors = {name: t.to(device) for name, t in _tensors(entries, blob, torch).items()}
    defined = set(tensors) | {header["input"]}
    parsed: list[tuple[str, Callable[..., Any], Any, Any]] = []
    for raw in raw_nodes:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or raw["name"] in defined:
            raise ProgramError(f"a node of {PROGRAM_FILE} has no name or reuses one: {str(raw)[:120]}")
        op = resolve_op(raw.get("op"), allow_state=allow_state)
        args, kwargs = raw.get("args", []), raw.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ProgramError(f"node {raw['name']}: malformed arguments")
        if not all(isinstance(k, str) for k in kwargs):
            raise ProgramError(f"node {raw['name']}: malformed keyword arguments")
        for ref in _references([args, list(kwargs.values())]):
            if ref not in defined:
                raise ProgramError(f"node {raw['name']} uses {ref!r} before it is defined")
        if op is not _getitem:
            _check_chance(raw["op"], op, args, kwargs)
        defined.add(raw["name"])
        parsed.append((raw["name"], op, args, kwargs))
    if header["output"] not in defined:
        raise ProgramError(f"the output {header['output']!r} is never computed")
    last_use: dict[str, int] = {}
    for i, (_name, _op, args, kwargs) in enumerate(parsed):
        for ref in _references([args, list(kwargs.values())]):
            last_use[ref] = i
    keep = set(tensors) | {header["output"]}
    frees: dict[int, list[str]] = {}
    for name, i in last_use.items():
        if name not in keep:
            frees.setdefault(i, []).append(name)
    nodes = [_Node(n, op, a, k, tuple(frees.get(i, ()))) for i, (n, op, a, k) in enumerate(parsed)]
    return TorchProgram(header, tensors, nodes, torch.device(device))


def resolve_op(name: Any, *, allow_state: bool = False) -> Callable[..., Any]:
    """The operator a node names, if it is on the list; else ProgramError saying why not."""
    import torch

    if name == "getitem":
        return _getitem
    if not isinstance(name, str) or name.count(".") != 2:
        raise ProgramError(f"operator {str(name)[:80]!r} is not an ATen operator the evaluator runs")
    namespace, packet_name, overload_name = name.split(".")
    if namespace != "aten":
        raise ProgramError(
            f"operator {name} is not an ATen operator (custom and higher-order operators need code "
            "the evaluator does not run)"
        )
    packet = getattr(torch.ops.aten, packet_name, None) if packet_name.isidentifier() else None
    if packet is None or overload_name not in packet.overloads():
        raise ProgramError(f"operator {name} is not on the evaluator's list of pure ATen operators")
    op = getattr(packet, overload_name)
    if op._schema.is_mutable and not allow_state:
        raise ProgramError(
            f"operator {name} writes to its input: the program has state (a stateful model could tell "
            "a probe row from the row it copies)"
        )
    if torch.Tag.nondeterministic_seeded in op.tags and "dropout_p" not in [
        a.name for a in op._schema.arguments
    ]:
        raise ProgramError(f"operator {name} draws random numbers; the metric must not depend on chance")
    if packet_name not in ALLOWED_OPS and not (allow_state and op._schema.is_mutable):
        raise ProgramError(f"operator {name} is not on the evaluator's list of pure ATen operators")
    return op


def _check_chance(name: str, op: Any, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Refuse a random operator; attention is random only through a non-zero dropout_p."""
    import torch

    if torch.Tag.nondeterministic_seeded not in op.tags:
        return
    names = [a.name for a in op._schema.arguments]
    if "dropout_p" in names:
        i = names.index("dropout_p")
        p = args[i] if i < len(args) else kwargs.get("dropout_p", 0.0)
        if p == 0:
            return
    raise ProgramError(f"operator {name} draws random numbers; the metric must not depend on chance")


def _getitem(container: Any, index: Any) -> Any:
    if not isinstance(container, (tuple, list)) or type(index) is not int:
        raise ProgramError("getitem takes an element of an operator's tuple result")
    return container[index]


def _tensors(entries: list[Any], blob: bytes, torch: Any) -> dict[str, Any]:
    buffer = bytearray(blob)  # writable, so frombuffer does not warn; the file is read once
    flat = torch.frombuffer(buffer, dtype=torch.uint8) if buffer else torch.empty(0, dtype=torch.uint8)
    out: dict[str, Any] = {}
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or e["name"] in out:
            raise ProgramError(f"a tensor entry of {PROGRAM_FILE} is malformed: {str(e)[:120]}")
        dtype = _dtype(e.get("dtype"), torch)
        shape = e.get("shape")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise ProgramError(f"tensor {e['name']}: bad shape {shape!r}")
        offset, nbytes = e.get("offset"), e.get("nbytes")
        size = math.prod(shape) * dtype.itemsize
        if (
            type(offset) is not int
            or type(nbytes) is not int
            or nbytes != size
            or offset < 0
            or offset + size > len(buffer)
        ):
            raise ProgramError(f"tensor {e['name']}: its bytes are not where {PROGRAM_FILE} says")
        out[e["name"]] = flat[offset : offset + size].view(dtype).reshape(shape)
    return out


def _dtype(name: Any, torch: Any) -> Any:
    if name not in DTYPES:
        raise ProgramError(f"dtype {str(name)[:40]!r} is not one the evaluator reads")
    return getattr(torch, name)


def positive_int(header: dict[str, Any], key: str) -> int:
    value = header.get(key)
    if type(value) is not int or value < 1:
        raise ProgramError(f"{PROGRAM_FILE}: {key!r} must be a positive integer, got {value!r}")
    return value


# tag -> the values it may hold (None: any string); every dict in an argument is one of these
_TAGS: dict[str, tuple[str, ...] | None] = {
    "n": None, "device": None, "float": ("inf", "-inf", "nan"), "dtype": DTYPES, "layout": LAYOUTS,
    "memory_format": MEMORY_FORMATS,
}  # fmt: skip


def _references(value: Any) -> list[str]:
    """Every node name an encoded argument refers to; ProgramError for anything not encodable."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            tag, inner = next(iter(v.items())) if len(v) == 1 else ("", None)
            allowed = _TAGS.get(tag, ())
            if not isinstance(inner, str) or (allowed is not None and inner not in allowed):
                raise ProgramError(f"an argument of {PROGRAM_FILE} is not an encoded value: {str(v)[:80]}")
            if tag == "n":
                out.append(inner)
        elif not (v is None or isinstance(v, (bool, int, float, str))):
            raise ProgramError(f"an argument of {PROGRAM_FILE} is not an encoded value: {str(v)[:80]}")
    return out


def _decode(value: Any, env: dict[str, Any], device: Any) -> Any:
    """An encoded argument as the operator takes it (node names looked up, tags made torch values)."""
    import torch

    if isinstance(value, list):
        return [_decode(v, env, device) for v in value]
    if not isinstance(value, dict):
        return value
    ((tag, inner),) = value.items()
    if tag == "n":
        return env[inner]
    if tag == "device":
        return device  # every device the program names is the evaluator's
    if tag == "float":
        return float(inner)
    return getattr(torch, inner)  # dtype, layout, memory_format: names checked by _references
