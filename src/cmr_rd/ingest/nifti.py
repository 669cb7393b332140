"""NIfTI LGE volumes: find the slice axis from the affine, never by assuming axis 2.

A 2D image is the volume with the slice axis removed; its rows are the first remaining array
axis and its columns the second, which is also how boxes.csv addresses NIfTI slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

SUFFIXES = (".nii.gz", ".nii")


def patient_id_of(path: Path) -> str | None:
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


@dataclass
class NiftiStack:
    slice_axis: int
    axis_method: str
    spacing: tuple[float, float]  # (row, column) in mm
    locations_mm: list[float]  # position of each slice index along the normal
    volume: np.ndarray  # float32, scl_slope/inter applied
    normal: tuple[float, float, float]

    def image(self, index: int) -> np.ndarray:
        return np.take(self.volume, index, axis=self.slice_axis)


def slice_axis_of(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[int, str]:
    """The through-plane axis: the one with clearly the largest voxel size, else fewest voxels."""
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    order = np.argsort(zooms)
    if zooms[order[2]] > 1.5 * zooms[order[1]]:
        return int(order[2]), "largest voxel spacing (affine)"
    return int(np.argmin(shape[:3])), "fewest voxels (isotropic spacing)"


def read_stack(path: Path) -> NiftiStack:
    """Load a 3D volume; raises ValueError with a reason a user can act on."""
    image = nib.load(str(path))
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(f"expected a 3D volume, found shape {tuple(image.shape)}")
    affine = image.affine
    axis, method = slice_axis_of(affine, shape)
    volume = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    columns = np.asarray(affine[:3, :3], dtype=float)
    in_plane = [a for a in range(3) if a != axis]
    zooms = np.linalg.norm(columns, axis=0)
    normal = np.cross(columns[:, in_plane[0]], columns[:, in_plane[1]])
    norm = np.linalg.norm(normal)
    if norm == 0:
        raise ValueError("degenerate affine (in-plane axes are parallel)")
    normal /= norm
    origin = affine[:3, 3]
    locations = [float((origin + columns[:, axis] * k) @ normal) for k in range(shape[axis])]
    return NiftiStack(
        slice_axis=axis,
        axis_method=method,
        spacing=(float(zooms[in_plane[0]]), float(zooms[in_plane[1]])),
        locations_mm=locations,
        volume=volume,
        normal=(float(normal[0]), float(normal[1]), float(normal[2])),
    )
