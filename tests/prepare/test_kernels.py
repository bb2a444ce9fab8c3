"""prepare.kernels: the fused Triton kernels against their PyTorch references, forward and backward.

On the CPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1). The interpreter is
chosen when a kernel is *defined*, and that choice would also reach every Triton kernel of this
process (torch.compile's on a GPU machine), so each interpreted check runs in a child process of
its own with the variable set; it prints one JSON line of measured differences, which the test
judges. The plain-PyTorch fallbacks (no CUDA, no interpreter, or torch.export tracing) are checked
in this process: they must be exactly the reference expressions. Real shapes on CUDA are `gpu`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from prepare import kernels  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
needs_triton = pytest.mark.skipif(not kernels._HAVE_TRITON, reason="needs triton (pip install triton)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def interpreted(code: str, timeout: float = 240) -> dict[str, Any]:
    """Run `code` in a child interpreter with TRITON_INTERPRET=1; its last stdout line is JSON."""
    env = dict(os.environ, TRITON_INTERPRET="1", AUTORESEARCH_DEVICE="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def softcap_ce_reference(x: Any, w: Any, targets: Any, cap: float) -> Any:
    logits = cap * torch.tanh(F.linear(x, w).float() / cap)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


# ---------------------------------------------------------------------------------------------
# interpreted: the Triton kernels themselves, on small shapes
# ---------------------------------------------------------------------------------------------


@needs_triton
@pytest.mark.slow  # ~20 s: the interpreter on a 2-core machine
@pytest.mark.parametrize("cap", [15.0, 300.0])
def test_fused_cross_entropy_matches_pytorch_forward_and_backward(cap: float) -> None:
    # 2 x 19 rows in slices of 16 (the last one short), a vocabulary that is not a power of two
    # and spans several blocks of the row kernel, ignored targets, a large cap (no stable max)
    out = interpreted(f"""
        import json, torch, torch.nn.functional as F
        from prepare import kernels
        from prepare.kernels import cross_entropy
        calls = []
        real = cross_entropy._forward
        cross_entropy._forward = lambda *a: calls.append(a[5]) or real(*a)
        torch.manual_seed(0)
        x = torch.randn(2, 19, 24, requires_grad=True)
        w = (torch.randn(1100, 24) * 0.7).requires_grad_()
        t = torch.randint(0, 1100, (2, 19)); t[0, ::5] = -1
        assert kernels.usable(x)
        loss = kernels.linear_softcap_cross_entropy(x, w, t, {cap}, chunk_rows=16)
        loss.backward(torch.tensor(2.0))
        got = [loss.detach(), x.grad.clone(), w.grad.clone()]
        x.grad = w.grad = None
        z = {cap} * torch.tanh(F.linear(x, w).float() / {cap})
        ref = F.cross_entropy(z.view(-1, 1100), t.view(-1), ignore_index=-1)
        ref.backward(torch.tensor(2.0))
        want = [ref.detach(), x.grad, w.grad]
        print(json.dumps({{"diff": [float((a - b).abs().max()) for a, b in zip(got, want)],
                          "scale": [float(b.abs().max()) for b in want], "calls": calls}}))
    """)
    for diff, scale in zip(out["diff"], out["scale"], strict=True):
        assert scale > 1e-4  # the gradients are not trivially zero
        assert diff <= 1e-5 * max(1.0, scale), out
    assert out["calls"] == [16]  # the kernel ran (once, in slices of 16 rows), not the fallback


@needs_triton
@pytest.mark.slow  # ~20 s: the interpreter on a 2-core machine
def test_fused_relu2_mlp_matches_pytorch_forward_and_backward() -> None:
    # rows, width and hidden size that are not multiples of the 32 x 32 interpreter tile
    out = interpreted("""
        import json, torch, torch.nn.functional as F
        from prepare import kernels
        from prepare.kernels import relu2
        calls = []
        real = relu2.mm_relu2
        relu2.mm_relu2 = lambda *a: calls.append(a[3]) or real(*a)
        torch.manual_seed(0)
        x = torch.randn(2, 21, 40, requires_grad=True)
        wf = (torch.randn(72, 40) * 0.3).requires_grad_()
        wp = (torch.randn(40, 72) * 0.3).requires_grad_()
        g = torch.randn(2, 21, 40)
        y = kernels.relu2_mlp(x, wf, wp)
        y.backward(g)
        got = [y.detach(), x.grad.clone(), wf.grad.clone(), wp.grad.clone()]
        for p in (x, wf, wp):
            p.grad = None
        ref = F.linear(F.relu(F.linear(x, wf)).square(), wp)
        ref.backward(g)
        want = [ref.detach(), x.grad, wf.grad, wp.grad]
        print(json.dumps({"diff": [float((a - b).abs().max()) for a, b in zip(got, want)],
                          "scale": [float(b.abs().max()) for b in want], "calls": calls}))
    """)
    assert out["calls"] == [1, 2]  # the forward and the backward epilogue both ran in Triton
    for diff, scale in zip(out["diff"], out["scale"], strict=True):
        assert scale > 1e-3
        assert diff <= 1e-5 * max(1.0, scale), out


@needs_triton
@pytest.mark.slow  # ~20 s: the interpreter on a 2-core machine
def test_torch_compile_traces_both_operators_in_one_graph() -> None:
    # fullgraph: no graph break around the operators (a compiled block calls them as they are);
    # aot_eager runs their fake implementations and registered backwards through AOTAutograd
    out = interpreted("""
        import json, torch
        from prepare import kernels
        torch.manual_seed(0)
        x = torch.randn(2, 9, 16, requires_grad=True)
        wf, wp = (torch.randn(48, 16) * 0.3).requires_grad_(), (torch.randn(16, 48) * 0.3).requires_grad_()
        w = (torch.randn(70, 16) * 0.5).requires_grad_()
        t = torch.randint(0, 70, (2, 9))

        def loss_fn(x):
            return kernels.linear_softcap_cross_entropy(kernels.relu2_mlp(x, wf, wp), w, t, 15.0)

        diffs = []
        results = []
        for fn in (loss_fn, torch.compile(loss_fn, backend="aot_eager", fullgraph=True)):
            for p in (x, wf, wp, w):
                p.grad = None
            loss = fn(x)
            loss.backward()
            results.append([loss.detach(), *(p.grad.clone() for p in (x, wf, wp, w))])
        print(json.dumps({"diff": [float((a - b).abs().max()) for a, b in zip(*results, strict=True)]}))
    """)
    assert max(out["diff"]) <= 1e-6, out


@needs_triton
@pytest.mark.slow  # the interpreter runs a whole (tiny) GPT step, then the export
def test_the_gpt_file_trains_the_same_with_kernels_and_exports_plain_logits(tmp_path: Path) -> None:
    out = interpreted(f"""
        import importlib.util, json, torch
        from pathlib import Path
        from prepare import kernels, program
        spec = importlib.util.spec_from_file_location("train", "experiments/gpt/train.py")
        train = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(train)
        assert train.FUSED_KERNELS and not train.USE_CUDA
        torch.manual_seed(0)
        model = train.build_model(300, torch.device("cpu"))
        idx = torch.randint(0, 300, (2, 24)); targets = torch.randint(0, 300, (2, 24)); targets[:, :3] = -1
        results = {{}}
        for fused in (True, False):
            train.FUSED_KERNELS = fused
            model.zero_grad(set_to_none=True)
            loss = model(idx, targets)
            loss.backward()
            results[fused] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
        diff = max(float((a - b).abs().max()) for a, b in zip(results[True][1], results[False][1]))
        train.FUSED_KERNELS = True
        header = program.write_torch(model, 2, 24, Path({str(tmp_path)!r}))
        ops = sorted({{n["op"] for n in header["nodes"]}})
        print(json.dumps({{"loss": [float(results[k][0]) for k in (True, False)], "grad_diff": diff, "ops": ops}}))
    """)
    assert abs(out["loss"][0] - out["loss"][1]) <= 1e-5 * out["loss"][1]
    assert out["grad_diff"] <= 1e-5
    assert out["ops"] and all(op.startswith("aten.") for op in out["ops"]), out["ops"]  # no kernel exported


@needs_triton
@pytest.mark.slow  # ~1-2 min: LLVM and ptxas for every configuration the autotuner may pick
def test_the_kernels_compile_for_hopper_and_ampere_without_a_gpu() -> None:
    # the interpreter accepts code the compiler refuses; Triton's bundled LLVM and ptxas compile
    # every kernel configuration to a cubin here, so a kernel that cannot build fails in CI,
    # not on the GPU machine
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import json, triton
            from triton.backends.compiler import GPUTarget
            from triton.compiler import ASTSource
            from prepare.kernels import cross_entropy, relu2

            def build(fn, types, constants, arch, **options):
                names = fn.arg_names
                signature = {n: types.get(n, "constexpr") for n in names}
                constexprs = {(names.index(k),): v for k, v in constants.items()}
                src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
                return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options).metadata.shared

            built = []
            mm_types = dict(a_ptr="*bf16", b_ptr="*bf16", out_ptr="*bf16", aux_ptr="*bf16", M="i32", N="i32")
            mm_types.update({n: "i32" for n in relu2._mm_relu2.arg_names if n.startswith("stride")})
            for arch in (90, 80):
                for epilogue in (relu2.FORWARD, relu2.BACKWARD):
                    for cfg in relu2._CONFIGS if arch == 90 else relu2._CONFIGS[:1]:  # Hopper: all
                        constants = dict(cfg.kwargs, K=512, EPILOGUE=epilogue)
                        build(relu2._mm_relu2, mm_types, constants, arch, num_warps=cfg.num_warps,
                              num_stages=cfg.num_stages)
                        built.append(("mm", arch, epilogue))
                ce_types = dict(logits_ptr="*bf16", stride_row="i32", targets_ptr="*i64", loss_ptr="*fp32",
                                scale_ptr="*fp32", softcap="fp32", ignore_index="i32")
                build(cross_entropy._softcap_ce_rows, ce_types, dict(N_COLS=8192, BLOCK=4096), arch, num_warps=8)
                built.append(("ce", arch))
            print(json.dumps([len(built), len(relu2._CONFIGS)]))
        """)],
        cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    built, configs = json.loads(out.stdout.strip().splitlines()[-1])
    assert configs >= 2 and built == (2 * configs + 1) + (2 * 1 + 1)


# ---------------------------------------------------------------------------------------------
# this process: where the kernels cannot run, the functions are the plain PyTorch expressions
# ---------------------------------------------------------------------------------------------


def test_without_cuda_or_the_interpreter_the_fallbacks_are_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16)
    wf, wp, w = torch.randn(40, 16), torch.randn(16, 40), torch.randn(50, 16)
    t = torch.randint(0, 50, (3, 5))
    t[0, 0] = -1
    assert not kernels.usable(x)
    assert torch.equal(kernels.relu2_mlp(x, wf, wp), F.linear(F.relu(F.linear(x, wf)).square(), wp))
    assert torch.equal(
        kernels.linear_softcap_cross_entropy(x, w, t, 15.0), softcap_ce_reference(x, w, t, 15.0)
    )


@pytest.mark.slow  # torch.export: ~20 s on a loaded 2-core machine
def test_export_never_uses_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the kernels would be usable on this CPU tensor ...
    seen: list[bool] = []

    class Mlp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.proj = torch.nn.Linear(8, 16, bias=False), torch.nn.Linear(16, 8, bias=False)

        def forward(self, x: Any) -> Any:
            seen.append(kernels.usable(x))
            return kernels.relu2_mlp(x, self.fc.weight, self.proj.weight)

    exported = torch.export.export(Mlp(), (torch.randn(2, 8),))
    assert seen and not any(seen)  # ... but not while torch.export traces
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert not any("autoresearch" in t for t in targets), targets
    assert kernels.usable(torch.randn(2)) == kernels._HAVE_TRITON


# ---------------------------------------------------------------------------------------------
# GPU: the compiled kernels at the default GPT's shapes (run on the device machine)
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@needs_triton
def test_fused_cross_entropy_on_cuda_at_real_shapes() -> None:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    x = torch.randn(16384, 512, device=dev, dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(8192, 512, device=dev) * 0.05).requires_grad_()
    t = torch.randint(0, 8192, (16384,), device=dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = kernels.linear_softcap_cross_entropy(x, w, t, 15.0, chunk_rows=4096)
    loss.backward()
    got = [loss.detach().float(), x.grad.float(), w.grad.float()]
    x.grad = w.grad = None
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref = softcap_ce_reference(x, w, t, 15.0)
    ref.backward()
    want = [ref.detach().float(), x.grad.float(), w.grad.float()]
    assert abs(float(got[0] - want[0])) < 1e-3 * float(want[0])
    for a, b in zip(got[1:], want[1:], strict=True):
        assert float((a - b).norm() / b.norm()) < 1e-2  # bf16 logits and gradients on both sides


@pytest.mark.gpu
@needs_cuda
@needs_triton
def test_fused_relu2_mlp_on_cuda_at_real_shapes_eager_and_compiled() -> None:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    x = torch.randn(8, 2048, 512, device=dev, dtype=torch.bfloat16, requires_grad=True)
    wf = (torch.randn(2048, 512, device=dev) * 0.03).requires_grad_()
    wp = (torch.randn(512, 2048, device=dev) * 0.03).requires_grad_()
    g = torch.randn(8, 2048, 512, device=dev, dtype=torch.bfloat16)

    def plain(x: Any, wf: Any, wp: Any) -> Any:
        return F.linear(F.relu(F.linear(x, wf)).square(), wp)

    results = []
    for fn in (plain, kernels.relu2_mlp, torch.compile(kernels.relu2_mlp, dynamic=False)):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = fn(x, wf, wp)
        y.backward(g)
        results.append([y.detach().float(), *(p.grad.float() for p in (x, wf, wp))])
        for p in (x, wf, wp):
            p.grad = None
    for other in results[1:]:
        for a, b in zip(other, results[0], strict=True):
            assert float((a - b).norm() / b.norm()) < 1e-2
