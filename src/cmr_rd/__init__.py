"""cmr_rd: the library behind the CMR-RD workflow. It knows nothing of Snakemake."""

from cmr_rd.numerics import NumericsError, pin_environment

__version__ = "0.1.0"

# Before torch, NumPy or OpenBLAS choose their kernels: cmr_rd.numerics says why and what.
try:
    pin_environment()
except NumericsError as exc:  # a user's setting: one line, no traceback
    raise SystemExit(f"error: {exc}") from None
