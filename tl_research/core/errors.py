"""The one error type a user sees for bad input: which config key (or flag), which value, what is allowed."""


class ConfigError(ValueError):
    def __init__(self, key: str, value, allowed: str, why: str = ""):
        self.key, self.value, self.allowed = key, value, allowed
        reason = f" ({why})" if why else ""
        # a flag (--workdir) or the command line as a whole is named as such, a config key as config.KEY
        name = key if key.startswith("-") or " " in key else f"config.{key}"
        sep = ": " if " " in key else "="
        super().__init__(f"{name}{sep}{value!r} is not allowed{reason}; allowed: {allowed}")
