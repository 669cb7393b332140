"""Synthetic LGE CMR cohort: the built-in data source for CI, laptops and tests.

Public API: `cmr_rd.synth.cohort.SynthConfig` and `cmr_rd.synth.cohort.generate_cohort`.
Kept import-free here so that importing a helper does not pull in pydicom and nibabel.
"""
