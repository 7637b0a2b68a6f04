"""The app's process settings (pneumonia.serving), without starting a server."""

from __future__ import annotations

import logging
import socket

import pytest
from PIL import Image

from pneumonia.errors import InvalidImageError
from pneumonia.serving import (LatestRequests, describe_address, StartError, cache_ttl_s, check_port_free, describe_failure, free_port,
                               read_address, save_image)


def test_an_older_request_of_a_session_stands_down_once_a_newer_one_began():
    order = LatestRequests()
    first = order.begin("page-a")
    other_page = order.begin("page-b")
    assert order.is_latest("page-a", first)
    second = order.begin("page-a")
    assert not order.is_latest("page-a", first) and order.is_latest("page-a", second)
    assert order.is_latest("page-b", other_page)  # sessions do not overtake each other


def test_latest_requests_remembers_a_bounded_number_of_sessions():
    order = LatestRequests(max_sessions=2)
    old = order.begin("a")
    order.begin("b")
    order.begin("c")
    assert len(order._latest) == 2
    assert order.is_latest("a", old)  # a forgotten session's request is not stopped


@pytest.mark.parametrize("value", ["abc", "", " 8080 ", "0", "65536", "1e3", "٣"])
def test_port_is_a_number_from_1_to_65535(value):
    environ = {"GRADIO_SERVER_PORT": value}
    if value.strip() in ("", "8080"):
        assert read_address(environ) == ("127.0.0.1", int(value.strip() or 7860))
    else:
        with pytest.raises(StartError, match="GRADIO_SERVER_PORT must be a port number from 1 to 65535"):
            read_address(environ)


def test_taken_port_is_found_before_serving():
    port = free_port()
    check_port_free("127.0.0.1", port)  # free: no error
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        with pytest.raises(StartError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port)
    with pytest.raises(StartError, match="not an address of this machine"):
        check_port_free("no-such-host.invalid", port)


def test_free_port_avoids_the_ports_people_run_apps_on():
    assert all(free_port() not in (7860, 7861) for _ in range(20))


@pytest.mark.parametrize("value, expected", [("", 3600), ("2", 2), ("0", 3600), ("-5", 3600), ("soon", 3600)])
def test_cache_ttl(value, expected):
    assert cache_ttl_s({"PNEUMONIA_CACHE_TTL_S": value}) == expected


def test_each_saved_image_gets_its_own_folder_and_no_metadata(tmp_path):
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    first, second = (save_image(image, tmp_path, "overlay.jpeg") for _ in range(2))
    assert first != second and first.endswith("overlay.jpeg")
    with Image.open(first) as saved:
        assert saved.size == (8, 8) and not saved.getexif()
    assert save_image(None, tmp_path, "overlay.jpeg") is None


def test_failures_are_described_in_a_sentence_and_logged_without_their_message(caplog):
    assert describe_failure(InvalidImageError("the upload is empty (0 bytes).")) == "The upload is empty (0 bytes)."
    try:
        raise RuntimeError("Doe^Jane")  # an unexpected error whose message quotes the upload
    except RuntimeError as exc:
        with caplog.at_level(logging.ERROR, logger="pneumonia.app"):
            message = describe_failure(exc)
    assert message == "The analysis failed unexpectedly. Try another file."
    assert "RuntimeError at test_serving.py:" in caplog.text and "Doe^Jane" not in caplog.text


@pytest.mark.parametrize("host, port, shared, expected", [
    ("127.0.0.1", 7860, False,
     "Serving on http://127.0.0.1:7860 (this machine only); for a public gradio.live link, run: python app.py --share"),
    ("0.0.0.0", 8080, False, "Serving on http://127.0.0.1:8080; for a public gradio.live link, run: python app.py --share"),
    ("127.0.0.1", 7861, True, "Serving on http://127.0.0.1:7861 (the public link is printed above)."),
])
def test_the_start_up_line_gives_the_projects_way_to_share(host, port, shared, expected):
    assert describe_address(host, port, shared) == expected
