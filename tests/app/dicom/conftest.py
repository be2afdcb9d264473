"""Fixtures of the DICOM receiver tests: receivers on free loopback ports."""

from __future__ import annotations

import logging

import pytest

from pneumo.app.dicom.receiver import DicomReceiver


@pytest.fixture
def receiver(app_config, caplog):
    """Start DicomReceivers on free loopback ports (settings as keyword arguments)."""
    from pneumo.app.web.app import create_app
    from pneumo.app.web.state import get_state

    caplog.set_level(logging.INFO, logger="pneumo.app.dicom.receiver")
    started = []

    def start(**settings) -> DicomReceiver:
        app = create_app({**app_config, "dicom_port": 0, **settings})
        rx = DicomReceiver(get_state(app))
        rx.start()
        started.append(rx)
        return rx

    yield start
    for rx in started:
        rx.stop()
        rx.state.history.close()
