"""Renders animated demo clips of the astronaut face: one look per subject, one motion plan
per clip.

In: an ``Appearance`` (a subject's colour, framing, background and expressiveness, drawn
by ``sample_appearance`` from a seeded generator) and a ``plan_clip`` result (per-frame head
pose and facial action intensities for a label).
Out: ``render_clip`` -> uint8 frames (T, size, size, 3). The same inputs
give the same frames bit for bit (numpy only).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from pipeline.demo.face import FACE_BOX, au_displacement, source_layers

# Video framing: the output's centre shows this photo point, the output's width spans
# VIEW_SPAN photo pixels at zoom 1 (face about a third of the frame, shoulders below).
VIEW_CENTRE = (224.5, 140.0)
VIEW_SPAN = 250.0
# Pre-cropped faces: the detector's box with a 25 % margin, squared, as a face stage crops.
CROP_CENTRE = ((FACE_BOX[0] + FACE_BOX[2]) / 2, (FACE_BOX[1] + FACE_BOX[3]) / 2)
CROP_SPAN = 1.25 * max(FACE_BOX[2] - FACE_BOX[0], FACE_BOX[3] - FACE_BOX[1])

# Relative weight of each action in a pain expression (brows, eyes, cheeks, nose, lip).
PAIN_ACTIONS = {"brow_lower": 1.0, "eye_squeeze": 1.0, "cheek_raise": 1.0,
                "lip_raise": 1.0, "nose_wrinkle": 0.8, "lip_stretch": 0.6}
BLINK_PROFILE = (0.45, 1.0, 0.55, 0.15)  # about 0.2 s of eyelid closure at 20 fps

_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Appearance:
    """How one subject looks and moves; every clip of the subject shares it."""

    hue_deg: float = 0.0               # hue rotation of the person (YIQ plane)
    saturation: float = 1.0            # chroma gain
    brightness: float = 0.0            # added grey levels
    contrast: float = 1.0              # gain around mid-grey
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # white balance per channel
    background: tuple[int, int, int] = (128, 128, 128)   # backdrop colour, RGB
    zoom: float = 1.0                  # > 1 shows the face larger
    shift: tuple[float, float] = (0.0, 0.0)  # face offset, fraction of the frame (x, y)
    angle_deg: float = 0.0             # roll of the head
    mirror: bool = False               # left-right flip
    expressiveness: float = 1.0        # scales every facial action


# One studio for every subject, as in lab recordings (BioVid, StressID): a light grey wall.
STUDIO_BACKDROP = (150, 150, 150)


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """A random but plausible subject recorded in the same studio as the others, with the
    same camera and head rest: skin tone and lighting (hue, saturation, brightness,
    contrast, white balance) vary a little, as between the people of one lab dataset, and
    expressiveness about two-fold; backdrop and framing are shared and nobody is mirrored.
    The demo's image tower is random: unlike a real CLIP it is not invariant to a face's
    framing, and a few pixels of per-subject offset in the crops (per-subject zoom, offset
    and roll, which shift MTCNN's boxes) or per-subject backdrops drown the facial motion
    (measured: CLIP-AU 0.44-0.69 with per-subject framing, at chance with backdrops as
    well, 0.75-0.94 without either). ``Appearance`` can still express them."""
    return Appearance(
        hue_deg=float(rng.uniform(-3, 3)),
        saturation=float(rng.uniform(0.95, 1.05)),
        brightness=float(rng.uniform(-5, 4)),
        contrast=float(rng.uniform(0.96, 1.04)),
        gains=tuple(float(g) for g in rng.uniform(0.97, 1.03, size=3)),
        background=STUDIO_BACKDROP,
        zoom=1.0,
        shift=(0.0, 0.0),
        angle_deg=0.0,
        mirror=False,
        expressiveness=float(rng.uniform(1.4, 2.0)),
    )


def colour_matrix(app: Appearance) -> tuple[np.ndarray, np.ndarray]:
    """(M, b) with person_rgb' = M @ rgb + b: hue, saturation, contrast, brightness, gains."""
    t = math.radians(app.hue_deg)
    rot = np.array([[1, 0, 0],
                    [0, math.cos(t), -math.sin(t)],
                    [0, math.sin(t), math.cos(t)]]) * np.array([1, app.saturation,
                                                                app.saturation])[:, None]
    colour = np.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ
    gains = np.asarray(app.gains, dtype=np.float64)
    m = gains[:, None] * colour * app.contrast
    b = gains * (128.0 * (1.0 - app.contrast) + app.brightness)
    return m.astype(np.float32), b.astype(np.float32)


def subject_layers(app: Appearance) -> np.ndarray:
    """The recoloured photo as (514, 514, 4) float32: R, G, B and the person mask, with a
    one-pixel border of zeros (no person) that ``_bilinear`` relies on."""
    rgb, alpha = source_layers()
    m, b = colour_matrix(app)
    person = np.clip(rgb @ m.T + b, 0, 255)
    layers = np.concatenate([person, alpha[..., None]], axis=-1)
    return np.pad(layers, ((1, 1), (1, 1), (0, 0))).astype(np.float32)


def _bilinear(layers: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample padded ``layers`` (H+2, W+2, C) at photo coordinates; points outside the photo
    land on the zero border. (scipy's map_coordinates is ~5x slower for this.)"""
    hp, wp, ch = layers.shape
    shape = (*x.shape, ch)
    x = np.clip(x.ravel() + 1.0, 0.0, wp - 1.001)
    y = np.clip(y.ravel() + 1.0, 0.0, hp - 1.001)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]  # float32 like the layers: keep it so
    flat = layers.reshape(-1, ch)
    i = y0.astype(np.int64) * wp + x0.astype(np.int64)
    a, b = np.take(flat, i, axis=0), np.take(flat, i + 1, axis=0)
    c, d = np.take(flat, i + wp, axis=0), np.take(flat, i + wp + 1, axis=0)
    top = a + (b - a) * fx
    bottom = c + (d - c) * fx
    return (top + (bottom - top) * fy).reshape(shape)


@dataclasses.dataclass(frozen=True)
class ClipPlan:
    """Per-frame motion of one clip."""

    pose: np.ndarray                   # (T, 3): head x, y offset (fraction of frame), roll deg
    actions: tuple[dict[str, float], ...]  # per frame: action name -> intensity (0 = absent)


def window_frames(n_frames: int, window: tuple[float, float]) -> tuple[int, int]:
    """Frame range [start, stop) of the expression window given as fractions of the clip."""
    start, stop = round(window[0] * n_frames), round(window[1] * n_frames)
    return start, max(stop, start + 1)


def plan_clip(label: str, n_frames: int, window: tuple[float, float], expressiveness: float,
              head_motion: float, head_rng: np.random.Generator,
              face_rng: np.random.Generator) -> ClipPlan:
    """Head sway over the whole clip (from ``head_rng``); the label's facial actions only
    inside the window (from ``face_rng``).

    ``pain``: brows lowered, eyes squeezed, cheeks and upper lip raised, with a random onset,
    apex and offset. ``neutral``: one blink at a random moment of the window. Callers give
    a subject's pain and neutral clip of the same index the same ``head_rng`` seed, so the
    two differ only inside the window: the label is the only thing that changes there.
    """
    if label not in ("neutral", "pain"):
        raise ValueError(f"demo label must be 'neutral' or 'pain', got {label!r}")
    t = np.arange(n_frames) / n_frames
    freq = head_rng.uniform(0.5, 1.5, size=3)  # cycles per clip
    phase = head_rng.uniform(0, 2 * math.pi, size=3)
    scale = np.array([head_motion, head_motion, 250.0 * head_motion])  # roll in degrees
    pose = scale * np.sin(2 * math.pi * freq * t[:, None] + phase)
    rng = face_rng

    start, stop = window_frames(n_frames, window)
    actions: list[dict[str, float]] = [{} for _ in range(n_frames)]
    if label == "pain":
        apex = expressiveness * rng.uniform(0.85, 1.15)
        rise, fall = rng.uniform(0.25, 0.4), rng.uniform(0.2, 0.35)
        weights = {k: w * rng.uniform(0.8, 1.15) for k, w in PAIN_ACTIONS.items()}
        for i in range(start, stop):
            u = (i - start + 0.5) / (stop - start)  # strictly inside (0, 1)
            env = min(1.0, u / rise, (1.0 - u) / fall)
            env = 0.5 - 0.5 * math.cos(math.pi * env)  # smooth onset and offset
            actions[i] = {k: apex * w * env for k, w in weights.items()}
    else:
        last = max(start, stop - len(BLINK_PROFILE))
        begin = int(rng.integers(start, last + 1))
        for j, level in enumerate(BLINK_PROFILE):
            if begin + j < stop:
                actions[begin + j] = {"blink": level}
    return ClipPlan(pose=pose.astype(np.float32), actions=tuple(actions))


def render_frame(layers: np.ndarray, app: Appearance, pose: np.ndarray,
                 actions: dict[str, float], size: int, centre: tuple[float, float],
                 span: float, supersample: int = 1) -> np.ndarray:
    """One uint8 frame (size, size, 3): frame pixel -> photo point (inverse similarity
    transform), plus the facial actions' displacement, sampled bilinearly."""
    n = size * supersample
    grid = (np.arange(n, dtype=np.float32) + 0.5) / supersample
    u, v = np.meshgrid(grid, grid)
    px = u - size * (0.5 + app.shift[0] + pose[0])
    py = v - size * (0.5 + app.shift[1] + pose[1])
    if app.mirror:
        px = -px
    theta = math.radians(app.angle_deg + float(pose[2]))
    c, s = math.cos(theta) * span / (size * app.zoom), math.sin(theta) * span / (size * app.zoom)
    qx = centre[0] + c * px - s * py
    qy = centre[1] + s * px + c * py
    dx, dy = au_displacement(qx, qy, actions)
    out = _bilinear(layers, qx + dx, qy + dy)
    alpha = out[..., 3:]  # zero outside the photo, so the backdrop shows there
    img = alpha * out[..., :3] + (1.0 - alpha) * np.asarray(app.background, dtype=np.float32)
    if supersample > 1:  # box filter down to the target size (anti-aliasing)
        k = supersample
        img = sum(img[i::k, j::k] for i in range(k) for j in range(k)) / (k * k)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_clip(layers: np.ndarray, app: Appearance, plan: ClipPlan, size: int,
                crop: bool = False, supersample: int = 1) -> np.ndarray:
    """All frames of a clip, (T, size, size, 3) uint8. ``crop`` frames the face as the face
    stage would crop it (ignoring the subject's zoom and offset)."""
    if crop:
        app = dataclasses.replace(app, zoom=1.0, shift=(0.0, 0.0))
        centre, span = CROP_CENTRE, CROP_SPAN
    else:
        centre, span = VIEW_CENTRE, VIEW_SPAN
    frames = [render_frame(layers, app, plan.pose[i], plan.actions[i], size, centre, span,
                           supersample) for i in range(len(plan.actions))]
    return np.stack(frames)
