"""Writing small DICOM files: for the executable's self-test, benchmarks and tests.

Reading DICOM is `edge_app.imaging`'s job; this only wraps a pixel array in a valid file.
"""

from __future__ import annotations

import io

import numpy as np


def encode_dicom(stored: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 16,
                 slope: float | None = None, intercept: float | None = None,
                 window: tuple[float, float] | None = None, transfer_syntax: str | None = None,
                 encapsulated: bytes | None = None, patient_name: str = "Synthetic^Image"
                 ) -> bytes:
    """A single-frame grayscale DICOM (uint16 stored values) as bytes."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    stored = np.asarray(stored, dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientName = patient_name
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if encapsulated is not None:
        ds.PixelData = encapsulate([encapsulated])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = stored.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
