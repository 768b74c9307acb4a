"""Labelled photographs that installed PyPI packages ship, and deterministic views of them.

scikit-image ships sample photographs in ``skimage/data`` and matplotlib a few in
``mpl-data/sample_data``. They are read straight from site-packages (never through
``skimage.data``, whose other images are downloaded on demand), pinned by sha256, and labelled
here by hand with the *set* of ImageNet-1k class indices that correctly name what is in them.
Photos with no fitting ImageNet class (the astronaut, the gift-box drawing, the horse
silhouette, the synthetic motion-blurred clock) are left out.

>>> views = labelled_views(224)  # doctest: +SKIP
>>> views[0].photo, views[0].view, views[0].pixels.shape, views[0].labels  # doctest: +SKIP
('chelsea', 'center', (224, 224, 3), (281, 282, 285))
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zhisuan._io import verify_sha256
from zhisuan.errors import BackendUnavailableError

__all__ = ["PHOTOS", "VIEWS", "LabelledView", "Photo", "labelled_views", "load_photo", "make_view", "skimage_photo"]


@dataclass(frozen=True)
class Photo:
    name: str
    package: str  # import name of the package that ships the file
    relpath: str  # path inside that package
    sha256: str
    labels: tuple[int, ...]  # every ImageNet-1k class index that correctly names the photo
    content: str  # what the photo shows, and why these labels

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise BackendUnavailableError(self.package, "it ships the evaluation photos but is not installed", f"pip install {self.package}")
        path = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        if not path.is_file():
            raise BackendUnavailableError(self.package, f"{self.relpath} is missing from the installed package")
        verify_sha256(path, self.sha256)
        return path


PHOTOS: tuple[Photo, ...] = (
    Photo("chelsea", "skimage", "data/chelsea.png",
          "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
          (281, 282, 285), "close-up of a tabby cat: tabby, tiger cat, Egyptian cat"),
    Photo("coffee", "skimage", "data/coffee.png",
          "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
          (967, 968, 504), "a cup of espresso on a saucer: espresso, cup, coffee mug"),
    Photo("rocket", "skimage", "data/rocket.jpg",
          "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
          (657, 744, 812), "a launch vehicle on its pad at dusk: missile, projectile, space shuttle"),
    Photo("camera", "skimage", "data/camera.png",
          "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
          (872, 759, 732), "grayscale: a man behind a camera on a tripod: tripod, reflex camera, Polaroid camera"),
    Photo("motorcycle_left", "skimage", "data/motorcycle_left.png",
          "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
          (665, 670), "a red motorcycle in a garage (ImageNet has no motorcycle class): moped, motor scooter"),
    Photo("motorcycle_right", "skimage", "data/motorcycle_right.png",
          "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
          (665, 670), "the other view of the same stereo pair: moped, motor scooter"),
    Photo("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
          "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
          (652, 834, 457, 906), "portrait in US Navy dress uniform with a tie: military uniform, suit, bow tie, Windsor tie"),
)


def load_photo(photo: Photo) -> np.ndarray:
    """The photo as RGB uint8 ``[height, width, 3]`` (grayscale is repeated, alpha dropped)."""
    from PIL import Image

    with Image.open(photo.path()) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def skimage_photo(name: str) -> np.ndarray | None:
    """A scikit-image sample photo (``data/NAME``) as RGB uint8, or None if it is not installed.

    Unpinned, unlike :data:`PHOTOS`: these only feed calibration, never a score.
    """
    from PIL import Image

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        return None
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def _short_side_center(rgb: np.ndarray, short: int, size: int) -> np.ndarray:
    """Resize so the short side is ``short``, then take the centred ``size`` x ``size`` crop."""
    h, w = rgb.shape[:2]
    scale = short / min(h, w)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = _resize(rgb, nw, nh)
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[top : top + size, left : left + size]


def _view_center(rgb: np.ndarray, size: int) -> np.ndarray:
    return _short_side_center(rgb, round(size * 256 / 224), size)  # the usual 256 -> 224 crop


def _view_wide(rgb: np.ndarray, size: int) -> np.ndarray:
    return _short_side_center(rgb, size, size)  # the whole short side


def _view_zoom(rgb: np.ndarray, size: int) -> np.ndarray:
    return _short_side_center(rgb, round(size * 320 / 224), size)  # a tighter crop


def _view_full(rgb: np.ndarray, size: int) -> np.ndarray:
    return _resize(rgb, size, size)  # the whole photo, aspect ratio not kept


def _view_flip(rgb: np.ndarray, size: int) -> np.ndarray:
    return np.ascontiguousarray(_view_center(rgb, size)[:, ::-1])


VIEWS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "center": _view_center,
    "wide": _view_wide,
    "zoom": _view_zoom,
    "full": _view_full,
    "flip": _view_flip,
}


def make_view(rgb: np.ndarray, view: str, size: int) -> np.ndarray:
    """One deterministic ``size`` x ``size`` RGB uint8 view of a photo."""
    return VIEWS[view](rgb, size)


@dataclass(frozen=True)
class LabelledView:
    photo: str
    view: str
    pixels: np.ndarray  # [size, size, 3] uint8 RGB
    labels: tuple[int, ...]


def labelled_views(size: int = 224, photos: tuple[Photo, ...] = PHOTOS) -> list[LabelledView]:
    """Every view of every photo, photo-major, in a fixed order (len(photos) x len(VIEWS))."""
    out = []
    for photo in photos:
        rgb = load_photo(photo)
        out.extend(LabelledView(photo.name, view, make_view(rgb, view, size), photo.labels) for view in VIEWS)
    return out
