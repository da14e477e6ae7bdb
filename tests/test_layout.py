"""The package's layers (CONTRIBUTING.md): imports go one way, every module imports on its own,
the ledger's rows come from an explicit list and none can vanish, and every row is one hop from
its equation, its functions and its chapter."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdanatomy import ledger
from sdanatomy.pages import layout

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(layout.modules())


def test_every_module_is_in_a_layer():
    for m in MODULES:
        assert layout.layer(m) in ("base", *layout.LAYERS), m


def test_imports_go_one_way():
    # lecture <- sd15 <- miniature, ledger <- pages; diffusers and transformers only in sd15.
    assert layout.violations() == []


def test_no_import_cycle():
    # imports inside functions count: the graph is read from every import statement
    assert layout.cycles() == []


def test_the_graph_reader_sees_imports_inside_functions(tmp_path):
    # A planted upward import inside a function is seen, and so is the cycle it closes.
    pkg = tmp_path / "sdanatomy"
    for sub in ("lecture", "sd15"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "lecture" / "a.py").write_text("def f():\n    from sdanatomy.sd15 import b\n")
    (pkg / "sd15" / "b.py").write_text("from sdanatomy.lecture import a\n")
    assert layout.violations(pkg) == ["sdanatomy.lecture.a (lecture) imports sdanatomy.sd15.b (sd15)"]
    assert layout.cycles(pkg) == [["sdanatomy.lecture.a", "sdanatomy.sd15.b"]]


# A fresh interpreter that has loaded none of the package: it first runs every third-party import
# the package makes (torch, diffusers, transformers, …: 5 s a module otherwise), then forks one
# child per module, which imports that module alone and reports the traceback if it fails.
IMPORT_ALONE = r"""
import ast, importlib, json, os, sys, traceback
from pathlib import Path
root = Path(sys.argv[1])
for f in sorted(root.rglob("*.py")):
    for n in ast.walk(ast.parse(f.read_text())):
        if isinstance(n, (ast.Import, ast.ImportFrom)) and not getattr(n, "level", 0):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else [n.module]
            for name in names:
                if name.split(".")[0] != "sdanatomy":
                    try:
                        importlib.import_module(name)
                    except ImportError:
                        pass
assert not any(m.split(".")[0] == "sdanatomy" for m in sys.modules), "the parent loaded the package"
results = {}
for module in sys.argv[2:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(module)
            message = ""
        except BaseException:
            message = traceback.format_exc()[-2000:]
        os.write(w, message.encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    results[module] = data.decode()
print(json.dumps(results))
"""


def test_every_module_imports_on_its_own():
    root = ROOT / "src" / "sdanatomy"
    out = subprocess.run([sys.executable, "-c", IMPORT_ALONE, str(root), *MODULES],
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.splitlines()[-1])
    assert sorted(results) == MODULES
    assert {m: err for m, err in results.items() if err} == {}


def test_import_alone_sees_a_partially_initialised_module(tmp_path):
    # The check itself: two modules that import each other's names fail when imported first.
    pkg = tmp_path / "src" / "sdanatomy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from sdanatomy.b import g\ndef f():\n    return 1\n")
    (pkg / "b.py").write_text("from sdanatomy.a import f\ndef g():\n    return 2\n")
    out = subprocess.run([sys.executable, "-c", IMPORT_ALONE, str(pkg), "sdanatomy.a"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path / "src",
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(tmp_path / "src")))
    results = json.loads(out.stdout.splitlines()[-1])
    assert "partially initialized module" in results["sdanatomy.a"]


def test_the_lecture_layer_needs_no_reference_library():
    # The lecture's functions run with diffusers and transformers unimportable.
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('diffusers', 'transformers', 'huggingface_hub'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            + "".join(f"import {m}\n" for m in MODULES if layout.layer(m) == "lecture") +
            "import torch\n"
            "from sdanatomy.lecture import unet, config\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('diffusers', 'transformers')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_import_graph_figure_is_current():
    svg = (ROOT / "book" / "figures" / "import_graph.svg").read_text()
    assert f"import graph sha256 {layout.digest()}" in svg, "run: python -m sdanatomy.pages.layout"


# --- the ledger's rows ---------------------------------------------------------------------

def test_row_modules_are_every_module_of_the_ledger_but_its_machinery():
    folder = ROOT / "src" / "sdanatomy" / "ledger"
    # the machinery, the errata and the catalogue of prose claims register no rows
    found = {f.stem for f in folder.glob("*.py")} - {"__init__", "registry", "errata", "claims"}
    assert set(ledger.ROW_MODULES) == found
    for name in ledger.ROW_MODULES:     # each is imported by the ledger itself, not found by search
        assert f"sdanatomy.ledger.{name}" in sys.modules


def test_every_row_comes_from_a_listed_module():
    modules = {f"sdanatomy.ledger.{m}" for m in ledger.ROW_MODULES}
    for e in ledger.entries():
        assert e.measure.__module__ in modules, e.name


def test_the_list_of_rows_is_pinned():
    # A row that disappears (or is renamed) fails here: tests/ledger_rows.txt lists them all.
    pinned = (ROOT / "tests" / "ledger_rows.txt").read_text().splitlines()
    names = [e.name for e in ledger.entries()]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(pinned), (
        f"missing: {sorted(set(pinned) - set(names))}; new: {sorted(set(names) - set(pinned))}")


def test_a_row_module_that_fails_to_import_fails_loudly(tmp_path):
    # The ledger imports its rows explicitly: a broken row module is an ImportError, never a skip.
    code = ("import builtins, sys\n"
            "real = builtins.__import__\n"
            "def broken(name, globals=None, locals=None, fromlist=(), level=0):\n"
            "    if 'unet' in (fromlist or ()) and globals and globals.get('__name__') == "
            "'sdanatomy.ledger':\n"
            "        raise ImportError('planted failure')\n"
            "    return real(name, globals, locals, fromlist, level)\n"
            "builtins.__import__ = broken\n"
            "import sdanatomy.ledger\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode != 0 and "planted failure" in out.stderr


# --- one hop from an equation ----------------------------------------------------------------

def _toc_files() -> set[str]:
    return {line.split("file:")[1].strip().removeprefix("book/")
            for line in (ROOT / "_toc.yml").read_text().splitlines() if "file:" in line}


@pytest.mark.parametrize("entry", ledger.entries(), ids=lambda e: e.name)
def test_every_row_leads_to_its_functions_and_chapter(entry):
    functions = ledger.functions(entry)
    assert functions, f"{entry.name}: names no lecture function (give it checks=...)"
    for q in functions:
        module, _, name = q.rpartition(".")
        assert module.startswith("sdanatomy.lecture."), q
        assert hasattr(sys.modules[module], name), q
    assert ledger.chapter(entry.section) in _toc_files()
    for n in ledger.equations(entry.name):
        w = ledger.where(f"({n})")
        assert entry.name in w.rows and set(functions) <= set(w.functions)
        assert ledger.chapter(entry.section) in w.chapters


def test_where_rejects_what_is_not_an_equation():
    with pytest.raises(ValueError, match="an equation is a number"):
        ledger.where("Def. 6.15")
    with pytest.raises(KeyError, match="no row for equation"):
        ledger.where(9999)


def test_where_answers_the_resnet_block():
    w = ledger.where("(52)")
    assert "sdanatomy.lecture.blocks.resnet_block_2d" in w.functions
    assert "(52)–(57) ResnetBlock2D" in w.rows and w.chapters == ("ch08_functions",)
    assert json.dumps(repr(w))     # prints on one line


def test_every_tolerance_check_in_the_tests_states_its_rtol():
    # torch.allclose's default rtol (1e-5) silently loosens a stated float64 bound: say it.
    import ast
    missing = []
    for f in sorted((ROOT / "tests").rglob("*.py")):
        for call in ast.walk(ast.parse(f.read_text())):
            if isinstance(call, ast.Call):
                name = getattr(call.func, "attr", getattr(call.func, "id", ""))
                if name in ("allclose", "isclose", "assert_close"):
                    if not {"rtol", "rel_tol"} & {k.arg for k in call.keywords}:
                        missing.append(f"{f.name}:{call.lineno}")
    assert missing == []
