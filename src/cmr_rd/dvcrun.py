"""`python -m cmr_rd.dvcrun ARGS`: the `dvc` command line, reading each params file once.

DVC reads a stage's params file again for every stage that lists it, with ruamel's pure-Python
YAML parser: the demo's dvc.yaml has some 150 stage entries on `config/config.yaml`, and py-spy
put the parsing at 14% of a `dvc commit` and 40% of a `dvc status`, which run last in every demo,
with nothing beside them. Here a file's parse is kept for as long as its size and modification
time stay the same, and every caller gets its own deep copy, so what DVC computes is unchanged
(`tests/test_dvc.py` runs the commit, push, status and restore through this module). Where DVC
has no `dvc.dependency.param.load_path` (another DVC version) it runs as it is.
"""

from __future__ import annotations

import copy
import os
import sys
from typing import Any


def remember_params_files() -> bool:
    try:
        from dvc.dependency import param
        from dvc.fs import LocalFileSystem
    except ImportError:
        return False
    load = getattr(param, "load_path", None)
    if load is None:
        return False
    parsed: dict[tuple, Any] = {}

    def load_path(path: Any, fs: Any, **kwargs: Any) -> Any:
        if not isinstance(fs, LocalFileSystem):  # a git revision's tree: DVC's own reading
            return load(path, fs, **kwargs)
        try:
            stat = os.stat(path)
            options = repr(sorted(kwargs.items()))
            key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, options)
        except (OSError, TypeError):
            return load(path, fs, **kwargs)
        if key not in parsed:
            parsed[key] = load(path, fs, **kwargs)
        return copy.deepcopy(parsed[key])

    param.load_path = load_path
    return True


def main(argv: list[str] | None = None) -> int:
    from dvc.cli import main as dvc_main

    remember_params_files()
    return dvc_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
