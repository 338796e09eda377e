"""DICOM SEG round trip: the SEG written for a prediction on a DICOM series holds the
same labels, voxel for voxel, on the same frames and geometry as the NIfTI prediction,
on a phantom series written by the tests and on a real I2CVB T2W series."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("highdicom")

import highdicom as hd  # noqa: E402
import pydicom  # noqa: E402

from prostseg.use.batch import predict_batch  # noqa: E402
from prostseg.use.dicom_seg import read_dicom_seg, write_dicom_seg, write_dicom_series  # noqa: E402
from prostseg.errors import InputError  # noqa: E402
from prostseg.data.io import dicom_series_files, load_volume  # noqa: E402
from prostseg.networks.models import build_unet  # noqa: E402
from prostseg.training.loop import UNetTrainingConfig  # noqa: E402


def _lps_to_ras(point) -> np.ndarray:
    return np.asarray(point, float) * [-1, -1, 1]


def assert_seg_matches_nifti(seg_path, nifti_path, series_dir, names):
    """Segments, referenced instances, frame geometry and voxels of the SEG agree with
    the NIfTI prediction, read independently with pydicom/highdicom and nibabel."""
    seg = hd.seg.segread(seg_path)
    nifti = nib.load(nifti_path)
    expected = np.asarray(nifti.dataobj)  # the source voxel order: columns, rows, slices
    sources = [pydicom.dcmread(path) for path in dicom_series_files(series_dir)]
    assert [seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()] == names
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    assert referenced == {str(ds.SOPInstanceUID) for ds in sources}
    assert str(seg.FrameOfReferenceUID) == str(sources[0].FrameOfReferenceUID)
    shared = seg.SharedFunctionalGroupsSequence[0]
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    along_columns, along_rows = _lps_to_ras(orientation[:3]), _lps_to_ras(orientation[3:])
    np.testing.assert_allclose(nifti.affine[:3, 0], along_columns * spacing[1], atol=1e-4)
    np.testing.assert_allclose(nifti.affine[:3, 1], along_rows * spacing[0], atol=1e-4)
    uid_to_slice = {str(ds.SOPInstanceUID): k for k, ds in enumerate(sources)}
    seen = np.zeros(expected.shape, np.uint8)
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        k = uid_to_slice[uid]
        position = _lps_to_ras(item.PlanePositionSequence[0].ImagePositionPatient)
        np.testing.assert_allclose(position, (nifti.affine @ [0, 0, k, 1])[:3], atol=1e-3)
        identification = item if "SegmentIdentificationSequence" in item else shared  # shared: one segment
        number = int(identification.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        pixels = seg.pixel_array[frame] if seg.pixel_array.ndim == 3 else seg.pixel_array
        seen[:, :, k][pixels.T > 0] = number
    np.testing.assert_array_equal(seen, expected)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A random lesion U-Net saved in a run folder (its config.json says "lesion")."""
    unet = build_unet((64, 64, 1), base_filters=2, depth=2)
    rng = np.random.default_rng(1)
    unet.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") if "moving_variance" not in w.path
                      else np.ones(w.shape, "float32") for w in unet.weights])
    run = tmp_path_factory.mktemp("run")
    unet.save(run / "model.keras")
    UNetTrainingConfig("data", str(run), label="lesion").to_json(run / "config.json")
    return run / "model.keras"


def test_phantom_series_round_trips_through_dicom(phantom_dir, tmp_path):
    t2w = load_volume(phantom_dir / "phantom-001" / "t2w.nii.gz")
    write_dicom_series(t2w, tmp_path / "series")
    series = load_volume(tmp_path / "series")
    np.testing.assert_array_equal(series.data, np.round(t2w.data))
    np.testing.assert_allclose(series.affine, t2w.affine, atol=1e-4)
    zones = load_volume(phantom_dir / "phantom-001" / "zones.nii.gz", label=True).data
    names = {1: "peripheral zone", 2: "transition zone", 3: "central zone", 4: "anterior fibromuscular stroma"}
    path = write_dicom_seg(zones, series, tmp_path / "series", tmp_path / "zones.seg.dcm", label_names=names)
    labels, read_names = read_dicom_seg(path, series, tmp_path / "series")
    np.testing.assert_array_equal(labels, zones)
    assert read_names == names
    with pytest.raises(InputError, match="file exists"):
        write_dicom_seg(zones, series, tmp_path / "series", path, label_names=names)


def test_batch_dicom_seg_matches_the_nifti_on_a_phantom_series(model, phantom_dir, tmp_path):
    write_dicom_series(load_volume(phantom_dir / "phantom-002" / "t2w.nii.gz"), tmp_path / "in" / "study")
    result = predict_batch(model, [tmp_path / "in"], tmp_path / "out", dicom_seg=True, progress=False)
    assert result.rows[0]["status"] == "predicted"
    nifti = tmp_path / "out" / "study.nii.gz"
    assert np.asarray(nib.load(nifti).dataobj).any()  # a prediction with something in it
    assert_seg_matches_nifti(tmp_path / "out" / "study.seg.dcm", nifti, tmp_path / "in" / "study", ["lesion"])


def test_dicom_seg_needs_a_dicom_series_and_a_model_that_says_what_it_segments(model, phantom_dir, tmp_path):
    result = predict_batch(model, [phantom_dir / "phantom-000"], tmp_path, dicom_seg=True, progress=False)
    assert result.failed == ["phantom-000"] and "DICOM series" in result.rows[0]["error"]
    bare = build_unet((64, 64, 1), base_filters=2, depth=2)
    with pytest.raises(InputError, match="what it segments"):
        predict_batch(bare, [phantom_dir / "phantom-000"], tmp_path / "bare", dicom_seg=True, progress=False)


@pytest.mark.real_data
def test_real_i2cvb_series_dicom_seg_matches_the_nifti_voxel_for_voxel(model, real_data_dir, tmp_path):
    series_dir = real_data_dir / "zonal-labels" / "i2cvb-5slices" / "t2w"
    result = predict_batch(model, [series_dir], tmp_path, dicom_seg=True, progress=False)
    assert result.rows[0]["status"] == "predicted", result.rows[0]["error"]
    nifti = tmp_path / "t2w.nii.gz"
    assert np.asarray(nib.load(nifti).dataobj).any()
    assert_seg_matches_nifti(tmp_path / "t2w.seg.dcm", nifti, series_dir, ["lesion"])
