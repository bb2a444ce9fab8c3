"""prepare.program: a torch model written as ATen operations, and what the evaluator refuses to run.

The reader is fed hostile files here (hand-written program.json, a pickle where tensors belong,
symlinks): it must refuse each with a reason and never run anything the file names.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from prepare.program import (  # noqa: E402
    PROGRAM_FILE,
    TENSORS_FILE,
    ProgramError,
    load_torch,
    write_torch,
)

VOCAB, T = 32, 16


class Tiny(torch.nn.Module):
    """Embedding, one causal attention layer (SDPA), a head: the shape of a real LM, small."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(VOCAB, 24)
        self.qkv = torch.nn.Linear(24, 72)
        self.head = torch.nn.Linear(24, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        q, k, v = self.qkv(x).view(*idx.shape, 3, 2, 12).unbind(2)
        y = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        return self.head(x + y.transpose(1, 2).reshape(*idx.shape, 24)).float()


def _idx(batch: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, T), generator=torch.Generator().manual_seed(seed))


def test_a_written_program_computes_what_the_model_does(tmp_path: Path) -> None:
    model = Tiny()
    header = write_torch(model, 4, T, tmp_path)
    assert header["batch"] == 4 and header["seq_len"] == T and header["framework"] == "torch"
    assert {n["op"].split(".")[0] for n in header["nodes"]} <= {"aten", "getitem"}
    program = load_torch(tmp_path, "cpu")
    x = _idx()
    with torch.no_grad():
        assert torch.equal(program(x), model(x))
    assert model.training  # the train file's mode is given back


def test_autocast_around_the_hand_off_is_compiled_into_the_program(tmp_path: Path) -> None:
    model = Tiny()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        header = write_torch(model, 4, T, tmp_path)
        with torch.no_grad():
            expected = model(_idx())
    ops = {n["op"] for n in header["nodes"]}
    assert "aten._to_copy.default" in ops  # the casts are explicit operations now
    program = load_torch(tmp_path, "cpu")
    with torch.no_grad():  # no autocast here: the program carries its own dtypes
        assert torch.equal(program(_idx()), expected)


def _write_model(tmp_path: Path, forward) -> Path:  # type: ignore[no-untyped-def]
    class M(Tiny):
        pass

    M.forward = forward  # type: ignore[method-assign]
    write_torch(M(), 4, T, tmp_path)
    return tmp_path


def test_a_stateful_model_is_refused_and_runs_only_with_the_test_switch(tmp_path: Path) -> None:
    class Counting(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            self.calls.add_(1)  # remembers how often it was called: a probe could be told apart
            return super().forward(idx) + self.calls

    write_torch(Counting(), 4, T, tmp_path)
    with pytest.raises(ProgramError, match=r"copy_.*writes to its input: the program has state"):
        load_torch(tmp_path, "cpu")
    program = load_torch(tmp_path, "cpu", allow_state=True)
    with torch.no_grad():
        first, second = program(_idx()), program(_idx())
    assert torch.allclose(second - first, torch.ones(()))  # the state is real when allowed


def test_random_operators_are_refused(tmp_path: Path) -> None:
    def forward(self, idx):  # type: ignore[no-untyped-def]
        return Tiny.forward(self, idx) + torch.rand(idx.shape[0], T, VOCAB)

    with pytest.raises(ProgramError, match="draws random numbers"):
        load_torch(_write_model(tmp_path, forward), "cpu")


def test_custom_operators_are_refused(tmp_path: Path) -> None:
    @torch.library.custom_op("artest::peek", mutates_args=())
    def peek(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @peek.register_fake
    def _(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    def forward(self, idx):  # type: ignore[no-untyped-def]
        return torch.ops.artest.peek(Tiny.forward(self, idx))

    with pytest.raises(ProgramError, match=r"artest\.peek\.default is not an ATen operator"):
        load_torch(_write_model(tmp_path, forward), "cpu")


def _hand_written(
    tmp_path: Path, nodes: list[dict], tensors: bytes = b"", entries: list | None = None
) -> Path:
    header = {
        "format": "autoresearch-program", "version": 1, "framework": "torch", "batch": 1, "seq_len": 4,
        "input": "idx", "output": nodes[-1]["name"] if nodes else "idx", "tensors": entries or [], "nodes": nodes,
    }  # fmt: skip
    (tmp_path / PROGRAM_FILE).write_text(json.dumps(header))
    (tmp_path / TENSORS_FILE).write_bytes(tensors)
    return tmp_path


@pytest.mark.parametrize(
    ("node", "why"),
    [
        ({"op": "aten.from_file.default", "args": ["/etc/passwd"]}, "not on the evaluator's list"),
        ({"op": "aten.empty.memory_format", "args": [[4]]}, "not on the evaluator's list"),
        ({"op": "aten.add_.Tensor", "args": [{"n": "idx"}, 1]}, "writes to its input"),
        ({"op": "aten.bernoulli.p", "args": [{"n": "idx"}, 0.5]}, "draws random numbers"),
        (
            {"op": "aten.add.out", "args": [{"n": "idx"}, 1], "kwargs": {"out": {"n": "idx"}}},
            "writes to its input",
        ),
        ({"op": "python.builtins.exec", "args": ["print(1)"]}, "not an ATen operator"),
        ({"op": "torch.load", "args": ["x"]}, "not an ATen operator"),
        ({"op": "aten.add.Tensor", "args": [{"n": "nowhere"}, 1]}, "before it is defined"),
        ({"op": "aten.add.Tensor", "args": [{"n": "idx"}, {"pickle": "x"}]}, "not an encoded value"),
        ({"op": "aten.to.dtype", "args": [{"n": "idx"}, {"dtype": "object"}]}, "not an encoded value"),
        ({"op": "aten.nosuchop.default", "args": []}, "not on the evaluator's list"),
    ],
)
def test_hand_written_programs_are_refused(tmp_path: Path, node: dict, why: str) -> None:
    with pytest.raises(ProgramError, match=why):
        load_torch(_hand_written(tmp_path, [{"name": "out", "kwargs": {}, **node}]), "cpu")


def test_tensor_entries_must_match_their_bytes(tmp_path: Path) -> None:
    entry = {"name": "w", "dtype": "float32", "shape": [4], "offset": 0, "nbytes": 16}
    with pytest.raises(ProgramError, match="its bytes are not where"):
        load_torch(_hand_written(tmp_path, [], b"\0" * 8, [entry]), "cpu")
    with pytest.raises(ProgramError, match="dtype 'object'"):
        load_torch(_hand_written(tmp_path, [], b"\0" * 16, [{**entry, "dtype": "object"}]), "cpu")


def test_the_tensors_file_is_bytes_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (open, (str(marker), "w"))

    blob = pickle.dumps(Boom())
    entry = {"name": "w", "dtype": "uint8", "shape": [len(blob)], "offset": 0, "nbytes": len(blob)}
    program = load_torch(_hand_written(tmp_path, [], blob, [entry]), "cpu")
    assert bytes(program.tensors["w"].tolist()) == blob and not marker.exists()


def test_symlinks_fifos_and_garbage_are_refused(tmp_path: Path) -> None:
    folder = _hand_written(tmp_path, [])
    (folder / TENSORS_FILE).unlink()
    (folder / TENSORS_FILE).symlink_to("/etc/hostname")
    with pytest.raises(ProgramError, match=f"cannot open {TENSORS_FILE}"):
        load_torch(folder, "cpu")
    (folder / PROGRAM_FILE).write_text("{not json")
    with pytest.raises(ProgramError, match="not valid JSON"):
        load_torch(folder, "cpu")
    (folder / PROGRAM_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ProgramError, match="is not a version-1"):
        load_torch(folder, "cpu")
