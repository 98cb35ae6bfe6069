"""univid: single-stream text-to-video diffusion transformers trained with rectified flow."""

from univid.config import Config
from univid.errors import ConfigError, InputError, UnividError

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "InputError", "Pipeline", "UnividError", "__version__"]


def __getattr__(name: str):
    # Pipeline pulls in transformers; import it only when asked for.
    if name == "Pipeline":
        from univid.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'univid' has no attribute {name!r}")
