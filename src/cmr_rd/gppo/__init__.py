"""Stage 2, GPPO: Thompson-sampled class quotas, triple rewards, per-phase GRPO, Beta posteriors."""
