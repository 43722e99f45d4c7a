"""A small synthetic "dog breed" data set, so the whole product runs and is tested with no download.

Each class has its own pattern (stripes, dots, rings, ...) and colour, drawn with random position,
size, hue jitter, background and pixel noise, in the train/valid/test ImageFolder layout with
breed-like folder names (`001.Synthetic_Beagle`). A frozen pretrained backbone plus a linear head
separates the classes easily; with shuffled labels or the wrong split it stays near chance.

    python -m model_code.demo_data OUT [--classes 5] [--train-per-class 40] [--image-size 64]
"""

from __future__ import annotations

import argparse
import colorsys
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BREEDS = (
    "Beagle", "Collie", "Dalmatian", "Husky", "Poodle", "Pug", "Boxer", "Corgi",
    "Akita", "Basenji", "Whippet", "Samoyed", "Vizsla", "Shiba_Inu", "Saluki", "Papillon",
)

Color = tuple[int, int, int]
Painter = Callable[[ImageDraw.ImageDraw, int, np.random.RandomState, Color], None]


def _stripes(draw: ImageDraw.ImageDraw, size: int, rng: np.random.RandomState, c: Color) -> None:
    step = int(rng.randint(max(4, size // 10), max(6, size // 5)))
    offset = int(rng.randint(0, step))
    for y in range(-step + offset, size, step):
        draw.rectangle([0, y, size, y + step // 2], fill=c)


def _dots(draw: ImageDraw.ImageDraw, size: int, rng: np.random.RandomState, c: Color) -> None:
    for _ in range(int(rng.randint(6, 14))):
        r = size * rng.uniform(0.04, 0.09)
        x, y = rng.uniform(0, size, 2)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=c)


def _rings(draw: ImageDraw.ImageDraw, size: int, rng: np.random.RandomState, c: Color) -> None:
    cx, cy = rng.uniform(0.3 * size, 0.7 * size, 2)
    width = max(2, size // 16)
    for r in np.arange(size * 0.1, size * 0.8, size * rng.uniform(0.12, 0.18)):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=c, width=width)


def _checks(draw: ImageDraw.ImageDraw, size: int, rng: np.random.RandomState, c: Color) -> None:
    step = int(rng.randint(max(4, size // 8), max(6, size // 4)))
    for i, x in enumerate(range(0, size, step)):
        for j, y in enumerate(range(0, size, step)):
            if (i + j) % 2 == 0:
                draw.rectangle([x, y, x + step - 1, y + step - 1], fill=c)


def _triangles(draw: ImageDraw.ImageDraw, size: int, rng: np.random.RandomState, c: Color) -> None:
    for _ in range(int(rng.randint(2, 5))):
        x, y = rng.uniform(0, size, 2)
        r = size * rng.uniform(0.12, 0.25)
        angle = rng.uniform(0, 2 * math.pi)
        corners = [angle + k * 2 * math.pi / 3 for k in range(3)]
        points = [(x + r * math.cos(a), y + r * math.sin(a)) for a in corners]
        draw.polygon(points, fill=c)


def _diagonals(draw: ImageDraw.ImageDraw, size: int, rng: np.random.RandomState, c: Color) -> None:
    step = int(rng.randint(max(5, size // 8), max(7, size // 4)))
    width = max(2, step // 3)
    for x in range(-size, 2 * size, step):
        draw.line([(x, 0), (x + size, size)], fill=c, width=width)


def _crosses(draw: ImageDraw.ImageDraw, size: int, rng: np.random.RandomState, c: Color) -> None:
    width = max(2, size // 14)
    for _ in range(int(rng.randint(3, 7))):
        x, y = rng.uniform(0, size, 2)
        r = size * rng.uniform(0.08, 0.16)
        draw.line([(x - r, y), (x + r, y)], fill=c, width=width)
        draw.line([(x, y - r), (x, y + r)], fill=c, width=width)


def _blob(draw: ImageDraw.ImageDraw, size: int, rng: np.random.RandomState, c: Color) -> None:
    cx, cy = rng.uniform(0.35 * size, 0.65 * size, 2)
    rx, ry = size * rng.uniform(0.2, 0.35, 2)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=c)


PAINTERS: tuple[Painter, ...] = (
    _stripes, _dots, _rings, _checks, _triangles, _diagonals, _crosses, _blob,
)


def class_names(classes: int) -> list[str]:
    """`001.Synthetic_Beagle`, `002.Synthetic_Collie`, ... (numbered like the real data set)."""
    names = []
    for i in range(classes):
        breed = BREEDS[i % len(BREEDS)] + ("" if i < len(BREEDS) else f"_{i // len(BREEDS) + 1}")
        names.append(f"{i + 1:03d}.Synthetic_{breed}")
    return names


def _rgb(hue: float, saturation: float, value: float) -> Color:
    def clamp(x: float) -> float:
        return min(max(x, 0.0), 1.0)

    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, clamp(saturation), clamp(value))
    return int(r * 255), int(g * 255), int(b * 255)


def draw_image(class_index: int, size: int, rng: np.random.RandomState) -> Image.Image:
    """One random image of class `class_index`: its pattern and hue, with random variation."""
    hue = (class_index * 0.61803398875) % 1.0 + rng.uniform(-0.04, 0.04)
    background = _rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(0.1, 0.9))
    image = Image.new("RGB", (size, size), background)
    painter = PAINTERS[class_index % len(PAINTERS)]
    colour = _rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    painter(ImageDraw.Draw(image), size, rng, colour)
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def generate_demo_dataset(
    out_dir: str | Path,
    classes: int = 5,
    train_per_class: int = 40,
    valid_per_class: int = 10,
    test_per_class: int = 10,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write `out_dir/{train,valid,test}/<class>/<n>.jpg`; same seed, same files. Returns out_dir.

    An existing out_dir's split folders are replaced, so a rerun never mixes two data sets.
    """
    if classes < 2:
        raise ValueError(f"classes must be at least 2, got {classes}")
    out = Path(out_dir)
    counts = {"train": train_per_class, "valid": valid_per_class, "test": test_per_class}
    for split, count in counts.items():
        if count < 1:
            raise ValueError(f"{split}_per_class must be at least 1, got {count}")
        if (out / split).exists():
            shutil.rmtree(out / split)
    names = class_names(classes)
    for split_number, (split, count) in enumerate(counts.items()):
        for class_index, name in enumerate(names):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            # One stream per (split, class): adding classes never changes existing images.
            rng = np.random.RandomState([seed, split_number, class_index])
            for n in range(count):
                image = draw_image(class_index, image_size, rng)
                image.save(folder / f"{name.split('.', 1)[1]}_{n:04d}.jpg", quality=90)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the synthetic demo data set.")
    parser.add_argument("out_dir")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--valid-per-class", type=int, default=10)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = generate_demo_dataset(
        args.out_dir, args.classes, args.train_per_class, args.valid_per_class,
        args.test_per_class, args.image_size, args.seed,
    )
    print(f"wrote demo data set to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
