"""Appearance augmentation that erases source signatures: random gamma, contrast, brightness, blur, sharpening, noise,
JPEG re-compression, down- and up-sampling, black frames and windowing, drawn per image from a stateless seed.

A hospital leaves its mark on every film it stores: its exposure curve, its processing (sharpening, smoothing), its
compression, its resolution, its borders and how it windowed a 12-bit image to 8 bits. A classifier trained where
the hospital predicts the label learns those marks. Each operation here changes one of them, with a probability and a
range (:class:`Appearance`), on the model's float32 ``(b, s, s, 1)`` input in 0-255, on the fly in tf.data. Every draw
comes from the batch's stateless seed, so a resumed run sees exactly the images an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Appearance:
    """Per operation, the probability that an image gets it (``*_p``) and its strength (the range it is drawn from)."""

    gamma_p: float = 0.5
    gamma: float = 0.4
    contrast_p: float = 0.5
    contrast: float = 0.3
    brightness_p: float = 0.5
    brightness: float = 0.1
    blur_p: float = 0.25
    blur: float = 1.5
    sharpen_p: float = 0.25
    sharpen: float = 1.0
    noise_p: float = 0.25
    noise: float = 8.0
    poisson_p: float = 0.25
    poisson: float = 1.0
    jpeg_p: float = 0.25
    jpeg: int = 30
    resample_p: float = 0.25
    resample: float = 0.5
    frame_p: float = 0.25
    frame: float = 0.08
    window_p: float = 0.25
    window: float = 0.15

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def problems(self) -> list[str]:
        """What is out of range (empty when the settings are valid)."""
        out = [
            f"{f.name} must be a probability in [0, 1]"
            for f in fields(self)
            if f.name.endswith("_p") and not 0 <= getattr(self, f.name) <= 1
        ]
        limits = {
            "gamma": (0, 2),
            "contrast": (0, 0.9),
            "brightness": (0, 0.5),
            "blur": (0, 5),
            "sharpen": (0, 5),
            "noise": (0, 50),
            "poisson": (0, 10),
            "jpeg": (1, 100),
            "resample": (0.1, 1),
            "frame": (0, 0.3),
            "window": (0, 0.4),
        }
        out += [
            f"{name} must be in [{lo}, {hi}], got {getattr(self, name)}"
            for name, (lo, hi) in limits.items()
            if not lo <= getattr(self, name) <= hi
        ]
        return out


def _gaussian_blur(x: Any, sigma: Any) -> Any:
    """Each image of ``x`` (b, s, s, 1) blurred with its own Gaussian ``sigma`` (b,) in pixels (0 leaves it as is)."""
    import tensorflow as tf

    radius = 7
    taps = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    sigma = tf.maximum(sigma, 1e-3)[:, None]
    kernel = tf.exp(-0.5 * tf.square(taps[None, :] / sigma))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)
    kernel = tf.where(sigma < 0.05, tf.cast(tf.equal(taps, 0.0), tf.float32)[None, :], kernel)
    images = tf.transpose(x, [3, 1, 2, 0])
    taps_per_image = tf.transpose(kernel)
    along_width, along_height = taps_per_image[None, :, :, None], taps_per_image[:, None, :, None]
    out = tf.nn.depthwise_conv2d(
        tf.pad(images, [[0, 0], [0, 0], [radius, radius], [0, 0]], "SYMMETRIC"), along_width, [1, 1, 1, 1], "VALID"
    )
    out = tf.nn.depthwise_conv2d(
        tf.pad(out, [[0, 0], [radius, radius], [0, 0], [0, 0]], "SYMMETRIC"), along_height, [1, 1, 1, 1], "VALID"
    )
    return tf.transpose(out, [3, 1, 2, 0])


def appearance_batch(x: Any, seed: Any, settings: Appearance) -> Any:
    """The batch ``x`` (float32, 0-255, (b, s, s, 1)) with each operation applied to each image with its probability.

    ``seed`` is a stateless seed ([2] ints); the same seed gives the same images.
    """
    import tensorflow as tf

    fold = tf.random.experimental.stateless_fold_in
    count = tf.shape(x)[0]
    size = tf.shape(x)[1]
    draws = iter(range(1, 64))

    def uniform(low: float = 0.0, high: float = 1.0) -> Any:
        """One value per image, from the next seed of the stream."""
        return tf.random.stateless_uniform([count], fold(seed, next(draws)), low, high)

    def chosen(p: float) -> Any:
        """Per image (b, 1, 1, 1): does it get the operation?"""
        return tf.reshape(uniform() < p, [-1, 1, 1, 1])

    def per_image(values: Any) -> Any:
        """(b,) -> (b, 1, 1, 1)."""
        return tf.reshape(values, [-1, 1, 1, 1])

    s = settings
    if s.window_p:
        low, high = uniform(0, s.window) * 255.0, 255.0 - uniform(0, s.window) * 255.0
        windowed = (x - per_image(low)) * 255.0 / per_image(high - low)
        x = tf.where(chosen(s.window_p), tf.clip_by_value(windowed, 0.0, 255.0), x)
    if s.gamma_p:
        power = per_image(tf.exp(uniform(-s.gamma, s.gamma)))
        x = tf.where(chosen(s.gamma_p), 255.0 * tf.pow(tf.clip_by_value(x, 0.0, 255.0) / 255.0, power), x)
    if s.contrast_p:
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = tf.where(chosen(s.contrast_p), mean + (x - mean) * per_image(1.0 + uniform(-s.contrast, s.contrast)), x)
    if s.brightness_p:
        x = tf.where(chosen(s.brightness_p), x + per_image(uniform(-s.brightness, s.brightness) * 255.0), x)
    if s.blur_p:
        x = tf.where(chosen(s.blur_p), _gaussian_blur(x, uniform(0.0, s.blur)), x)
    if s.sharpen_p:
        amount = per_image(uniform(0.0, s.sharpen))
        x = tf.where(chosen(s.sharpen_p), x + amount * (x - _gaussian_blur(x, tf.ones([count]))), x)
    if s.noise_p:
        sigma = per_image(uniform(0.0, s.noise))
        x = tf.where(chosen(s.noise_p), x + sigma * tf.random.stateless_normal(tf.shape(x), fold(seed, 101)), x)
    if s.poisson_p:
        strength = per_image(uniform(0.0, s.poisson))
        shot = tf.sqrt(tf.maximum(x, 0.0) * strength) * tf.random.stateless_normal(tf.shape(x), fold(seed, 102))
        x = tf.where(chosen(s.poisson_p), x + shot, x)
    x = tf.clip_by_value(x, 0.0, 255.0)
    if s.resample_p:
        scales = uniform(s.resample, 1.0)

        def resampled(item: Any) -> Any:
            """One image shrunk by its scale and enlarged back."""
            image, scale = item
            small = tf.maximum(4, tf.cast(tf.cast(size, tf.float32) * scale, tf.int32))
            return tf.image.resize(tf.image.resize(image, [small, small], "area"), [size, size], "bilinear")

        shrunk = tf.map_fn(resampled, (x, scales), fn_output_signature=tf.float32)
        x = tf.where(chosen(s.resample_p), shrunk, x)
    if s.jpeg_p:
        qualities = tf.cast(uniform(float(s.jpeg), 100.0), tf.int32)

        def compressed(item: Any) -> Any:
            """One image through JPEG at its quality."""
            image, quality = item
            return tf.cast(tf.image.adjust_jpeg_quality(tf.cast(tf.round(image), tf.uint8), quality), tf.float32)

        recompressed = tf.map_fn(compressed, (x, qualities), fn_output_signature=tf.float32)
        x = tf.where(chosen(s.jpeg_p), recompressed, x)
    if s.frame_p:
        side = tf.cast(size, tf.float32)
        edges = [tf.cast(uniform(0.0, s.frame) * side, tf.int32) for _ in range(4)]
        rows = tf.range(size)[None, :, None, None]
        cols = tf.range(size)[None, None, :, None]
        inside = (
            (rows >= per_image(edges[0]))
            & (rows < size - per_image(edges[1]))
            & (cols >= per_image(edges[2]))
            & (cols < size - per_image(edges[3]))
        )
        x = tf.where(chosen(s.frame_p) & ~inside, tf.zeros_like(x), x)
    return tf.clip_by_value(x, 0.0, 255.0)
