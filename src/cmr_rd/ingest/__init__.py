"""Ingestion: from a tree of DICOM/NIfTI files to a de-identified, training-ready manifest."""
