"""Static checks on every edit before it runs: what isolation cannot stop, per experiment.

Isolation is the wall (the sandbox, the allow-listed environment, the harness's own budget
clock); these checks are the last line, for what runs *inside* the train file's own process and
what a night without the sandbox still needs. How much of them applies is experiment.toml's
`[integrity] checks`:

* **permissive** (the default, for outside repositories): no source rule at all; only the
  secret scan below. `import subprocess`, `split="validation"` in an unrelated API or reading
  AUTORESEARCH_TIME_BUDGET are nobody's business but the experiment's.
* **strict** (the shipped gpt experiments): the rules below, minus those the sandbox makes
  moot when the night has one (`MOOT_IN_SANDBOX`: writing outside the run's folder, starting
  other programs, reading another process's environment: the run's filesystem is read-only
  but for its scratch folder, its children live and die in its PID namespace, and /proc shows
  nothing else).

Every level refuses an edit that carries a credential of the harness's environment (in any
encoding `harness.credentials` knows): a key that leaked into a reply must not be committed.

`check_files(files, checks=..., sandboxed=...)` parses each edited Python file with `ast` and
refuses (EditError, with feedback written for the model) an edit that, under strict checks:

* **reads validation data**: a `"val"`/`"validation"` split passed to a data function or as
  `split=`, a string that names a validation shard or cache path, or any import from prepare
  beyond its public API for train files and the training kernels of `prepare.kernels` (its
  other submodules hold the validation packer);
* **patches prepare**: assigns or deletes attributes of prepare / constants (or of anything
  imported from them), `setattr`/`delattr` on them, rebinds a name imported from prepare,
  defines its own `evaluate_bpb`, touches `sys.modules`, `globals()[...]`, builtins or
  importlib, or replaces the functions evaluate_bpb computes with (`F.cross_entropy = ...`);
* **overrides the sequence length or eval size**: binds MAX_SEQ_LEN or EVAL_TOKENS itself,
  writes AUTORESEARCH_* environment variables (or any variable through a computed name), or
  reads the environment wholesale (the budget is not here: the harness measures it, so binding
  TIME_BUDGET or reading AUTORESEARCH_TIME_BUDGET gains nothing);
* **runs code from strings** (exec, eval, compile, importlib, ctypes), which would let it do
  all of the above unseen;
* without the sandbox only: **writes outside the run's folder** (opens for writing, saves,
  removes, moves or links a path that is absolute, starts with `~`, climbs with `..` or
  `__file__`'s parents, or names a .py/.pth/.tsv file), **starts other programs** (subprocess,
  os.system, os.fork), or names another process's /proc environ.

What it cannot see: values computed at run time (a path or name assembled from pieces). The
guard (harness.integrity.guard) and the evaluator (harness.integrity.evaluation) catch what gets past.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from harness import credentials
from harness.errors import EditError

PROTECTED_MODULES = ("prepare", "constants", "harness")
#: what a train file may take from prepare (ARCHITECTURE.md, "prepare's API for train files")
PREPARE_API = frozenset(
    {"MAX_SEQ_LEN", "TIME_BUDGET", "EVAL_TOKENS", "VOCAB_SIZE", "DEVICE", "TIMEOUT", "Tokenizer",
     "make_dataloader", "make_dataloader_numpy", "evaluate_bpb", "hand_off"}
)  # fmt: skip
#: the training-only fused kernels a train file may use (prepare.kernels: the evaluator never runs them)
KERNELS_MODULE = "prepare.kernels"
KERNELS_API = frozenset({"usable", "relu2_mlp", "linear_softcap_cross_entropy"})
# TIME_BUDGET and TIMEOUT are not here: the harness measures the budget and kills at the timeout
FIXED_NAMES = frozenset({"MAX_SEQ_LEN", "EVAL_TOKENS"})
#: rules the sandbox makes moot (its read-only filesystem, PID namespace and private /proc)
MOOT_IN_SANDBOX = frozenset({"write-outside", "spawn", "environ"})
LEVELS = ("strict", "permissive")
#: AUTORESEARCH_* names a train file may read: the budget is the harness's to measure
READABLE_VARS = frozenset({"AUTORESEARCH_DEVICE", "AUTORESEARCH_TIME_BUDGET"})
#: functions evaluate_bpb computes with: replacing them changes the metric from outside prepare
ORACLE_DEPS = frozenset(
    {"cross_entropy", "log_softmax", "softmax", "nll_loss", "logsumexp", "log", "log2", "exp", "sum",
     "where", "no_grad", "inference_mode", "item", "float", "from_numpy", "tensor", "zeros",
     "zeros_like", "reshape", "evaluate_bpb", "__call__", "__getattr__"}
)  # fmt: skip
#: the run's variables a train file may name (to read them: writes are refused by the environ rules);
#: an outside project without prepare reads its budget and device this way
READABLE_VARS = frozenset({"AUTORESEARCH_TIME_BUDGET", "AUTORESEARCH_DEVICE"})
VAL_SPLITS = frozenset({"val", "valid", "validation"})
_DATA_CALL = re.compile(r"(?i)load|data|batch|shard|packer|split|rows|token")
_VAL_PATH = re.compile(r"(?i)(^|[/\\_.\-])val(id|idation)?([/\\_.\-]|$)|shard_06542")
_PATHY = re.compile(r"[/\\]|\.(bin|parquet|npy|npz|pt|jsonl?|arrow|txt|idx)$")
_EXEC_MODULES = ("ctypes", "importlib", "builtins", "runpy", "code")
_SPAWN_MODULES = ("subprocess", "pty", "multiprocessing.popen_spawn_posix")
_EXEC_CALLS = frozenset({"exec", "eval", "compile", "__import__", "globals", "vars", "locals"})
_SPAWN_CALLS = frozenset(
    {"os.system", "os.popen", "os.execv", "os.execve", "os.execvp", "os.execl", "os.execlp", "os.spawnv",
     "os.spawnl", "os.spawnlp", "os.spawnvp", "os.posix_spawn", "os.posix_spawnp", "os.fork", "os.forkpty"}
)  # fmt: skip
_FS_CALLS = frozenset(
    {"os.remove", "os.unlink", "os.rename", "os.renames", "os.replace", "os.rmdir", "os.removedirs",
     "os.makedirs", "os.mkdir", "os.symlink", "os.link", "os.chmod", "os.chown", "os.truncate", "os.utime",
     "os.open", "os.write", "shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree",
     "shutil.move", "shutil.rmtree", "shutil.make_archive", "shutil.copyfileobj", "torch.save",
     "numpy.save", "numpy.savez", "numpy.savetxt", "numpy.savez_compressed", "mlx.core.save",
     "mlx.core.savez", "mlx.core.save_safetensors", "io.open", "codecs.open"}
)  # fmt: skip
_PATH_WRITERS = frozenset(
    {"write_text", "write_bytes", "touch", "unlink", "rename", "replace", "symlink_to", "hardlink_to",
     "mkdir", "chmod", "rmdir", "to_csv", "to_parquet", "save_weights", "savefig"}
)  # fmt: skip
_ENV_MUTATORS = frozenset({"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"})
_ENV_DUMPS = frozenset({"items", "values", "keys", "copy", "__iter__"})
_GUIDE = (
    "prepare/, constants.py, the budget and the evaluation are fixed; change only the model and "
    "training inside the mutable file, and write files only to $HOME or $TMPDIR (the run's scratch folder)."
)


@dataclass(frozen=True)
class Problem:
    """One refused construct: where, which rule, and what to tell the model."""

    path: str
    line: int
    rule: str  # val-data | patch-prepare | budget | write-outside | exec | spawn | environ | secret
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin for every import (`F` -> `torch.nn.functional`)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = a.name
                else:
                    out[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


class _Checker(ast.NodeVisitor):
    def __init__(self, path: str, aliases: dict[str, str]) -> None:
        self.path = path
        self.aliases = aliases
        self.problems: list[Problem] = []
        self.val_names: set[str] = set()

    # -- helpers ------------------------------------------------------------------------

    def add(self, node: ast.AST, rule: str, message: str) -> None:
        self.problems.append(Problem(self.path, getattr(node, "lineno", 0), rule, message))

    def qualname(self, node: ast.AST) -> str | None:
        """`a.b.c` with its import origin substituted (`F.x` -> `torch.nn.functional.x`)."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Call):  # Path(...).write_text -> the call's callee
            return None
        if not isinstance(node, ast.Name):
            return None
        base = self.aliases.get(node.id, node.id)
        return ".".join([base, *reversed(parts)])

    def root_qualname(self, node: ast.AST) -> str | None:
        """The qualname of the object an attribute/subscript chain hangs off."""
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            if isinstance(node, ast.Subscript):
                node = node.value
                continue
            q = self.qualname(node)
            if q is not None:
                return q
            node = node.value
        return self.qualname(node)

    @staticmethod
    def protected(q: str | None) -> bool:
        return q is not None and q.split(".")[0] in PROTECTED_MODULES

    def strings(self, node: ast.AST) -> Iterator[str]:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                yield sub.value

    def outside(self, node: ast.AST) -> str | None:
        """Why a path expression points outside the run's folder (or at code/ledger files)."""
        for s in self.strings(node):
            if s.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", s):
                return f"the absolute path {s!r}"
            if ".." in re.split(r"[/\\]", s):
                return f"the parent path {s!r}"
            if re.search(r"\.(py|pyc|pth|tsv)$", s):
                return f"the code or ledger file {s!r}"
        for sub in ast.walk(node):
            q = self.qualname(sub) if isinstance(sub, (ast.Name, ast.Attribute)) else None
            if q in ("pathlib.Path.home", "os.path.expanduser", "tempfile.gettempdir", "tempfile.mkdtemp"):
                return f"{q}()"
            if isinstance(sub, ast.Attribute) and sub.attr in ("parent", "parents"):
                inner = sub.value
                if isinstance(inner, ast.Attribute) and inner.attr in ("parent", "parents"):
                    return "a path above the experiment folder (.parent.parent)"
            if isinstance(sub, ast.Name) and sub.id == "__file__":
                return None if not self._climbs(node) else "a path above the experiment folder"
        return None

    def _climbs(self, node: ast.AST) -> bool:
        dirnames = sum(
            1
            for s in ast.walk(node)
            if isinstance(s, ast.Call) and self.qualname(s.func) == "os.path.dirname"
        )
        return dirnames >= 2

    # -- visitors -----------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            top = a.name.split(".")[0]
            if top == "prepare" and a.name not in ("prepare", KERNELS_MODULE):
                self.add(node, "val-data", f"`import {a.name}`: only prepare's public API may be used")
            elif top in PROTECTED_MODULES[1:] or top in _EXEC_MODULES or top in _SPAWN_MODULES:
                self.add(node, _rule(top), f"`import {a.name}` is not allowed")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        top = mod.split(".")[0]
        if node.level == 0 and mod == KERNELS_MODULE:
            for a in node.names:
                if a.name not in KERNELS_API:
                    self.add(node, "val-data", f"`from {mod} import {a.name}`: not in prepare.kernels' API")
        elif node.level == 0 and top == "prepare":
            if mod != "prepare":
                self.add(node, "val-data", f"`from {mod} import ...`: only prepare's public API may be used")
            for a in node.names:
                if a.name not in PREPARE_API:
                    self.add(
                        node,
                        "val-data",
                        f"`from prepare import {a.name}`: not in prepare's API for train files",
                    )
        elif node.level == 0 and (
            top in PROTECTED_MODULES[1:] or top in _EXEC_MODULES or top in _SPAWN_MODULES
        ):
            self.add(node, _rule(top), f"`from {mod} import ...` is not allowed")
        self.generic_visit(node)

    def _check_target(self, target: ast.AST, verb: str) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._check_target(elt, verb)
            return
        if isinstance(target, ast.Starred):
            self._check_target(target.value, verb)
            return
        if isinstance(target, ast.Name):
            self._check_binding(target, target.id)
            return
        if isinstance(target, ast.Subscript):
            q = self.root_qualname(target.value)
            if q == "os.environ":
                self._check_env_key(target, target.slice, verb)
                return
            if q == "sys.modules" or (
                isinstance(target.value, ast.Call)
                and self.qualname(target.value.func) in ("globals", "vars", "locals")
            ):
                self.add(
                    target, "patch-prepare", f"{verb} {ast.unparse(target)}: replaces modules or globals"
                )
                return
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            q = self.root_qualname(target.value)
            if self.protected(q):
                self.add(target, "patch-prepare", f"{verb} `{ast.unparse(target)}` patches {q} (immutable)")
            elif (
                isinstance(target, ast.Attribute)
                and target.attr in ORACLE_DEPS
                and q is not None
                and (
                    q.split(".")[0] in ("torch", "numpy", "math", "mlx", "builtins")
                    or q in self.aliases.values()
                )
            ):
                self.add(
                    target,
                    "patch-prepare",
                    f"{verb} `{ast.unparse(target)}` replaces a function evaluate_bpb computes the metric with",
                )

    def _check_binding(self, node: ast.AST, name: str) -> None:
        origin = self.aliases.get(name)
        if name in FIXED_NAMES:
            self.add(node, "budget", f"binding `{name}` overrides prepare's {name}; use the imported value")
        elif origin is not None and self.protected(origin) and origin.split(".")[0] != name:
            self.add(node, "patch-prepare", f"rebinding `{name}` shadows {origin} (imported from prepare)")
        elif name == "evaluate_bpb":
            self.add(
                node,
                "patch-prepare",
                "defining `evaluate_bpb` replaces the evaluator; import it from prepare",
            )

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._check_target(t, "assigning")
            if (
                isinstance(t, ast.Name)
                and isinstance(node.value, ast.Constant)
                and node.value.value in VAL_SPLITS
            ):
                self.val_names.add(t.id)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_target(node.target, "changing")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_target(node.target, "assigning")
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._check_target(t, "deleting")
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        self._check_target(node.target, "looping into")
        if self.qualname(node.iter) == "os.environ":
            self.add(node, "budget", "iterating os.environ is not allowed (read named variables only)")
        self.generic_visit(node)

    def visit_withitem(self, node: ast.withitem) -> None:
        if node.optional_vars is not None:
            self._check_target(node.optional_vars, "binding")
        self.generic_visit(node)

    def _visit_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self._check_binding(node, node.name)
        self.generic_visit(node)

    visit_FunctionDef = _visit_def
    visit_AsyncFunctionDef = _visit_def
    visit_ClassDef = _visit_def

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "__builtins__":
            self.add(node, "patch-prepare", "`__builtins__` is not allowed")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        q = self.qualname(node)
        if q is not None:
            if q == "sys.modules" or q.startswith("sys.modules."):
                self.add(
                    node, "patch-prepare", "`sys.modules` is not allowed (it can swap prepare's modules)"
                )
            elif (
                q.startswith("prepare.")
                and q.split(".")[1] not in PREPARE_API
                and not (q.startswith(KERNELS_MODULE + ".") and q.split(".")[2] in KERNELS_API)
                and q != KERNELS_MODULE
                and not q.startswith("prepare.prepare")
            ):
                self.add(node, "val-data", f"`{q}` is not in prepare's API for train files")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            s = node.value
            if s.startswith("AUTORESEARCH_") and s not in READABLE_VARS:
                self.add(node, "budget", f"{s!r}: the harness's variables are read through prepare only")
            elif "/proc/" in s and "environ" in s:
                self.add(node, "environ", "reading another process's environment is not allowed")
            elif _PATHY.search(s) and _VAL_PATH.search(s):
                self.add(node, "val-data", f"{s!r} looks like a validation data path")

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant):
            return  # a docstring: prose may mention anything
        self.generic_visit(node)

    def _check_env_key(self, node: ast.AST, key: ast.AST, verb: str) -> None:
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            if key.value.startswith("AUTORESEARCH_"):
                self.add(node, "budget", f"{verb} os.environ[{key.value!r}] overrides the harness's setting")
        else:
            self.add(node, "budget", f"{verb} os.environ with a computed name is not allowed")

    def visit_Call(self, node: ast.Call) -> None:
        q = self.qualname(node.func)
        name = q.rsplit(".", 1)[-1] if q else (node.func.attr if isinstance(node.func, ast.Attribute) else "")
        top = q.split(".")[0] if q is not None else ""
        exec_like = q in _EXEC_CALLS or top in _EXEC_MODULES
        if exec_like and (q not in ("vars", "locals", "globals") or node.args):
            self.add(node, "exec", f"`{q}(...)` is not allowed in a train file")
        elif q in _SPAWN_CALLS or top in _SPAWN_MODULES:
            self.add(node, "spawn", f"`{q}(...)` is not allowed in a train file without the sandbox")
        if q in ("setattr", "delattr") and node.args:
            target = self.root_qualname(node.args[0])
            attr = node.args[1] if len(node.args) > 1 else None
            attr_name = attr.value if isinstance(attr, ast.Constant) else None
            if self.protected(target) or target == "sys.modules":
                self.add(node, "patch-prepare", f"`{q}` on {target} patches an immutable module")
            elif attr_name in ORACLE_DEPS or attr_name is None:
                self.add(
                    node,
                    "patch-prepare",
                    f"`{q}(..., {ast.unparse(attr) if attr else ''})` may patch the evaluator",
                )
        if q in ("os.putenv", "os.unsetenv") and node.args:
            self._check_env_key(node, node.args[0], "setting")
        if isinstance(node.func, ast.Attribute) and self.qualname(node.func.value) == "os.environ":
            if node.func.attr in _ENV_MUTATORS:
                keys = [k for k in node.args[:1]] + [ast.Constant(kw.arg) for kw in node.keywords if kw.arg]
                if node.func.attr in ("update", "clear", "popitem") and not node.keywords:
                    self.add(
                        node,
                        "budget",
                        f"os.environ.{node.func.attr}(...) is not allowed (set named variables)",
                    )
                for k in keys:
                    self._check_env_key(node, k, "changing")
            elif node.func.attr in _ENV_DUMPS:
                self.add(
                    node,
                    "budget",
                    f"os.environ.{node.func.attr}() is not allowed (read named variables only)",
                )
        if (
            q in ("dict", "list", "sorted", "iter")
            and node.args
            and self.qualname(node.args[0]) == "os.environ"
        ):
            self.add(node, "budget", "copying os.environ is not allowed (read named variables only)")
        self._check_val_args(node, name)
        self._check_writes(node, q, name)
        self.generic_visit(node)

    def _check_val_args(self, node: ast.Call, name: str) -> None:
        def is_val(arg: ast.AST) -> bool:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return arg.value.lower() in VAL_SPLITS
            return isinstance(arg, ast.Name) and arg.id in self.val_names

        for kw in node.keywords:
            if kw.arg == "split" and is_val(kw.value):
                self.add(node, "val-data", "training code may not load the validation split")
        if _DATA_CALL.search(name) and any(is_val(a) for a in node.args):
            self.add(
                node, "val-data", f"`{name}(..., 'val')`: training code may not load the validation split"
            )

    def _check_writes(self, node: ast.Call, q: str | None, name: str) -> None:
        if q == "open" or q in ("io.open", "codecs.open"):
            mode = (
                node.args[1]
                if len(node.args) > 1
                else next((k.value for k in node.keywords if k.arg == "mode"), None)
            )
            writing = mode is not None and not (
                isinstance(mode, ast.Constant)
                and isinstance(mode.value, str)
                and not set(mode.value) & set("wax+")
            )
            if writing and node.args:
                why = self.outside(node.args[0])
                if why:
                    self.add(
                        node, "write-outside", f"writing to {why}: write only inside the experiment folder"
                    )
            return
        if q in _FS_CALLS:
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                why = self.outside(arg)
                if why:
                    self.add(
                        node, "write-outside", f"`{q}` on {why}: write only inside the experiment folder"
                    )
                    return
            return
        if isinstance(node.func, ast.Attribute) and name in _PATH_WRITERS | {"open"}:
            if name == "open":
                mode = (
                    node.args[0]
                    if node.args
                    else next((k.value for k in node.keywords if k.arg == "mode"), None)
                )
                if not (
                    isinstance(mode, ast.Constant)
                    and isinstance(mode.value, str)
                    and set(mode.value) & set("wax+")
                ):
                    return
            for expr in [node.func.value, *node.args]:
                why = self.outside(expr)
                if why:
                    self.add(
                        node,
                        "write-outside",
                        f"`.{name}()` on {why}: write only inside the experiment folder",
                    )
                    return


def find_problems(source: str, path: str = "train.py") -> list[Problem]:
    """Every refused construct in one Python source (empty when it is clean)."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        return [Problem(path, exc.lineno or 0, "syntax", f"syntax error: {exc.msg}")]
    checker = _Checker(path, _aliases(tree))
    checker.visit(tree)
    seen: set[tuple[int, str]] = set()
    unique = []
    for p in checker.problems:
        if (p.line, p.message) not in seen:
            seen.add((p.line, p.message))
            unique.append(p)
    return unique


def _rule(top: str) -> str:
    """The rule an import of module `top` breaks."""
    if top in _EXEC_MODULES:
        return "exec"
    return "spawn" if top in _SPAWN_MODULES else "patch-prepare"


def find_secrets(files: Mapping[str, str], env: Mapping[str, str] | None = None) -> list[Problem]:
    """A problem for every file that holds a credential of `env` (default os.environ), in any encoding."""
    redact = credentials.redactor(env)
    out = []
    for path, text in files.items():
        if redact and redact(text) != text:
            line = next((i for i, ln in enumerate(text.splitlines(), 1) if redact(ln) != ln), 0)
            out.append(
                Problem(path, line, "secret", "this file holds a credential of the harness's environment")
            )
    return out


def check_files(
    files: Mapping[str, str],
    *,
    checks: str = "strict",
    sandboxed: bool = False,
    env: Mapping[str, str] | None = None,
) -> None:
    """Refuse an edit whose files break the experiment's rules; EditError feedback lists each one.

    `files` maps a mutable path to its new content. `checks` is experiment.toml's level
    ("strict" or "permissive"); `sandboxed` drops the rules the sandbox makes moot; `env` is the
    environment whose secrets no file may hold (default os.environ). Only Python files get the
    source rules. Syntax errors are left to the run (the model gets the traceback).
    """
    if checks not in LEVELS:
        raise ValueError(f"checks must be one of {LEVELS}, not {checks!r}")
    problems = find_secrets(files, env)
    if checks == "strict":
        problems += [
            p
            for path, text in files.items()
            if path.endswith(".py")
            for p in find_problems(text, path)
            if p.rule != "syntax" and not (sandboxed and p.rule in MOOT_IN_SANDBOX)
        ]
    if not problems:
        return
    lines = "\n".join(f"- {p} [{p.rule}]" for p in problems[:10])
    more = f"\n(and {len(problems) - 10} more)" if len(problems) > 10 else ""
    raise EditError(
        f"refused: {problems[0].rule}: {problems[0]}",
        feedback=f"Your edit was refused and not run, because it breaks the rules of the experiment:\n{lines}{more}\n{_GUIDE}",
    )
