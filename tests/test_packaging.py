"""The repository's promises about itself: environment.yml = pyproject.toml, book and toc agree."""
import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(requirement: str) -> str:
    """'Jupyter_Book >=1.0' -> 'jupyter-book>=1.0' (PEP 503 name, no spaces)."""
    requirement = requirement.replace(" ", "")
    name, rest = re.match(r"([A-Za-z0-9_.\-]+)(.*)", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower() + rest


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = _pyproject()["project"]
    declared = {_norm(r) for r in project["dependencies"]}
    for extra in ("book", "test"):
        declared |= {_norm(r) for r in project["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_norm(r) for r in pip_section if not r.startswith("-e")}
    assert listed == declared, (f"only in environment.yml: {sorted(listed - declared)}; "
                                f"only in pyproject.toml: {sorted(declared - listed)}")
    assert "-e ." in pip_section, "environment.yml installs the package itself"


def test_environment_yml_brings_python_311_and_graphviz_from_conda_forge():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "graphviz" in conda and "pip" in conda


def test_torch_is_pinned_to_the_cpu_wheel_on_disk():
    assert "torch==2.13.0" in _pyproject()["project"]["dependencies"]
    assert re.search(r"^TORCH \?= torch==2\.13\.0$", (ROOT / "Makefile").read_text(), re.M)


def _toc_files(node):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for value in node.values():
            yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def test_toc_and_book_folder_agree():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = {toc["root"], *_toc_files(toc["parts"])}
    on_disk = {str(p.relative_to(ROOT).with_suffix("")) for p in (ROOT / "book").glob("*")
               if p.suffix in (".md", ".ipynb")}
    assert listed == on_disk, f"in _toc.yml only: {listed - on_disk}; in book/ only: {on_disk - listed}"


def test_config_builds_only_toc_files_without_executing():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["only_build_toc_files"] is True
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")
    assert "sphinx_proof" in config["sphinx"]["extra_extensions"]
    assert config["bibtex_bibfiles"] == ["book/references.bib"]
    for folder in (".venv", "_build", ".pytest_cache"):
        assert folder in config["exclude_patterns"]


def test_notebooks_carry_their_outputs():
    # nbval compares stored outputs: a notebook saved without them would test nothing.
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        counts = [c["execution_count"] for c in code]
        assert all(isinstance(n, int) for n in counts), f"{path.name}: unexecuted cells"
        assert counts == sorted(counts) and counts[0] == 1, f"{path.name}: not run top to bottom"
        assert any(c["outputs"] for c in code), f"{path.name}: no outputs stored"
        errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
        assert not errors, f"{path.name}: stored error output"


def test_no_cell_relies_on_a_trailing_semicolon_or_stores_warnings():
    # nbval executes cells so that IPython's trailing-";" display suppression does not apply: a cell
    # ending in `f();` stores no output but shows f's value under nbval. And a stored warning (stderr)
    # is a deprecation waiting to change the output; both are failures of the notebook, not of nbval.
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for c in nb["cells"]:
            if c["cell_type"] != "code":
                continue
            src = "".join(c["source"]).rstrip()
            assert not src.endswith(";"), f"{path.name} {c.get('id')}: ends with ';' — assign to _ instead"
            stderr = [o for o in c["outputs"] if o["output_type"] == "stream" and o["name"] == "stderr"]
            assert not stderr, f"{path.name} {c.get('id')}: stored stderr {''.join(stderr[0]['text'])[:120]!r}"


def test_bibliography_holds_the_lectures_six_references():
    bib = (ROOT / "book" / "references.bib").read_text()
    for key in ("ho2020ddpm", "karras2022edm", "kingma2014vae", "rombach2022ldm",
                "ronneberger2015unet", "song2021sde"):
        assert f"{{{key}," in bib, key


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^\s*(time )?make test\s*$", (ROOT / ".ci" / "run").read_text(), re.M)
