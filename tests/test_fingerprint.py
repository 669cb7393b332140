"""cmr_rd.fingerprint: one digest per library's arithmetic, the same in every process on one
machine, so two machines' fingerprints can be compared line by line."""

from __future__ import annotations

import json
import subprocess
import sys

from cmr_rd import fingerprint


def _run(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "cmr_rd.fingerprint", "--json", *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_every_piece_is_the_same_in_a_fresh_process_and_alone():
    first, second = _run(), _run()
    assert sorted(first["digests"]) == sorted(fingerprint.PIECES)
    assert first["digests"] == second["digests"]
    assert all(len(d) == fingerprint.DIGITS for d in first["digests"].values())
    # A piece run alone gives its digest in the full run: no piece depends on another's state.
    alone = _run("--only", "adamw", "--only", "onednn_conv")
    assert alone["digests"] == {k: first["digests"][k] for k in ("adamw", "onednn_conv")}
    assert "pinned" in first["machine"] and first["cpu"]["machine"]


def test_onednn_and_native_convolutions_are_different_arithmetic():
    import torch

    torch.set_num_threads(1)
    # The two conv pieces tell oneDNN from ATen's own path: they must not collapse into one.
    assert fingerprint.onednn_conv(torch) != fingerprint.native_conv(torch)
    assert torch.backends.mkldnn.enabled  # restored
