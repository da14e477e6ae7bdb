"""The top-level conftest.py hands out make test's files longest first: the names it lists exist."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _order_module():
    spec = importlib.util.spec_from_file_location("sdanatomy_test_order", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_file_named_longest_first_exists():
    names = _order_module().LONGEST_FIRST
    missing = [name for name in names if not (ROOT / name).is_file()]
    assert not missing, f"conftest.LONGEST_FIRST names files that are not there: {missing}"
    assert len(set(names)) == len(names), "a file is named twice"


def test_named_files_go_first_in_their_order_and_notebooks_before_unit_tests():
    module = _order_module()

    class Item:
        def __init__(self, name):
            self.fspath = ROOT / name
            self.name = name

    names = ["tests/test_notation.py", "book/ch02_notation.ipynb", "book/ch08_functions.ipynb",
             "tests/browser/test_site.py", "book/ch03_freedom.ipynb"]
    items = [Item(n) for n in names]
    module.pytest_collection_modifyitems(items)
    assert [i.name for i in items] == ["book/ch03_freedom.ipynb", "tests/browser/test_site.py",
                                       "book/ch08_functions.ipynb", "book/ch02_notation.ipynb",
                                       "tests/test_notation.py"]
