"""A helper for the tests that check that a failed load changes nothing on disk."""
import hashlib
import os
from pathlib import Path


def tree_digest(root: Path) -> str:
    """sha256 over every path, link target, mode and byte below root: any change on disk shows."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_symlink():
            h.update(b"link:" + os.readlink(path).encode())
        h.update(oct(path.lstat().st_mode).encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()
