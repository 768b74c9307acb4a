"""Rendered OCR evaluation data: fonts found without matplotlib.pyplot, seeded, boxes where the ink is."""

from __future__ import annotations

import sys

import numpy as np

from zhisuan.zoo.data import text_render
from zhisuan.zoo.data.text_render import (
    FONT_NAMES,
    font_dir,
    font_path,
    random_text,
    render_line,
    text_lines,
    text_pages,
)


def test_fonts_are_found_in_matplotlib_package_data_without_importing_it() -> None:
    assert font_dir().name == "ttf"
    assert font_dir().parent.name == "fonts"
    for name in FONT_NAMES:
        assert font_path(name).is_file()
    assert "matplotlib.pyplot" not in sys.modules


def test_same_seed_gives_the_same_lines_byte_for_byte() -> None:
    first, second = text_lines(12, seed=7), text_lines(12, seed=7)
    assert [line.text for line in first] == [line.text for line in second]
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(first, second, strict=True))
    other = text_lines(12, seed=8)
    assert [line.text for line in other] != [line.text for line in first]


def test_a_smaller_set_is_a_prefix_of_a_larger_one() -> None:
    small, large = text_lines(3, seed=4), text_lines(6, seed=4)
    assert [line.text for line in small] == [line.text for line in large[:3]]
    assert small[2].image.tobytes() == large[2].image.tobytes()


def test_lines_are_dark_ink_on_light_paper_in_several_fonts() -> None:
    lines = text_lines(40, seed=0)
    assert len({line.font for line in lines}) >= 5
    for line in lines:
        gray = line.image.mean(axis=2)
        assert line.image.dtype == np.uint8 and line.image.ndim == 3
        assert np.median(gray) > 170  # mostly paper
        assert gray.min() < 110  # with real ink on it
        assert 16 <= line.size_px <= 40
        assert line.text == line.text.strip() and "  " not in line.text


def test_random_text_mixes_words_numbers_and_punctuation() -> None:
    rng = np.random.default_rng(0)
    texts = [random_text(rng) for _ in range(300)]
    joined = "".join(texts)
    assert any(c.isdigit() for c in joined)
    assert any(c.isalpha() for c in joined)
    assert set(",.:%$/-") <= set(joined)
    assert all(t.isascii() for t in texts)
    assert max(len(t) for t in texts) <= 41  # 40 plus a closing punctuation mark


def test_render_line_keeps_the_padding_free_of_ink() -> None:
    image = render_line(
        "Hello 2024", font="DejaVuSerif", size=30, pad_x=9, pad_y=6, ink=(0, 0, 0), paper=(255, 255, 255)
    )
    gray = image.mean(axis=2)
    assert (gray[:, :8] == 255).all() and (gray[:, -8:] == 255).all()
    assert (gray[:5] == 255).all() and (gray[-5:] == 255).all()
    assert gray[6:-6, 9:-9].min() < 50


def test_pages_are_seeded_and_their_boxes_hold_the_ink() -> None:
    pages = text_pages(4, seed=3)
    again = text_pages(4, seed=3)
    for page, same in zip(pages, again, strict=True):
        assert page.image.tobytes() == same.image.tobytes()
        np.testing.assert_array_equal(page.boxes, same.boxes)
        height, width = page.image.shape[:2]
        assert 3 <= len(page.boxes) == len(page.texts) <= 8
        assert (page.boxes[:, 0] >= 0).all() and (page.boxes[:, 2] <= width).all()
        assert (page.boxes[:, 1] >= 0).all() and (page.boxes[:, 3] <= height).all()
        assert (page.boxes[:, 2] > page.boxes[:, 0]).all() and (page.boxes[:, 3] > page.boxes[:, 1]).all()
        # lines are stacked top to bottom without overlapping
        assert (page.boxes[1:, 1] >= page.boxes[:-1, 3]).all()
        gray = page.image.mean(axis=2)
        paper = np.median(gray)
        for x0, y0, x1, y1 in page.boxes.astype(int):
            assert gray[y0:y1, x0:x1].min() < paper - 80  # ink inside every box
        outside = np.ones(gray.shape, dtype=bool)
        for x0, y0, x1, y1 in page.boxes.astype(int):
            outside[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = False
        assert np.percentile(gray[outside], 0.1) > paper - 40  # only paper and noise elsewhere


def test_module_exports_what_it_documents() -> None:
    assert set(text_render.__all__) <= set(dir(text_render))
