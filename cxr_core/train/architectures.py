"""Model architectures by name: the paper's CNN and VGG19 reference, our efficient ``cxr_net``, and DenseNet121.

Keras is imported inside the builders so that importing this registry (e.g. for CLI choices) stays fast.

Every builder returns a functional ``keras.Model`` whose input is ``(size, size, 1)`` float32 with raw 0-255
values (rescaling and grayscale-to-RGB happen inside the model) and whose output is
``Dense(2, activation="softmax", name="predictions")`` in the class order :data:`CLASSES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras
    import numpy as np

CLASSES = ("COVID", "Normal")
WEIGHTS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications"
LAST_CONV_NAME = "last_conv"


class ArchitectureError(ValueError):
    """An unknown architecture, a bad hyperparameter or unavailable pre-trained weights."""


@dataclass(frozen=True)
class PretrainedWeights:
    """A Keras applications weight file: its cache name, download URL and MD5."""

    filename: str
    origin: str
    md5: str


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: builder, default input size, learning rate and tunable hyperparameters."""

    name: str
    builder: Callable[..., keras.Model]
    default_size: int
    default_lr: float
    summary: str
    hparams: dict[str, Any] = field(default_factory=dict)
    pretrained: PretrainedWeights | None = None


ARCHITECTURES: dict[str, Architecture] = {}

VGG19_NOTOP = PretrainedWeights(
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    f"{WEIGHTS_BASE_URL}/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "253f8cb515780f3b799900260a226db6",
)
DENSENET121_NOTOP = PretrainedWeights(
    "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    f"{WEIGHTS_BASE_URL}/densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "30ee3e1110167f948a6b9946edeeb738",
)


def keras_cache_dir() -> Path:
    """The folder where Keras caches downloaded weights (``$KERAS_HOME/models`` or ``~/.keras/models``)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser() / "models"


def resolve_weights(spec: PretrainedWeights, weights: str | os.PathLike | None, arch: str) -> Path | None:
    """The local weight file for ``weights`` (None, "imagenet" or a path); downloads "imagenet" when missing.

    Offline, a clear :class:`ArchitectureError` names the file and where to put it.
    """
    if weights is None:
        return None
    if str(weights) != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ArchitectureError(f"{arch}: weights file {path} does not exist")
        return path
    cached = keras_cache_dir() / spec.filename
    if cached.is_file():
        return cached
    import keras

    try:
        return Path(
            keras.utils.get_file(
                spec.filename,
                spec.origin,
                cache_subdir="models",
                cache_dir=str(keras_cache_dir().parent),
                file_hash=spec.md5,
            )
        )
    except Exception as exc:  # any download failure gets the same actionable message
        raise ArchitectureError(
            f"{arch} needs the ImageNet weights file {spec.filename}, which could not be downloaded "
            f"({type(exc).__name__}); download it from {spec.origin} and pass it with --weights PATH "
            f"or put it into {keras_cache_dir()}/"
        ) from exc


def register(
    name: str,
    default_size: int,
    default_lr: float,
    summary: str,
    pretrained: PretrainedWeights | None = None,
    **hparams: Any,
) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
    """Decorator adding a builder ``(size, weights, **hparams) -> keras.Model`` to :data:`ARCHITECTURES`."""

    def decorate(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        ARCHITECTURES[name] = Architecture(name, builder, default_size, default_lr, summary, dict(hparams), pretrained)
        return builder

    return decorate


def get_architecture(name: str) -> Architecture:
    """The registered architecture called ``name``; a clear error listing the choices otherwise."""
    if name not in ARCHITECTURES:
        raise ArchitectureError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build_model(
    name: str, size: int | None = None, weights: str | os.PathLike | None = None, **hparams: Any
) -> keras.Model:
    """Build architecture ``name`` at ``size`` px (default: the architecture's) with hyperparameters over defaults.

    ``weights``: None (random initialisation: no download, e.g. for tests and parameter counts), "imagenet"
    (download into the Keras cache when missing) or a weights file; only pre-trained backbones take weights.
    """
    arch = get_architecture(name)
    unknown = set(hparams) - set(arch.hparams)
    if unknown:
        raise ArchitectureError(f"{name} takes no hyperparameter(s) {sorted(unknown)}; it takes {sorted(arch.hparams)}")
    if weights is not None and arch.pretrained is None:
        raise ArchitectureError(f"{name} is trained from scratch and takes no --weights")
    size = int(size or arch.default_size)
    if not 32 <= size <= 1024:
        raise ArchitectureError(f"image size must be between 32 and 1024 px, got {size}")
    return arch.builder(size=size, weights=weights, **{**arch.hparams, **hparams})


def _head(features: keras.KerasTensor, inputs: keras.KerasTensor, name: str) -> keras.Model:
    """Add the shared 2-way softmax output (kept in float32 under mixed precision) and wrap as a Model."""
    import keras
    from keras import layers

    outputs = layers.Dense(len(CLASSES), activation="softmax", dtype="float32", name="predictions")(features)
    return keras.Model(inputs, outputs, name=name)


def _gray_input(size: int) -> keras.KerasTensor:
    """The common model input: one grayscale channel with raw 0-255 values."""
    import keras

    return keras.Input((size, size, 1), dtype="float32", name="image")


def _to_rgb(x: keras.KerasTensor) -> keras.KerasTensor:
    """Repeat the gray channel three times (for ImageNet backbones)."""
    from keras import layers

    return layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])


@register(
    "paper_cnn",
    299,
    1e-3,
    "The paper's scratch CNN (Fig. 6): 3 conv blocks, Flatten, Dense 128; 18.1M params at 299 px.",
)
def paper_cnn(size: int = 299, weights: None = None) -> keras.Model:
    """Exactly the paper's Fig. 6 network (18,129,890 parameters at 299x299x1)."""
    from keras import layers

    inputs = _gray_input(size)
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for block, filters in enumerate((32, 64, 128), start=1):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"block{block}_conv1")(x)
        x = layers.Conv2D(filters, 3, activation="relu", name=f"block{block}_conv2" if block < 3 else LAST_CONV_NAME)(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    return _head(x, inputs, "paper_cnn")


@register(
    "vgg19_frozen",
    224,
    1e-3,
    "The paper's reference: frozen ImageNet VGG19, global max pooling, Dense 128.",
    pretrained=VGG19_NOTOP,
)
def vgg19_frozen(size: int = 224, weights: str | os.PathLike | None = "imagenet") -> keras.Model:
    """VGG19 (ImageNet weights, frozen) + global max pooling + Dense 128 relu; caffe preprocessing inside."""
    import keras
    from keras import layers

    path = resolve_weights(VGG19_NOTOP, weights, "vgg19_frozen")
    inputs = _gray_input(size)
    rgb = _to_rgb(inputs)
    x = layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0], name="caffe_centre")(rgb)
    base = keras.applications.VGG19(include_top=False, weights=None, input_shape=(size, size, 3))
    if path is not None:
        base.load_weights(str(path))
    base.trainable = False
    x = base(x, training=False)
    x = layers.GlobalMaxPooling2D(name="global_max_pool")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    return _head(x, inputs, "vgg19_frozen")


@register(
    "densenet121",
    224,
    1e-4,
    "DenseNet121 backbone (as CheXNet), fine-tuned; needs ImageNet weights to be useful.",
    pretrained=DENSENET121_NOTOP,
    dropout=0.2,
)
def densenet121(size: int = 224, weights: str | os.PathLike | None = "imagenet", dropout: float = 0.2) -> keras.Model:
    """DenseNet121 (optionally ImageNet-initialised, fully trainable) + global average pooling + dropout."""
    import keras
    from keras import layers

    path = resolve_weights(DENSENET121_NOTOP, weights, "densenet121")
    inputs = _gray_input(size)
    x = layers.Rescaling(1.0 / 255, name="rescale")(_to_rgb(inputs))
    x = layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.229**2, 0.224**2, 0.225**2], name="imagenet_norm")(
        x
    )
    base = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(size, size, 3))
    if path is not None:
        base.load_weights(str(path))
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="global_avg_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    return _head(x, inputs, "densenet121")


def _conv_bn_relu(
    x: keras.KerasTensor, filters: int, name: str, separable: bool = True, strides: int = 1
) -> keras.KerasTensor:
    """(Separable) 3x3 convolution without bias, batch normalisation, ReLU.

    BN momentum 0.9: pre-BN variances here are ~1e-3, so with Keras' 0.99 (or 0.95) the moving variance, initialised
    to 1, needs hundreds of steps to converge and inference-mode outputs stay constant for the first epochs (training
    also recomputes them before each validation: :func:`set_batchnorm_statistics`).
    """
    from keras import layers

    conv = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=name)(x)


@register(
    "cxr_net",
    224,
    2e-3,
    "Our efficient CNN: strided stem, separable-conv stages, BN, global average pooling.",
    width=32,
    depth=4,
    dropout=0.3,
)
def cxr_net(
    size: int = 224, weights: None = None, width: int = 32, depth: int = 4, dropout: float = 0.3
) -> keras.Model:
    """Strided 3x3 stem, ``depth`` stages of two separable convs (width doubling, capped at 256) + max pool, GAP."""
    from keras import layers

    if not (8 <= int(width) <= 128 and 1 <= int(depth) <= 6 and 0 <= float(dropout) < 1):
        raise ArchitectureError(
            f"cxr_net needs 8<=width<=128, 1<=depth<=6, 0<=dropout<1; got {width}, {depth}, {dropout}"
        )
    if size // 2 ** (int(depth) + 1) < 1:
        raise ArchitectureError(f"cxr_net with depth {depth} needs images of at least {2 ** (int(depth) + 1)} px")
    inputs = _gray_input(size)
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = _conv_bn_relu(x, int(width), "stem", separable=False, strides=2)
    for stage in range(int(depth)):
        filters = min(256, int(width) * 2**stage)
        x = _conv_bn_relu(x, filters, f"stage{stage + 1}_a")
        last = stage == int(depth) - 1
        x = _conv_bn_relu(x, filters, LAST_CONV_NAME if last else f"stage{stage + 1}_b")
        if not last:
            x = layers.MaxPooling2D(2, name=f"stage{stage + 1}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="global_avg_pool")(x)
    x = layers.Dropout(float(dropout), name="dropout")(x)
    return _head(x, inputs, "cxr_net")


def flops_per_image(model: keras.Model) -> int:
    """Approximate forward FLOPs (2 x multiply-adds) of one image over Conv2D, SeparableConv2D, DepthwiseConv2D and Dense."""
    from keras import layers

    total = 0
    for layer in _all_layers(model):
        if not hasattr(layer, "output") or not isinstance(
            layer, (layers.Conv2D, layers.SeparableConv2D, layers.DepthwiseConv2D, layers.Dense)
        ):
            continue
        out_shape = layer.output.shape
        positions = 1
        for dim in out_shape[1:-1]:
            positions *= int(dim)
        c_in, c_out = int(layer.input.shape[-1]), int(out_shape[-1])
        if isinstance(layer, layers.SeparableConv2D):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            macs = positions * (k * c_in * layer.depth_multiplier + c_in * layer.depth_multiplier * c_out)
        elif isinstance(layer, layers.DepthwiseConv2D):
            macs = positions * layer.kernel_size[0] * layer.kernel_size[1] * c_in * layer.depth_multiplier
        elif isinstance(layer, layers.Conv2D):
            macs = positions * layer.kernel_size[0] * layer.kernel_size[1] * c_in * c_out // layer.groups
        else:
            macs = positions * c_in * c_out
        total += 2 * macs
    return total


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of a model, descending into nested models (e.g. a backbone)."""
    import keras

    found = []
    for layer in model.layers:
        found.extend(_all_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return found


def set_batchnorm_statistics(model: keras.Model, images: np.ndarray, batch: int = 32) -> int:
    """Set the moving mean and variance of every trainable BatchNormalization layer to their average over ``images``.

    Forward passes in training mode, ``batch`` images at a time, with the momentum of pass k set to k / (k + 1)
    ("precise BN", Wu and Johnson 2021). The moving averages of training lag behind fast-changing weights and
    describe augmented images; on this data they left a small dataset's first epochs validating at AUC 0.5.
    Returns the number of layers set.
    """
    from keras import layers

    norms = [layer for layer in _all_layers(model) if isinstance(layer, layers.BatchNormalization) and layer.trainable]
    momenta = [layer.momentum for layer in norms]
    try:
        for k, start in enumerate(range(0, len(images), batch)):
            for layer in norms:
                layer.momentum = k / (k + 1)
            model(images[start : start + batch], training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return len(norms)
