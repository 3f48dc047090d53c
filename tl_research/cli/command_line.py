"""The command line the commands share (launch.py, tl_research.cli.similarity_command): absl flags, with the config
read by ml_collections' config_flags.

    --config FILE[:ARG]     a config file; ARG goes to its get_config(arg) and get_sweep(arg)
    --config.KEY=VALUE      an override, typed by the key's type (an unknown key names the closest one)
    --workdir DIR           default runs/<config name>
    -h, --help              the command's usage

Bad input (an unknown flag or key, a value of the wrong type, a missing config file or one without
get_config) becomes one ConfigError before any work, which the commands print as one line and exit 2.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any, Callable

from absl import flags
from ml_collections import config_flags

from tl_research import config as config_lib
from tl_research.core.errors import ConfigError
from tl_research.core.logs import quiet_logging  # noqa: F401 - also command_line.quiet_logging

_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)(?:=(.*))?$", re.S)
_BAD_VALUE = re.compile(r"^flag --([^=\s]+)=(.*?): (.*)$", re.S)
# absl's and config_flags' errors; an unknown key is ConfigDict's KeyError or AttributeError
_PARSE_ERRORS = (flags.Error, KeyError, AttributeError, ValueError, TypeError, OSError)


@dataclasses.dataclass(frozen=True)
class CommandLine:
    config: Any  # the base run config, overrides applied
    points: list[dict[str, Any]]  # the runs: {dotted key: value} each (config.sweep_points)
    workdir: pathlib.Path  # --workdir, default runs/<config name>
    flags: flags.FlagValues  # every flag's value, e.g. command_line.flags.retry_failed


def parse(argv: list[str], define: Callable[[flags.FlagValues], None], *, usage: str,
          default_config: str | None, flag_list: str) -> CommandLine | None:
    """argv (without the program name) -> CommandLine, or None once `usage` is printed for -h/--help.

    `define(flag_values)` adds the command's own flags; `flag_list` names every flag for the error on an
    unknown one. Each call defines its flags in a fresh FlagValues rather than absl's global FLAGS, so one
    process can parse several command lines (the tests do)."""
    first = flags.FlagValues()
    _define(first, define, lambda fv: flags.DEFINE_string("config", default_config, "config file", flag_values=fv))
    # The known flags alone first: --help before anything loads, and the config file checked by
    # config.load_module (a missing file or one without get_config named as such) before config_flags runs it.
    try:
        rest = first(["prog", *argv], known_only=True)
    except _PARSE_ERRORS as e:
        raise _refusal(e, first, argv, flag_list) from None
    if first.help:
        print(usage)
        return None
    if first.config is None:
        raise ConfigError("--config", None, "--config FILE[:ARG], a config file whose runs the command reads")
    if first.config.startswith("-"):
        raise ConfigError("--config", first.config, "--config FILE[:ARG], a config file path after --config",
                          why="a flag, not a file")
    path, colon, arg = first.config.partition(":")
    arg = arg if colon else None  # config_flags passes get_config an argument only after a colon
    module = config_lib.load_module(path)
    config_lib.read_config(module, arg, path)  # the file's own mistakes (unknown keys, ARG) named first
    fv = flags.FlagValues()
    try:
        # lock_config=False: the base config stays as get_config returned it (runs copy it to set their keys)
        _define(fv, define, lambda fv: config_flags.DEFINE_config_file(
            "config", default_config, "config file[:arg]", flag_values=fv, lock_config=False,
            sys_argv=["prog", *argv]))
        positional = fv(["prog", *argv])[1:]
    except _PARSE_ERRORS as e:
        raise _refusal(e, fv, argv, flag_list, module, arg, rest) from None
    if positional:
        raise ConfigError("command line", positional[0], flag_list, why="not a flag")
    config = fv.config
    overrides = config_flags.get_override_values(fv["config"])
    points = config_lib.sweep_points(module, arg, config, overrides)
    return CommandLine(config, points, pathlib.Path(fv.workdir or pathlib.Path("runs") / config.name), fv)


def _define(fv: flags.FlagValues, define, define_config) -> None:
    define_config(fv)
    flags.DEFINE_string("workdir", None, "the sweep's directory (default runs/<config name>)", flag_values=fv)
    flags.DEFINE_bool("help", False, "show the usage", short_name="h", flag_values=fv)
    define(fv)


def _refusal(e: Exception, fv, argv, flag_list, module=None, arg=None, rest=()) -> ConfigError:
    """The ConfigError for a parse failure of absl or config_flags, naming the flag or key it was about."""
    cause = e
    while cause is not None:  # e.g. a ConfigError of get_config(arg), re-raised by config_flags as another type
        if isinstance(cause, ConfigError):
            return cause
        cause = cause.__cause__ or cause.__context__
    text = str(e.args[0]) if e.args else str(e)
    if isinstance(e, flags.UnrecognizedFlagError):
        return ConfigError("command line", e.flagvalue or f"--{e.flagname}", flag_list, why=text)
    if isinstance(e, (KeyError, AttributeError)) and module is not None:
        # config_flags refuses an unknown key; config.set_value names it and the keys around it
        config = module.get_config(*([] if arg is None else [arg]))
        for m in filter(None, map(_OVERRIDE.match, rest)):
            config_lib.set_value(config, m[1], "?" if m[2] is None else config_lib.parse_value(m[2]))
    missing = re.match(r"Missing value for flag (\S+)", text)
    if missing:
        return ConfigError(missing[1], None, "a value after the flag")
    bad = _BAD_VALUE.match(text)
    if bad and bad[1] == "config":
        return ConfigError("--config", bad[2], "a config file whose get_config(arg=None) returns a ConfigDict",
                           why=_last_line(bad[3]))
    if bad and bad[1] in fv:
        key = bad[1][len("config."):] if bad[1].startswith("config.") else f"--{bad[1]}"
        return ConfigError(key, bad[2], f"a value of type {fv[bad[1]].parser.flag_type()}",
                           why=_last_line(bad[3]))
    return ConfigError("command line", " ".join(argv), flag_list, why=_last_line(text))


def _last_line(text: str) -> str:
    """The last line of a (possibly multi-line, traceback-carrying) message, short: the error stays one line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:160]
