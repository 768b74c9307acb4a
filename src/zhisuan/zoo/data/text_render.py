"""Printed text rendered with Pillow in the DejaVu fonts that matplotlib ships: OCR evaluation data.

Everything is a pure function of the seed: sample ``i`` of a set is drawn from its own generator
``default_rng([seed, salt, i])``, so a smaller set is a prefix of a larger one and the same seed
gives the same pixels on every machine with the same Pillow and fonts.

The text is Latin only (English words, numbers, dates, prices, punctuation): no font that ships
in an installed PyPI package here covers CJK, and rendering characters a font lacks would draw
boxes ("tofu"), not text.

>>> lines = text_lines(2, seed=0)
>>> lines[0].image.shape[2], lines[0].image.dtype.name
(3, 'uint8')
>>> page = text_pages(1, seed=0)[0]
>>> len(page.boxes) == len(page.texts)
True
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from zhisuan.errors import BackendUnavailableError

__all__ = [
    "FONT_NAMES",
    "TextLine",
    "TextPage",
    "font_dir",
    "font_path",
    "random_text",
    "render_line",
    "text_lines",
    "text_pages",
    "token_prompts",
]

# DejaVu faces: sans, serif and monospace; regular, bold and slanted.
FONT_NAMES: tuple[str, ...] = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSerif",
    "DejaVuSerif-Bold",
    "DejaVuSerif-Italic",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
)

_LINE_SALT = 101
_PAGE_SALT = 202

_WORD_LIST = (
    "the of and to in is for on with as by at from that this it be are was an or not have has "
    "all new more one time year data model card test report system power memory speed value "
    "price order total date number page line text section table figure result method sample "
    "server client network device driver version update service support account balance "
    "invoice payment customer address street city station market office school library "
    "water light green blue black white red north south east west river bridge garden "
    "window kitchen coffee paper letter market morning evening monday friday summer winter "
    "first second third last next open close start stop check enter print save delete "
    "quick brown fox jumps over lazy dog simple clear small large high low fast slow "
    "early late daily weekly annual public private local global final initial average "
    "please thank welcome hello notice warning error status ready done pending shipped "
    "delivered received returned approved rejected available reserved limited special "
    "London Paris Berlin Tokyo Beijing Shanghai Madrid Boston Sydney Toronto Oslo Rome "
    "January March April June July August October November December Monday Sunday"
)
_WORDS: tuple[str, ...] = tuple(dict.fromkeys(_WORD_LIST.split()))

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@cache
def font_dir() -> Path:
    """The folder of TrueType fonts inside matplotlib's package data (found without importing it)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            "matplotlib", "it ships the DejaVu fonts used to render text", "pip install matplotlib"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"
    if not (folder / f"{FONT_NAMES[0]}.ttf").is_file():
        raise BackendUnavailableError("matplotlib", f"no DejaVu fonts in {folder}", "pip install matplotlib")
    return folder


def font_path(name: str) -> Path:
    """Path of one DejaVu face, e.g. ``font_path("DejaVuSerif-Bold")``."""
    path = font_dir() / f"{name}.ttf"
    if not path.is_file():
        raise BackendUnavailableError(
            "matplotlib", f"font {name}.ttf is missing from {font_dir()}", "pip install matplotlib"
        )
    return path


@cache
def _font(name: str, size: int):  # -> ImageFont.FreeTypeFont
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path(name)), size)


# --- text content ------------------------------------------------------------------------------


def _word(rng: np.random.Generator) -> str:
    word = _WORDS[rng.integers(len(_WORDS))]
    style = rng.random()
    if style < 0.2:
        return word.capitalize()
    if style < 0.24:
        return word.upper()
    return word


def _number(rng: np.random.Generator) -> str:
    kind = rng.integers(8)
    if kind == 0:
        return str(rng.integers(0, 100))
    if kind == 1:
        return f"{rng.integers(1000, 1_000_000):,}"
    if kind == 2:
        return f"{rng.uniform(0, 1000):.2f}"
    if kind == 3:
        return f"{rng.integers(2000, 2031)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
    if kind == 4:
        return f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{rng.integers(1990, 2031)}"
    if kind == 5:
        return f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}"
    if kind == 6:
        return f"${rng.integers(1, 5000)}.{rng.integers(0, 100):02d}"
    return f"{rng.integers(1, 100)}%"


def _token(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.72:
        token = _word(rng)
    elif r < 0.94:
        token = _number(rng)
    elif r < 0.97:
        token = f"{_MONTHS[rng.integers(12)]} {rng.integers(1, 29)}, {rng.integers(1990, 2031)}"
    else:
        token = f"No. {rng.integers(1, 1000)}"
    r = rng.random()
    if r < 0.05:
        token = f"({token})"
    elif r < 0.08:
        token = f'"{token}"'
    return token


def random_text(
    rng: np.random.Generator, *, min_tokens: int = 2, max_tokens: int = 6, max_chars: int = 40
) -> str:
    """One line of printed-looking text: words, numbers, dates, prices and punctuation."""
    count = int(rng.integers(min_tokens, max_tokens + 1))
    tokens: list[str] = []
    for _ in range(count):
        token = _token(rng)
        if tokens and len(" ".join([*tokens, token])) > max_chars:
            break
        tokens.append(token)
    text = " ".join(tokens)
    r = rng.random()
    if r < 0.2:
        text += "."
    elif r < 0.27:
        text += ":"
    elif r < 0.32:
        text += "?"
    elif r < 0.36:
        text += "!"
    elif r < 0.46 and len(tokens) > 2:
        # a comma after the first token, as in "Paris, March 3"
        text = text.replace(" ", ", ", 1)
    return text


# --- rendering ----------------------------------------------------------------------------------

Color = tuple[int, int, int]


def _colors(rng: np.random.Generator) -> tuple[Color, Color]:
    """Dark ink on a light, slightly tinted paper."""
    base = int(rng.integers(0, 70))
    ink = tuple(int(np.clip(base + rng.integers(-15, 16), 0, 255)) for _ in range(3))
    paper_base = int(rng.integers(205, 256))
    paper = tuple(int(np.clip(paper_base - rng.integers(0, 20), 0, 255)) for _ in range(3))
    return ink, paper  # type: ignore[return-value]


def render_line(
    text: str,
    *,
    font: str,
    size: int,
    pad_x: int,
    pad_y: int,
    ink: Color = (0, 0, 0),
    paper: Color = (255, 255, 255),
) -> np.ndarray:
    """One text line cropped to its ink with ``pad_x``/``pad_y`` pixels around it: ``H x W x 3`` uint8 RGB."""
    from PIL import Image, ImageDraw

    face = _font(font, size)
    left, top, right, bottom = face.getbbox(text)
    width, height = right - left + 2 * pad_x, bottom - top + 2 * pad_y
    image = Image.new("RGB", (width, height), paper)
    ImageDraw.Draw(image).text((pad_x - left, pad_y - top), text, font=face, fill=ink)
    return np.asarray(image)


@dataclass(frozen=True, eq=False)
class TextLine:
    """A rendered line and what it says. ``image`` is ``H x W x 3`` uint8 RGB."""

    image: np.ndarray
    text: str
    font: str
    size_px: int


def _line(seed: int, index: int, *, max_tokens: int) -> TextLine:
    rng = np.random.default_rng([seed, _LINE_SALT, index])
    text = random_text(rng, max_tokens=max_tokens)
    font = FONT_NAMES[int(rng.integers(len(FONT_NAMES)))]
    size = int(rng.integers(16, 41))
    pad_x = round(size * rng.uniform(0.15, 0.5))
    pad_y = round(size * rng.uniform(0.1, 0.3))
    ink, paper = _colors(rng)
    image = render_line(text, font=font, size=size, pad_x=pad_x, pad_y=pad_y, ink=ink, paper=paper)
    return TextLine(image=image, text=text, font=font, size_px=size)


def text_lines(n: int, seed: int = 0, *, max_tokens: int = 6) -> list[TextLine]:
    """``n`` clean printed text lines (fonts, sizes 16–40 px, padding and colours drawn from the seed)."""
    return [_line(seed, i, max_tokens=max_tokens) for i in range(n)]


@dataclass(frozen=True, eq=False)
class TextPage:
    """A page with several lines of text; ``boxes`` is ``N x 4`` (x0, y0, x1, y1) of each line's ink."""

    image: np.ndarray
    boxes: np.ndarray
    texts: tuple[str, ...]
    fonts: tuple[str, ...]


def _page(seed: int, index: int) -> TextPage:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, _PAGE_SALT, index])
    width, height = int(rng.integers(720, 961)), int(rng.integers(560, 737))
    ink, paper = _colors(rng)
    image = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(image)
    wanted = int(rng.integers(3, 9))
    margin = int(rng.integers(20, 60))
    y = margin + int(rng.integers(0, 40))
    boxes: list[tuple[int, int, int, int]] = []
    texts: list[str] = []
    fonts: list[str] = []
    for _attempt in range(4 * wanted):
        if len(texts) == wanted:
            break
        font = FONT_NAMES[int(rng.integers(len(FONT_NAMES)))]
        size = int(rng.integers(18, 41))
        face = _font(font, size)
        text = random_text(rng, max_tokens=5)
        left, _, right, bottom = face.getbbox(text)
        if right - left > width - 2 * margin:
            continue  # too wide for this page: draw another line
        if y + bottom + margin > height:
            break
        x = margin + int(rng.integers(0, width - 2 * margin - (right - left) + 1))
        draw.text((x, y), text, font=face, fill=ink)
        x0, y0, x1, y1 = draw.textbbox((x, y), text, font=face)
        boxes.append((x0, y0, x1, y1))
        texts.append(text)
        fonts.append(font)
        y = y1 + int(size * rng.uniform(0.8, 2.5))
    pixels = np.asarray(image, dtype=np.float32)
    sigma = rng.uniform(0.0, 6.0)
    pixels = pixels + rng.normal(0.0, sigma, size=pixels.shape)
    return TextPage(
        image=np.clip(np.rint(pixels), 0, 255).astype(np.uint8),
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        texts=tuple(texts),
        fonts=tuple(fonts),
    )


def text_pages(n: int, seed: int = 0) -> list[TextPage]:
    """``n`` pages of 3–8 lines each, 18–40 px, at known positions, with mild Gaussian noise."""
    return [_page(seed, i) for i in range(n)]


def token_prompts(count: int, length: int, *, seed: int, vocab_size: int) -> np.ndarray:
    """``count`` seeded prompts of ``length`` token ids in ``[0, vocab_size)``: int64 [count, length]."""
    rng = np.random.default_rng([seed, 0x6972])
    return rng.integers(0, vocab_size, (count, length)).astype(np.int64)
