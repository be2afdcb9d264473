"""Writing small DICOM files: for the executable's self-test, benchmarks and tests.

Reading DICOM is `pneumo.app.pipeline.dicom_decode`'s job; this only wraps a pixel array in a
valid file. Loaded only where DICOM is in use (the receiver's contexts, benchmarks, tests), so
it imports pydicom at once.
"""

from __future__ import annotations

import io

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate


def encode_dicom(stored: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 16,
                 slope: float | None = None, intercept: float | None = None,
                 window: tuple[float, float] | None = None, transfer_syntax: str | None = None,
                 encapsulated: bytes | None = None, patient_name: str = "Synthetic^Image",
                 sop_class: str | None = None, modality: str = "DX",
                 patient_id: str | None = None, study_uid: str | None = None,
                 bits_allocated: int = 16) -> bytes:
    """A single-frame grayscale DICOM (uint16 stored values; uint8 with bits_allocated=8)."""
    stored = np.asarray(stored, dtype=np.uint8 if bits_allocated == 8 else np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class or uid.SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = patient_name
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid or uid.generate_uid()
    ds.SeriesInstanceUID = uid.generate_uid()
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
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


UNCOMPRESSED_SYNTAXES = (
    uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,  # retired, still sent by old units
)
COMPRESSED_SYNTAXES = (
    uid.JPEGBaseline8Bit,  # Process 1
    uid.JPEGExtended12Bit,  # Process 2 and 4: 12-bit
    uid.JPEGLossless,  # Process 14
    uid.JPEGLosslessSV1,  # Process 14, first-order prediction
    uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000,
    uid.RLELossless,
)
"""The compressed transfer syntaxes CR/DX units send; decoded by pylibjpeg's plugins."""


def decoder_status() -> dict[str, bool]:
    """For each compressed transfer syntax: whether an installed decoder can read it."""
    from pydicom.pixels import get_decoder

    status = {}
    for syntax in COMPRESSED_SYNTAXES:
        try:
            status[syntax] = bool(get_decoder(syntax).is_available)
        except Exception:  # no decoder class at all for this syntax
            status[syntax] = False
    return status


def decodable_syntaxes() -> list[str]:
    """Transfer syntaxes whose pixel data this app can decode: uncompressed, then compressed."""
    return [*UNCOMPRESSED_SYNTAXES, *(syntax for syntax, ok in decoder_status().items() if ok)]
