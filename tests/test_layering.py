"""Imports run one way (docs/architecture.md): base <- model <- quant <- io <- encode <- losses <- eval <-
{train, search, serve, export} <- cli.

Every module under src/gemma_embed is parsed with `ast`; every import is checked, at module level or inside a
function (a function-level import is still a dependency), and so is `importlib.import_module("gemma_embed...")`
with a literal name. Peers (train, search, serve, export) never import each other; a package's own cli module
(`<package>/cli.py`, `*_cli.py`) sits at the cli layer but may not import the top-level `gemma_embed.cli`, which
imports it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "gemma_embed"

# Helpers every layer may import: typed errors, paths, prompts, dtypes, atomic file writing, and the
# torch.distributed helpers (rank, all-gather with gradient: used by losses and the trainer alike).
BASE = frozenset(
    f"{PACKAGE}.{name}" for name in ("errors", "paths", "prompts", "dtypes", "io.files", "distributed")
)
# Package -> rank; a module may import only modules of its own rank or below.
RANKS = {
    "base": 0,
    "model": 1,
    "quant": 2,
    "io": 3,
    "encode": 4,
    "losses": 5,
    "eval": 6,
    "train": 7,
    "search": 7,
    "serve": 7,
    "export": 7,
    "cli": 8,
}
PEERS = frozenset(name for name, rank in RANKS.items() if rank == RANKS["train"])
# Top-level modules outside a package folder, with their layer. `gemma_embed` itself re-exports `load`.
TOP_LEVEL = {
    PACKAGE: "encode",
    f"{PACKAGE}.encode": "encode",
    f"{PACKAGE}.cli_args": "encode",
    f"{PACKAGE}.cli": "cli",
    f"{PACKAGE}.__main__": "cli",
    f"{PACKAGE}.demo": "cli",
}


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    importer: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.importer} -> {self.imported} ({self.why})"


def is_cli(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return leaf == "cli" or leaf.endswith("_cli")


def layer_of(module: str) -> str:
    """The layer of a gemma_embed module (KeyError for a package the layering does not know)."""
    if module in BASE:
        return "base"
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    if is_cli(module):
        return "cli"
    package = module.split(".")[1]
    if package not in RANKS or package in ("base", "cli"):
        raise KeyError(f"{module}: its package {package!r} has no layer; add it to tests/test_layering.py")
    return package


def peer_of(module: str) -> str | None:
    """The peer package (train, search, serve, export) a module belongs to, cli modules included."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PEERS else None


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(name: str, modules: set[str]) -> str:
    """`name` or, when it is an attribute rather than a module, the longest module prefix of it."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(tree: ast.AST, package: str, modules: set[str]) -> list[tuple[int, str]]:
    """(line, imported gemma_embed module) of every import in the tree, function-level ones included;
    `package` is the importer's package (for relative imports)."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from .x import y` is relative to the importer's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add((node.lineno, full if full in modules else base))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add((node.lineno, node.args[0].value))
    return sorted(
        {
            (line, resolve(name, modules))
            for line, name in found
            if name == PACKAGE or name.startswith(f"{PACKAGE}.")
        }
    )


def check_layering(root: Path) -> list[Violation]:
    """Every import under `root`/src/gemma_embed that runs against the layering."""
    src = root / "src"
    files = sorted((src / PACKAGE).rglob("*.py"))
    modules = {module_name(path, src) for path in files}
    violations = []
    for path in files:
        importer = module_name(path, src)
        importer_layer = layer_of(importer)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        for line, imported in imports_of(tree, package, modules):
            if imported == importer or importer.startswith(f"{imported}."):
                continue  # a module's own package (its __init__ runs anyway)
            where = str(path.relative_to(root))
            try:
                imported_layer = layer_of(imported)
            except KeyError as exc:
                violations.append(Violation(where, line, importer, imported, str(exc)))
                continue
            if RANKS[imported_layer] > RANKS[importer_layer]:
                why = f"{importer_layer} imports the higher layer {imported_layer}"
            elif peer_of(importer) and peer_of(imported) and peer_of(importer) != peer_of(imported):
                why = f"peers: {peer_of(importer)} imports {peer_of(imported)}"
            elif (
                imported == f"{PACKAGE}.cli" and importer != f"{PACKAGE}.__main__" and importer_layer == "cli"
            ):
                why = "a command module imports the top-level CLI, which imports it"
            else:
                continue
            violations.append(Violation(where, line, importer, imported, why))
    return violations


def test_imports_run_one_way() -> None:
    violations = check_layering(REPO)
    assert not violations, "imports against the layering:\n" + "\n".join(map(str, violations))


def test_checker_sees_function_level_and_string_imports(tmp_path: Path) -> None:
    package = tmp_path / "src" / PACKAGE
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("")
    (package / "model" / "__init__.py").write_text("")
    (package / "model" / "config.py").write_text(
        "from gemma_embed.errors import X\n"  # base: allowed
        "def f():\n    from gemma_embed.eval import runner\n"  # line 3: up, inside a function
        "import importlib\nimportlib.import_module('gemma_embed.train.trainer')\n"  # line 5: up, by name
    )
    for name in ("eval", "train", "search"):
        (package / name).mkdir()
        (package / name / "__init__.py").write_text("")
    (package / "eval" / "runner.py").write_text("")
    (package / "train" / "trainer.py").write_text("from gemma_embed.search import index\n")  # peers
    (package / "search" / "index.py").write_text("")
    found = {(v.file.split("/")[-1], v.line, v.imported) for v in check_layering(tmp_path)}
    assert found == {
        ("config.py", 3, "gemma_embed.eval.runner"),
        ("config.py", 5, "gemma_embed.train.trainer"),
        ("trainer.py", 1, "gemma_embed.search.index"),
    }
