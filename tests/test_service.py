"""The HTTP service over a real loopback socket: uvicorn runs in a background thread on a
free 127.0.0.1 port, with a tiny ACE map built once for the module (tests/tiny_map.py).

Checks: listing and health; poses from concurrent requests equal those of the Python
localizer and of ``aceg localize`` on the same images; every rejection case answers a
4xx with a JSON error body; the work queue answers 503 when full while health stays up;
and a hypothesis-driven fuzz of the endpoints never gets a 5xx.
"""

from __future__ import annotations

import shutil
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aceg.cli.main import main
from aceg.data.camera import Intrinsics, quaternion_to_rotation
from aceg.evaluation.results import read_results
from aceg.localization.localizer import Localizer
from aceg.service.app import ServiceConfig
from aceg.service.queue import QueueFull
from aceg.service.server import BackgroundServer
from service_client import TIMEOUT, ServeProcess, assert_error, form, png_header_only
from service_client import post as client_post
from tiny_map import tiny_map

API_KEY = "test-key-0123"
AUTH = {"X-API-Key": API_KEY}
MAX_UPLOAD = 200_000
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_map(tmp_path_factory)


@pytest.fixture(scope="module")
def maps_dir(tiny, tmp_path_factory):
    """The tiny map plus files the service must skip: a corrupt map and a badly named one."""
    folder = tmp_path_factory.mktemp("service_maps")
    shutil.copy(tiny.map_path, folder / "corner.map")
    (folder / "broken.map").write_bytes(b"\x00garbage, not safetensors" * 10)
    shutil.copy(tiny.map_path, folder / "bad name.map")
    (folder / "notes.txt").write_text("not a map")
    return folder


@pytest.fixture(scope="module")
def server(maps_dir):
    config = ServiceConfig(maps_dir, api_key=API_KEY, workers=2, queue=8,
                           max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS)
    with BackgroundServer(config) as srv:
        yield srv


@pytest.fixture(scope="module")
def python_localizer(tiny):
    return Localizer(tiny.map_path)


def post(server, image: bytes, data: dict, name: str = "corner", ctype: str = "image/png",
         filename: str = "q.png", headers: dict | None = None) -> requests.Response:
    """POST /maps/{name}/localize with the API key (unless ``headers`` are given)."""
    return client_post(server.url, image, data, name, ctype, filename,
                       AUTH if headers is None else headers)


# -- listing, health, docs ---------------------------------------------------------------


def test_health_and_maps_listing(server, tiny):
    health = requests.get(f"{server.url}/health", headers=AUTH, timeout=TIMEOUT)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["maps"] == 1 and body["workers"] == 2
    maps = requests.get(f"{server.url}/maps", headers=AUTH, timeout=TIMEOUT).json()["maps"]
    assert maps == [{"name": "corner", "size": tiny.map_path.stat().st_size, "frames": 8,
                     "method": "ace", "model": "ace", "encoder": "xfeat", "scene": "corner"}]
    # the corrupt and the badly named map file were skipped with a reason
    problems = " ".join(server.app.state.registry.problems)
    assert "broken.map" in problems and "bad name.map" in problems


def test_openapi_documents_conventions(server):
    spec = requests.get(f"{server.url}/openapi.json", headers=AUTH, timeout=TIMEOUT).json()
    assert {"/health", "/maps", "/maps/{name}/localize"} <= set(spec["paths"])
    text = spec["info"]["description"]
    assert "camera-to-world" in text and "(w, x, y, z)" in text and "OpenCV" in text
    body_schema = spec["paths"]["/maps/{name}/localize"]["post"]["requestBody"]
    assert "multipart/form-data" in body_schema["content"]
    docs = requests.get(f"{server.url}/docs", headers=AUTH, timeout=TIMEOUT)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# -- poses -------------------------------------------------------------------------------


def test_concurrent_requests_match_python_localizer(server, tiny, python_localizer, tmp_path):
    """16 requests from 8 threads (PNG, JPEG and a distorted-camera case) give exactly the
    poses the Python localizer computes on the same image files."""
    jobs = []
    for i, frame in enumerate(tiny.scene.frames):
        intr = frame.intrinsics
        path, ctype = frame.image_path, "image/png"
        if i == 1:  # a JPEG upload
            path, ctype = tmp_path / "q1.jpg", "image/jpeg"
            cv2.imwrite(str(path), cv2.imread(str(frame.image_path)),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
        if i == 2:  # distortion coefficients are passed through
            intr = Intrinsics(intr.fx, intr.fy, intr.cx, intr.cy, (0.02, -0.01, 0.001, 0.0))
        expected = python_localizer.localize(path, intr)
        assert expected.localized, expected.reason
        jobs.append((path.read_bytes(), form(intr), ctype, path.name, expected))

    def call(job):
        data, fields, ctype, filename, _ = job
        return post(server, data, fields, ctype=ctype, filename=filename)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, jobs + jobs))
    for job, response in zip(jobs + jobs, responses, strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        expected = job[4]
        assert body["localized"] and body["reason"] == ""
        assert body["inliers"] == expected.inliers
        assert body["correspondences"] == expected.correspondences
        assert body["confident"] == expected.confident
        pose = np.array(body["cam_to_world"])
        np.testing.assert_allclose(pose, expected.cam_to_world, atol=1e-9)
        np.testing.assert_allclose(body["translation"], pose[:3, 3], atol=0)
        np.testing.assert_allclose(quaternion_to_rotation(body["rotation_wxyz"]), pose[:3, :3],
                                   atol=1e-9)
        assert body["rotation_wxyz"][0] >= 0
        assert body["image"] == {"filename": job[3], "width": 160, "height": 120}
        assert {"queue", "decode", "prepare", "encode", "regress", "ransac", "localize",
                "total"} <= set(body["timings"])
    # the tiny map is good enough that these are real poses of the mapping cameras
    for job, frame in zip(jobs, tiny.scene.frames, strict=True):
        centre = np.array(job[4].cam_to_world)[:3, 3]
        assert np.linalg.norm(centre - frame.camera_centre) < 0.3


def test_same_poses_as_cli(server, tiny, tmp_path):
    """``aceg localize`` on the ACE-layout copy of the scene and the service agree (up to
    the text precision of the results file)."""
    out = tmp_path / "poses.txt"
    assert main(["localize", str(tiny.map_path), str(tiny.ace_dir), "--out", str(out)]) == 0
    cli = {r.name: r for r in read_results(out)}
    assert len(cli) == len(tiny.scene)
    for frame in tiny.scene.frames[:4]:
        response = post(server, frame.image_path.read_bytes(), form(frame.intrinsics))
        assert response.status_code == 200
        mine = np.array(response.json()["cam_to_world"])
        np.testing.assert_allclose(mine, cli[frame.name].cam_to_world, atol=1e-5)


# -- rejections --------------------------------------------------------------------------


def frame0(tiny):
    frame = tiny.scene.frames[0]
    return frame.image_path.read_bytes(), form(frame.intrinsics)


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""},
                                     {"Authorization": "Bearer wrong"}])
def test_api_key_required_everywhere(server, tiny, headers):
    for method, path in (("get", "/health"), ("get", "/maps"), ("get", "/docs"),
                         ("get", "/openapi.json"), ("get", "/no/such/path")):
        response = requests.request(method, server.url + path, headers=headers, timeout=TIMEOUT)
        assert_error(response, 401, "unauthorized")
    image, data = frame0(tiny)
    assert_error(post(server, image, data, headers=headers), 401, "unauthorized")


def test_bearer_token_accepted(server):
    response = requests.get(f"{server.url}/health",
                            headers={"Authorization": f"Bearer {API_KEY}"}, timeout=TIMEOUT)
    assert response.status_code == 200


@pytest.mark.parametrize("name", ["nope", "corner.map", "CORNER", "broken", "bad name", "..",
                                  "..%2Fcorner", "%2e%2e%2fmaps%2fcorner", "..%5Ccorner",
                                  "corner%00", "%2Fetc%2Fpasswd"])
def test_unknown_or_traversing_map_names(server, tiny, name):
    image, data = frame0(tiny)
    response = post(server, image, data, name=name)
    assert_error(response, 404)


def test_unknown_path_and_method(server):
    assert_error(requests.get(f"{server.url}/maps/corner", headers=AUTH, timeout=TIMEOUT), 404,
                 "not_found")
    assert_error(requests.get(f"{server.url}/maps/corner/localize", headers=AUTH,
                              timeout=TIMEOUT), 405, "method_not_allowed")


def test_bad_uploads(server, tiny):
    image, data = frame0(tiny)
    cases = [
        (post(server, b"hello, I am text", data), 415, "not_an_image"),
        (post(server, image, data, ctype="text/plain"), 415, "unsupported_media_type"),
        (post(server, image, data, ctype="application/octet-stream"), 415,
         "unsupported_media_type"),
        (post(server, image, data, ctype="image/jpeg"), 415, "content_type_mismatch"),
        (post(server, b"", data), 400, "empty_image"),
        (post(server, image[:16], data), 400, "corrupt_image"),  # header cut short
        (post(server, image[: len(image) // 2], data), 400, "corrupt_image"),  # data cut
        (post(server, image[:40] + bytes(200), data), 400, "corrupt_image"),  # zeroed data
        (post(server, b"\xff\xd8\xff" + bytes(100), data, ctype="image/jpeg"), 400,
         "corrupt_image"),
        (post(server, png_header_only(5000, 5000), data), 413, "image_too_large"),
        (post(server, png_header_only(2**31 - 1, 2**31 - 1), data), 413, "image_too_large"),
        (post(server, image + bytes(MAX_UPLOAD), data), 413, "upload_too_large"),
        (post(server, bytes(5 * MAX_UPLOAD), data), 413, "request_too_large"),
    ]
    for response, status, code in cases:
        assert_error(response, status, code)


def test_body_limit_without_content_length(server, tiny):
    """A chunked body (no Content-Length) is cut off once it exceeds the limit."""
    def chunks():
        yield (b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(100):
            yield bytes(20_000)

    response = requests.post(f"{server.url}/maps/corner/localize", data=chunks(),
                             headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
                             timeout=TIMEOUT)
    assert_error(response, 413, "request_too_large")


@pytest.mark.parametrize("change", [
    {"fx": "0"}, {"fy": "-100"}, {"fx": "nan"}, {"fy": "inf"}, {"cx": "-inf"},
    {"cx": "500"}, {"cx": "-3"}, {"cy": "120"}, {"cy": "-0.6"}, {"k1": "nan"}, {"p2": "inf"},
])
def test_bad_intrinsics(server, tiny, change):
    image, data = frame0(tiny)
    assert_error(post(server, image, {**data, **change}), 400, "invalid_intrinsics")


@pytest.mark.parametrize("change", [{"fx": "abc"}, {"cy": ""}, {"k1": "1e"}, {"fx": None}])
def test_malformed_or_missing_fields(server, tiny, change):
    image, data = frame0(tiny)
    fields = {k: v for k, v in {**data, **change}.items() if v is not None}
    assert_error(post(server, image, fields), 422, "invalid_request")


def test_missing_image_and_not_multipart(server, tiny):
    _, data = frame0(tiny)
    response = requests.post(f"{server.url}/maps/corner/localize", data=data, headers=AUTH,
                             timeout=TIMEOUT)
    assert_error(response, 422, "invalid_request")
    response = requests.post(f"{server.url}/maps/corner/localize", json=data, headers=AUTH,
                             timeout=TIMEOUT)
    assert_error(response, 422, "invalid_request")
    response = requests.post(f"{server.url}/maps/corner/localize", data=b"--x\r\ngarbage",
                             headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
                             timeout=TIMEOUT)
    assert response.status_code in (400, 422)
    assert_error(response, response.status_code)


def test_full_queue_answers_503_and_health_stays_up(server, tiny):
    work = server.app.state.work
    image, data = frame0(tiny)
    slots = []
    try:
        while True:  # occupy every worker and queue slot
            try:
                slots.append(work.reserve())
            except QueueFull:
                break
        assert len(slots) == work.admissible == 10
        response = post(server, image, data)
        assert_error(response, 503, "busy")
        assert int(response.headers["retry-after"]) >= 1
        health = requests.get(f"{server.url}/health", headers=AUTH, timeout=TIMEOUT)
        assert health.status_code == 200 and health.json()["in_flight"] == 10
    finally:
        for slot in slots:
            work.cancel(slot)
    assert post(server, image, data).status_code == 200


def test_queue_overflow_under_real_load(maps_dir, tiny):
    """One worker, no queue: of 6 simultaneous requests at least one is served and every
    other one gets 503 (never a hang or a crash)."""
    config = ServiceConfig(maps_dir, workers=1, queue=0)
    image, data = frame0(tiny)
    barrier = threading.Barrier(6)

    with BackgroundServer(config) as srv:
        post(srv, image, data, headers={})  # warm up: load the map

        def call(_):
            barrier.wait()
            return post(srv, image, data, headers={})

        with ThreadPoolExecutor(6) as pool:
            statuses = [r.status_code for r in pool.map(call, range(6))]
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses


# -- fuzz --------------------------------------------------------------------------------


def _fuzz_images(valid: bytes):
    return st.one_of(
        st.binary(max_size=600),
        st.just(valid),
        st.integers(0, len(valid)).map(lambda n: valid[:n]),
        st.tuples(st.integers(0, len(valid) - 1), st.binary(min_size=1, max_size=64)).map(
            lambda t: valid[: t[0]] + t[1] + valid[t[0] + len(t[1]):]),
        st.tuples(st.integers(1, 70_000), st.integers(1, 70_000)).map(
            lambda wh: png_header_only(*wh)),
        st.binary(max_size=64).map(lambda b: b"\xff\xd8\xff" + b),
    )


_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-1e3, 1e3).map(repr),
    st.integers(-10**30, 10**30).map(str),
    st.text(max_size=12),
)


@settings(max_examples=70, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_localize_never_5xx(server, tiny, data):
    valid, base = frame0(tiny)
    image = data.draw(_fuzz_images(valid), label="image")
    fields = dict(base)
    for key in data.draw(st.lists(st.sampled_from(
            ["fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "extra"]), max_size=4),
            label="changed"):
        fields[key] = data.draw(_NUMBERS, label=key)
    for key in data.draw(st.lists(st.sampled_from(["fx", "fy", "cx", "cy"]), max_size=1),
                         label="dropped"):
        fields.pop(key, None)
    name = data.draw(st.one_of(st.just("corner"), st.text(max_size=20)), label="name")
    ctype = data.draw(st.sampled_from(["image/png", "image/jpeg", "text/plain", "",
                                       "image/png; q=1", "application/octet-stream"]),
                      label="ctype")
    filename = data.draw(st.text(max_size=30), label="filename")
    response = post(server, image, fields, name=urllib.parse.quote(name, safe=""), ctype=ctype,
                    filename=filename or "x")
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_error(response, response.status_code)
    else:
        assert response.status_code == 200
        body = response.json()
        assert body["localized"] == (body["cam_to_world"] is not None)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
       path=st.lists(st.text(max_size=12), max_size=4),
       body=st.binary(max_size=300),
       ctype=st.sampled_from(["application/json", "multipart/form-data; boundary=zz",
                              "application/x-www-form-urlencoded", "text/plain"]))
def test_fuzz_any_request_never_5xx(server, method, path, body, ctype):
    url = server.url + "/" + "/".join(urllib.parse.quote(p, safe="") for p in path)
    response = requests.request(method, url, data=body, timeout=TIMEOUT,
                                headers={**AUTH, "Content-Type": ctype})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_error(response, response.status_code)


# -- the command -------------------------------------------------------------------------


def test_aceg_serve_command(maps_dir, tmp_path):
    """``aceg serve`` as a subprocess on a free loopback port, key from ACEG_API_KEY."""
    with ServeProcess(maps_dir, "--workers", "1", env={"ACEG_API_KEY": "from-env"},
                      start_timeout=60) as srv:
        response = requests.get(f"{srv.url}/health", headers={"X-API-Key": "from-env"},
                                timeout=5)
        assert response.status_code == 200 and response.json()["maps"] == 1
        assert_error(requests.get(f"{srv.url}/maps", timeout=5), 401, "unauthorized")
    assert "serving 1 map(s)" in srv.output and "corner" in srv.output
    assert "broken.map" in srv.output  # the skipped file is reported


def test_aceg_serve_bad_arguments(tmp_path, capsys):
    assert main(["serve", "--maps", str(tmp_path / "missing")]) == 2
    assert "maps folder not found" in capsys.readouterr().err
    assert main(["serve", "--maps", str(tmp_path)]) == 2
    assert "no usable *.map files" in capsys.readouterr().err
    assert main(["serve", "--maps", str(tmp_path), "--workers", "0"]) == 2


def test_map_file_gone_after_start_is_a_json_500(tiny, tmp_path):
    """A map that vanished after start-up is a server-side fault: a JSON 500 naming the
    map (not the server's path), and the service keeps answering."""
    folder = tmp_path / "maps"
    folder.mkdir()
    shutil.copy(tiny.map_path, folder / "gone.map")
    image, data = frame0(tiny)
    with BackgroundServer(ServiceConfig(folder)) as srv:
        (folder / "gone.map").unlink()
        response = post(srv, image, data, name="gone", headers={})
        assert_error(response, 500, "map_unavailable")
        assert str(folder) not in response.json()["message"]
        assert requests.get(f"{srv.url}/health", timeout=TIMEOUT).status_code == 200


def test_error_messages_stay_on_one_line(server):
    response = requests.get(f"{server.url}/a%0Ab%0D%09c", headers=AUTH, timeout=TIMEOUT)
    assert_error(response, 404, "not_found")
