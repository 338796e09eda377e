"""Synthetic prostate MRI cases: the embedded default dataset.

The phantom lets every chapter of the book run offline. Each case is drawn from a
seed and holds what a real multiparametric prostate MRI study holds:

* an axial T2-weighted volume (``t2w``, int16, 0.8 mm in-plane and 3 mm slices by default);
* a high-b diffusion-weighted volume (``dwi``, float32, b = 1400 s/mm^2) and its
  apparent diffusion coefficient map (``adc``, float32, in 1e-6 mm^2/s), both on a
  coarser grid of their own (2 mm in-plane, same slices) that is slightly *misaligned*
  with the T2W volume, as after patient motion between two series;
* a zone label map on the T2W grid (``zones``: 0 background, 1 peripheral zone,
  2 transition zone, 3 central zone, 4 anterior fibromuscular stroma; see
  :data:`prostseg.dataset.ZONE_NAMES`);
* a binary lesion mask on the T2W grid (``lesion``; some cases have no lesion).

The anatomy is a pelvis seen in axial slices: subcutaneous fat, gluteal, obturator
and levator muscles, pubic and ischial bones, the rectum (air in a muscular wall)
behind the gland, the bladder (bright urine) and the seminal vesicles above it, and
the gland itself with its four zones and a thin dark capsule. Lesions are small
irregular blobs, mostly in the peripheral zone, dark on T2W and ADC and bright on
high-b DWI. Every case varies the size, position and rotation of the gland, the
proportions of its zones, the number, place and size of lesions, the intensities,
the bias field and the misalignment. Images get tissue texture, partial-volume blur
(a Gaussian filter), a smooth multiplicative bias field (not on ADC, a ratio of two
images in which the coil sensitivity cancels) and Rician noise. ADC is zero where the
scanner would mask it (air, cortical bone).

Coordinates and arrays
----------------------
World coordinates are RAS+ millimetres (+x Right, +y Anterior, +z Superior), like
NIfTI. The arrays of a :class:`PhantomCase` follow the prostseg array convention of
:func:`prostseg.io.load_volume`: indexed ``(x, y, z)`` in RAS+ voxel order, axial slice
``k`` is ``array[:, :, k]``. :func:`write_phantom_dataset` stores the volumes in LAS
voxel order (``i`` towards Left), like the ProstateX NIfTI files, so reading them back
exercises the orientation handling; loading them with ``load_volume`` gives back the
arrays and affines of the :class:`PhantomCase`.

The misalignment
----------------
The DWI and ADC headers claim a *nominal* position (their affine,
:attr:`PhantomCase.dwi_affine`, is axis aligned and centred on the T2W field of view),
but the anatomy they show was imaged through a rigid transform
:attr:`PhantomCase.misalignment` (a :class:`RigidTransform`). Its meaning:

    ``misalignment.apply(q)`` is the position, in the world coordinates claimed by the
    DWI/ADC header, at which the DWI/ADC volumes show the anatomical point that the
    T2W volume shows at world position ``q``.

So the DWI voxel ``v`` really images the anatomy at
``misalignment.inverse_apply(dwi_affine @ v)``, i.e. the true affine of the DWI grid
is ``inv(misalignment.matrix) @ dwi_affine`` (:attr:`PhantomCase.dwi_true_affine`).
Resampling DWI onto the T2W grid using the headers only leaves the anatomy displaced by
this transform; a registration with the T2W volume as *fixed* and the DWI/ADC volume as
*moving* image must recover ``misalignment`` itself (elastix's transform maps fixed
points to moving points; elastix works in LPS, so compare with
``diag(-1, -1, 1, 1) @ matrix @ diag(-1, -1, 1, 1)``). The DWI zone map sampled the
same way is :attr:`PhantomCase.dwi_zones`.

Examples
--------
>>> case = make_phantom_case(0, shape=(64, 64, 12), spacing=(2.0, 2.0, 4.0))
>>> case.t2w.shape, case.t2w.dtype.name
((64, 64, 12), 'int16')
>>> sorted(set(case.zones.ravel().tolist()))
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from prostseg.dataset import ZONE_NAMES
from prostseg.errors import InputError

__all__ = [
    "GENERATOR_VERSION",
    "RigidTransform",
    "PhantomCase",
    "make_phantom_case",
    "write_phantom_dataset",
]

#: Version of the generator, stored in every case's ``phantom.json``. It changes
#: whenever the same seed would give different images.
GENERATOR_VERSION = "1"

#: b-value (s/mm^2) of the phantom's diffusion-weighted volume.
B_VALUE = 1400.0

#: Bounds of the random misalignment: shift (mm) and rotation (degrees) about R, A, S.
MAX_SHIFT_MM = (3.0, 3.0, 2.0)
MAX_ROTATION_DEG = (1.0, 1.0, 2.0)

#: World (RAS, mm) position of the centre of the T2W field of view.
FOV_CENTRE_MM = (0.0, -20.0, -60.0)

_PZ, _TZ, _CZ, _AFS = (
    ZONE_NAMES.index(name)
    for name in (
        "peripheral zone",
        "transition zone",
        "central zone",
        "anterior fibromuscular stroma",
    )
)

# Tissue ids of the anatomy painter and their (T2W, ADC in 1e-6 mm^2/s, DWI S0 relative,
# texture amplitude) properties. Later tissues are painted over earlier ones.
_TISSUES = {
    # name:          (T2W,  ADC,  S0,   texture)
    "air":           (0.0, 0.0, 0.0, 0.0),
    "fat":           (520.0, 250.0, 0.05, 0.06),
    "muscle":        (165.0, 1400.0, 0.55, 0.07),
    "cortex":        (25.0, 0.0, 0.0, 0.0),
    "marrow":        (360.0, 450.0, 0.08, 0.08),
    "rectal wall":   (200.0, 1300.0, 0.7, 0.06),
    "bladder wall":  (190.0, 1500.0, 0.6, 0.05),
    "urine":         (950.0, 2900.0, 1.5, 0.02),
    "vesicle":       (720.0, 2100.0, 1.0, 0.10),
    "capsule":       (170.0, 1300.0, 0.6, 0.05),
    "pz":            (480.0, 1750.0, 1.0, 0.10),
    "tz":            (290.0, 1250.0, 0.85, 0.20),
    "cz":            (185.0, 1050.0, 0.8, 0.08),
    "afs":           (105.0, 1000.0, 0.5, 0.06),
    "lesion":        (205.0, 800.0, 1.0, 0.08),
}
_TISSUE_ID = {name: index for index, name in enumerate(_TISSUES)}
_ZONE_OF_TISSUE = {"pz": _PZ, "tz": _TZ, "cz": _CZ, "afs": _AFS, "lesion": 0}


def _rotation_matrix(rotation_deg: Sequence[float]) -> np.ndarray:
    """Rotation ``Rz @ Ry @ Rx`` for angles (degrees) about the x, y, z axes."""
    ax, ay, az = np.deg2rad(np.asarray(rotation_deg, dtype=float))
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class RigidTransform:
    """A rigid transform of world (RAS, mm) points about a centre.

    A point ``q`` maps to ``R @ (q - centre_mm) + centre_mm + translation_mm`` where
    ``R = Rz @ Ry @ Rx`` rotates by ``rotation_deg[0]`` degrees about the R (x) axis
    first, then ``rotation_deg[1]`` about A (y), then ``rotation_deg[2]`` about S (z);
    positive angles turn counter-clockwise when seen from the positive end of the axis.

    Parameters
    ----------
    translation_mm : tuple of 3 floats
        Shift along R, A, S in millimetres.
    rotation_deg : tuple of 3 floats
        Rotations about the R, A, S axes in degrees.
    centre_mm : tuple of 3 floats
        World point (RAS, mm) the rotation turns about.

    Examples
    --------
    >>> shift = RigidTransform((1.0, 2.0, 3.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    >>> shift.apply([10.0, 10.0, 10.0]).tolist()
    [11.0, 12.0, 13.0]
    >>> turn = RigidTransform((0.0, 0.0, 0.0), (0.0, 0.0, 90.0), (5.0, 0.0, 0.0))
    >>> np.round(turn.apply([6.0, 0.0, 0.0]), 6).tolist()
    [5.0, 1.0, 0.0]
    """

    translation_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    centre_mm: tuple[float, float, float]

    @property
    def matrix(self) -> np.ndarray:
        """The transform as a 4x4 homogeneous matrix acting on RAS mm points."""
        rotation = _rotation_matrix(self.rotation_deg)
        centre = np.asarray(self.centre_mm, dtype=float)
        matrix = np.eye(4)
        matrix[:3, :3] = rotation
        matrix[:3, 3] = centre - rotation @ centre + np.asarray(self.translation_mm, dtype=float)
        return matrix

    def apply(self, points: np.ndarray | Sequence[float]) -> np.ndarray:
        """Map world points (``(..., 3)`` array, RAS mm) through the transform."""
        points = np.asarray(points, dtype=float)
        matrix = self.matrix
        return points @ matrix[:3, :3].T + matrix[:3, 3]

    def inverse_apply(self, points: np.ndarray | Sequence[float]) -> np.ndarray:
        """Map world points back through the inverse transform."""
        points = np.asarray(points, dtype=float)
        matrix = self.matrix
        return (points - matrix[:3, 3]) @ matrix[:3, :3]

    def to_dict(self) -> dict:
        """JSON-ready description, including the 4x4 matrix and the conventions."""
        return {
            "translation_mm": [float(v) for v in self.translation_mm],
            "rotation_deg": [float(v) for v in self.rotation_deg],
            "centre_mm": [float(v) for v in self.centre_mm],
            "matrix": self.matrix.round(9).tolist(),
            "convention": (
                "RAS mm; p = R (q - centre) + centre + translation, R = Rz Ry Rx; maps the "
                "T2W world position q of an anatomical point to the position p where the "
                "DWI/ADC headers place it (elastix fixed=T2W, moving=DWI recovers it)"
            ),
        }


@dataclass(frozen=True)
class PhantomCase:
    """One synthetic case, made by :func:`make_phantom_case`.

    Arrays are indexed ``(x, y, z)`` in RAS+ voxel order (axial slice ``k`` is
    ``array[:, :, k]``), like the arrays of :func:`prostseg.io.load_volume`.

    Attributes
    ----------
    seed : int
        Seed the case was drawn from.
    t2w : ndarray of int16, shape (X, Y, Z)
        T2-weighted volume.
    zones : ndarray of uint8, shape (X, Y, Z)
        Zone labels on the T2W grid (see :data:`prostseg.dataset.ZONE_NAMES`).
    lesion : ndarray of uint8, shape (X, Y, Z)
        Binary lesion mask on the T2W grid (all zeros when the case has no lesion).
    t2w_affine : ndarray, shape (4, 4)
        Voxel to world (RAS mm) affine of the T2W grid (also of ``zones``, ``lesion``).
    dwi : ndarray of float32, shape (U, V, Z)
        High-b diffusion-weighted volume on the diffusion grid.
    adc : ndarray of float32, shape (U, V, Z)
        ADC map (1e-6 mm^2/s) on the diffusion grid.
    dwi_zones : ndarray of uint8, shape (U, V, Z)
        Zone labels as the DWI/ADC volumes show them (ground truth for registration;
        not written to disk).
    dwi_affine : ndarray, shape (4, 4)
        Nominal (header) affine of the diffusion grid, shared by ``dwi`` and ``adc``.
    misalignment : RigidTransform
        Maps the T2W world position of an anatomical point to where the DWI/ADC header
        places it (see the module documentation).
    lesion_count : int
        Number of lesions drawn (overlapping lesions count separately).
    """

    seed: int
    t2w: np.ndarray
    zones: np.ndarray
    lesion: np.ndarray
    t2w_affine: np.ndarray
    dwi: np.ndarray
    adc: np.ndarray
    dwi_zones: np.ndarray
    dwi_affine: np.ndarray
    misalignment: RigidTransform
    lesion_count: int

    @property
    def dwi_true_affine(self) -> np.ndarray:
        """Affine that maps a diffusion voxel to the T2W world position of what it shows."""
        return np.linalg.inv(self.misalignment.matrix) @ self.dwi_affine

    def volumes(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Map each file name of the case layout to ``(array, header affine)``.

        Examples
        --------
        >>> case = make_phantom_case(1, shape=(48, 48, 8), spacing=(2.5, 2.5, 5.0))
        >>> sorted(case.volumes())
        ['adc', 'dwi', 'lesion', 't2w', 'zones']
        """
        return {
            "t2w": (self.t2w, self.t2w_affine),
            "adc": (self.adc, self.dwi_affine),
            "dwi": (self.dwi, self.dwi_affine),
            "lesion": (self.lesion, self.t2w_affine),
            "zones": (self.zones, self.t2w_affine),
        }


def _grid_affine(shape: Sequence[int], spacing: Sequence[float], centre: np.ndarray) -> np.ndarray:
    """Axis-aligned RAS affine whose voxel grid is centred on ``centre``."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def _world_points(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World coordinates of all voxel centres, shape ``(*shape, 3)``."""
    index = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij"), -1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def _ellipse(x, y, cx, cy, ax, ay, angle_deg=0.0):
    """Normalised squared radius of points in a rotated ellipse (inside where < 1)."""
    angle = np.deg2rad(angle_deg)
    dx, dy = x - cx, y - cy
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / ax
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / ay
    return u * u + v * v


@dataclass(frozen=True)
class _Anatomy:
    """Random anatomy of one case, in world millimetres."""

    centre: np.ndarray  # gland centre
    semi_axes: np.ndarray  # gland semi-axes (lateral, AP, craniocaudal)
    angle_deg: float  # gland rotation about S
    pelvis_scale: float
    tz_scale: float
    cz_base: float
    afs_front: float
    rectum_shift: float

    def gland_coordinates(self, points: np.ndarray) -> tuple[np.ndarray, ...]:
        """Normalised gland coordinates ``(u, v, w, r2)`` of world points."""
        d = points - self.centre
        angle = np.deg2rad(self.angle_deg)
        lateral = np.cos(angle) * d[..., 0] + np.sin(angle) * d[..., 1]
        front = -np.sin(angle) * d[..., 0] + np.cos(angle) * d[..., 1]
        w = d[..., 2] / self.semi_axes[2]
        v = front / self.semi_axes[1]
        # Wider at the back, narrower towards the apex: a rounded triangle in axial view.
        u = lateral / self.semi_axes[0] / (1.0 - 0.18 * v) * (1.0 + 0.2 * np.clip(-w, 0, None))
        # The rectum indents the posterior midline.
        v = np.where(v < 0, v + 0.18 * np.exp(-((u / 0.35) ** 2)), v)
        return u, v, w, u * u + v * v + w * w

    def tissues(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tissue ids, zone labels and gland mask of world points."""
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        s = self.pelvis_scale
        gx, gy, gz = self.centre
        ax, ay, az = self.semi_axes
        tissue = np.zeros(points.shape[:-1], dtype=np.uint8)

        def paint(name, where):
            tissue[where] = _TISSUE_ID[name]

        # Body: subcutaneous and pelvic fat; muscles and bones of the pelvic wall.
        py = gy - 12.0 * s  # pelvis centre, a little behind the gland
        paint("fat", _ellipse(x, y, gx, py, 150 * s, 100 * s) < 1)
        for side in (-1.0, 1.0):
            paint("muscle", _ellipse(x, y, gx + side * 66 * s, py - 66 * s, 46 * s, 36 * s, side * 25) < 1)
            paint("muscle", _ellipse(x, y, gx + side * 50 * s, py + 6 * s, 11 * s, 34 * s, side * 8) < 1)
            ischium = _ellipse(x, y, gx + side * 70 * s, py + 4 * s, 14 * s, 36 * s, side * 6)
            paint("cortex", ischium < 1)
            paint("marrow", ischium < 0.7)
            pubis = _ellipse(x, y, gx + side * 17 * s, gy + ay + 20 * s, 18 * s, 8 * s, -side * 35)
            paint("cortex", pubis < 1)
            paint("marrow", pubis < 0.55)
        # Levator ani: a thin sling behind and beside the gland and rectum.
        sling = _ellipse(x, y, gx, gy - 14 * s, 31 * s, 36 * s)
        paint("muscle", (sling < 1) & (sling > 0.82) & (y < gy + 5))
        # Rectum behind the gland: muscular wall around a collapsed, air-filled lumen.
        rx, ry = gx + self.rectum_shift, gy - ay - 13.0 * s
        paint("rectal wall", _ellipse(x, y, rx, ry, 19 * s, 11 * s) < 1)
        paint("air", _ellipse(x, y, rx, ry, 14 * s, 5 * s) < 1)
        # Bladder above the gland, seminal vesicles behind the bladder base.
        bladder_z = gz + az + 20.0 * s
        bladder = ((x - gx) / (40 * s)) ** 2 + ((y - gy - 6 * s) / (30 * s)) ** 2 + ((z - bladder_z) / (26 * s)) ** 2
        paint("bladder wall", bladder < 1)
        paint("urine", bladder < 0.8)
        for side in (-1.0, 1.0):
            vesicle = (
                _ellipse(x, y, gx + side * 16 * s, gy - ay * 0.6, 14 * s, 5 * s, -side * 20)
                + ((z - gz - az * 0.85) / (7 * s)) ** 2
            )
            paint("vesicle", vesicle < 1)
        # The gland and its zones, from the outside in.
        u, v, w, r2 = self.gland_coordinates(points)
        paint("capsule", r2 < (1.0 + 1.5 / ax) ** 2)
        gland = r2 < 1
        paint("pz", gland)
        tz = (u / (0.6 * self.tz_scale)) ** 2 + ((v - 0.18) / (0.55 * self.tz_scale)) ** 2 + (
            (w - 0.12) / (0.62 * self.tz_scale)
        ) ** 2
        paint("tz", gland & (tz < 1))
        # The CZ is a cone around the ejaculatory ducts, widening towards the base; the
        # AFS covers the front of the gland and thickens towards the base.
        above_cz = w - self.cz_base
        cz = (above_cz > 0) & (v > -0.82) & (v < 0.05 + 0.6 * above_cz) & (np.abs(u) < 0.3 + 0.5 * above_cz)
        paint("cz", gland & cz)
        afs_front = self.afs_front - 0.6 * np.clip(w - 0.4, 0, None)
        paint("afs", gland & (v > afs_front) & (np.abs(u) < 0.62))
        zones = _ZONE_LOOKUP[tissue]
        return tissue, zones, gland


_ZONE_LOOKUP = np.zeros(len(_TISSUES), dtype=np.uint8)
for _name, _zone in _ZONE_OF_TISSUE.items():
    _ZONE_LOOKUP[_TISSUE_ID[_name]] = _zone


@dataclass(frozen=True)
class _Lesion:
    """An irregular ellipsoidal blob (world mm)."""

    centre: np.ndarray
    radii: np.ndarray
    angle_deg: float
    harmonics: np.ndarray  # amplitudes and phases of 2- and 3-lobed boundary waves

    def contains(self, points: np.ndarray) -> np.ndarray:
        d = points - self.centre
        angle = np.deg2rad(self.angle_deg)
        a = np.cos(angle) * d[..., 0] + np.sin(angle) * d[..., 1]
        b = -np.sin(angle) * d[..., 0] + np.cos(angle) * d[..., 1]
        theta = np.arctan2(b, a)
        amp2, phase2, amp3, phase3 = self.harmonics
        boundary = 1.0 + amp2 * np.cos(2 * theta + phase2) + amp3 * np.cos(3 * theta + phase3)
        radius2 = (a / self.radii[0]) ** 2 + (b / self.radii[1]) ** 2 + (d[..., 2] / self.radii[2]) ** 2
        return radius2 < boundary**2


def _draw_anatomy(rng: np.random.Generator, fov_centre: np.ndarray) -> _Anatomy:
    """Draw gland geometry and zone proportions."""
    return _Anatomy(
        centre=fov_centre + rng.uniform([-4, -2, -3], [4, 6, 3]),
        semi_axes=rng.uniform([19, 14, 15], [26, 19, 20]),
        angle_deg=float(rng.uniform(-10, 10)),
        pelvis_scale=float(rng.uniform(0.9, 1.1)),
        tz_scale=float(rng.uniform(0.85, 1.15)),
        cz_base=float(rng.uniform(0.1, 0.3)),
        afs_front=float(rng.uniform(0.5, 0.65)),
        rectum_shift=float(rng.uniform(-5, 5)),
    )


def _draw_lesions(rng, anatomy, points, zones, n_lesions) -> list[_Lesion]:
    """Place ``n_lesions`` blobs centred in the PZ (3 in 4) or the TZ, well inside the gland."""
    _, _, _, r2 = anatomy.gland_coordinates(points)
    lesions = []
    for _ in range(n_lesions):
        zone = _PZ if rng.random() < 0.75 else _TZ
        candidates = np.flatnonzero((zones == zone) & (r2 < 0.7))
        if candidates.size == 0:
            candidates = np.flatnonzero(zones == _PZ)
        lesions.append(
            _Lesion(
                centre=points.reshape(-1, 3)[rng.choice(candidates)],
                radii=np.array([*rng.uniform(3.5, 8.0, size=2), rng.uniform(3.0, 7.0)]),
                angle_deg=float(rng.uniform(0, 180)),
                harmonics=np.array([rng.uniform(0, 0.2), rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.12), rng.uniform(0, 2 * np.pi)]),
            )
        )
    return lesions


def _paint_lesions(tissue, gland, points, lesions) -> None:
    """Mark lesion voxels (clipped to the gland) in ``tissue``, in place."""
    for lesion in lesions:
        tissue[gland & lesion.contains(points)] = _TISSUE_ID["lesion"]


def _smooth_noise(rng, shape, sigma_vox) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    return field / max(float(field.std()), 1e-12)


def _bias_field(rng, points, fov_centre, amplitude) -> np.ndarray:
    """Smooth multiplicative bias: exp of a random quadratic in normalised coordinates."""
    n = (points - fov_centre) / 80.0
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    terms = np.stack([x, y, z, x * x, y * y, x * y], -1)
    return np.exp(amplitude * (terms @ rng.uniform(-1, 1, size=6)))


def _rician(rng, signal, sigma) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``."""
    real = signal + rng.normal(0.0, sigma, signal.shape)
    imaginary = rng.normal(0.0, sigma, signal.shape)
    return np.hypot(real, imaginary)


_TEXTURE = np.array([row[3] for row in _TISSUES.values()])


def _render(tissue, properties, texture) -> np.ndarray:
    """Look up tissue values (one channel per column of ``properties``), add texture
    and partial-volume blur."""
    values = properties[tissue] * (1.0 + texture * _TEXTURE[tissue])[..., None]
    return ndimage.gaussian_filter(values, _PARTIAL_VOLUME_SIGMA, mode="nearest")


# Partial-volume blur (voxels) in-plane and through the slices; none across channels.
_PARTIAL_VOLUME_SIGMA = (0.6, 0.6, 0.35, 0.0)


def _random_misalignment(rng, centre) -> RigidTransform:
    shift = rng.uniform(-1, 1, size=3) * MAX_SHIFT_MM
    rotation = rng.uniform(-1, 1, size=3) * MAX_ROTATION_DEG
    return RigidTransform(
        tuple(float(v) for v in shift.round(3)),
        tuple(float(v) for v in rotation.round(3)),
        tuple(float(v) for v in centre),
    )


def make_phantom_case(
    seed: int,
    *,
    shape: Sequence[int] = (160, 160, 16),
    spacing: Sequence[float] = (0.8, 0.8, 3.0),
    dwi_spacing: Sequence[float] = (2.0, 2.0),
    n_lesions: int | None = None,
    misalignment: RigidTransform | None = None,
) -> PhantomCase:
    """Draw one synthetic prostate MRI case.

    Parameters
    ----------
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed gives identical arrays.
    shape : tuple of 3 ints
        T2W matrix ``(X, Y, Z)``. Keep the field of view (``shape * spacing``) above
        about 100 x 100 x 40 mm so that the whole gland is inside.
    spacing : tuple of 3 floats
        T2W voxel size in mm.
    dwi_spacing : tuple of 2 floats
        In-plane voxel size (mm) of the DWI/ADC grid; it has the slices of the T2W grid
        and covers the T2W field of view.
    n_lesions : int, optional
        Number of lesions; by default drawn from the seed (0, 1 or 2 with probabilities
        0.15, 0.7, 0.15).
    misalignment : RigidTransform, optional
        Transform from the T2W world position of the anatomy to where the DWI/ADC header
        shows it (see the module documentation). By default drawn from the seed: shifts
        up to :data:`MAX_SHIFT_MM`, rotations up to :data:`MAX_ROTATION_DEG` about the
        centre of the T2W field of view. Pass a zero transform for perfectly aligned
        series.

    Returns
    -------
    PhantomCase

    Examples
    --------
    >>> case = make_phantom_case(3, shape=(64, 64, 12), spacing=(2.0, 2.0, 4.0), n_lesions=1)
    >>> case.lesion_count, bool(case.lesion.any())
    (1, True)
    >>> case.adc.shape  # 2 mm diffusion grid over the same 128 x 128 mm field of view
    (64, 64, 12)
    >>> bool((case.zones[case.lesion > 0] > 0).all())  # lesions lie inside the gland
    True
    """
    shape = tuple(int(n) for n in shape)
    spacing = np.asarray(spacing, dtype=float)
    if len(shape) != 3 or min(shape) < 1 or spacing.shape != (3,) or (spacing <= 0).any():
        raise ValueError(f"shape and spacing need 3 positive values, got {shape} and {tuple(spacing)}")
    if n_lesions is not None and n_lesions < 0:
        raise ValueError(f"n_lesions must be >= 0, got {n_lesions}")
    rng = np.random.default_rng(seed)
    fov_centre = np.asarray(FOV_CENTRE_MM, dtype=float)
    anatomy = _draw_anatomy(rng, fov_centre)
    if n_lesions is None:
        n_lesions = int(rng.choice(3, p=[0.15, 0.7, 0.15]))
    if misalignment is None:
        misalignment = _random_misalignment(rng, fov_centre)

    t2w_affine = _grid_affine(shape, spacing, fov_centre)
    t2w_points = _world_points(shape, t2w_affine)
    t2w_tissue, zones, t2w_gland = anatomy.tissues(t2w_points)
    lesions = _draw_lesions(rng, anatomy, t2w_points, zones, n_lesions)
    _paint_lesions(t2w_tissue, t2w_gland, t2w_points, lesions)

    dwi_step = np.array([*map(float, dwi_spacing), spacing[2]])
    dwi_shape = (*np.ceil(np.asarray(shape[:2]) * spacing[:2] / dwi_step[:2]).astype(int), shape[2])
    dwi_affine = _grid_affine(dwi_shape, dwi_step, fov_centre)
    true_points = misalignment.inverse_apply(_world_points(dwi_shape, dwi_affine))
    dwi_tissue, dwi_zones, dwi_gland = anatomy.tissues(true_points)
    _paint_lesions(dwi_tissue, dwi_gland, true_points, lesions)

    # Per-case tissue properties: every tissue varies a little, the lesion more.
    properties = np.array([row[:3] for row in _TISSUES.values()]) * rng.uniform(0.9, 1.1, size=(len(_TISSUES), 3))
    lesion_id = _TISSUE_ID["lesion"]
    properties[lesion_id, :2] = rng.uniform([160, 650], [260, 1000])

    t2w_texture = _smooth_noise(rng, shape, 1.5 / spacing)
    # Vessels: thin dark tubes where a smooth random field crosses zero, in fat only.
    vessels = np.exp(-((_smooth_noise(rng, shape, 4.0 / spacing) / 0.07) ** 2))
    t2w = _render(t2w_tissue, properties[:, :1], t2w_texture)[..., 0]
    t2w *= 1.0 - 0.6 * vessels * (t2w_tissue == _TISSUE_ID["fat"])
    t2w *= rng.uniform(0.85, 1.2) * _bias_field(rng, t2w_points, fov_centre, 0.2)
    t2w = _rician(rng, t2w, rng.uniform(8, 14))
    t2w = np.clip(np.rint(t2w), 0, np.iinfo(np.int16).max).astype(np.int16)

    dwi_texture = _smooth_noise(rng, dwi_shape, 2.0 / dwi_step)
    adc_s0 = _render(dwi_tissue, properties[:, 1:3], dwi_texture)
    adc, s0 = adc_s0[..., 0], adc_s0[..., 1]
    dwi = 150.0 * s0 * np.exp(-B_VALUE * adc * 1e-6) * _bias_field(rng, true_points, fov_centre, 0.15)
    dwi = _rician(rng, dwi, rng.uniform(2.0, 3.0)).astype(np.float32)
    adc = adc + rng.normal(0.0, 60.0, adc.shape)
    adc = np.where(s0 > 0.03, np.clip(adc, 0.0, 3500.0), 0.0).astype(np.float32)

    return PhantomCase(
        seed=int(seed),
        t2w=t2w,
        zones=zones,
        lesion=(t2w_tissue == lesion_id).astype(np.uint8),
        t2w_affine=t2w_affine,
        dwi=dwi,
        adc=adc,
        dwi_zones=dwi_zones,
        dwi_affine=dwi_affine,
        misalignment=misalignment,
        lesion_count=n_lesions,
    )


def _las_nifti(array: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """NIfTI image of a RAS-ordered array, stored with its first axis towards Left."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, array.shape[0] - 1
    las_affine = affine @ flip
    image = nib.Nifti1Image(np.ascontiguousarray(array[::-1]), las_affine)
    image.set_qform(las_affine, code=1)
    image.set_sform(las_affine, code=1)
    image.header.set_xyzt_units("mm")
    return image


def _jsonable(value):
    if isinstance(value, RigidTransform):
        return value.to_dict()
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a dataset drawn with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_phantom_dataset(
    out_dir: str | os.PathLike,
    n_cases: int = 8,
    seed: int = 0,
    *,
    overwrite: bool = False,
    **case_kwargs,
) -> list[Path]:
    """Write phantom cases in the case layout of :mod:`prostseg.dataset`.

    Case ``i`` goes to ``out_dir/phantom-{i:03d}/`` and holds ``t2w.nii.gz`` (int16),
    ``adc.nii.gz`` and ``dwi.nii.gz`` (float32, on their own grid), ``lesion.nii.gz`` and
    ``zones.nii.gz`` (uint8, on the T2W grid), all stored in LAS voxel order, and
    ``phantom.json``: the generator version, the dataset seed, the case's own seed (so
    ``make_phantom_case(case_seed, **case_kwargs)`` rebuilds it, ``dwi_zones``
    included), the keyword arguments, the lesion count and the misalignment of the
    DWI/ADC volumes (:meth:`RigidTransform.to_dict`).

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder to write the case folders into; created when missing.
    n_cases : int, optional
        Number of cases.
    seed : int, optional
        Dataset seed (>= 0). Case ``i`` is drawn from a seed derived from ``(seed, i)``
        with :class:`numpy.random.SeedSequence`, so the first cases of a larger dataset
        are the cases of a smaller one.
    overwrite : bool, optional
        Replace case folders that already exist. Only folders written by this function
        (holding ``phantom.json``) are touched, and only the files listed above are
        replaced; anything else in them (such as ``aligned/`` from an earlier
        registration) is left alone, so delete it yourself if it is stale.
    **case_kwargs
        Passed to :func:`make_phantom_case` (``shape``, ``spacing``, ...).

    Returns
    -------
    list of pathlib.Path
        The case folders, in order.

    Raises
    ------
    InputError
        Naming a case folder that exists when ``overwrite`` is false, or one that was
        not written by this function; nothing is written then.

    Examples
    --------
    >>> import tempfile
    >>> out_dir = Path(tempfile.mkdtemp())
    >>> small = dict(shape=(48, 48, 12), spacing=(2.5, 2.5, 4.0))
    >>> [path.name for path in write_phantom_dataset(out_dir, n_cases=2, **small)]
    ['phantom-000', 'phantom-001']
    >>> sorted(path.name for path in (out_dir / "phantom-000").iterdir())
    ['adc.nii.gz', 'dwi.nii.gz', 'lesion.nii.gz', 'phantom.json', 't2w.nii.gz', 'zones.nii.gz']
    >>> write_phantom_dataset(out_dir, n_cases=1, **small)
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: ...phantom-000: already exists; pass overwrite=True ...
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    case_dirs = [out_dir / f"phantom-{index:03d}" for index in range(n_cases)]
    existing = [case_dir for case_dir in case_dirs if case_dir.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more case folders)" if len(existing) > 1 else ""
        raise InputError(
            existing[0], f"already exists{more}; pass overwrite=True (CLI: --overwrite) to replace the phantom cases"
        )
    for case_dir in existing:
        if not (case_dir / _METADATA).is_file():
            raise InputError(case_dir, f"exists but holds no {_METADATA}, so it was not written by prostseg.phantom; "
                             "will not overwrite it")

    for index, case_dir in enumerate(case_dirs):
        case_seed = _case_seed(seed, index)
        case = make_phantom_case(case_seed, **case_kwargs)
        case_dir.mkdir(parents=True, exist_ok=True)
        for name, (array, affine) in case.volumes().items():
            nib.save(_las_nifti(array, affine), case_dir / f"{name}.nii.gz")
        metadata = {
            "generator": "prostseg.phantom",
            "generator_version": GENERATOR_VERSION,
            "dataset_seed": seed,
            "case_index": index,
            "case_seed": case_seed,
            "case_kwargs": _jsonable(case_kwargs),
            "lesion_count": case.lesion_count,
            "b_value": B_VALUE,
            "adc_units": "1e-6 mm^2/s",
            "misalignment": case.misalignment.to_dict(),
        }
        (case_dir / _METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
    return case_dirs


_METADATA = "phantom.json"
