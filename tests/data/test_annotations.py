"""The shared annotation readers: every problem is one error naming file, line and field."""

from __future__ import annotations

import pytest

from videolang.data.annotations import (
    AnnotationError,
    Identifier,
    Record,
    RelativePath,
    Seconds,
    Text,
    check_inside,
    read_csv_records,
    read_json_document,
    read_jsonl_records,
)


class Clip(Record):
    video: Identifier
    start: Seconds
    caption: Text
    path: RelativePath = "x.mp4"


def _jsonl(tmp_path, *lines: str):
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_good_records_keep_their_lines_and_ignore_extra_fields(tmp_path):
    path = _jsonl(tmp_path, '{"video": "v1", "start": 1, "caption": "a dog", "other": 3}', "",
                  '{"video": "v2", "start": 2.5, "caption": "a cat"}')
    records = read_jsonl_records(path, Clip)
    assert [(line, r.video, r.start) for line, r in records] == [(1, "v1", 1.0), (3, "v2", 2.5)]


@pytest.mark.parametrize(("line", "message"), [
    ('{"video": "v1", "start": "1", "caption": "x"}', "field 'start': Input should be a valid number"),
    ('{"video": "v1", "start": -1, "caption": "x"}', "field 'start': Input should be greater than or equal to 0"),
    ('{"video": "v1", "start": NaN, "caption": "x"}', "NaN is not a number JSON allows"),
    ('{"video": "v1", "start": 1e999, "caption": "x"}', "field 'start': Input should be a finite number"),
    ('{"video": "v1", "start": 1, "caption": "   "}', "field 'caption': String should match pattern"),
    ('{"video": "v1", "start": 1}', "field 'caption': Field required"),
    ('{"video": 7, "start": 1, "caption": "x"}', "field 'video': Input should be a valid string"),
    ('{"video": " v1", "start": 1, "caption": "x"}', "field 'video': String should match pattern"),
    ('{"video": "v1", "start": 1, "caption": "x", "path": "../etc/passwd"}', "field 'path': must be a path inside"),
    ('{"video": "v1", "start": 1, "caption": "x", "path": "/etc/passwd"}', "field 'path': must be a path inside"),
    ('{"video": "v1", "start": 1, "caption": "a\\u0000b"}', "field 'caption': contains a control character"),
    ('{"video": "v1", "start": true, "caption": "x"}', "field 'start': Input should be a valid number"),
    ('{"video": "v1", "start": 1, "cap', "not valid JSON"),
    ('["v1", 1, "x"]', "expected a JSON object, got list"),
])
def test_each_problem_names_file_line_and_field(tmp_path, line, message):
    path = _jsonl(tmp_path, '{"video": "v0", "start": 0, "caption": "fine"}', line)
    with pytest.raises(AnnotationError) as err:
        read_jsonl_records(path, Clip)
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value)


def test_bad_utf8_empty_and_missing_files(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"video": "v", "start": 0, "caption": "ok"}\n{"video": "\xff"}\n')
    with pytest.raises(AnnotationError, match=rf"{path}:2: not UTF-8 text"):
        read_jsonl_records(path, Clip)
    with pytest.raises(AnnotationError, match="no annotations"):
        read_jsonl_records(_jsonl(tmp_path, ""), Clip)
    with pytest.raises(AnnotationError, match="annotation file not found"):
        read_jsonl_records(tmp_path / "missing.jsonl", Clip)


def test_csv_cells_are_parsed_and_short_rows_are_named(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("video,start,caption\nv1,1.5,a dog\nv2,nan,a cat\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"{path}:3: field 'start': Input should be a finite number"):
        read_csv_records(path, Clip)
    path.write_text("video,start,caption\nv1,1.5,a dog\nv2,2\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"{path}:3: 2 cells, the header has 3"):
        read_csv_records(path, Clip)
    path.write_text("video,start,caption\nv1,1.5,a dog\n", encoding="utf-8")
    assert read_csv_records(path, Clip, required_columns=["video"])[0][1].start == 1.5
    with pytest.raises(AnnotationError, match="missing column 'label'"):
        read_csv_records(path, Clip, required_columns=["label"])


def test_truncated_json_documents_name_line_and_column(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{\n  "v1": {"start": [0, 1],\n', encoding="utf-8")
    with pytest.raises(AnnotationError, match=rf"{path}:3: not valid JSON"):
        read_json_document(path)


def test_paths_cannot_leave_the_data_folder_through_links(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)
    assert check_inside(root, "videos/a.mp4", "x:1") == root / "videos/a.mp4"
    with pytest.raises(AnnotationError, match="leads outside the data folder"):
        check_inside(root, "escape/secret.mp4", "x:1")
