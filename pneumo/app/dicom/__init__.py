"""dicom family of the clinic app."""
