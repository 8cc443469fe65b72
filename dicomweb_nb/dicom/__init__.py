"""The DICOM rules shared by server and client: attribute dictionary, DICOM JSON / XML,
QIDO matching, media types and multipart framing. Pure functions: no network, no disk."""
