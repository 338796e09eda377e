"""DICOM in, DICOM SEG out: predictions that open in a PACS viewer, OHIF or 3D Slicer.

A hospital's images are DICOM series, and what a viewer overlays on them is a DICOM
Segmentation object (SEG): a multi-frame image whose frames each reference the source
slice they lie on (its SOP Instance UID, position and orientation), with one
*segment* per structure, described by codes from a standard vocabulary (SNOMED CT).
:func:`write_dicom_seg` writes one with ``highdicom`` from a label map predicted on the
series; :func:`read_dicom_seg` reads one back onto the series' voxel grid.
:func:`write_dicom_series` writes a volume (a phantom, say) as a DICOM MR series, so
that the whole path can be tried without patient data.

Segments, one per foreground label the model predicts:

==================================  ===========================  ==================
label                               segmented property type      SNOMED CT code
==================================  ===========================  ==================
lesion                              Lesion                       52988006
gland (whole prostate)              Prostate                     41216001
peripheral zone                     Peripheral zone of prostate  279706003
transition zone                     Transition zone of prostate  399384005
central zone                        (no SNOMED code for the      99PROSTSEG CZ
                                    whole zone in DICOM CID
                                    6300; a local code)
anterior fibromuscular stroma       Anterior fibromuscular       717025007
                                    stroma of prostate
==================================  ===========================  ==================

Segments are BINARY and empty frames are omitted, so a SEG is small. ``highdicom``
and ``pydicom`` are optional: ``pip install "prostseg[deploy]"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from prostseg import __version__
from prostseg.atomic import atomic_path
from prostseg.errors import InputError
from prostseg.data.io import Volume, dicom_series_files

__all__ = ["SEGMENT_CODES", "read_dicom_seg", "write_dicom_seg", "write_dicom_series"]


def _codes():
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    anatomy = codes.SCT.AnatomicalStructure
    return {
        "lesion": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion),
        "gland": (anatomy, codes.SCT.Prostate),
        "peripheral zone": (anatomy, codes.SCT.PeripheralZoneOfTheProstate),
        "transition zone": (anatomy, codes.SCT.TransitionZoneOfTheProstate),
        "central zone": (anatomy, Code("CZ", "99PROSTSEG", "Central zone of prostate")),
        "anterior fibromuscular stroma": (anatomy, codes.SCT.AnteriorFibromuscularStromaOfProstate),
    }


#: Names of the segments :func:`write_dicom_seg` knows codes for.
SEGMENT_CODES = ("lesion", "gland", "peripheral zone", "transition zone", "central zone",
                 "anterior fibromuscular stroma")


def _source_datasets(series_dir: Path, reference: Volume):
    import pydicom

    if not Path(series_dir).is_dir():
        raise InputError(series_dir, "DICOM SEG needs a DICOM series folder as input")
    files = dicom_series_files(series_dir)
    datasets = [pydicom.dcmread(path) for path in files]
    shape = reference.to_source(np.zeros(reference.shape, np.uint8)).shape
    if (len(datasets), datasets[0].Rows, datasets[0].Columns) != (shape[2], shape[1], shape[0]):
        raise InputError(series_dir, f"holds {len(datasets)} slices of {datasets[0].Rows}x"
                         f"{datasets[0].Columns}, not the grid of the prediction {shape}")
    return datasets


def write_dicom_seg(labels: np.ndarray, reference: Volume, series_dir: str | os.PathLike,
                    out_path: str | os.PathLike, *, label_names: dict[int, str],
                    overwrite: bool = False) -> Path:
    """Write a label map predicted on a DICOM series as a DICOM Segmentation.

    Parameters
    ----------
    labels : numpy.ndarray, shape (X, Y, Z)
        Label map in canonical order on the grid of ``reference``.
    reference : Volume
        The series read with :func:`prostseg.data.io.load_volume`.
    series_dir : str or os.PathLike
        The folder of the DICOM series.
    out_path : str or os.PathLike
        The SEG file to write (``.dcm``).
    label_names : dict
        ``{label value: segment name}`` for the foreground labels, names from
        :data:`SEGMENT_CODES` (e.g. ``{1: "lesion"}``). Every named label gets a
        segment, even when it is empty.
    overwrite : bool, optional
        Replace an existing file.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        When ``out_path`` exists (without ``overwrite``), or ``series_dir`` is not
        the DICOM series of ``reference``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise InputError(out_path, "file exists; pass overwrite=True (CLI: --overwrite) to replace it")
    unknown = sorted(set(label_names.values()) - set(SEGMENT_CODES))
    if unknown or not label_names:
        raise ValueError(f"label_names must name segments from {SEGMENT_CODES}, got {label_names}")
    datasets = _source_datasets(Path(series_dir), reference)
    frames = np.transpose(reference.to_source(np.asarray(labels)), (2, 1, 0))  # (slices, rows, columns)
    values = sorted(label_names)
    segment_frames = np.zeros(frames.shape, np.uint8)  # segment numbers 1.. in label order
    for number, value in enumerate(values, start=1):
        segment_frames[frames == value] = number
    algorithm = hd.AlgorithmIdentificationSequence(
        name="prostseg", family=codes.cid7162.ArtificialIntelligence, version=__version__)
    known = _codes()
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=label_names[value],
            segmented_property_category=known[label_names[value]][0],
            segmented_property_type=known[label_names[value]][1],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id=f"prostseg {label_names[value]}")
        for number, value in enumerate(values, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=segment_frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=9100, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="prostseg", manufacturer_model_name="prostseg segmentation model",
        software_versions=__version__, device_serial_number="none",
        series_description="prostseg prediction (not for clinical use)",
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp)
    return out_path


def read_dicom_seg(seg_path: str | os.PathLike, reference: Volume,
                   series_dir: str | os.PathLike) -> tuple[np.ndarray, dict[int, str]]:
    """Read a DICOM Segmentation back onto the grid of its source series.

    Parameters
    ----------
    seg_path : str or os.PathLike
        A SEG file, e.g. written by :func:`write_dicom_seg`.
    reference : Volume
        The source series read with :func:`prostseg.data.io.load_volume`.
    series_dir : str or os.PathLike
        The folder of the source series.

    Returns
    -------
    labels : numpy.ndarray of uint8, shape (X, Y, Z)
        Segment numbers in canonical order on the grid of ``reference`` (0: none; a
        voxel in several segments gets the highest number).
    names : dict
        ``{segment number: segment label}``.

    Raises
    ------
    InputError
        When the file is not a SEG, or references none of the series' instances.
    """
    import highdicom as hd

    try:
        seg = hd.seg.segread(seg_path)
    except Exception as err:  # pydicom and highdicom raise many types for bad files
        raise InputError(seg_path, f"not a DICOM Segmentation: {err}") from None
    datasets = _source_datasets(Path(series_dir), reference)
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    if not referenced & set(uids):
        raise InputError(seg_path, f"references none of the instances of the series in {series_dir}")
    numbers = list(seg.get_segment_numbers())
    frames = np.zeros((len(uids), datasets[0].Rows, datasets[0].Columns), np.uint8)
    present = [k for k, uid in enumerate(uids) if uid in referenced]
    stack = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[uids[k] for k in present], segment_numbers=numbers,
        assert_missing_frames_are_empty=True)  # (instances, rows, columns, segments)
    for index, number in enumerate(numbers):
        frames[present] = np.where(stack[..., index] > 0, number, frames[present])
    names = {number: seg.get_segment_description(number).segment_label for number in numbers}
    return reference.from_source(np.transpose(frames, (2, 1, 0))), names


def write_dicom_series(volume: Volume, out_dir: str | os.PathLike, *, patient_id: str = "PHANTOM",
                       overwrite: bool = False) -> list[Path]:
    """Write a volume as a DICOM MR image series, one file per axial slice.

    Image ``k`` is slice ``volume.data[:, :, k]``: its columns run along ``x``, its
    rows along ``y``; positions and orientation come from the affine (RAS+ turned
    into DICOM's LPS), so :func:`prostseg.data.io.load_volume` reads the folder back as
    the same volume, oblique grids included. Values are rounded to ``int16``.

    Parameters
    ----------
    volume : Volume
        A 3D volume, e.g. a phantom's T2W.
    out_dir : str or os.PathLike
        Folder to write ``slice-000.dcm``, ... into (created; must be empty unless
        ``overwrite``).
    patient_id : str, optional
        Patient ID and name of the series.
    overwrite : bool, optional
        Write into a folder that already holds files.

    Returns
    -------
    list of pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> from prostseg.data.io import load_volume
    >>> data = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    >>> volume = Volume(data, np.diag([0.5, 0.6, 3.0, 1.0]))
    >>> folder = Path(tempfile.mkdtemp()) / "series"
    >>> _ = write_dicom_series(volume, folder)
    >>> back = load_volume(folder)
    >>> bool(np.array_equal(back.data, data)), bool(np.allclose(back.affine, volume.affine))
    (True, True)
    """
    import highdicom as hd
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    if volume.data.ndim != 3:
        raise ValueError(f"write_dicom_series writes a 3D volume, got shape {volume.data.shape}")
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(out_dir, "folder holds files; pass overwrite=True to write into it")
    out_dir.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    spacing = volume.spacing
    along_x, along_y = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    study, series, frame_of_reference = hd.UID(), hd.UID(), hd.UID()
    pixels = np.clip(np.round(volume.data), -32768, 32767).astype(np.int16)
    paths = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, hd.UID()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "MR", patient_id, f"{patient_id}^"
        ds.PatientBirthDate, ds.PatientSex = "", "M"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference, ""
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.StudyDate, ds.StudyTime = "20000101", "000000"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.SeriesDescription, ds.Manufacturer = "T2W (prostseg phantom)", "prostseg"
        ds.ImageOrientationPatient = [float(v) for v in (*along_x, *along_y)]
        ds.ImagePositionPatient = [float(v) for v in (lps @ [0.0, 0.0, k, 1.0])[:3]]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # between rows, between columns
        ds.SliceThickness = float(spacing[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()
        path = out_dir / f"slice-{k:03d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths
