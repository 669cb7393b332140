"""Small helpers every stage entry point uses: logging to the rule's log file."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path


def setup_logging(log_path: str | Path | None) -> logging.Logger:
    """Log (and warnings) to the rule's log file and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    return logging.getLogger("cmr_rd")
