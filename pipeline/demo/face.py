"""The demo's one real face: scikit-image's astronaut photo, its measured geometry and the
local warps that animate it.

In: nothing but the photo shipped inside the scikit-image wheel (no download).
Out: ``source_layers()`` (the photo as float RGB plus a soft person mask, so the background
can be recoloured per subject) and ``au_displacement`` (a smooth displacement field, in
photo pixels, for a set of facial action intensities). Coordinates are (x, y) in the
512x512 photo throughout.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

# MTCNN (facenet-pytorch 2.5.3) on the full photo, measured once offline: p = 0.999998.
FACE_BOX = (181.1, 62.2, 267.7, 172.1)  # x1 y1 x2 y2
EYE_L = (205.0, 101.7)
EYE_R = (246.8, 103.7)
NOSE = (224.7, 129.0)
MOUTH_L = (201.7, 139.2)
MOUTH_R = (245.3, 141.9)
# Measured by eye on a 3x enlargement (the detector gives no brow or lip points).
BROW_L = (204.0, 90.0)
BROW_R = (249.0, 91.5)
UPPER_LIP = (223.5, 137.5)
NOSE_BRIDGE = (225.5, 113.0)
MOUTH_C = (223.5, 141.0)

# Actions the demo animates (names follow the FACS codes they imitate).
ACTIONS = ("brow_lower", "eye_squeeze", "cheek_raise", "lip_raise", "nose_wrinkle",
           "lip_stretch", "blink")


def astronaut() -> np.ndarray:
    """``skimage.data.astronaut()`` (512, 512, 3) uint8, read straight from the wheel's PNG
    when it is where scikit-image keeps it: importing ``skimage.data`` costs ~1 s."""
    spec = importlib.util.find_spec("skimage")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "data", "astronaut.png")
        if os.path.exists(path):
            from PIL import Image  # deferred, like scipy below: keep `import pipeline.demo` light

            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
    from skimage import data

    return data.astronaut()


@functools.lru_cache(maxsize=1)
def source_layers() -> tuple[np.ndarray, np.ndarray]:
    """The photo as float32 RGB (512, 512, 3) in 0..255 and a person mask (512, 512) in 0..1.

    The mask keys out the light, grey studio backdrop, keeps everything inside the face
    (teeth and eye whites are as pale as the backdrop) and inside the collar ring, and cuts
    the flag and the shuttle model at the sides so a per-subject colour can replace them.
    Both arrays are read-only: they are shared by every render in the process.
    """
    from scipy import ndimage

    rgb = astronaut().astype(np.float32)
    chroma = rgb.max(-1) - rgb.min(-1)
    bright = rgb.mean(-1)
    key = np.clip((40.0 - chroma) / 20.0, 0, 1) * np.clip((bright - 140.0) / 30.0, 0, 1)
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    face = _inside_ellipse(xx, yy, (224.5, 117.0), (43.0, 62.0), 0.0)
    collar = _inside_ellipse(xx, yy, (210.0, 222.0), (104.0, 73.0), 22.0)  # tilted ring
    key *= ~(face | collar)
    band = np.clip((xx - 95.0) / 15.0, 0, 1) * np.clip((355.0 - xx) / 15.0, 0, 1)
    alpha = ndimage.gaussian_filter((1.0 - key) * band, 1.5).astype(np.float32)
    rgb.setflags(write=False)
    alpha.setflags(write=False)
    return rgb, alpha


def _inside_ellipse(xx: np.ndarray, yy: np.ndarray, centre: tuple[float, float],
                    radii: tuple[float, float], angle_deg: float) -> np.ndarray:
    t = np.radians(angle_deg)
    x, y = xx - centre[0], yy - centre[1]
    xr = x * np.cos(t) + y * np.sin(t)
    yr = -x * np.sin(t) + y * np.cos(t)
    return (xr / radii[0]) ** 2 + (yr / radii[1]) ** 2 < 1.0


def _bump(qx: np.ndarray, qy: np.ndarray, centre: tuple[float, float],
          sigma: tuple[float, float]) -> np.ndarray:
    dx = (qx - centre[0]) / sigma[0]
    dy = (qy - centre[1]) / sigma[1]
    return np.exp(-0.5 * (dx * dx + dy * dy))


def au_displacement(qx: np.ndarray, qy: np.ndarray,
                    intensity: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Displacement (dx, dy) to add to photo coordinates ``(qx, qy)`` before sampling.

    A renderer shows ``photo(q + d(q))`` at q: a displacement of -5 in y moves content
    5 px down, a "pinch" (d = (k - 1)(q - c) near c, k > 1) shrinks content towards c.
    Every action is a Gaussian-weighted local warp, so the face outside the moving regions
    stays put. Intensities are about 0..1 (expressive subjects go a bit above 1); unknown
    action names are an error.
    """
    unknown = set(intensity) - set(ACTIONS)
    if unknown:
        raise ValueError(f"unknown facial actions {sorted(unknown)}, expected some of {ACTIONS}")
    dx = np.zeros_like(qx, dtype=np.float32)
    dy = np.zeros_like(qy, dtype=np.float32)
    level = {name: float(intensity.get(name, 0.0)) for name in ACTIONS}

    if level["brow_lower"]:  # AU4: brows down and pulled together
        a = level["brow_lower"]
        for centre, inward in ((BROW_L, 1.0), (BROW_R, -1.0)):
            w = _bump(qx, qy, centre, (13.0, 6.0))
            dx -= inward * 2.0 * a * w
            dy -= 5.0 * a * w
    # Eye closure is a vertical pinch per eye, capped so that the map stays monotonic (a
    # Gaussian pinch folds over beyond k ~ 3.2). A squeeze reaches up into the brows; a
    # blink stays on the lids.
    for name, gain, sigma in (("eye_squeeze", 1.1, (10.0, 5.0)), ("blink", 2.0, (9.0, 3.5))):
        k = min(1.0 + gain * level[name], 3.1)
        if k != 1.0:
            for centre in (EYE_L, EYE_R):
                w = _bump(qx, qy, centre, sigma)
                dy += (k - 1.0) * (qy - centre[1]) * w
    if level["cheek_raise"]:  # AU6: cheeks push the lower lids up
        a = level["cheek_raise"]
        for centre in (EYE_L, EYE_R):
            w = _bump(qx, qy, (centre[0], centre[1] + 12.0), (12.0, 6.0))
            dy += 3.0 * a * w
    if level["nose_wrinkle"]:  # AU9: the bridge of the nose crumples vertically
        w = _bump(qx, qy, NOSE_BRIDGE, (7.0, 8.0))
        dy += 0.4 * level["nose_wrinkle"] * (qy - NOSE_BRIDGE[1]) * w
    if level["lip_raise"]:  # AU10: upper lip lifted
        w = _bump(qx, qy, UPPER_LIP, (17.0, 4.5))
        dy += 3.5 * level["lip_raise"] * w
    if level["lip_stretch"]:  # AU20: mouth pulled wider (k < 1 enlarges)
        w = _bump(qx, qy, MOUTH_C, (20.0, 8.0))
        dx -= 0.15 * level["lip_stretch"] * (qx - MOUTH_C[0]) * w
    return dx, dy
