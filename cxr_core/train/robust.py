"""Recipes that change the training objective itself, not the images.

- **Class-conditional source adversary** (``adversary``): behind a gradient-reversal layer, one head predicts a Normal
  image's source among the Normal sources, another a COVID image's source among the COVID sources. The heads learn
  to tell hospitals apart; the reversed gradient pushes the shared features to stop carrying the hospital *within a
  class*. A plain source adversary would erase the label itself, since most sources hold one class
  (Ganin and Lempitsky 2015; Trivedi et al. 2022).
- **Right for the right reasons** (``gradient_penalty``): the squared gradient of the summed log-probabilities with
  respect to the input, outside the dilated lung mask, is added to the loss (Ross et al. 2017), so that the decision
  stops depending on pixels outside the lungs. Unlike Ross et al. the term is the *share* of the squared gradient
  that lies outside the mask (per image, in [0, 1]): raw input gradients of this network span many orders of
  magnitude during training (about 1e-21 at initialisation), so a fixed weight on their raw size means nothing.

Both wrap the plain classifier in :class:`RobustModel`, which trains with its own ``train_step`` and validates,
predicts and exports as the classifier alone.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from cxr_core.train.architectures import CLASSES

PENALTY_EPSILON = 1e-30


@tf.custom_gradient
def _reverse(x: Any, scale: Any) -> tuple[Any, Any]:
    """Identity forward; the gradient is multiplied by ``-scale`` on the way back (``scale`` gets none)."""

    def backward(upstream: Any) -> tuple[Any, Any]:
        """Reverse and scale the incoming gradient."""
        return -scale * upstream, tf.zeros_like(scale)

    return tf.identity(x), backward


@keras.saving.register_keras_serializable(package="cxr_core")
class GradientReversal(keras.layers.Layer):
    """Passes its input through unchanged and multiplies the gradient flowing back by ``-scale``."""

    def __init__(self, scale: float = 1.0, **kwargs: Any) -> None:
        """Keep the reversal strength."""
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs: Any) -> Any:
        """The input, with a reversed gradient."""
        return _reverse(inputs, tf.constant(self.scale, inputs.dtype))

    def get_config(self) -> dict[str, Any]:
        """Serialisable configuration."""
        return {**super().get_config(), "scale": self.scale}


def input_gradient_penalty(gradients: Any, allowed: Any) -> Any:
    """Mean over the batch of the share of squared ``gradients`` (b, h, w, 1) where ``allowed`` (b, h, w) is 0."""
    energy = tf.square(tf.cast(gradients, tf.float32))
    outside = 1.0 - tf.cast(allowed, tf.float32)[..., None]
    total = tf.reduce_sum(energy, axis=[1, 2, 3])
    return tf.reduce_mean(tf.reduce_sum(energy * outside, axis=[1, 2, 3]) / (total + PENALTY_EPSILON))


def source_heads(features: int, n_sources: tuple[int, ...], scale: float) -> keras.Model:
    """Per class a small head behind gradient reversal that predicts the source among that class's sources (logits)."""
    inputs = keras.Input((features,), name="features")
    reversed_ = GradientReversal(scale, name="gradient_reversal")(inputs)
    outputs = []
    for name, n in zip(CLASSES, n_sources):
        hidden = keras.layers.Dense(64, activation="relu", name=f"{name.lower()}_source_hidden")(reversed_)
        outputs.append(keras.layers.Dense(max(1, n), name=f"{name.lower()}_source", dtype="float32")(hidden))
    return keras.Model(inputs, outputs, name="source_heads")


@keras.saving.register_keras_serializable(package="cxr_core")
class RobustModel(keras.Model):
    """A classifier trained with a class-conditional source adversary and/or an input-gradient penalty.

    Training batches carry ``{"image", "source", "allowed"}`` (source index within the class, dilated lung mask);
    validation and prediction take plain images and run the classifier alone.
    """

    def __init__(
        self,
        classifier: keras.Model,
        n_sources: tuple[int, ...] = (0, 0),
        adversary: float = 0.0,
        gradient_penalty: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """Wrap ``classifier``; heads only for classes with at least two sources get a loss."""
        super().__init__(**kwargs)
        self.classifier = classifier
        self.n_sources = tuple(int(n) for n in n_sources)
        self.adversary = float(adversary)
        self.gradient_penalty = float(gradient_penalty)
        penultimate = classifier.get_layer("predictions").input
        self.features = keras.Model(classifier.inputs, [penultimate, classifier.output], name="features_and_probs")
        self.heads = source_heads(int(penultimate.shape[-1]), self.n_sources, self.adversary) if adversary else None
        self.built = True

    def call(self, inputs: Any, training: bool = False) -> Any:
        """Class probabilities of the classifier (a training dict contributes its image)."""
        image = inputs["image"] if isinstance(inputs, dict) else inputs
        return self.classifier(image, training=training)

    def source_loss(self, features: Any, y: Any, codes: Any) -> Any:
        """Cross-entropy of each class's source head on that class's images (0 for a class with one source)."""
        labels = tf.argmax(y, axis=-1, output_type=tf.int32)
        total = tf.constant(0.0)
        for c, logits in enumerate(self.heads(features, training=True)):
            n = self.n_sources[c]
            if n < 2:
                continue
            member = tf.cast(tf.equal(labels, c), tf.float32)
            loss = keras.losses.sparse_categorical_crossentropy(
                tf.clip_by_value(codes, 0, n - 1), logits, from_logits=True
            )
            total += tf.reduce_sum(loss * member) / tf.maximum(tf.reduce_sum(member), 1.0)
        return total

    def objective(self, x: Any, y: Any, sample_weight: Any = None) -> tuple[Any, Any]:
        """The training loss (class loss + recipes' terms) and the class probabilities of a training batch."""
        image = tf.convert_to_tensor(x["image"])
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(image)
            features, probs = self.features(image, training=True)
            log_probs = tf.reduce_sum(tf.math.log(tf.clip_by_value(tf.cast(probs, tf.float32), 1e-7, 1.0)))
        loss = self.compute_loss(x=image, y=y, y_pred=probs, sample_weight=sample_weight, training=True)
        if self.gradient_penalty:
            gradients = inner.gradient(log_probs, image)
            loss += self.gradient_penalty * input_gradient_penalty(gradients, x["allowed"])
        if self.heads is not None:
            loss += self.source_loss(features, y, x["source"])
        return loss, probs

    def train_step(self, data: Any) -> dict[str, Any]:
        """One optimisation step on the full objective; metrics are the classifier's."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, probs = self.objective(x, y, sample_weight)
            scaled = self.optimizer.scale_loss(loss)
        weights = self.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights))
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(x["image"])[0])
        return self.compute_metrics(x["image"], y, probs, sample_weight=sample_weight)

    def get_config(self) -> dict[str, Any]:
        """Serialisable configuration (the classifier nested)."""
        return {
            "name": self.name,
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "n_sources": list(self.n_sources),
            "adversary": self.adversary,
            "gradient_penalty": self.gradient_penalty,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RobustModel:
        """Rebuild from :meth:`get_config`."""
        config = dict(config)
        classifier = keras.saving.deserialize_keras_object(config.pop("classifier"))
        return cls(classifier, **config)
