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


def test_mkls_branch_moves_its_pieces_and_leaves_atens_own():
    """The portable mode differs from the pinned one in MKL's branch only (on an Intel CPU): ATen's
    own kernels give the same digest in both, so `aten_kernels` names ATen, not MKL."""
    import os

    from cmr_rd import numerics

    pieces = ("mkl_sgemm", "mkl_vml", "aten_kernels")
    args = [arg for piece in pieces for arg in ("--only", piece)]
    env = {k: v for k, v in os.environ.items() if k not in numerics.PIN_KEYS}
    runs = {}
    for mode in ("pinned", "portable"):
        done = subprocess.run([sys.executable, "-m", "cmr_rd.fingerprint", "--json", *args],
                              env={**env, numerics.MODE_ENV: mode}, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        runs[mode] = json.loads(done.stdout)["digests"]
    assert runs["pinned"]["aten_kernels"] == runs["portable"]["aten_kernels"]
    intel = numerics.pins("pinned") != numerics.pins("portable")
    for piece in ("mkl_sgemm", "mkl_vml"):
        assert (runs["pinned"][piece] != runs["portable"][piece]) == intel, piece
