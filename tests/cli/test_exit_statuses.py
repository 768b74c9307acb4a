"""One exit-status table for every command, and inputs that used to end in an internal error (exit 3)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from zhisuan.cli import app as app_module

README = Path(__file__).resolve().parents[2] / "README.md"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exc:
        app_module.main(argv)
    return int(exc.value.code or 0), capsys.readouterr().err.strip().splitlines()


def test_readme_and_help_document_the_one_table(capsys: pytest.CaptureFixture[str]) -> None:
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", README.read_text(encoding="utf-8"), flags=re.M))
    assert sorted(map(int, rows)) == sorted(code for code, _ in app_module.EXIT_STATUSES)
    assert "Bad input prints one line (`error: ...`) and exits 1" not in README.read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        app_module.main(["--help"])
    assert exc.value.code in (0, None)
    helped = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 success; 1 a user error found while working; 2 usage error; 3 internal error" in helped


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["compare", "a.onnx", "b.onnx", "--threads", "-2"], 2, "'--threads'"),
        (["profile", "m.onnx", "--top", "-1"], 2, "'--top'"),
        (["zoo", "eval", "ppocr-cls", "--threads", "0"], 2, "'--threads'"),
        (["zoo", "export", "ppocr-cls", "--opset", "-1"], 2, "-1 is not an ONNX opset in 7.."),
        (["evaluate", "--suite", "nightly"], 2, "unknown suite 'nightly'"),
        (["compare", "a.onnx", "b.onnx", "--bogus"], 2, "No such option: --bogus"),
        (["rollout", "status", "m", "--server", "http://[::1"], 2, "is not a URL: Invalid IPv6 URL"),
        (["rollout", "promote", "m", "2", "--server", "http://127.0.0.1:99999"], 2, "Port out of range"),
        (["repo", "add", "ppocr-cls", "--repo", "/proc/zhisuan-no-such/repo", "--name", "m"], 1, "cannot write"),
        (["zoo", "show", "no-such-model"], 1, "unknown zoo model"),
    ],
)
def test_exit_status_and_one_line(argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    got, lines = _run(argv, capsys)
    assert got == code and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_output_under_a_regular_file_is_refused_before_exporting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def export(*_a: object, **_k: object) -> None:
        raise AssertionError("the export ran before -o was checked")

    monkeypatch.setattr("zhisuan.zoo.export", export)
    regular = tmp_path / "file"
    regular.write_text("x")
    code, lines = _run(["zoo", "export", "ppocr-cls", "-o", str(regular / "m.onnx")], capsys)
    assert code == 1 and lines == [f"error: cannot write {regular / 'm.onnx'}: {regular} is not a directory"]


def test_empty_onnx_file_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    code, lines = _run(["optimize", str(empty), "-o", str(tmp_path / "out.onnx")], capsys)
    assert code == 1 and lines == [f"error: cannot read ONNX model {empty}: it holds no graph"]


@pytest.mark.parametrize("record", ["[]", '{"fingerprint": []}', '"text"', "{"])
def test_resume_with_a_malformed_run_record_is_a_user_error(
    record: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rep"
    (out / ".partial").mkdir(parents=True)
    (out / ".partial" / "run.json").write_text(record)
    code, lines = _run(["evaluate", "--only", "EV-1", "-o", str(out), "--resume", "--json"], capsys)
    assert code == 1 and len(lines) == 1 and "run without --resume to start over" in lines[0], lines


def test_unreadable_path_from_a_library_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def listing(*_a: object, **_k: object) -> None:
        raise PermissionError(13, "Permission denied", "/srv/models")

    monkeypatch.setattr("zhisuan.serve.repository.Repository.list", listing)
    code, lines = _run(["repo", "list", "--repo", "/tmp", "--json"], capsys)
    assert (code, lines) == (1, ["error: /srv/models: Permission denied"])
    assert json.dumps(lines)  # plain text, no traceback


def test_deeply_nested_metadata_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = tmp_path / "meta.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    code, lines = _run(["pack", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "pkg"), "--metadata", f"@{deep}"], capsys)
    assert (code, lines) == (1, ["error: --metadata is nested too deeply"])
