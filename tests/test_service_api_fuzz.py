"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis over
hypothesis), against the service on a loopback port with the tiny map.

For every operation of the schema, generated requests (valid and invalid parameters,
headers and multipart bodies; half of the localize requests name the real map and carry a
real image, so they get past the 404 and the image checks, see ``_steer``) must get: no 5xx, no traceback
in the body, a documented status code, a documented content type, and a body that matches
the documented schema of that status.

Short in CI (``ACEG_FUZZ_EXAMPLES`` examples per operation, default 60, a few hundred
requests in all); long on demand, e.g. ``ACEG_FUZZ_EXAMPLES=5000 pytest
tests/test_service_api_fuzz.py``.
"""

from __future__ import annotations

import os
import tempfile
import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aceg.service.app import ServiceConfig, create_app
from aceg.service.server import BackgroundServer
from tiny_map import tiny_map

EXAMPLES = int(os.environ.get("ACEG_FUZZ_EXAMPLES", "60"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_map(tmp_path_factory)


#: Status codes of the requests sent, reported at the end of the module (run with -s).
STATUSES: dict[int, int] = {}


@pytest.fixture(scope="module")
def fuzz_server(tiny):
    with BackgroundServer(ServiceConfig(tiny.maps_dir, workers=1, queue=4)) as srv:
        yield srv
    print(f"\napi fuzz: {sum(STATUSES.values())} requests, statuses "
          + ", ".join(f"{code}: {n}" for code, n in sorted(STATUSES.items())))


def _api_schema():
    """The service's OpenAPI document (it does not depend on the maps: an empty folder)."""
    with tempfile.TemporaryDirectory() as folder:
        return schemathesis.openapi.from_dict(create_app(ServiceConfig(folder)).openapi())


schema = _api_schema()


def _steer(case, tiny) -> None:
    """Form fields that are null are left out, as a form client would (multipart has no
    null). Then, by a checksum of the case, half of the localize cases name the real map
    and carry one of its images, and half of those its intrinsics too, so the pipeline
    behind the checks is fuzzed as well."""
    if case.operation.path != "/maps/{name}/localize" or not isinstance(case.body, dict):
        return
    case.body = {k: v for k, v in case.body.items() if v is not None}
    pick = zlib.crc32(repr((case.body, case.path_parameters, case.headers)).encode()) % 4
    if pick < 2:
        return
    frame = tiny.scene.frames[pick % len(tiny.scene.frames)]
    case.path_parameters = {**(case.path_parameters or {}), "name": "corner"}
    if "image" in case.body:
        case.body["image"] = frame.image_path.read_bytes()
    if pick == 3:
        intr = frame.intrinsics
        case.body.update(fx=intr.fx, fy=intr.fy, cx=intr.cx, cy=intr.cy)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_fuzz(case, fuzz_server, tiny):
    _steer(case, tiny)
    response = case.call(base_url=fuzz_server.url, timeout=60)
    STATUSES[response.status_code] = STATUSES.get(response.status_code, 0) + 1
    case.validate_response(response, checks=CHECKS)
    assert b"Traceback" not in response.content
