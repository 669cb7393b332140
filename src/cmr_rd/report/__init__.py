"""The report: the paper's tables over seeds (tables), evaluation figures (figures), and the
paper's own published numbers kept apart from ours (report/paper_reference.yaml)."""
