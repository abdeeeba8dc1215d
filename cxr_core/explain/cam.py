"""Visual explanations of a classifier's decision with tf-keras-vis: Grad-CAM, Grad-CAM++, Score-CAM and SmoothGrad.

An :class:`Explainer` is built once per model (cloning the model with a linear output costs 30-650 ms) and then
explains any number of inputs. Every method runs on that clone (tf-keras-vis ``ReplaceToLinear`` on the softmax
output): gradients of logits for the CAMs, and Score-CAM's own softmax over the logits gives the model's
probabilities. Grad-CAM, the default method, runs as one graph-compiled function with tf-keras-vis' ``Gradcam``
maths (mean gradient per channel, weighted sum, ReLU): tf-keras-vis rebuilds a Keras model and runs eagerly on
every call, about 100 ms per image here against 6 ms compiled (``bench/predict.py``);
``ExplainOptions(compiled_gradcam=False)`` uses tf-keras-vis itself, and a test holds the two equal.
Heatmaps are float32 in [0, 1]; :func:`to_original_shape` maps one from the model's
input square back onto the original image, undoing the ``squash`` or ``pad`` resize policy.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

CAM_METHODS: dict[str, str] = {
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "scorecam": "Score-CAM (bounded)",
    "smoothgrad": "SmoothGrad saliency",
}
DEFAULT_METHOD = "gradcam"
TARGET_LAYER_NAME = "cam_target"


class ExplainError(ValueError):
    """A model cannot be explained or an explanation request is invalid; ``str(exc)`` is one clear line."""


@dataclass(frozen=True)
class ExplainOptions:
    """Cost knobs of the slower methods (defaults keep each explanation well under a second here)."""

    scorecam_max_n: int = 8
    scorecam_batch: int = 8
    smoothgrad_samples: int = 6
    smoothgrad_noise: float = 0.15
    compiled_gradcam: bool = True
    warm_up: bool = True


def _is_4d(tensor: Any) -> bool:
    """True for an ``(n, h, w, c)`` symbolic tensor."""
    return len(getattr(tensor, "shape", ())) == 4


def _single_output(layer: Any) -> Any:
    """The layer's output tensor in its model's graph (None for multi-output layers)."""
    try:
        out = layer.output
    except (AttributeError, ValueError):
        return None
    return None if isinstance(out, (list, tuple)) else out


def find_target_layer(model: Any) -> tuple[str, ...]:
    """Names leading to the last layer with a 4-D output before global pooling/flatten (descends into backbones)."""
    import keras

    candidate: tuple[str, ...] = ()
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        out = _single_output(layer)
        if isinstance(layer, keras.Model) and not _is_4d(out):
            return (layer.name, *find_target_layer(layer))
        if _is_4d(out):
            candidate = (layer.name,)
        elif candidate and out is not None:
            break
    if not candidate:
        raise ExplainError(f"model {model.name!r} has no layer with a spatial (4-D) output to explain")
    return candidate


def _linear_clone(model: Any) -> Any:
    """A copy of the model whose output layers have a linear activation (tf-keras-vis ReplaceToLinear)."""
    import keras
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    ReplaceToLinear()(clone)
    return clone


def _outer_output(model: Any, nested: Any) -> Any:
    """The output tensor of a nested model's call inside ``model``'s graph (None when it cannot be found)."""
    import keras

    for node in getattr(nested, "_inbound_nodes", []):
        tensors = getattr(node, "output_tensors", None) or []
        if len(tensors) != 1:
            continue
        try:
            keras.Model(model.inputs, tensors[0])
        except ValueError:
            continue
        return tensors[0]
    return None


def _model_and_target(model: Any, path: tuple[str, ...]) -> tuple[Any, Any]:
    """The model (rebuilt when the target sits in a nested backbone) and the target feature map in its graph.

    Reaching into a nested model rebuilds the outer model as a chain with the same layers and weights; an outer
    graph that is not a simple chain is refused with :class:`ExplainError`.
    """
    import keras

    layer = model.get_layer(path[0])
    if len(path) == 1 and not isinstance(layer, keras.Model):
        return model, _single_output(layer)
    if len(path) == 1:
        outer = _outer_output(model, layer)
        if outer is not None:
            return model, outer
    features = None
    if len(path) > 1:
        inner_model, inner_tensor = _model_and_target(layer, path[1:])
        features = keras.Model(inner_model.inputs, [inner_model.outputs[0], inner_tensor])
    x, target = model.inputs[0], None
    for step in model.layers:
        if isinstance(step, keras.layers.InputLayer):
            continue
        nodes = getattr(step, "_inbound_nodes", [])
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
            raise ExplainError(
                f"cannot explain inside the nested model {path[0]!r}: the outer model is not a simple chain"
            )
        if step is layer and features is not None:
            x, target = features(x)
        elif step is layer:
            x = target = step(x)
        else:
            x = step(x)
    return keras.Model(model.inputs, x), target


def _with_target(model: Any, path: tuple[str, ...]) -> tuple[Any, Any]:
    """The (possibly rebuilt) model and an Identity layer whose ``output`` is the target feature map."""
    import keras

    base, tensor = _model_and_target(model, path)
    target = keras.layers.Identity(name=TARGET_LAYER_NAME)
    target(tensor)
    return base, target


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the Keras input-structure warnings that tf-keras-vis internals trigger."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class Explainer:
    """tf-keras-vis explainers for one functional Keras model, built once and reused for every input."""

    def __init__(self, model: Any, options: ExplainOptions = ExplainOptions()) -> None:
        """Clone the model with a linear output, locate the target feature map and warm the default method up."""
        import keras
        import tensorflow as tf
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
        from tf_keras_vis.saliency import Saliency
        from tf_keras_vis.scorecam import Scorecam

        if not hasattr(model, "inputs") or len(model.inputs) != 1 or not _is_4d(model.inputs[0]):
            raise ExplainError("only functional models with one image input (n, h, w, c) can be explained")
        self.options = options
        self.layer_path = find_target_layer(model)
        self.input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        self._forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
        linear = _linear_clone(model)
        base, self._target = _with_target(linear, self.layer_path)
        base.predict = functools.partial(base.predict, verbose=0)
        self._gradcam = _compiled_gradcam(keras.Model(base.inputs, [base.outputs[0], self._target.output]))
        self._tools = {
            "gradcam": Gradcam(base, clone=False),
            "gradcampp": GradcamPlusPlus(base, clone=False),
            "scorecam": Scorecam(base, clone=False),
            "smoothgrad": Saliency(base, clone=False),
        }
        if options.warm_up:
            blank = np.zeros((1, *self.input_shape), np.float32)
            self.probabilities(blank)
            self.explain(blank[0], 0)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """The original model's softmax outputs ``(n, k)`` for a prepared batch, through a graph-compiled forward pass."""
        return np.asarray(self._forward(np.asarray(batch, dtype=np.float32)), dtype=np.float64)

    @property
    def layer_name(self) -> str:
        """The explained layer as ``backbone/layer`` (for reports)."""
        return "/".join(self.layer_path)

    def implementation(self, method: str) -> str:
        """Which code computes ``method`` (for reports): the compiled Grad-CAM or tf-keras-vis."""
        import tf_keras_vis

        library = f"tf-keras-vis {tf_keras_vis.__version__}"
        if method == "gradcam" and self.options.compiled_gradcam:
            return f"cxr_core compiled Grad-CAM (the maths of {library} Gradcam)"
        return library

    def explain(self, model_input: np.ndarray, target: int, method: str = DEFAULT_METHOD) -> np.ndarray:
        """A heatmap in [0, 1] at the model's input size for class index ``target`` of one prepared input."""
        import tensorflow as tf
        from tf_keras_vis.utils.scores import CategoricalScore

        if method not in self._tools:
            raise ExplainError(f"unknown explanation method {method!r}; choose from {sorted(CAM_METHODS)}")
        x = np.asarray(model_input, dtype=np.float32).reshape((1, *self.input_shape))
        score = CategoricalScore([int(target)])
        tool = self._tools[method]
        layer = {"penultimate_layer": self._target, "seek_penultimate_conv_layer": False, "expand_cam": False}
        with _quiet():
            if method == "gradcam" and self.options.compiled_gradcam:
                cam = self._gradcam(tf.constant(x), tf.constant(int(target))).numpy()
            elif method == "smoothgrad":
                cam = tool(
                    score, x, smooth_samples=self.options.smoothgrad_samples, smooth_noise=self.options.smoothgrad_noise
                )
            elif method == "scorecam":
                max_n = min(self.options.scorecam_max_n, int(self._target.output.shape[-1]))
                cam = tool(score, x, max_N=max_n, batch_size=self.options.scorecam_batch, **layer)
            else:
                cam = tool(score, x, **layer)
        heat = np.nan_to_num(np.asarray(cam, dtype=np.float32)[0])
        height, width = self.input_shape[:2]
        if heat.shape != (height, width):
            heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
        return rescale01(heat)


def _compiled_gradcam(cam_model: Any) -> Any:
    """A graph-compiled Grad-CAM over ``cam_model`` (outputs: logits, target feature map): ``(x, class) -> (1, h, w)``."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def gradcam(x: Any, target: Any) -> Any:
        """ReLU of the feature maps weighted by the spatial mean of the class logit's gradient."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            logits, features = cam_model(x, training=False)
            score = tf.gather(logits, target, axis=-1)
        grads = tf.cast(tape.gradient(score, features), tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(tf.cast(features, tf.float32) * weights, axis=-1))

    return gradcam


def to_original_shape(
    heatmap: np.ndarray,
    shape: tuple[int, int],
    resize_policy: str = "squash",
    box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Map a model-input heatmap back onto an image of ``shape``, undoing ``squash`` or ``pad`` resizing.

    ``box`` (top, bottom, left, right) is the crop the model saw (a lung ROI): the map lands there, zero elsewhere.
    """
    if box is not None:
        top, bottom, left, right = box
        canvas = np.zeros((int(shape[0]), int(shape[1])), np.float32)
        canvas[top:bottom, left:right] = to_original_shape(heatmap, (bottom - top, right - left), resize_policy)
        return canvas
    size_h, size_w = heatmap.shape
    height, width = int(shape[0]), int(shape[1])
    heat = heatmap
    if resize_policy == "pad":
        scale = size_h / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        top, left = (size_h - new_h) // 2, (size_w - new_w) // 2
        heat = heatmap[top : top + new_h, left : left + new_w]
    out = cv2.resize(np.ascontiguousarray(heat, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


def rescale01(heatmap: np.ndarray) -> np.ndarray:
    """Min-max scale a heatmap to [0, 1] float32 (an all-constant map becomes zeros)."""
    heat = np.asarray(heatmap, dtype=np.float32)
    low, high = float(heat.min()), float(heat.max())
    if not high > low:
        return np.zeros_like(heat)
    return np.clip((heat - low) / (high - low), 0.0, 1.0)
