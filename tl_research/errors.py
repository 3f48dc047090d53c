"""The one error type a user sees for bad input: which config key, which value, what is allowed."""


class ConfigError(ValueError):
    def __init__(self, key: str, value, allowed: str, why: str = ""):
        self.key, self.value, self.allowed = key, value, allowed
        reason = f" ({why})" if why else ""
        super().__init__(f"config.{key}={value!r} is not allowed{reason}; allowed: {allowed}")
