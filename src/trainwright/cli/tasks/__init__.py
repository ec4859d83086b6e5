"""Task presets of the command line."""
from .base import *  # noqa: F401,F403
from .base import LabelInfo, check_model_config, get_task, load_metrics  # noqa: F401
