"""`python tests/slurm_snakemake.py ARGS`: `snakemake ARGS`, with the SLURM executor's status
checks at most `STATUS_CHECK_CAP_S` apart.

The executor plugin (2.8) waits 10 s longer before each status check that finds no job finished,
up to 180 s: right for a busy site's scheduler, but on the loopback cluster, whose jobs take 2-40
s one after another, it left each job finished and unnoticed for 13-24 s, about half of
tests/test_slurm.py's run (measured: 120 of 229 s). The plugin has no setting for it, so the
tests start Snakemake through this wrapper, which caps the wait after every check; everything
else (sbatch, squeue, the job scripts, which run `python -m snakemake` themselves) is the
plugin's own. A user's cluster keeps the plugin's backoff.
"""

from __future__ import annotations

import snakemake_executor_plugin_slurm as slurm_plugin
from snakemake.cli import main

STATUS_CHECK_CAP_S = 3

_check_active_jobs = slurm_plugin.Executor.check_active_jobs


async def _check_active_jobs_capped(self, active_jobs):
    async for job in _check_active_jobs(self, active_jobs):
        yield job
    self.next_seconds_between_status_checks = min(
        self.next_seconds_between_status_checks, STATUS_CHECK_CAP_S
    )


slurm_plugin.Executor.check_active_jobs = _check_active_jobs_capped

if __name__ == "__main__":
    main()
