"""Synthetic prostate MRI cases: the embedded default dataset.

The phantom lets every chapter of the book run offline. Each case is a synthetic
patient drawn from a seed, imaged the way a multiparametric prostate MRI study is:

* an axial T2-weighted volume (``t2w``, int16) on a grid drawn per patient, like the
  public datasets: field of view 140-220 mm, in-plane spacing 0.4-1.0 mm (matrices up to
  320), 16-26 slices of 3-4 mm;
* a high-b diffusion-weighted volume (``dwi``, float32, b = 1400 s/mm^2) and its
  apparent diffusion coefficient map (``adc``, float32, in 1e-6 mm^2/s), both on a
  coarser grid of their own (1.6-2.5 mm in-plane, a field of view of their own, the
  slices of the T2W volume) that is slightly *misaligned* with the T2W volume, as after
  patient motion between two series;
* a zone label map on the T2W grid (``zones``: 0 background, 1 peripheral zone,
  2 transition zone, 3 central zone, 4 anterior fibromuscular stroma; see
  :data:`prostseg.data.dataset.ZONE_NAMES`);
* a binary lesion mask on the T2W grid (``lesion``; some cases have no lesion);
* the anatomy itself, a tissue map on the T2W grid (``tissues``, one of
  :data:`TISSUE_NAMES` per voxel; ground truth that is not written to disk).

The anatomy is an axial pelvis at the level of the prostate, in real millimetres
whatever the grid: a body rounded in front and at the sides, with subcutaneous fat and,
behind, the two buttocks and the natal cleft between them; gluteal, hip and iliopsoas
muscles, with streaks of fat; femoral heads (bright fatty marrow in a thin dark cortex)
in their acetabula beside the mid-gland and the base, the ischial tuberosities and the
lower pubic rami in their place near the apex, and the pubic bones meeting at the
symphysis (intermediate fibrocartilage) in front of the gland. On each pelvic side wall
the thick dark obturator internus; between it and the gland, bright ischioanal fat and
the levator ani, a dark band on each side of the gland and the rectum, slung behind the
rectum (thickest at the anorectal junction, near the apex), open in front towards the
pubis and widening upwards. Periprostatic fat with the venous plexus in front of and
beside the gland (bright blood in dark walls) and the neurovascular bundles behind it at
5 and 7 o'clock; the rectum behind the gland, 25-40 mm across (dark muscular wall,
intermediate mucosa, mixed content of faeces, pockets of gas in front and of fluid
behind); the bladder (bright urine in a dark wall), seminal vesicles and vasa deferentia
above the base. The gland is a rounded triangle pointing forwards in axial sections (an
inverted heart, its back indented by the rectum), with a thin dark capsule and four
zones: a bright peripheral zone wrapping round the back and the apex; a darker,
heterogeneous transition zone of two lobes holding benign (BPH) nodules, larger in
larger glands; a dark central zone, a cone round the ejaculatory ducts at the base; and
a very dark anterior fibromuscular stroma in front. Every boundary is a smooth random
deformation of its basic shape.
Lesions are irregular blobs, mostly in the peripheral zone, dark on T2W and ADC and
bright on high-b DWI.

Per patient the generator draws the gland volume (median 40 ml, mostly 20-80 ml), its
shape, position, rotation, tilt and zone proportions, the size of the pelvis, the fat,
the bladder filling, the rectal content; per scan the grids, the tissue contrast, the
scanner's intensity scale, a smooth bias field, the noise level and, in about a quarter
of the cases, an endorectal coil: an air-filled balloon in the rectum that flattens the
back of the gland, with a receive sensitivity that falls steeply with distance from it.
Images get tissue texture, partial-volume blur and Rician noise; the coil and the bias
field multiply T2W and DWI but not ADC (a ratio of two images in which the coil
sensitivity cancels). ADC is zero where the scanner would mask it (air, cortical bone);
fat, suppressed on diffusion imaging, is dark on DWI and near zero on ADC.

For training networks meant for real scans, ``contrast="random"`` (or ``"mixed"``, a coin
toss per scan) redraws the T2W level of every tissue at random, in the spirit of SynthSeg:
the same anatomy with grey values that no scanner gives, so that a network has to find
the gland by its shape and boundaries (see :func:`make_phantom_case`).

Random numbers come from three independent streams of the seed: the patient (anatomy,
lesions, misalignment), the scan (grids, coil, contrast) and the noise. The same seed
therefore gives the same patient on any grid the caller passes.

Coordinates and arrays
----------------------
World coordinates are RAS+ millimetres (+x Right, +y Anterior, +z Superior), like
NIfTI. The arrays of a :class:`PhantomCase` follow the prostseg array convention of
:func:`prostseg.data.io.load_volume`: indexed ``(x, y, z)`` in RAS+ voxel order, axial slice
``k`` is ``array[:, :, k]``. :func:`write_phantom_dataset` stores the volumes in LAS
voxel order (``i`` towards Left), like the ProstateX NIfTI files, so reading them back
exercises the orientation handling; loading them with ``load_volume`` gives back the
arrays and affines of the :class:`PhantomCase`. Both grids are centred on
:data:`FOV_CENTRE_MM`; the gland lies near it.

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

Without a grid, each patient gets one of its own:

>>> [make_phantom_case(seed).t2w.shape for seed in (1, 2)]
[(256, 256, 24), (288, 288, 20)]
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from prostseg.data.dataset import ALIGNED_FOLDER, PHANTOM_FILE, STACK, ZONE_NAMES, volume_file
from prostseg.atomic import atomic_path
from prostseg.errors import COUNT, NON_NEGATIVE_INT, InputError, path_argument

__all__ = [
    "GENERATOR_VERSION",
    "CONTRASTS",
    "RANDOM_CHANNELS",
    "TISSUE_NAMES",
    "RigidTransform",
    "PhantomCase",
    "make_phantom_case",
    "write_phantom_dataset",
]

#: Version of the generator, stored in every case's ``phantom.json``. It changes
#: whenever the same seed would give different images or another set of files.
GENERATOR_VERSION = "4"

#: b-value (s/mm^2) of the phantom's diffusion-weighted volume.
B_VALUE = 1400.0

#: Bounds of the random misalignment: shift (mm) and rotation (degrees) about R, A, S.
MAX_SHIFT_MM = (3.0, 3.0, 2.0)
MAX_ROTATION_DEG = (1.0, 1.0, 2.0)

#: World (RAS, mm) position of the centre of the T2W and DWI fields of view.
FOV_CENTRE_MM = (0.0, -20.0, -60.0)

#: Fraction of the patients scanned with an endorectal coil (when the caller does not say).
ENDORECTAL_COIL_FRACTION = 0.25

#: T2W tissue contrasts of :func:`make_phantom_case`: the realistic table of each tissue
#: (varied a little per scan), a level drawn at random per tissue and per scan, or either
#: of the two (a coin toss per scan).
CONTRASTS = ("realistic", "random", "mixed")

#: Range of the random T2W level of a tissue, relative to the scan's fat signal.
RANDOM_T2W_RANGE = (0.02, 1.2)

#: Volumes whose tissue levels a random contrast can redraw (``random_channels`` of
#: :func:`make_phantom_case`).
RANDOM_CHANNELS = ("t2w", "adc", "dwi")

#: Range of the random ADC of a tissue (1e-6 mm^2/s).
RANDOM_ADC_RANGE = (50.0, 3000.0)

#: Range of the random high-b DWI level of a tissue, relative to the scan's DWI scale
#: (realistic tissues lie between about 0.002, fat, and 0.33, a lesion).
RANDOM_DWI_RANGE = (0.005, 0.4)

_PZ, _TZ, _CZ, _AFS = (
    ZONE_NAMES.index(name)
    for name in (
        "peripheral zone",
        "transition zone",
        "central zone",
        "anterior fibromuscular stroma",
    )
)

# Tissues of the anatomy painter and their properties: T2W signal relative to fat, ADC
# (1e-6 mm^2/s), DWI signal at b = 0 relative to the peripheral zone (fat suppressed),
# and the amplitudes of a fine grain and of a coarser mottle. Each scan varies them
# (see _draw_scan).
_TISSUES = {
    # name:            (T2W,  ADC,    S0,   grain, mottle)
    "air":             (0.0, 0.0, 0.0, 0.0, 0.0),
    "fat":             (1.0, 120.0, 0.03, 0.05, 0.1),
    "muscle":          (0.14, 1450.0, 0.35, 0.15, 0.1),
    "cortex":          (0.03, 0.0, 0.0, 0.0, 0.0),
    "marrow":          (0.86, 350.0, 0.06, 0.08, 0.12),
    "pelvic marrow":   (0.52, 450.0, 0.1, 0.12, 0.3),
    "cartilage":       (0.3, 1300.0, 0.35, 0.05, 0.0),
    "vessel":          (0.06, 2400.0, 0.05, 0.0, 0.0),
    "vein":            (0.8, 2000.0, 0.4, 0.08, 0.05),
    "rectal wall":     (0.17, 1300.0, 0.6, 0.1, 0.08),
    "faeces":          (0.35, 800.0, 0.35, 0.2, 0.35),
    "bowel fluid":     (1.1, 2600.0, 1.2, 0.03, 0.05),
    "balloon":         (0.02, 0.0, 0.0, 0.0, 0.0),
    "bladder wall":    (0.28, 1500.0, 0.5, 0.06, 0.04),
    "urine":           (1.12, 2900.0, 1.6, 0.01, 0.02),
    "vesicle":         (1.05, 2000.0, 1.0, 0.08, 0.1),
    "vas":             (0.3, 1300.0, 0.5, 0.05, 0.03),
    "capsule":         (0.2, 1300.0, 0.5, 0.05, 0.0),
    "pz":              (0.68, 1700.0, 1.0, 0.1, 0.15),
    "tz":              (0.32, 1250.0, 0.8, 0.12, 0.3),
    "cz":              (0.2, 1050.0, 0.7, 0.05, 0.04),
    "afs":             (0.12, 950.0, 0.45, 0.05, 0.03),
    "stromal nodule":  (0.22, 1050.0, 0.7, 0.08, 0.1),
    "glandular nodule": (0.55, 1550.0, 0.9, 0.1, 0.12),
    "urethra":         (0.22, 1300.0, 0.6, 0.05, 0.0),
    "duct":            (0.55, 1800.0, 0.9, 0.05, 0.0),
    "lesion":          (0.25, 800.0, 1.0, 0.06, 0.06),
    "mucosa":          (0.4, 1500.0, 0.8, 0.1, 0.1),
}
#: Names of the values of :attr:`PhantomCase.tissues` (the value is the index).
TISSUE_NAMES = tuple(_TISSUES)
_TISSUE_ID = {name: index for index, name in enumerate(_TISSUES)}
_TISSUE_TABLE = np.array(list(_TISSUES.values()))
_ZONE_TISSUE = np.array([_TISSUE_ID[name] for name in ("air", "pz", "tz", "cz", "afs")], dtype=np.uint8)


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
    ``array[:, :, k]``), like the arrays of :func:`prostseg.data.io.load_volume`.

    Attributes
    ----------
    seed : int
        Seed the case was drawn from.
    t2w : ndarray of int16, shape (X, Y, Z)
        T2-weighted volume.
    zones : ndarray of uint8, shape (X, Y, Z)
        Zone labels on the T2W grid (see :data:`prostseg.data.dataset.ZONE_NAMES`).
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
    endorectal_coil : bool
        Whether the patient was scanned with an endorectal coil (a dark balloon in the
        rectum; T2W and DWI much brighter near it).
    tissues : ndarray of uint8, shape (X, Y, Z)
        What each T2W voxel shows, as an index into :data:`TISSUE_NAMES` (ground truth
        of the anatomy; not written to disk).
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
    endorectal_coil: bool
    tissues: np.ndarray

    @property
    def dwi_true_affine(self) -> np.ndarray:
        """Affine that maps a diffusion voxel to the T2W world position of what it shows."""
        return np.linalg.inv(self.misalignment.matrix) @ self.dwi_affine

    def aligned_stack(self) -> np.ndarray:
        """T2W, DWI and ADC on the T2W grid, aligned through the known misalignment.

        What a perfect registration gives: DWI and ADC are resampled (trilinear, 0 outside
        their field of view) from the positions that :attr:`dwi_true_affine` says show
        each T2W voxel's anatomy, and stacked after the T2W volume in the channel order
        of :func:`prostseg.preparation.registration.register_case`'s ``stack``.

        Returns
        -------
        ndarray of float32, shape (X, Y, Z, 3)

        Examples
        --------
        >>> case = make_phantom_case(1, shape=(48, 48, 8), spacing=(2.5, 2.5, 5.0))
        >>> stack = case.aligned_stack()
        >>> stack.shape, bool((stack[..., 0] == case.t2w).all())
        ((48, 48, 8, 3), True)
        """
        to_dwi = np.linalg.inv(self.dwi_true_affine) @ self.t2w_affine
        channels = [self.t2w.astype(np.float32)]
        for volume in (self.dwi, self.adc):
            channels.append(ndimage.affine_transform(volume, to_dwi[:3, :3], to_dwi[:3, 3], output_shape=self.t2w.shape,
                                                     order=1, mode="constant", cval=0.0))
        return np.stack(channels, axis=-1).astype(np.float32)

    def volumes(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Map each file name of the case layout to ``(array, header affine)``.

        Examples
        --------
        >>> case = make_phantom_case(1, shape=(48, 48, 8), spacing=(2.5, 2.5, 5.0))
        >>> sorted(case.volumes())
        ['adc', 'dwi', 'gland', 'lesion', 't2w', 'zones']
        """
        return {
            "t2w": (self.t2w, self.t2w_affine),
            "adc": (self.adc, self.dwi_affine),
            "dwi": (self.dwi, self.dwi_affine),
            "lesion": (self.lesion, self.t2w_affine),
            "zones": (self.zones, self.t2w_affine),
            "gland": ((self.zones > 0).astype(np.uint8), self.t2w_affine),
        }


def _grid_affine(shape: Sequence[int], spacing: Sequence[float], centre: np.ndarray) -> np.ndarray:
    """Axis-aligned RAS affine whose voxel grid is centred on ``centre``."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


# ----------------------------------------------------------------------------- shapes
#
# The anatomy lives in the *patient frame*: millimetres from the centre of the gland,
# x towards the patient's right, y anterior, z superior. Shapes answer ``level(x, y, z)``:
# the squared normalised distance from their centre, below 1 inside.


@dataclass(frozen=True)
class _Blob:
    """An ellipsoid, or an elliptic column, with a smoothly deformed outline.

    ``semi`` holds the semi-axes along its own lateral and anterior directions (after
    turning by ``angle_deg`` about z) and the half-height; ``back`` replaces the anterior
    semi-axis behind the centre (egg shapes). The centre drifts in-plane by ``lean`` mm per
    mm of height, the in-plane size scales by ``1 + taper * w`` (``w``: height over
    half-height), and the outline's radius is multiplied by ``1 + sum_k a_k cos(k theta) +
    b_k sin(k theta)`` with ``waves = ((a_1, b_1), (a_2, b_2), ...)``. A column keeps its
    outline over its whole height instead of closing like an ellipsoid.
    """

    centre: tuple[float, float, float]
    semi: tuple[float, float, float]
    back: float = 0.0
    angle_deg: float = 0.0
    lean: tuple[float, float] = (0.0, 0.0)
    taper: float = 0.0
    waves: tuple[tuple[float, float], ...] = ()
    column: bool = False

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        a, b, c = self.semi
        b = max(b, self.back)
        growth = (1.0 + abs(self.taper)) * (1.0 + sum(math.hypot(p, q) for p, q in self.waves))
        angle = math.radians(self.angle_deg)
        reach = growth * np.array([math.hypot(a * math.cos(angle), b * math.sin(angle)),
                                   math.hypot(a * math.sin(angle), b * math.cos(angle))])
        reach += np.abs(np.array(self.lean)) * c
        centre = np.asarray(self.centre, dtype=float)
        return centre - [*reach, c], centre + [*reach, c]

    def normalised(self, x, y, z):
        """In-plane coordinates ``(u, v)`` scaled by the semi-axes, and the height ``w``."""
        cx, cy, cz = self.centre
        a, b, c = self.semi
        dz = z - np.float32(cz)
        w = dz * np.float32(1.0 / c)
        dx = x - np.float32(cx) - np.float32(self.lean[0]) * dz
        dy = y - np.float32(cy) - np.float32(self.lean[1]) * dz
        if self.angle_deg:
            cos, sin = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
            dx, dy = np.float32(cos) * dx + np.float32(sin) * dy, np.float32(-sin) * dx + np.float32(cos) * dy
        if self.taper:
            scale = np.maximum(1.0 + np.float32(self.taper) * w, np.float32(0.2))
            dx, dy = dx / scale, dy / scale
        u = dx * np.float32(1.0 / a)
        if self.back and self.back != b:
            v = dy * np.where(dy >= 0, np.float32(1.0 / b), np.float32(1.0 / self.back))
        else:
            v = dy * np.float32(1.0 / b)
        return u, v, w

    def outline(self, u, v, rho2):
        """Squared in-plane level ``rho2`` divided by the squared radius of the outline."""
        if not self.waves:
            return rho2
        # radius - 1 = Re(sum_k (a_k - i b_k) e^{i k theta}), by Horner's rule in e^{i theta}.
        turn = (u + 1j * v).astype(np.complex64)
        turn /= np.sqrt(rho2) + np.float32(1e-6)
        series = np.full(turn.shape, np.complex64(complex(*self.waves[-1]).conjugate()))
        for a_k, b_k in reversed(self.waves[:-1]):
            series *= turn
            series += np.complex64(complex(a_k, -b_k))
        series *= turn
        radius = 1.0 + series.real
        return rho2 / (radius * radius)

    def level(self, x, y, z):
        u, v, w = self.normalised(x, y, z)
        in_plane = self.outline(u, v, u * u + v * v)
        return np.maximum(in_plane, w * w) if self.column else in_plane + w * w

    def shrunk(self, mm: float) -> _Blob:
        """The same shape with its in-plane semi-axes (and height, unless a column) less ``mm``."""
        a, b, c = self.semi
        return replace(self, semi=(a - mm, b - mm, c if self.column else c - mm),
                       back=max(self.back - mm, 0.0) if self.back else 0.0)


@dataclass(frozen=True)
class _Rod:
    """A tube of radius ``radius`` (mm) round the segment from ``start`` to ``end``."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radius: float

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        ends = np.array([self.start, self.end])
        return ends.min(axis=0) - self.radius, ends.max(axis=0) + self.radius

    def level(self, x, y, z):
        p0 = np.asarray(self.start, dtype=float)
        d = np.asarray(self.end, dtype=float) - p0
        dx, dy, dz = x - np.float32(p0[0]), y - np.float32(p0[1]), z - np.float32(p0[2])
        t = (dx * np.float32(d[0]) + dy * np.float32(d[1]) + dz * np.float32(d[2])) * np.float32(1.0 / (d @ d))
        t = np.clip(t, 0.0, 1.0)
        dx, dy, dz = dx - t * np.float32(d[0]), dy - t * np.float32(d[1]), dz - t * np.float32(d[2])
        return (dx * dx + dy * dy + dz * dz) * np.float32(1.0 / self.radius**2)

    def shrunk(self, mm: float) -> _Rod:
        return replace(self, radius=self.radius - mm)


@dataclass(frozen=True)
class _Sling:
    """A U-shaped muscular band, open in front (the levator ani), between two heights.

    At height ``z`` its mid-line is the back half of an ellipse centred at
    ``(centre_x, centre_y + lean * z)`` with semi-axes ``half_width + widen * max(z, 0)``
    (lateral) and ``depth + widen * max(z, 0) / 2`` (backwards; the funnel widens above
    the centre's height), continued in front by two straight arms that turn ``splay`` mm
    outwards per mm forwards and end ``reach`` mm in front of ``centre_y`` at every
    height (towards the pubis, which does not lean). At the top the band is ``side_mm``
    thick all round; downwards it thickens linearly, to ``2.5 * side_mm`` along the arms
    and ``back_mm`` behind at the bottom; the arms thin out towards their front ends. The
    level is the squared distance from the mid-line over the squared half-thickness.
    """

    centre: tuple[float, float]
    half_width: float
    depth: float
    reach: float
    splay: float
    side_mm: float
    back_mm: float
    z_range: tuple[float, float]
    widen: float = 0.0
    lean: float = 0.0

    def _size(self, z: float) -> tuple[float, float]:
        grow = self.widen * max(z, 0.0)
        return max(self.half_width + grow, 4.0), max(self.depth + grow / 2, 4.0)

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        bottom, top = self.z_range
        widest, deepest = np.max([self._size(z) for z in self.z_range], axis=0)
        shifts = [self.lean * z for z in self.z_range]
        longest = self.reach - min(shifts)
        lateral = widest + max(self.splay, 0.0) * longest + max(self.back_mm, 2.5 * self.side_mm)
        cx, cy = self.centre
        return (np.array([cx - lateral, cy + min(shifts) - deepest - self.back_mm, bottom]),
                np.array([cx + lateral, cy + self.reach, top]))

    def level(self, x, y, z):
        bottom, top = self.z_range
        cx, cy = self.centre
        grow = np.float32(self.widen) * np.maximum(z, np.float32(0.0))
        a = np.maximum(np.float32(self.half_width) + grow, np.float32(4.0))
        b = np.maximum(np.float32(self.depth) + grow / 2, np.float32(4.0))
        ax = np.abs(x - np.float32(cx))
        dy = y - np.float32(cy) - np.float32(self.lean) * z
        # Behind: distance from the ellipse, to first order (level over its gradient).
        p, q = ax / a, dy / b
        rho = np.sqrt(p * p + q * q) + np.float32(1e-6)
        gradient = np.sqrt((p / a) ** 2 + (q / b) ** 2) / rho + np.float32(1e-6)
        behind = (rho - 1.0) / gradient
        depth = np.clip((np.float32(top) - z) * np.float32(1.0 / (top - bottom)), 0.0, 1.0)
        side_half = np.float32(self.side_mm / 2) * (1.0 + np.float32(1.5) * depth)
        back_half = np.float32(self.side_mm / 2) + np.float32((self.back_mm - self.side_mm) / 2) * depth
        half = side_half + (back_half - side_half) * (q / rho) ** 2
        # In front: distance from the arm.
        arm = (ax - a - np.float32(self.splay) * dy) * np.float32(1.0 / math.hypot(1.0, self.splay))
        distance = np.where(dy < 0, behind, arm)
        length = np.maximum(np.float32(self.reach) - np.float32(self.lean) * z, np.float32(1.0))
        along = dy / length  # 0 to 1 from the back of the arm to its front end
        half = np.where(dy < 0, half, side_half * np.sqrt(np.maximum(1.0 - along * along, np.float32(0.05))))
        level = (distance / half) ** 2
        return np.where((along > 1.0) | (z < bottom) | (z > top), np.float32(np.inf), level)


class _Canvas:
    """Tissue and zone maps of one voxel grid, painted shape by shape.

    ``index_to_patient`` (4 x 4) maps voxel indices to the patient frame. Each shape is
    evaluated only on the block of voxels that can meet its bounding box.
    """

    def __init__(self, shape: Sequence[int], index_to_patient: np.ndarray):
        self.shape = tuple(int(n) for n in shape)
        self.linear = np.asarray(index_to_patient, dtype=float)[:3, :3]
        self.offset = np.asarray(index_to_patient, dtype=float)[:3, 3]
        self.tissue = np.zeros(self.shape, dtype=np.uint8)
        self.zones = np.zeros(self.shape, dtype=np.uint8)

    def region(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, ...] | None:
        """Index block holding every voxel whose patient position lies in the box ``[lo, hi]``."""
        ranges = [[0.0, n - 1.0] for n in self.shape]
        for _ in range(2):  # each pass narrows an axis with the others' narrowed ranges
            for axis in range(3):
                low, high = self.offset.copy(), self.offset.copy()
                for other in range(3):
                    if other != axis:
                        ends = self.linear[:, other, None] * np.array(ranges[other])
                        low += ends.min(axis=1)
                        high += ends.max(axis=1)
                first, last = ranges[axis]
                for coordinate in range(3):
                    slope = self.linear[coordinate, axis]
                    if abs(slope) < 1e-9:
                        if low[coordinate] > hi[coordinate] or high[coordinate] < lo[coordinate]:
                            return None
                        continue
                    bounds = sorted(((lo[coordinate] - high[coordinate]) / slope,
                                     (hi[coordinate] - low[coordinate]) / slope))
                    first, last = max(first, math.ceil(bounds[0] - 1e-6)), min(last, math.floor(bounds[1] + 1e-6))
                if first > last:
                    return None
                ranges[axis] = [float(first), float(last)]
        return tuple(slice(int(first), int(last) + 1) for first, last in ranges)

    def coordinates(self, block: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient coordinates (float32 arrays of the block's shape) of a block's voxels."""
        i, j, k = (np.arange(s.start, s.stop, dtype=np.float32) for s in block)
        i, j, k = i[:, None, None], j[None, :, None], k[None, None, :]
        m, t = self.linear, self.offset
        shape = tuple(s.stop - s.start for s in block)
        return tuple(
            np.broadcast_to(np.float32(m[c, 0]) * i + np.float32(m[c, 1]) * j + np.float32(m[c, 2]) * k
                            + np.float32(t[c]), shape)
            for c in range(3)
        )

    def everywhere(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient coordinates of every voxel."""
        return self.coordinates(tuple(slice(0, n) for n in self.shape))

    def paint(self, shape, tissue: str, *, outside=None, over: Sequence[str] = (), zones: Sequence[int] = (),
              bounds: Sequence[tuple[float, float]] | None = None) -> None:
        """Give ``tissue`` to the voxels inside ``shape``.

        Optionally only those outside the shape ``outside`` (rings), only over the
        tissues ``over``, only in the zones ``zones``, and only within per-axis
        ``bounds`` ``((x_min, x_max), (y_min, y_max), (z_min, z_max))`` (patient mm).
        """
        lo, hi = shape.bbox()
        if bounds is not None:
            lo = np.maximum(lo, [b[0] for b in bounds])
            hi = np.minimum(hi, [b[1] for b in bounds])
            if (lo > hi).any():
                return
        block = self.region(lo, hi)
        if block is None:
            return
        x, y, z = self.coordinates(block)
        mask = shape.level(x, y, z) < 1.0
        if outside is not None:
            mask &= outside.level(x, y, z) >= 1.0
        if bounds is not None:
            for values, (low, high) in zip((x, y, z), bounds):
                if np.isfinite(low):
                    mask &= values >= low
                if np.isfinite(high):
                    mask &= values <= high
        if over:
            mask &= np.isin(self.tissue[block], [_TISSUE_ID[name] for name in over])
        if zones:
            mask &= np.isin(self.zones[block], zones)
        self.tissue[block][mask] = _TISSUE_ID[tissue]


def _waves(rng: np.random.Generator, amplitudes: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """Random outline waves: order ``k`` gets cosine and sine coefficients up to ``amplitudes[k-1]``."""
    return tuple((float(rng.uniform(-a, a)), float(rng.uniform(-a, a))) for a in amplitudes)


# ------------------------------------------------------------------------------ gland


@dataclass(frozen=True)
class _Gland:
    """The prostate, centred on the origin of the patient frame, and its zones.

    The outline is a :class:`_Blob` (base wider than apex, flatter behind, deformed),
    narrowed in front and indented behind by the rectum: in axial sections a rounded
    triangle pointing forwards, an inverted heart. Zones are drawn in the normalised
    coordinates ``(u, v, w)`` of the outline (lateral, anterior, superior; 1 at the outline):
    transition zone two lobes above the verumontanum, central zone a cone round the
    ejaculatory ducts from the base down to the verumontanum, anterior fibromuscular
    stroma a band in front; the peripheral zone is the rest.
    """

    outline: _Blob
    indent: float  # depth of the rectal indentation of the back (normalised)
    narrowing: float  # the front half is narrower by 1 + narrowing * v
    tz_scale: float  # size of the transition-zone lobes (grows with BPH)
    tz_split: float  # lateral offset of the two lobes
    verumontanum: float  # height (w) below which there is no transition zone
    cz_start: float  # height (w) where the central zone begins
    cz_width: float  # half-width (u) of the central zone at its start
    afs_front: float  # v beyond which the midline is stroma

    @property
    def semi(self) -> tuple[float, float, float]:
        return self.outline.semi

    def normalised(self, x, y, z):
        """``(u, v, w, r2)``: normalised coordinates and squared level of patient points."""
        u, v, w = self.outline.normalised(x, y, z)
        v = np.where(v < 0, v + np.float32(self.indent) * np.exp(-((u * np.float32(1 / 0.4)) ** 2)), v)
        u = u * (1.0 + np.float32(self.narrowing) * np.maximum(v, np.float32(0.0)))
        r2 = self.outline.outline(u, v, u * u + v * v) + w * w
        return u, v, w, r2

    def _tz_level(self, u, v, w):
        """Squared level of the two transition-zone lobes (below 1 inside)."""
        s = np.float32(self.tz_scale)
        lobes = np.minimum((u - np.float32(self.tz_split)) ** 2, (u + np.float32(self.tz_split)) ** 2)
        return (lobes / (np.float32(0.6) * s) ** 2 + ((v - np.float32(0.12)) / (np.float32(0.72) * s)) ** 2
                + ((w - np.float32(0.15)) / (np.float32(0.95) * s)) ** 2)

    def zone_of(self, u, v, w, r2) -> np.ndarray:
        """Zone label (0 outside the gland) at normalised coordinates."""
        gland = r2 < 1.0
        zone = np.where(gland, np.uint8(_PZ), np.uint8(0))
        zone[(self._tz_level(u, v, w) < 1.0) & (r2 < 0.85) & (w > self.verumontanum)] = _TZ
        # The central zone: a cone round the ejaculatory ducts, behind the transition
        # zone, from the verumontanum (narrow) up to the base (wide).
        above = np.maximum(w - np.float32(self.cz_start), 0.0)
        half_width = np.float32(self.cz_width) + np.float32(0.5) * above
        half_depth = np.float32(0.16) + np.float32(0.22) * above
        centre = np.float32(-0.38) + np.float32(0.12) * above
        cz = (w > self.cz_start) & ((u / half_width) ** 2 + ((v - centre) / half_depth) ** 2 < 1.0)
        zone[cz & gland] = _CZ
        afs = (v > self.afs_front + 0.9 * u * u - 0.12 * w) & (np.abs(u) < 0.55)
        zone[afs & gland] = _AFS
        return zone

    def tz_shell(self, u, v, w) -> np.ndarray:
        """Voxels just outside the transition-zone lobes (the dark surgical pseudocapsule)."""
        level = self._tz_level(u, v, w)
        return (level >= 1.0) & (level < 1.12) & (w > self.verumontanum)

    def point(self, u: float, v: float, w: float) -> np.ndarray:
        """Patient position of normalised coordinates (indentation and waves ignored)."""
        a, b, c = self.outline.semi
        back = self.outline.back or b
        scale = max(1.0 + self.outline.taper * w, 0.2)
        lx = u * a * scale / (1.0 + self.narrowing * max(v, 0.0))
        ly = v * (b if v >= 0 else back) * scale
        angle = math.radians(self.outline.angle_deg)
        dx, dy = math.cos(angle) * lx - math.sin(angle) * ly, math.sin(angle) * lx + math.cos(angle) * ly
        dz = w * c
        return np.array([dx + self.outline.lean[0] * dz, dy + self.outline.lean[1] * dz, dz])

    def paint(self, canvas: _Canvas) -> None:
        """Paint the capsule, the zones (labels and tissues) and the pseudocapsule."""
        capsule = 1.0 + 1.4 / min(self.semi)
        lo, hi = replace(self.outline, semi=tuple(s * capsule for s in self.semi),
                         back=self.outline.back * capsule).bbox()
        block = canvas.region(lo, hi)
        if block is None:
            return
        u, v, w, r2 = self.normalised(*canvas.coordinates(block))
        tissue, zones = canvas.tissue[block], canvas.zones[block]
        tissue[r2 < capsule**2] = _TISSUE_ID["capsule"]
        zone = self.zone_of(u, v, w, r2)
        inside = zone > 0
        zones[inside] = zone[inside]
        tissue[inside] = _ZONE_TISSUE[zone[inside]]
        tissue[self.tz_shell(u, v, w) & (zone == _PZ)] = _TISSUE_ID["capsule"]


def _draw_gland(rng: np.random.Generator, coil: bool) -> _Gland:
    """Random gland: volume (ml) from a log-normal, shape, pose and zone proportions."""
    volume_ml = float(np.clip(rng.lognormal(math.log(40.0), 0.38), 18.0, 95.0))
    depth_ratio, height_ratio = rng.uniform(0.68, 0.88), rng.uniform(0.74, 0.98)
    back_ratio = rng.uniform(0.85, 1.0) * (0.72 if coil else 1.0)  # a balloon flattens the back
    outline = _Blob(
        centre=(0.0, 0.0, 0.0),
        semi=(1.0, depth_ratio, height_ratio),
        back=depth_ratio * back_ratio,
        angle_deg=float(rng.uniform(-7, 7)),
        lean=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.45, -0.12))),
        taper=float(rng.uniform(0.12, 0.3)),
        waves=_waves(rng, (0.03, 0.06, 0.04, 0.03)),
    )
    gland = _Gland(
        outline=outline,
        indent=float(rng.uniform(0.04, 0.16)) + (0.06 if coil else 0.0),
        narrowing=float(rng.uniform(0.2, 0.5)),
        # Larger glands are larger mostly by benign hyperplasia of the transition zone.
        tz_scale=float(np.clip(0.8 + 0.35 * (volume_ml - 40.0) / 40.0 + rng.normal(0.0, 0.05), 0.62, 1.15)),
        tz_split=float(rng.uniform(0.2, 0.3)),
        verumontanum=float(rng.uniform(-0.45, -0.25)),
        cz_start=float(rng.uniform(-0.2, 0.0)),
        cz_width=float(rng.uniform(0.16, 0.22)),
        afs_front=float(rng.uniform(0.48, 0.6)),
    )
    # Scale the unit-sized outline to the drawn volume (measured on a fine grid).
    axis = np.linspace(-1.8, 1.8, 48, dtype=np.float32)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij", sparse=True)
    inside = gland.normalised(*np.broadcast_arrays(x, y, z))[3] < 1.0
    unit_volume = inside.sum() * float(axis[1] - axis[0]) ** 3
    size = (volume_ml * 1000.0 / unit_volume) ** (1.0 / 3.0)
    return replace(gland, outline=replace(outline, semi=tuple(size * s for s in outline.semi),
                                          back=size * outline.back))


# ------------------------------------------------------------------------------ patient


@dataclass(frozen=True)
class _Patient:
    """Everything drawn for one patient, in the patient frame."""

    gland: _Gland
    structures: tuple  # (shape, tissue, paint options), painted in order before the gland
    gland_details: tuple  # painted after the gland (nodules, ducts, urethra)
    lesions: tuple  # _Blob lesions, clipped to the gland
    coil: _Rod | None  # the receive element of the endorectal coil
    pose_deg: tuple[float, float]  # rotation of the patient about z (yaw) and x (tilt)
    offset_mm: np.ndarray  # in-plane position of the gland centre relative to the FOV centre
    scan_level_mm: float  # how far the gland centre lies below the centre of the slices

    def paint(self, canvas: _Canvas) -> _Canvas:
        for shape, tissue, options in self.structures:
            canvas.paint(shape, tissue, **options)
        self.gland.paint(canvas)
        lesions = ((lesion, "lesion", {"zones": (_PZ, _TZ, _CZ)}) for lesion in self.lesions)
        for shape, tissue, options in (*self.gland_details, *lesions):
            canvas.paint(shape, tissue, **options)
        return canvas


def _walled(shape, wall_tissue: str, inner_tissue: str, thickness: float, **options) -> list:
    """Paint entries: ``shape`` in ``wall_tissue``, filled ``thickness`` mm in with ``inner_tissue``."""
    return [(shape, wall_tissue, options), (shape.shrunk(thickness), inner_tissue, options)]


def _draw_body(rng: np.random.Generator, s: float, fat: float, c: float) -> list:
    """Body outline (subcutaneous fat), the natal cleft and the big muscles round the pelvis."""
    # Rounded in front and at the sides; behind, the two buttocks.
    parts = [(_Blob((0.0, -8 * s, 0.0), (150 * s + fat, 80 * s + fat, 400.0), back=70 * s + fat,
                    waves=((0.0, 0.0), *_waves(rng, (0.03, 0.02, 0.02))), column=True), "fat", {})]
    buttock_x, buttock_y = 58 * s, -55 * s
    buttock = np.array([92 * s + fat, 50 * s + fat]) * rng.uniform(0.95, 1.05, size=2)
    for side in (-1.0, 1.0):
        parts.append((_Blob((side * buttock_x, buttock_y, 0.0), (*buttock, 400.0),
                            angle_deg=side * float(rng.uniform(0, 8)), waves=_waves(rng, (0.02, 0.02, 0.02)),
                            column=True), "fat", {}))
    # The natal cleft: the skin between the buttocks, a dark slit in the midline behind.
    midline_back = buttock_y - buttock[1] * math.sqrt(max(1.0 - (buttock_x / buttock[0]) ** 2, 0.0))
    cleft_depth = float(rng.uniform(0.3, 0.6)) * fat + float(rng.uniform(15, 30))
    cleft = _Blob((float(rng.uniform(-3, 3)), midline_back, 0.0), (float(rng.uniform(1.0, 2.0)), cleft_depth, 400.0),
                  angle_deg=float(rng.uniform(-6, 6)), column=True)
    parts.append((cleft, "air", {"over": ("fat",)}))
    in_body = {"over": ("fat",)}
    for side in (-1.0, 1.0):
        muscles = [
            # hip abductors lateral, gluteus maximus behind (under the fat of the buttock),
            # iliopsoas in front of the hip
            _Blob((side * 128 * s, -8 * s, 0.0), (42 * s, 66 * s, 400.0), angle_deg=side * 10,
                  waves=_waves(rng, (0.03, 0.05, 0.03)), column=True),
            _Blob((side * 62 * s, -78 * s, 0.0), (56 * s, 22 * s, 400.0), angle_deg=side * 25,
                  waves=_waves(rng, (0.03, 0.05, 0.03)), column=True),
            _Blob((side * 86 * s, 50 * s, 0.0), (24 * s, 16 * s, 400.0), angle_deg=side * 15,
                  waves=_waves(rng, (0.03, 0.05)), column=True),
            # pectineus and obturator externus in front of the lower pubic rami
            _Blob((side * 50 * s, 44 * s, -20.0), (18 * s, 10 * s, 30.0), angle_deg=-side * 25,
                  waves=_waves(rng, (0.03, 0.05)), column=True),
            # rectus abdominis above the symphysis
            _Blob((side * 21 * s, 66 * s, c + 60.0), (18 * s, 7 * s, 60.0), angle_deg=side * 5,
                  waves=_waves(rng, (0.02, 0.04)), column=True),
        ]
        parts += [(muscle, "muscle", in_body) for muscle in muscles]
    return parts


def _draw_bladder_and_vesicles(rng: np.random.Generator, gland: _Gland) -> list:
    """Bladder above the base (the gland, painted later, indents it); seminal vesicles
    behind it and the vasa deferentia medial to them."""
    a, b, c = gland.semi
    fullness = float(rng.uniform(0.65, 1.35))
    semi = np.array([rng.uniform(36, 50), rng.uniform(28, 38), rng.uniform(22, 32)]) * fullness ** (1 / 3)
    bladder = _Blob((float(rng.uniform(-4, 4)), 0.3 * b + float(rng.uniform(0, 8)), 0.55 * c + 0.85 * semi[2]),
                    tuple(semi), back=semi[1] * 0.9, waves=_waves(rng, (0.03, 0.05, 0.03, 0.02)))
    wall = float(rng.uniform(2.5, 4.5)) + (1.5 if a * b * c > 20000 else 0.0)  # thicker behind a large gland
    parts = _walled(bladder, "bladder wall", "urine", wall)
    vesicle_y = -0.55 * gland.outline.back - float(rng.uniform(3, 8))
    for side in (-1.0, 1.0):
        vesicle = _Blob((side * float(rng.uniform(14, 21)), vesicle_y, c * float(rng.uniform(0.75, 0.95)) + 6.0),
                        (float(rng.uniform(17, 25)), float(rng.uniform(7, 10)), float(rng.uniform(8, 12))),
                        angle_deg=side * float(rng.uniform(-5, 25)), waves=_waves(rng, (0.04, 0.07, 0.08, 0.07, 0.05)))
        parts += _walled(vesicle, "vas", "vesicle", 1.2)
        parts.append((_Rod((side * 6.0, vesicle_y + 3.0, 0.55 * c), (side * 11.0, vesicle_y - 1.0, c + 28.0),
                           float(rng.uniform(2.4, 3.2))), "vas", {}))
    return parts


@dataclass(frozen=True)
class _Rectum:
    """Paint entries of the rectum and what the structures round it need to know."""

    parts: list
    centre: tuple[float, float]  # in-plane centre of the rectum (or of the balloon) at the gland centre's height
    half_width: float  # outer half-width of the rectum (or of the wall round the balloon)
    back_y: float  # its back at the height of the gland centre
    lean: float  # backward drift (mm per mm of height)
    coil: _Rod | None  # the receive element of the endorectal coil, if any


def _draw_rectum(rng: np.random.Generator, gland: _Gland, coil: bool) -> _Rectum:
    """Rectum behind the gland, drifting backwards as it rises: a dark muscular wall,
    intermediate mucosa, and mixed content (faeces, pockets of gas in front and of fluid
    behind); or distended by the balloon of an endorectal coil."""
    c, back = gland.semi[2], gland.outline.back
    semi = np.array([rng.uniform(12.5, 19.5), rng.uniform(11.0, 16.5)])  # 25-39 mm across
    wall, mucosa = float(rng.uniform(2.2, 3.5)), float(rng.uniform(1.2, 2.2))
    x = float(rng.uniform(-6, 6))
    y = -(back + semi[1] + float(rng.uniform(0.5, 2.5)))
    lean = float(rng.uniform(-0.9, -0.4))
    rectum = _Blob((x, y, 0.0), (*semi, 90.0), lean=(float(rng.uniform(-0.1, 0.1)), lean),
                   taper=0.05, waves=_waves(rng, (0.04, 0.07, 0.04, 0.03)), column=True)
    parts = _walled(rectum, "rectal wall", "mucosa", wall) + [(rectum.shrunk(wall + mucosa), "faeces", {})]
    lumen = rectum.shrunk(wall + mucosa)
    for _ in range(int(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1]))):  # gas rises to the front (supine)
        radius = float(rng.uniform(2.0, 0.45 * lumen.semi[1]))
        gas = _Blob((x + float(rng.uniform(-0.5, 0.5)) * lumen.semi[0], y + lumen.semi[1] - radius,
                     float(rng.uniform(-1.2, 1.0)) * c), (radius * float(rng.uniform(1.0, 1.8)), radius,
                                                          float(rng.uniform(3.0, 10.0))),
                    lean=rectum.lean, waves=_waves(rng, (0.05, 0.08)))
        parts.append((gas, "air", {"over": ("faeces",)}))
    if rng.random() < 0.3:  # fluid settles at the back
        fluid = _Blob((x, y - 0.6 * lumen.semi[1], float(rng.uniform(-15, 15))),
                      (0.6 * lumen.semi[0], 0.35 * lumen.semi[1], float(rng.uniform(6, 20))), lean=rectum.lean,
                      waves=_waves(rng, (0.05, 0.08)))
        parts.append((fluid, "bowel fluid", {"over": ("faeces",)}))
    balloon_semi = np.array([rng.uniform(20, 25), rng.uniform(14, 18), c + rng.uniform(8, 14)])
    balloon_y = -(back + balloon_semi[1] + 2.0)
    balloon = _Blob((x, balloon_y, -0.15 * c), tuple(balloon_semi), waves=_waves(rng, (0.02, 0.03)))
    if not coil:
        return _Rectum(parts, (x, y), float(semi[0]), y - float(semi[1]), lean, None)
    element_y = balloon_y + 0.35 * balloon_semi[1]
    element = _Rod((x, element_y, -0.15 * c - 0.6 * balloon_semi[2]), (x, element_y, -0.15 * c + 0.6 * balloon_semi[2]),
                   1.0)
    return _Rectum(parts + _walled(balloon, "rectal wall", "balloon", 2.2), (x, balloon_y),
                   max(float(semi[0]), float(balloon_semi[0]) + 2.2),
                   min(y - float(semi[1]), float(balloon_y - balloon_semi[1]) - 2.2), lean, element)


def _draw_pelvic_walls(rng: np.random.Generator, s: float, gland: _Gland, rectum: _Rectum) -> list:
    """Levator ani, obturator internus, the bones of the hips and the pubis, and the
    vessels along them."""
    a, b, c = gland.semi
    # Levator ani: a band on each side of the gland and the rectum, close to the gland
    # (a thin layer of fat and veins between), a sling behind the rectum (thick at the
    # anorectal junction), open in front towards the pubis; the funnel widens upwards.
    side_mm, gland_gap = float(rng.uniform(3.0, 5.0)), float(rng.uniform(0.5, 3.5))
    cx, cy = rectum.centre  # the sling is centred on the midline, round a rectum that may lie off it
    half_width = rectum.half_width + abs(cx) + float(rng.uniform(1.0, 3.5)) + side_mm / 2
    # Half-width of the sling beside the gland centre: close to the gland, unless the
    # rectum is wider (the arms do not turn inwards).
    splay = float(np.clip((a + gland_gap + side_mm / 2 - half_width) / -cy, 0.0, 0.8))
    arm_at_gland = half_width - splay * cy
    back_mm = float(rng.uniform(7.0, 12.0))
    sling = _Sling(centre=(0.0, cy), half_width=half_width,
                   depth=cy - rectum.back_y + float(rng.uniform(1.0, 3.5)) + back_mm / 2,
                   reach=float(rng.uniform(0.2, 0.8)) * b - cy, splay=splay,
                   side_mm=side_mm, back_mm=back_mm, z_range=(-c - 18.0, c + 12.0),
                   widen=float(rng.uniform(0.15, 0.45)) * a / 25.0, lean=0.8 * rectum.lean)
    parts = [(sling, "muscle", {"over": ("fat",)})]
    # Obturator internus along the side wall, ischioanal fat between it and the levator;
    # the hip bones lateral to it.
    obturator_half = float(rng.uniform(5.5, 8.0)) * s
    wall = max(38.0 * s, arm_at_gland + side_mm + float(rng.uniform(2.0, 6.0))) + obturator_half
    head_z = 0.3 * c + 10.0 * s
    head_radius = float(rng.uniform(22.0, 26.0)) * s
    symphysis_y = b + float(rng.uniform(10, 18)) + 9.0 * s
    symphysis_top = 0.25 * c + float(rng.uniform(2, 8))  # the base and the bladder lie above it
    symphysis_z, symphysis_half = (symphysis_top - c - 30.0) / 2, (symphysis_top + c + 30.0) / 2
    for side in (-1.0, 1.0):
        parts.append((_Blob((side * wall, -10 * s, 0.0), (obturator_half, 44 * s, 120.0), angle_deg=-side * 6,
                            lean=(side * 0.1, 0.0), waves=_waves(rng, (0.03, 0.05, 0.03)), column=True), "muscle", {}))
        # Acetabulum (bone medial to the femoral head), ischium behind it, femoral head and neck.
        acetabulum_half = 0.55 * head_radius + 4 * s
        acetabulum_x = side * (wall + obturator_half + acetabulum_half)
        head_x = acetabulum_x + side * 0.6 * head_radius
        acetabulum = _Blob((acetabulum_x, 4 * s, head_z + 2.0),
                           (acetabulum_half, head_radius + 8 * s, 1.3 * head_radius + 8.0),
                           waves=_waves(rng, (0.03, 0.05, 0.03)))
        ischium = _Blob((side * (wall + obturator_half + 10 * s), -30 * s, head_z - 40.0), (11 * s, 22 * s, 45.0),
                        angle_deg=side * 12, lean=(side * 0.1, 0.45), waves=_waves(rng, (0.03, 0.05)), column=True)
        head = _Blob((head_x, 6 * s, head_z), (head_radius,) * 3, waves=_waves(rng, (0.0, 0.02)))
        neck = _Rod((head_x, 6 * s, head_z), (head_x + side * 38 * s, 0.0, head_z - 40 * s), 15 * s)
        parts += _walled(acetabulum, "cortex", "pelvic marrow", 1.3) + _walled(ischium, "cortex", "pelvic marrow", 1.3)
        parts += _walled(neck, "cortex", "marrow", 2.0) + _walled(head, "cortex", "marrow", 1.2)
        # Pubic bones: the symphysis in front of the gland, rami running back to the
        # acetabulum (upper slices) and to the ischium (lower slices).
        start = np.array([side * 12 * s, symphysis_y])
        for end, (bottom, top) in ((np.array([acetabulum_x - side * 6 * s, 14 * s]), (-6.0, symphysis_top + 4.0)),
                                   (np.array([side * (wall + 6 * s), -18 * s]), (-c - 50.0, -0.2 * c))):
            middle, along = (start + end) / 2, end - start
            ramus = _Blob((*middle, (bottom + top) / 2), (float(np.hypot(*along)) / 2, 7 * s, (top - bottom) / 2),
                          angle_deg=math.degrees(math.atan2(along[1], along[0])), waves=_waves(rng, (0.0, 0.03)))
            parts += _walled(ramus, "cortex", "pelvic marrow", 1.3)
        symphysis = _Blob((side * 11 * s, symphysis_y, symphysis_z), (9 * s, 15 * s, symphysis_half),
                          angle_deg=-side * 30, waves=_waves(rng, (0.02, 0.04)), column=True)
        parts += _walled(symphysis, "cortex", "pelvic marrow", 1.3)
        # Femoral artery and vein in front of the hip; vessels (internal pudendal,
        # obturator) along the side wall, in the ischioanal fat.
        parts.append((_Rod((side * 66 * s, 56 * s, -200.0), (side * 68 * s, 54 * s, 200.0), 4.0 * s), "vessel", {}))
        parts.append((_Rod((side * 77 * s, 52 * s, -200.0), (side * 79 * s, 50 * s, 200.0), 5.5 * s), "vessel", {}))
        for _ in range(3):
            x0, y0 = side * (wall - obturator_half - float(rng.uniform(1.5, 4.0))), float(rng.uniform(-30, 15)) * s
            vessel = _Rod((x0, y0, -60.0), (x0 + side, y0 + 4, 60.0), float(rng.uniform(1.2, 2.5)))
            parts.append((vessel, "vessel", {"over": ("fat",)}))
    parts.append((_Blob((0.0, symphysis_y, symphysis_z), (1.6, 12 * s, symphysis_half), column=True), "cartilage", {}))
    return parts


def _draw_periprostatic_vessels(rng: np.random.Generator, gland: _Gland, rectum: _Rectum) -> list:
    """Neurovascular bundles behind and beside the gland (at 5 and 7 o'clock), the venous
    plexus in front of and beside it (slow, bright blood in dark walls), and small vessels
    through the fat round the gland and the rectum."""
    a, b, _ = gland.semi
    in_fat = {"over": ("fat",)}
    parts = []
    for side in (-1.0, 1.0):  # a bundle: arteries and nerves (dark) and veins (bright) together
        u, v = side * float(rng.uniform(0.75, 0.92)), float(rng.uniform(-0.8, -0.6))
        for _ in range(int(rng.integers(3, 6))):
            offset = np.array([side * rng.uniform(1.5, 6.0), -rng.uniform(1.0, 5.0), 0.0])
            start, end = gland.point(u, v, -0.95) + offset, gland.point(u, v, 0.95) + offset
            kind = "vessel" if rng.random() < 0.6 else "vein"
            parts.append((_Rod(tuple(start), tuple(end), float(rng.uniform(0.7, 1.6))), kind, in_fat))
    for _ in range(int(rng.integers(8, 16))):
        angle = float(rng.uniform(0.08, 0.92)) * math.pi
        push = np.array([math.cos(angle), math.sin(angle), 0.0]) * float(rng.uniform(1.5, 6.0))
        ends = [gland.point(1.05 * math.cos(angle), 1.05 * math.sin(angle), w) + push
                for w in rng.uniform(-0.9, 0.8, 2)]
        vein = _Rod(tuple(ends[0]), tuple(ends[1]), float(rng.uniform(1.0, 2.6)))
        parts += [(vein, "vessel", in_fat), (vein.shrunk(0.5), "vein", {"over": ("vessel",)})]
    for _ in range(18):
        x0, y0 = rng.uniform(-1.0, 1.0) * (a + 22.0), rng.uniform(rectum.back_y - 10.0, b + 15.0)
        drift = rng.uniform(-8.0, 8.0, size=2)
        parts.append((_Rod((x0, y0, -60.0), (x0 + drift[0], y0 + drift[1], 60.0), float(rng.uniform(0.6, 1.5))),
                      "vessel", in_fat))
    return parts


def _draw_gland_details(rng: np.random.Generator, gland: _Gland) -> list:
    """BPH nodules (dark rims round stromal or glandular cores) in the transition zone,
    the ejaculatory ducts and the urethra; tissues only, the zones stay."""
    parts = []
    for _ in range(int(rng.integers(2, 5) + round(gland.tz_scale * 8 * rng.uniform(0.4, 1.0)))):
        where = gland.point(float(rng.uniform(-0.55, 0.55)), float(rng.uniform(-0.15, 0.45)),
                            float(rng.uniform(gland.verumontanum + 0.1, 0.75)))
        radius = float(rng.uniform(2.5, 4.0 + 7.0 * (gland.tz_scale - 0.6)))
        shape = (radius, radius * float(rng.uniform(0.75, 1.2)), radius * float(rng.uniform(0.8, 1.3)))
        nodule = _Blob(tuple(where), shape, angle_deg=float(rng.uniform(0, 180)), waves=_waves(rng, (0.05, 0.08, 0.05)))
        kind = "glandular nodule" if rng.random() < 0.45 else "stromal nodule"
        parts += _walled(nodule, "capsule", kind, 0.8, zones=(_TZ,))
    for side in (-1.0, 1.0):
        base, verumontanum = gland.point(side * 0.1, -0.55, 0.9), gland.point(side * 0.02, 0.0, gland.verumontanum)
        parts.append((_Rod(tuple(base), tuple(verumontanum), 1.0), "duct", {"zones": (_CZ, _PZ)}))
    apex, base = gland.point(0.0, 0.05, -1.05), gland.point(0.0, 0.25, 1.05)
    parts.append((_Rod(tuple(apex), tuple(base), float(rng.uniform(2.0, 3.0))), "urethra",
                  {"zones": (_PZ, _TZ, _CZ, _AFS)}))
    return parts


def _draw_patient(rng: np.random.Generator, coil: bool) -> _Patient:
    """Draw a patient without lesions; the same draws whether or not there is a ``coil``."""
    s = float(rng.uniform(0.9, 1.12))  # size of the bony pelvis
    fat = float(rng.uniform(8.0, 50.0))  # subcutaneous fat (mm)
    gland = _draw_gland(rng, coil)
    body = _draw_body(rng, s, fat, gland.semi[2])
    organs = _draw_bladder_and_vesicles(rng, gland)
    rectum = _draw_rectum(rng, gland, coil)
    walls = _draw_pelvic_walls(rng, s, gland, rectum)
    vessels = _draw_periprostatic_vessels(rng, gland, rectum)
    return _Patient(
        gland=gland,
        structures=(*body, *organs, *rectum.parts, *walls, *vessels),
        gland_details=tuple(_draw_gland_details(rng, gland)),
        lesions=(),
        coil=rectum.coil,
        pose_deg=(float(rng.uniform(-6, 6)), float(rng.uniform(-6, 6))),
        offset_mm=rng.uniform([-5.0, -4.0], [5.0, 6.0]),
        scan_level_mm=float(rng.uniform(0.0, 10.0)),
    )


def _draw_lesion(rng: np.random.Generator, gland: _Gland) -> _Blob:
    """An irregular blob centred in the peripheral (3 in 4) or transition zone, well inside the gland."""
    zone = _PZ if rng.random() < 0.75 else _TZ
    candidates = rng.uniform(-0.8, 0.8, size=(2000, 3)).astype(np.float32)
    u, v, w = candidates.T
    r2 = u * u + v * v + w * w
    found = np.flatnonzero((gland.zone_of(u, v, w, r2) == zone) & (r2 < 0.6))
    if found.size == 0:
        found = np.flatnonzero((gland.zone_of(u, v, w, r2) == _PZ) & (r2 < 0.6))
    centre = gland.point(*(float(t) for t in candidates[found[0]]))
    return _Blob(
        tuple(float(t) for t in centre),
        (*rng.uniform(4.0, 8.0, size=2), float(rng.uniform(3.5, 7.0))),
        angle_deg=float(rng.uniform(0, 180)),
        waves=(*_waves(rng, (0.0, 0.1, 0.07)),),
    )


# --------------------------------------------------------------------------------- scan


@dataclass(frozen=True)
class _Scan:
    """Acquisition drawn per case: grids, coil, contrast, intensity scale, noise."""

    fov_mm: float  # T2W in-plane field of view
    matrix: int  # T2W in-plane matrix
    thickness_mm: float
    slices: int
    dwi_spacing_mm: float
    dwi_fov_ratio: tuple[float, float]  # DWI field of view over the T2W one, along x and y
    coil: bool
    properties: np.ndarray  # per tissue: T2W (scanner units), ADC, S0, grain and mottle amplitudes
    t2w_noise: float
    dwi_scale: float
    dwi_noise: float
    bias: np.ndarray  # coefficients of x, y, z, x^2, y^2, xy in the log of the bias field
    coil_gain: float  # sensitivity next to the coil over that far from it, minus 1
    coil_reach_mm: float  # distance at which the coil's extra sensitivity has fallen to an eighth


def _draw_scan(rng: np.random.Generator) -> _Scan:
    fov = float(rng.uniform(140.0, 220.0))
    matrices = [m for m in (160, 192, 224, 256, 288, 320) if 0.4 <= fov / m <= 1.0]
    properties = _TISSUE_TABLE * rng.uniform(0.88, 1.12, size=_TISSUE_TABLE.shape)
    # Contrast: a power of the T2W signal relative to fat, then the scanner's scale.
    fat_signal = float(np.exp(rng.uniform(np.log(250.0), np.log(2500.0))))
    properties[:, 0] = fat_signal * (properties[:, 0] / properties[_TISSUE_ID["fat"], 0]) ** rng.uniform(0.8, 1.2)
    adc = properties[:, 1]
    adc[_TISSUE_ID["pz"]] = rng.uniform(1500, 1900)
    adc[_TISSUE_ID["tz"]] = rng.uniform(1100, 1400)
    adc[_TISSUE_ID["cz"]] = adc[_TISSUE_ID["tz"]] * rng.uniform(0.8, 0.9)
    adc[_TISSUE_ID["afs"]] = rng.uniform(850, 1050)
    adc[_TISSUE_ID["stromal nodule"]] = adc[_TISSUE_ID["tz"]] * rng.uniform(0.8, 0.92)
    adc[_TISSUE_ID["lesion"]] = min(rng.uniform(600, 1000), 0.75 * adc[_TISSUE_ID["tz"]])  # restricted diffusion
    properties[_TISSUE_ID["lesion"], 0] = fat_signal * rng.uniform(0.13, 0.2)
    dwi_scale = float(np.exp(rng.uniform(np.log(40.0), np.log(400.0))))
    bias = rng.uniform(-1.0, 1.0, size=6) * rng.uniform(0.1, 0.3)
    bias[4] = abs(bias[4])  # anterior and posterior coil elements: brighter towards the skin
    return _Scan(
        fov_mm=fov,
        matrix=int(rng.choice(matrices)),
        thickness_mm=float(rng.choice([3.0, 3.0, 3.3, 3.5, 3.6, 4.0])),
        slices=int(rng.integers(16, 27)),
        dwi_spacing_mm=float(rng.uniform(1.6, 2.5)),
        dwi_fov_ratio=tuple(float(r) for r in rng.uniform(0.8, 1.15, size=2)),
        coil=bool(rng.random() < ENDORECTAL_COIL_FRACTION),
        properties=properties,
        t2w_noise=fat_signal * float(rng.uniform(0.012, 0.035)),
        dwi_scale=dwi_scale,
        dwi_noise=dwi_scale * float(rng.uniform(0.01, 0.02)),
        bias=bias,
        coil_gain=float(rng.uniform(8.0, 16.0)),
        coil_reach_mm=float(rng.uniform(15.0, 25.0)),
    )


def _random_contrast(rng: np.random.Generator, scan: _Scan, channels: Sequence[str]) -> _Scan:
    """The scan with levels drawn at random for every tissue but air (SynthSeg style).

    For each of ``channels``, in the order of :data:`RANDOM_CHANNELS`, one level per
    tissue, independently of the other channels: T2W uniform in
    :data:`RANDOM_T2W_RANGE` times the scan's fat signal, ADC uniform in
    :data:`RANDOM_ADC_RANGE`, the high-b DWI level uniform in :data:`RANDOM_DWI_RANGE`
    times the scan's DWI scale (the b = 0 signal of the tissue is set to give it, with
    the tissue's ADC). The scanner scales, noise and texture stay those of the scan.
    """
    properties = scan.properties.copy()
    tissues = len(properties) - 1  # air (the first tissue) stays black
    if "t2w" in channels:
        fat_signal = properties[_TISSUE_ID["fat"], 0]
        properties[1:, 0] = fat_signal * rng.uniform(*RANDOM_T2W_RANGE, size=tissues)
    if "adc" in channels:
        properties[1:, 1] = rng.uniform(*RANDOM_ADC_RANGE, size=tissues)
    if "dwi" in channels:
        dwi_levels = rng.uniform(*RANDOM_DWI_RANGE, size=tissues)
        properties[1:, 2] = dwi_levels * np.exp(B_VALUE * 1e-6 * properties[1:, 1])
    return replace(scan, properties=properties)


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma_vox: Sequence[float]) -> np.ndarray:
    """Gaussian-filtered white noise (float32, unit standard deviation).

    Along axes where the filter is wide, the noise is drawn on a coarser grid and
    interpolated, which gives the same kind of field for a fraction of the work.
    """
    sigma = np.asarray(sigma_vox, dtype=float)
    step = np.maximum(1, np.floor(sigma / 1.5)).astype(int)
    coarse = tuple(-(-n // s) for n, s in zip(shape, step))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse, dtype=np.float32), sigma / step, mode="wrap")
    for axis, factor in enumerate(step):
        if factor > 1:  # repeat, then a box of the same width: linear interpolation
            field = ndimage.uniform_filter1d(np.repeat(field, factor, axis=axis), factor, axis=axis, mode="wrap")
    return field[tuple(slice(0, n) for n in shape)] / max(float(field.std()), 1e-12)


def _rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``."""
    real = signal + np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.hypot(real, imaginary)


def _receive_sensitivity(canvas: _Canvas, patient: _Patient, scan: _Scan) -> np.ndarray:
    """Smooth bias field of the surface coils times the endorectal coil's sensitivity."""
    x, y, z = (values * np.float32(0.01) for values in canvas.everywhere())
    c = scan.bias.astype(np.float32)
    sensitivity = np.exp(c[0] * x + c[1] * y + c[2] * z + c[3] * x * x + c[4] * y * y + c[5] * x * y)
    if patient.coil is not None:
        distance = np.sqrt(patient.coil.level(*canvas.everywhere())) * np.float32(patient.coil.radius)
        reach = np.float32(scan.coil_reach_mm)
        sensitivity *= 1.0 + np.float32(scan.coil_gain) * (reach / (reach + distance)) ** 3
    return sensitivity


def _partial_volume(values: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Blur by the voxel (at least 0.35 mm in-plane): what a voxel averages over."""
    sigma = [max(0.5, 0.35 / spacing[0]), max(0.5, 0.35 / spacing[1]), 0.3]
    return ndimage.gaussian_filter(values, sigma, mode="nearest")


def _textures(rng: np.random.Generator, shape, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Fine grain (0.6 mm) and coarser mottle (1.5 mm) fields of one grid."""
    spacing = np.asarray(spacing, dtype=float)
    return _smooth_noise(rng, shape, 0.6 / spacing), _smooth_noise(rng, shape, 1.5 / spacing)


def _render_t2w(canvas: _Canvas, patient: _Patient, scan: _Scan, rng, spacing) -> np.ndarray:
    tissue = canvas.tissue
    grain, mottle = _textures(rng, tissue.shape, spacing)
    table = scan.properties.astype(np.float32)
    t2 = table[:, 0][tissue] * (1.0 + table[:, 3][tissue] * grain + table[:, 4][tissue] * mottle)
    # Thin strands: dark septa and small vessels in the fat, bright streaks of fat in the
    # muscles; convoluted walls in the vesicles.
    strands = np.exp(-((_smooth_noise(rng, tissue.shape, 3.5 / np.asarray(spacing)) * np.float32(1 / 0.05)) ** 2))
    fat, muscle = tissue == _TISSUE_ID["fat"], tissue == _TISSUE_ID["muscle"]
    t2[fat] *= 1.0 - 0.7 * strands[fat] * (mottle[fat] > -0.3)
    t2[muscle] *= 1.0 + 2.5 * strands[muscle] * (mottle[muscle] > 0.4)
    vesicle = tissue == _TISSUE_ID["vesicle"]
    t2[vesicle] *= 1.0 - 0.65 * np.exp(-((mottle[vesicle] * np.float32(1 / 0.3)) ** 2))
    t2 = _partial_volume(t2, spacing) * _receive_sensitivity(canvas, patient, scan)
    t2 = _rician(rng, t2, scan.t2w_noise)
    return np.clip(np.rint(t2), 0, np.iinfo(np.int16).max).astype(np.int16)


def _render_diffusion(canvas: _Canvas, patient: _Patient, scan: _Scan, rng, spacing) -> tuple[np.ndarray, np.ndarray]:
    tissue = canvas.tissue
    grain, mottle = _textures(rng, tissue.shape, spacing)
    table = scan.properties.astype(np.float32)
    texture = 0.5 * (table[:, 3][tissue] * grain + table[:, 4][tissue] * mottle)
    adc = _partial_volume(table[:, 1][tissue] * (1.0 + texture), spacing)
    s0 = _partial_volume(table[:, 2][tissue] * (1.0 + texture), spacing)
    dwi = np.float32(scan.dwi_scale) * s0 * np.exp(np.float32(-B_VALUE * 1e-6) * adc)
    dwi = _rician(rng, dwi * _receive_sensitivity(canvas, patient, scan), scan.dwi_noise)
    # ADC is fitted from noisy images: noisier where there is little signal; masked where none.
    adc += rng.normal(0.0, 60.0, adc.shape).astype(np.float32) * (1.0 + 3.0 * np.exp(-s0 * np.float32(1 / 0.15)))
    adc = np.where(s0 > 0.015, np.clip(adc, 0.0, 3500.0), 0.0)
    return dwi.astype(np.float32), adc.astype(np.float32)


def _random_misalignment(rng, centre) -> RigidTransform:
    shift = rng.uniform(-1, 1, size=3) * MAX_SHIFT_MM
    rotation = rng.uniform(-1, 1, size=3) * MAX_ROTATION_DEG
    return RigidTransform(
        tuple(float(v) for v in shift.round(3)),
        tuple(float(v) for v in rotation.round(3)),
        tuple(float(v) for v in centre),
    )


def _positive_triple(values, name: str) -> tuple:
    values = tuple(values)
    if len(values) != 3 or min(values) <= 0:
        raise ValueError(f"shape and spacing need 3 positive values, got {name}={values}")
    return values


def _t2w_grid(scan: _Scan, patient: _Patient, shape, spacing) -> tuple[tuple[int, int, int], np.ndarray]:
    """The T2W matrix and voxel size: the caller's, or drawn (slices cover the whole gland)."""
    if shape is not None:
        shape = tuple(int(n) for n in _positive_triple(shape, "shape"))
    if spacing is not None:
        spacing = np.array(_positive_triple(spacing, "spacing"), dtype=float)
    if shape is None:
        if spacing is None:
            spacing = np.array([scan.fov_mm / scan.matrix] * 2 + [scan.thickness_mm])
        coverage = max(scan.slices * scan.thickness_mm, 2.0 * patient.gland.semi[2] + 14.0)
        shape = (*(max(1, round(scan.fov_mm / s)) for s in spacing[:2]), math.ceil(coverage / spacing[2]))
    elif spacing is None:
        spacing = np.array([scan.fov_mm / shape[0], scan.fov_mm / shape[1], scan.thickness_mm])
    return shape, spacing


def _patient_from_world(patient: _Patient, shape, spacing) -> np.ndarray:
    """4 x 4 map from world (RAS mm) to the patient frame; the gland stays inside the slices."""
    half_height = shape[2] * spacing[2] / 2.0
    level = min(patient.scan_level_mm, max(0.0, half_height - patient.gland.semi[2] - 4.0))
    centre = np.asarray(FOV_CENTRE_MM, dtype=float) + [*patient.offset_mm, -level]
    yaw, tilt = patient.pose_deg
    rotation = _rotation_matrix((tilt, 0.0, yaw))
    matrix = np.eye(4)
    matrix[:3, :3] = rotation.T
    matrix[:3, 3] = -rotation.T @ centre
    return matrix


def make_phantom_case(
    seed: int,
    *,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    dwi_spacing: Sequence[float] | None = None,
    n_lesions: int | None = None,
    misalignment: RigidTransform | None = None,
    endorectal_coil: bool | None = None,
    contrast: str = "realistic",
    random_channels: Sequence[str] = ("t2w",),
) -> PhantomCase:
    """Draw one synthetic prostate MRI case.

    Parameters
    ----------
    seed : int
        Seed (>= 0) of the patient and the scan; the same seed gives identical arrays,
        and the same patient (anatomy, lesions, misalignment) on any grid.
    shape : tuple of 3 ints, optional
        T2W matrix ``(X, Y, Z)``. By default drawn per patient: a field of view of
        140-220 mm on a matrix of 160-320 (0.4-1.0 mm voxels) and 16-26 slices that
        cover the gland. The anatomy keeps its real size whatever the grid, so keep the
        field of view (``shape * spacing``) above about 100 x 100 x 40 mm to hold the
        whole gland.
    spacing : tuple of 3 floats, optional
        T2W voxel size in mm. By default drawn with the field of view (slices 3-4 mm);
        with only one of ``shape`` and ``spacing`` given, the other follows from the
        drawn field of view.
    dwi_spacing : tuple of 2 floats, optional
        In-plane voxel size (mm) of the DWI/ADC grid; by default drawn (1.6-2.5 mm, and
        no finer than the T2W voxels). The DWI/ADC grid has the slices of the T2W grid
        and a field of view of its own (0.8-1.15 times the T2W one along each axis).
    n_lesions : int, optional
        Number of lesions; by default drawn from the seed (0, 1 or 2 with probabilities
        0.15, 0.7, 0.15).
    misalignment : RigidTransform, optional
        Transform from the T2W world position of the anatomy to where the DWI/ADC header
        shows it (see the module documentation). By default drawn from the seed: shifts
        up to :data:`MAX_SHIFT_MM`, rotations up to :data:`MAX_ROTATION_DEG` about the
        centre of the T2W field of view. Pass a zero transform for perfectly aligned
        series.
    endorectal_coil : bool, optional
        Scan with an endorectal coil; by default drawn from the seed (a fraction
        :data:`ENDORECTAL_COIL_FRACTION` of the patients).
    contrast : {"realistic", "random", "mixed"}, optional
        Tissue contrast of the volumes named in ``random_channels``. ``"realistic"``
        (the default) follows the tissue table with small variations per scan.
        ``"random"`` draws, per scan, the level of every tissue but air: T2W uniformly
        in :data:`RANDOM_T2W_RANGE` times the fat signal, ADC in
        :data:`RANDOM_ADC_RANGE`, the high-b DWI level in :data:`RANDOM_DWI_RANGE`
        times the scan's DWI scale, each channel independently of the others
        (synthetic-data training in the style of SynthSeg: a network trained on such
        scans must find the gland by its shape and boundaries, not by its grey
        values). ``"mixed"`` tosses one coin per scan (from the seed) between the two,
        for all of ``random_channels`` together. The patient, the grids and the noise
        are those of the realistic scan of the same seed; only the grey values of the
        channels in ``random_channels`` change.
    random_channels : sequence of {"t2w", "adc", "dwi"}, optional
        Volumes whose tissue levels a random contrast redraws (:data:`RANDOM_CHANNELS`);
        by default T2W only. A random ADC changes the DWI volume too (the high-b signal
        falls with the ADC) unless ``"dwi"`` is listed as well, which sets the DWI levels
        themselves.

    Returns
    -------
    PhantomCase

    Examples
    --------
    >>> case = make_phantom_case(3, shape=(64, 64, 12), spacing=(2.0, 2.0, 4.0), n_lesions=1)
    >>> case.lesion_count, bool(case.lesion.any())
    (1, True)
    >>> bool((case.zones[case.lesion > 0] > 0).all())  # lesions lie inside the gland
    True
    >>> bool(nib.affines.voxel_sizes(case.dwi_affine)[0] >= 2.0)  # diffusion: no finer than T2W
    True
    >>> coarse = make_phantom_case(3, shape=(32, 32, 6), spacing=(4.0, 4.0, 8.0), n_lesions=1)
    >>> gland_ml = [(c.zones > 0).sum() * np.prod(nib.affines.voxel_sizes(c.t2w_affine)) / 1000
    ...             for c in (case, coarse)]
    >>> bool(abs(gland_ml[0] - gland_ml[1]) < 0.2 * gland_ml[0])  # the same patient on both grids
    True

    With random contrast, the same patient gets other T2W grey values:

    >>> shuffled = make_phantom_case(3, shape=(64, 64, 12), spacing=(2.0, 2.0, 4.0), n_lesions=1,
    ...                              contrast="random")
    >>> bool((shuffled.zones == case.zones).all()), bool((shuffled.t2w == case.t2w).all())
    (True, False)
    >>> bool((shuffled.adc == case.adc).all())  # by default only T2W
    True
    >>> everywhere = make_phantom_case(3, shape=(64, 64, 12), spacing=(2.0, 2.0, 4.0), n_lesions=1,
    ...                                contrast="random", random_channels=("t2w", "adc", "dwi"))
    >>> bool((everywhere.adc == case.adc).all()), bool((everywhere.dwi == case.dwi).all())
    (False, False)
    """
    if n_lesions is not None and n_lesions < 0:
        raise ValueError(f"n_lesions must be >= 0, got {n_lesions}")
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    random_channels = tuple(random_channels)
    unknown = sorted(set(random_channels) - set(RANDOM_CHANNELS))
    if unknown or not random_channels:
        raise ValueError(f"random_channels must name some of {RANDOM_CHANNELS}, got {random_channels!r}")
    patient_rng, scan_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    scan = _draw_scan(scan_rng)
    # Drawn after the realistic scan, which stays the same.
    if contrast == "random" or (contrast == "mixed" and scan_rng.random() < 0.5):
        scan = _random_contrast(scan_rng, scan, random_channels)
    coil = scan.coil if endorectal_coil is None else bool(endorectal_coil)
    patient = _draw_patient(patient_rng, coil)
    fov_centre = np.asarray(FOV_CENTRE_MM, dtype=float)
    drawn_misalignment = _random_misalignment(patient_rng, fov_centre)
    misalignment = drawn_misalignment if misalignment is None else misalignment
    drawn_lesions = int(patient_rng.choice(3, p=[0.15, 0.7, 0.15]))
    n_lesions = drawn_lesions if n_lesions is None else int(n_lesions)
    patient = replace(patient, lesions=tuple(_draw_lesion(patient_rng, patient.gland) for _ in range(n_lesions)))

    shape, spacing = _t2w_grid(scan, patient, shape, spacing)
    to_patient = _patient_from_world(patient, shape, spacing)
    t2w_affine = _grid_affine(shape, spacing, fov_centre)
    t2w = patient.paint(_Canvas(shape, to_patient @ t2w_affine))

    if dwi_spacing is None:
        dwi_spacing = (max(scan.dwi_spacing_mm, spacing[0]), max(scan.dwi_spacing_mm, spacing[1]))
    dwi_step = np.array([*map(float, dwi_spacing), spacing[2]])
    fov = np.asarray(shape[:2]) * spacing[:2] * scan.dwi_fov_ratio
    dwi_shape = (*np.ceil(fov / dwi_step[:2]).astype(int).tolist(), shape[2])
    dwi_affine = _grid_affine(dwi_shape, dwi_step, fov_centre)
    dwi = patient.paint(_Canvas(dwi_shape, to_patient @ np.linalg.inv(misalignment.matrix) @ dwi_affine))

    t2w_image = _render_t2w(t2w, patient, scan, noise_rng, spacing)
    dwi_image, adc_image = _render_diffusion(dwi, patient, scan, noise_rng, dwi_step)
    return PhantomCase(
        seed=int(seed),
        t2w=t2w_image,
        zones=t2w.zones,
        lesion=(t2w.tissue == _TISSUE_ID["lesion"]).astype(np.uint8),
        t2w_affine=t2w_affine,
        dwi=dwi_image,
        adc=adc_image,
        dwi_zones=dwi.zones,
        dwi_affine=dwi_affine,
        misalignment=misalignment,
        lesion_count=n_lesions,
        endorectal_coil=coil,
        tissues=t2w.tissue,
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
    aligned_stack: bool = False,
    **case_kwargs,
) -> list[Path]:
    """Write phantom cases in the case layout of :mod:`prostseg.data.dataset`.

    Case ``i`` goes to ``out_dir/phantom-{i:03d}/`` and holds ``t2w.nii.gz`` (int16),
    ``adc.nii.gz`` and ``dwi.nii.gz`` (float32, on their own grid), ``lesion.nii.gz``,
    ``zones.nii.gz`` and ``gland.nii.gz`` (the non-zero zones; uint8, on the T2W grid), all stored in LAS voxel order, and
    ``phantom.json``: the generator version, the dataset seed, the case's own seed (so
    ``make_phantom_case(case_seed, **case_kwargs)`` rebuilds it, ``dwi_zones``
    included), the keyword arguments, the lesion count and the misalignment of the
    DWI/ADC volumes (:meth:`RigidTransform.to_dict`), and whether the patient was
    scanned with an endorectal coil.

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
    aligned_stack : bool, optional
        Also write ``aligned/stack.nii.gz``, the stack a perfect registration would give
        (:meth:`PhantomCase.aligned_stack`), so that the cases can train Pix2Pix without
        :func:`prostseg.preparation.registration.register_case` (seconds per case). No
        ``registration.json`` is written with it: registration functions see a stack
        that prostseg's registration did not make, and keep it unless told to overwrite.
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
    ['adc.nii.gz', 'dwi.nii.gz', 'gland.nii.gz', 'lesion.nii.gz', 'phantom.json', 't2w.nii.gz', 'zones.nii.gz']
    >>> write_phantom_dataset(out_dir, n_cases=1, **small)
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: ...phantom-000: already exists; pass overwrite=True ...
    """
    COUNT.check(n_cases, "n_cases")
    NON_NEGATIVE_INT.check(seed, "seed")
    out_dir = path_argument(out_dir, "out_dir")
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
            raise InputError(case_dir, f"exists but holds no {_METADATA}, so it was not written by prostseg.data.phantom; "
                             "will not overwrite it")

    for index, case_dir in enumerate(case_dirs):
        case_seed = _case_seed(seed, index)
        case = make_phantom_case(case_seed, **case_kwargs)
        metadata = {
            "generator": "prostseg.data.phantom",
            "generator_version": GENERATOR_VERSION,
            "dataset_seed": seed,
            "case_index": index,
            "case_seed": case_seed,
            "case_kwargs": _jsonable(case_kwargs),
            "lesion_count": case.lesion_count,
            "endorectal_coil": case.endorectal_coil,
            "b_value": B_VALUE,
            "adc_units": "1e-6 mm^2/s",
            "misalignment": case.misalignment.to_dict(),
        }
        new_folder = not case_dir.exists()
        try:
            _write_case_files(case, case_dir, metadata, aligned_stack)
        except BaseException:
            if new_folder:  # no half-written case that a rerun would refuse to replace
                shutil.rmtree(case_dir, ignore_errors=True)
            raise
    return case_dirs


def _write_case_files(case: PhantomCase, case_dir: Path, metadata: dict, aligned_stack: bool) -> None:
    """The volumes of ``case`` (and its aligned stack), then its metadata (which marks
    the case complete)."""
    case_dir.mkdir(parents=True, exist_ok=True)
    volumes = {volume_file(name): (array, affine) for name, (array, affine) in case.volumes().items()}
    if aligned_stack:
        (case_dir / ALIGNED_FOLDER).mkdir(exist_ok=True)
        volumes[f"{ALIGNED_FOLDER}/{volume_file(STACK)}"] = (case.aligned_stack(), case.t2w_affine)
    for name, (array, affine) in volumes.items():
        with atomic_path(case_dir / name) as tmp:
            nib.save(_las_nifti(array, affine), tmp)
    with atomic_path(case_dir / _METADATA) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2) + "\n")


_METADATA = PHANTOM_FILE
