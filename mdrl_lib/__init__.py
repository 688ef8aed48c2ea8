"""mdrl-kit: a notebook-first kit for the local perturbation theory of multi-domain RL interference."""

__version__ = "0.1.0"

from mdrl_lib.config import ConfigError, RunConfig  # noqa: E402

__all__ = ["ConfigError", "RunConfig", "__version__"]
