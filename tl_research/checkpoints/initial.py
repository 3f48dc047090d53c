"""The weights a run starts from (`config.init`): none (scratch), its sweep's source model, a weights or run
directory, or a file of another framework converted on the fly (keras:PATH, torch:PATH, npz:PATH)."""
from __future__ import annotations

import pathlib

from tl_research.checkpoints import weights as weights_lib
from tl_research.core.errors import ConfigError


def init_weights(init: str, model_cfg, init_path: str | None = None):
    """(weights, meta) to start from, or (None, None) for scratch."""
    if init == "scratch":
        return None, None
    if init == "source":
        if not init_path:
            raise ConfigError("init", init, "'source' only inside a sweep that trains config.source")
        init = init_path
    fmt, sep, path = init.partition(":")
    if sep and fmt in ("keras", "torch", "npz"):
        from tl_research.checkpoints import convert
        return convert.convert(fmt, path, model_cfg.name, model_cfg=model_cfg)
    d = pathlib.Path(init)
    for candidate in (d, d / "weights"):
        if weights_lib.is_weights_dir(candidate):
            return weights_lib.load_weights(candidate)
    raise ConfigError("init", init, "scratch, source, a weights or run directory, keras:PATH, torch:PATH, "
                                    "npz:PATH", why="no weights found there")
