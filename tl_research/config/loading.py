"""Reading a config file: importing it (`load_module`), its get_config (`read_config`, mistakes named as
ConfigErrors) and its get_sweep points (`sweep_points`)."""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import pathlib
import re
import sys
from typing import Any

import ml_collections

from tl_research.config.axes import Points
from tl_research.config.defaults import base_config
from tl_research.config.overrides import _get
from tl_research.config.run_identity import run_id
from tl_research.core.errors import ConfigError

IMPORT_ALLOWED = "module names on sys.path or paths of .py files (absolute, or relative to the launch directory)"


def load_module(path: str):
    """Imports a config file by path; ConfigError when there is none or it defines no get_config."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError("--config", path, "a path to a config file, e.g. configs/quickstart.py[:arg]",
                          why="no such file")
    spec = importlib.util.spec_from_file_location(f"tl_config_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError("--config", path, "a file defining get_config(arg=None)")
    return module


def read_config(module, arg: str | None, path: str = "") -> ml_collections.ConfigDict:
    """module.get_config(arg), with its mistakes as ConfigErrors: an ARG for a get_config that takes none,
    and a key the file sets that base_config() does not have (named with the closest one)."""
    fn = module.get_config
    if arg is not None and not _takes_an_argument(fn):
        raise ConfigError("--config", f"{path}:{arg}", f"{path} without ':{arg}', or a get_config(arg=None) that "
                                                        "reads it", why="its get_config takes no argument")
    try:
        return fn(*([] if arg is None else [arg]))
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the file does wrong is one line naming it
        text = (str(e).strip().splitlines() or [""])[-1][:160]
        raise _unknown_key(e, path) or ConfigError(
            "--config", path + (f":{arg}" if arg is not None else ""),
            "a config file whose get_config(arg=None) returns a ConfigDict", why=f"{type(e).__name__}: {text}"
        ) from None


def _takes_an_argument(fn) -> bool:
    import inspect
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


_LOCKED = re.compile(r'Key "([^"]+)" does not exist and cannot be added since the config is locked')


def _unknown_key(e: Exception, path: str) -> ConfigError | None:
    """The ConfigError for ConfigDict's refusal of a new key in a locked block: the dotted key (the block
    found in base_config() by its keys) and the closest existing one."""
    m = _LOCKED.search(str(e))
    if not m:
        return None
    leaf, block, value = m[1], None, f"(set in {path or 'the config file'})"
    tb = e.__traceback__
    while tb is not None:  # the innermost ConfigDict frame: the block refusing the key, and the value
        frame = tb.tb_frame
        if isinstance(frame.f_locals.get("self"), ml_collections.ConfigDict):
            block = frame.f_locals["self"]
            value = frame.f_locals.get("value", value)
        tb = tb.tb_next
    keys = sorted(block.keys()) if block is not None else []
    prefix = _block_path(base_config(), set(keys)) if keys else None
    dotted = ".".join(filter(None, [prefix, leaf]))
    close = difflib.get_close_matches(leaf, keys, n=1)
    closest = f"{'.'.join(filter(None, [prefix, close[0]]))} (the closest) or " if close else ""
    return ConfigError(dotted, value, f"{closest}a key of {prefix or 'config'}: {', '.join(keys)}",
                       why=f"no such key, set in {path or 'the config file'}")


def _block_path(node, keys: set[str], prefix: str = "") -> str | None:
    """The dotted path of the block of base_config() with exactly these keys ('' for the top level)."""
    if set(node.keys()) == keys:
        return prefix
    for k, v in node.items():
        if isinstance(v, ml_collections.ConfigDict):
            found = _block_path(v, keys, f"{prefix}.{k}" if prefix else k)
            if found is not None:
                return found
    return None


def sweep_points(module, arg: str | None, config, overrides: dict[str, Any]) -> Points:
    """The runs of a config file: its get_sweep(arg) points ([{}], one run, without one). A command-line
    override of a swept key replaces the sweep's values for that key (the user asked for that value); the
    points' keys must exist in `config`."""
    points: Points = [{}]
    if hasattr(module, "get_sweep"):
        # called as config_flags calls get_config: with the ':arg' string if the spec has one
        points = module.get_sweep(*([] if arg is None else [arg]))
        swept = {k for p in points for k in p}
        for key, value in overrides.items():
            if key in swept:
                points = [{**p, key: value} for p in points]
        # the same point twice (e.g. an override of a swept key) is one run; two different points that
        # share a run id would share one run directory and one row, so the second would never run
        seen, unique = {}, []
        for p in points:
            rid = run_id(p)
            if rid not in seen:
                seen[rid] = p
                unique.append(p)
            elif seen[rid] != p:
                raise ConfigError("get_sweep points", p, "points whose run ids differ", why=f"run id {rid!r} is also "
                                  f"that of {seen[rid]!r}: their values read alike once made a directory name")
        points = unique
    for p in points:
        for key in p:
            _get(config, key)
    return points


def import_extensions(config) -> None:
    """Imports what `config.imports` names (once per process: a module stays in sys.modules), so that the
    strategies, tasks and datasets it registers exist before anything checks the config's names. A file is
    imported under a name made from its resolved path, so importing it again is a no-op."""
    value = tuple(config.get("imports", ()) or ())
    for entry in value:
        try:
            if str(entry).endswith(".py"):
                path = pathlib.Path(entry).resolve()
                name = f"tl_ext_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
                if name not in sys.modules:
                    spec = importlib.util.spec_from_file_location(name, path)
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[name] = module
                    try:
                        spec.loader.exec_module(module)
                    except BaseException:
                        del sys.modules[name]
                        raise
            else:
                importlib.import_module(str(entry))
        except (ImportError, OSError, SyntaxError) as e:
            raise ConfigError("imports", value, IMPORT_ALLOWED, why=f"{entry!r}: {type(e).__name__}: {e}") from None
