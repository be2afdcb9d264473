"""Writing small DICOM files: for the executable's self-test, benchmarks and tests.

Reading DICOM is `pneumo.app.pipeline.preprocess`'s job; this only wraps a pixel array in a valid file.
"""

from __future__ import annotations

import io

import numpy as np


def encode_dicom(stored: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 16,
                 slope: float | None = None, intercept: float | None = None,
                 window: tuple[float, float] | None = None, transfer_syntax: str | None = None,
                 encapsulated: bytes | None = None, patient_name: str = "Synthetic^Image",
                 sop_class: str | None = None, modality: str = "DX",
                 patient_id: str | None = None, study_uid: str | None = None,
                 bits_allocated: int = 16) -> bytes:
    """A single-frame grayscale DICOM (uint16 stored values; uint8 with bits_allocated=8)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    stored = np.asarray(stored, dtype=np.uint8 if bits_allocated == 8 else np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class or SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = patient_name
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
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
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old units)
)
COMPRESSED_SYNTAXES = (
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 and 4): 12-bit
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1 (Process 14, first-order prediction)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
"""The compressed transfer syntaxes CR/DX units send; decoded by pylibjpeg's plugins."""


def decoder_status() -> dict[str, bool]:
    """For each compressed transfer syntax: whether an installed decoder can read it."""
    from pydicom.pixels import get_decoder

    status = {}
    for uid in COMPRESSED_SYNTAXES:
        try:
            status[uid] = bool(get_decoder(uid).is_available)
        except Exception:  # no decoder class at all for this syntax
            status[uid] = False
    return status


def decodable_syntaxes() -> list[str]:
    """Transfer syntaxes whose pixel data this app can decode: uncompressed, then compressed."""
    return [*UNCOMPRESSED_SYNTAXES, *(uid for uid, ok in decoder_status().items() if ok)]
