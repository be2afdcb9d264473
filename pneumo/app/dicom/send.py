"""Results back to the viewer: a DICOM Secondary Capture of the heatmap, sent by C-STORE.

`pneumo serve --dicom-send AET@host:port`: after a received image is analysed, the heatmap
overlay with the result and "decision support, not a diagnosis" burned into the pixels is
sent in the image's study (same StudyInstanceUID and patient, a new series and instance),
so it shows beside the original on the PACS or viewer.
"""

from __future__ import annotations

import io
import logging
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pneumo.app.analysis import AppState
from pneumo.app.config import DEFAULT_SETTING, dicom_destination
from pneumo.app.i18n import _, english
from pneumo.app.pipeline.heatmap import render
from pneumo.app.pipeline.wording import HEATMAP_NOTE, answer

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

SERIES_NUMBER = 9001
SERIES_DESCRIPTION = "pneumo: decision support, not a diagnosis"
DISCLAIMER = "DECISION SUPPORT, NOT A DIAGNOSIS - a clinician must read the X-ray"
MIN_WIDTH = 896
"""The overlay is enlarged to at least this width so the burned-in text is legible."""

COPIED = ("SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID",
          "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
          "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription")
"""Patient and study attributes copied from the received image (so the PACS files it there)."""


class SendError(RuntimeError):
    """The destination refused the association or the Secondary Capture."""


def result_lines(record: dict) -> list[str]:
    """The text burned into the image (English, from pneumo.app.pipeline.wording): the disclaimer, the
    outcome and its number, the notes shown with it, the next step, what the heatmap is."""
    with english():
        words = answer(record)
        heat = HEATMAP_NOTE["positive" if words["heatmap_shown"] else "negative"]
        setting = record.get("mode") or DEFAULT_SETTING
        lines = [DISCLAIMER, f"Result: {words['headline']} - {words['probability_text']}",
                 f"Label for systems: {record['label']} ({setting} setting, threshold "
                 f"{float(record['threshold']) * 100:.0f}%)",
                 *words["notes"], f"Next: {words['next_steps'][0]}", f"Heatmap: {_(heat)}",
                 f"Model {record.get('model_name')} {record.get('model_version')}"]
    return [line.replace("\u2014", "-").replace("\u2019", "'") for line in lines]


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's built-in font at `size` px (the small bitmap font if FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except Exception:  # Pillow without FreeType
        return ImageFont.load_default()


def burn_in(overlay_png: bytes, lines: list[str]) -> Image.Image:
    """The overlay (enlarged to MIN_WIDTH) under a black band holding `lines` in white (RGB)."""
    img = Image.open(io.BytesIO(overlay_png)).convert("RGB")
    if img.width < MIN_WIDTH:
        scale = MIN_WIDTH / img.width
        img = img.resize((MIN_WIDTH, round(img.height * scale)), Image.BICUBIC)
    size = max(12, img.width // 48)
    font = _font(size)
    probe = ImageDraw.Draw(img)
    while size > 8 and max(probe.textlength(t, font=font) for t in lines) > img.width - size:
        size -= 1  # the longest line must fit the width
        font = _font(size)
    line_h = size + size // 2
    band = line_h * len(lines) + size
    out = Image.new("RGB", (img.width, img.height + band), (0, 0, 0))
    out.paste(img, (0, band))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(lines):
        colour = (255, 220, 0) if i == 0 else (255, 255, 255)
        draw.text((size // 2, size // 2 + i * line_h), text, fill=colour, font=font)
    return out


def secondary_capture(image: Image.Image, header: Dataset, record: dict) -> Dataset:
    """A Secondary Capture data set of `image` in the study of the received `header`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    now = datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword in COPIED:
        if keyword in header:
            ds[keyword] = header[keyword]
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SeriesNumber = SERIES_NUMBER
    ds.InstanceNumber = 1
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES"
    ds.Manufacturer = "pneumo"
    ds.SoftwareVersions = str(record.get("model_version") or "")[:64]
    ds.DerivationDescription = ("Heatmap of an automated pneumonia screening model; "
                                "decision support, not a diagnosis")
    ds.ImageComments = " / ".join(result_lines(record))[:10240]
    ds.ContentDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.SeriesTime = now.strftime("%H%M%S")
    if "SOPInstanceUID" in header and "SOPClassUID" in header:
        src = Dataset()
        src.ReferencedSOPClassUID = header.SOPClassUID
        src.ReferencedSOPInstanceUID = header.SOPInstanceUID
        ds.SourceImageSequence = [src]
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()
    return ds


def result_capture(state: AppState, record: dict, header: Dataset) -> Dataset | None:
    """The Secondary Capture of a stored result (its heatmap from the history); None if none."""
    blob = state.history.heatmap(record["id"])
    if blob is None:
        return None
    return secondary_capture(burn_in(render(blob), result_lines(record)), header, record)


def send(ds: Dataset, destination: str, *, ae_title: str = "PNEUMO",
         timeout: float = 30.0) -> int:
    """C-STORE one data set to "AET@host:port"; returns the status, SendError on failure."""
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    dest_aet, host, port = dicom_destination(destination)
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(str(ds.SOPClassUID), ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.connection_timeout = timeout
    ae.network_timeout = timeout
    assoc = ae.associate(host, port, ae_title=dest_aet)
    if not assoc.is_established:
        raise SendError(f"{destination} refused the association (or did not answer)")
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    code = int(getattr(status, "Status", -1)) if status else -1
    if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success or warning
        raise SendError(f"{destination} answered C-STORE status 0x{code & 0xFFFF:04X}"
                        if code >= 0 else f"{destination} did not answer the C-STORE")
    return code


def send_result(state: AppState, record: dict, header: Dataset, destination: str, *,
                ae_title: str = "PNEUMO", timeout: float = 30.0) -> str | None:
    """Make and send the Secondary Capture of a result; its SOPInstanceUID (None: no heatmap)."""
    ds = result_capture(state, record, header)
    if ds is None:
        log.warning("DICOM result of %s not sent: no heatmap stored", record.get("sop_uid"))
        return None
    send(ds, destination, ae_title=ae_title, timeout=timeout)
    log.info("DICOM result of %s sent to %s as Secondary Capture %s", record.get("sop_uid"),
             destination, ds.SOPInstanceUID)
    return str(ds.SOPInstanceUID)
