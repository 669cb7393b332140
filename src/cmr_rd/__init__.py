"""cmr_rd: the library behind the CMR-RD workflow. It knows nothing of Snakemake."""

__version__ = "0.1.0"
