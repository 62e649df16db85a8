"""The one error type for bad input: it names the config key and what is allowed."""

from __future__ import annotations

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException


class ConfigError(ValueError):
    """Bad configuration, reported as one line ``key: what is allowed`` and exit code 2.

    Parameters
    ----------
    key : str
        Dotted config key at fault (``scenario.num_users``); relative keys raised inside a
        group's schema are prefixed with the group by the validator.
    message : str
        What is wrong and what is allowed, in a few words.
    """

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)

    def within(self, prefix: str) -> ConfigError:
        """The same error with its key placed under ``prefix`` (``num_users`` → ``scenario.num_users``)."""
        return ConfigError(f"{prefix}.{self.key}" if self.key else prefix, self.message)


class Incompatible(ConfigError):
    """Parts that are each valid but cannot work together (``learner=position_mlp`` on a scenario
    without positions): in a sweep such a job is skipped with its reason, a single run stops with it."""

    def within(self, prefix: str) -> Incompatible:
        return Incompatible(f"{prefix}.{self.key}" if self.key else prefix, self.message)


MAX_LINE = 250  # characters of an error line
MAX_WORD = 60  # characters of one echoed word (a value, a path) within it


def short(message: str, limit: int = MAX_LINE, word: int = MAX_WORD) -> str:
    """``message`` on one line of at most ``limit`` characters: whitespace collapsed, an echoed word
    longer than ``word`` cut with ``…`` (the key and the rule stay readable)."""
    words = [w if len(w) <= word else w[: word - 1] + "…" for w in message.split()]
    line = " ".join(words)
    return line if len(line) <= limit else line[: limit - 1] + "…"


class RunFailure(RuntimeError):
    """A run that started and cannot go on for a reason it can name (training diverged): its MLflow run
    ends FAILED with the reason, and the command prints that one line (exit code 1), no traceback."""


def require(condition: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(key, message)


def _parent_keys(err: OmegaConfBaseException) -> list[str]:
    node = getattr(err, "parent_node", None)
    try:
        return sorted(str(k) for k in node.keys()) if node is not None else []
    except Exception:
        return []


def one_line(err: BaseException) -> str | None:
    """The one-line message for a bad-input error, or ``None`` if ``err`` is not one."""
    if isinstance(err, ConfigError):
        return str(err)
    if isinstance(err, MissingConfigException):
        missing = err.missing_cfg_file or ""
        if "/" in missing and err.options:
            group, option = missing.rsplit("/", 1)
            return f"{group}={option}: unknown option; available: {', '.join(sorted(err.options))}"
        return str(err).strip().splitlines()[0]
    if isinstance(err, OverrideParseException):
        return f"bad override: {str(err).strip().splitlines()[0]}"
    if isinstance(err, ConfigCompositionException):
        cause = err.__cause__
        if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key:
            allowed = _parent_keys(cause)
            extra = f"; allowed: {', '.join(allowed)}" if allowed else ""
            return f"{cause.full_key}: unknown key{extra}"
        if isinstance(cause, OmegaConfBaseException) and cause.full_key:
            return f"{cause.full_key}: {cause.msg.splitlines()[0]}"
        if isinstance(cause, ConfigError):
            return str(cause)
        return str(err).strip().splitlines()[0]
    if isinstance(err, OmegaConfBaseException):
        key = err.full_key or "config"
        return f"{key}: {err.msg.splitlines()[0]}"
    return None
