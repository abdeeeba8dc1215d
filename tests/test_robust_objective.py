"""Recipes 5 and 6 of source-robust training: the class-conditional source adversary behind gradient reversal and the
input-gradient penalty outside the lungs (cxr_core.train.robust)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli
from tiny_models import build_tiny_model

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cxr_core.train.architectures import CLASSES  # noqa: E402
from cxr_core.train.config import TrainConfig, TrainingError  # noqa: E402
from cxr_core.train.pipeline import make_dataset, source_codes  # noqa: E402
from cxr_core.train.robust import GradientReversal, RobustModel, input_gradient_penalty, source_heads  # noqa: E402

COVID, NORMAL = CLASSES.index("COVID"), CLASSES.index("Normal")
SIZE = 32


def test_gradient_reversal_is_identity_forward_and_reverses_the_gradient() -> None:
    x = tf.constant([[1.0, -2.0, 3.0]])
    weights = tf.constant([[0.5, 2.0, -1.0]])
    layer = GradientReversal(0.7)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        forward = layer(x)
        loss = tf.reduce_sum(forward * weights)
        plain = tf.reduce_sum(x * weights)
    np.testing.assert_allclose(forward.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), -0.7 * tape.gradient(plain, x).numpy(), rtol=1e-6)


def test_source_head_trains_itself_but_pushes_the_features_the_other_way() -> None:
    """On a toy model the head's own weights descend the source loss, while the features below the reversal get the
    opposite of the gradient they would get without it."""
    keras.utils.set_random_seed(3)
    features = tf.constant(np.random.default_rng(0).normal(size=(8, 4)), tf.float32)
    codes = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])
    heads = source_heads(4, (3, 1), scale=1.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(features)
        logits = heads(features)[0]
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(codes, logits, from_logits=True))
    hidden = heads.get_layer("covid_source_hidden")
    without_reversal = keras.Model(hidden.input, heads.outputs[0])
    with tf.GradientTape() as plain_tape:
        plain_tape.watch(features)
        plain_loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(codes, without_reversal(features), from_logits=True)
        )
    reversed_grad = tape.gradient(loss, features).numpy()
    np.testing.assert_allclose(reversed_grad, -plain_tape.gradient(plain_loss, features).numpy(), rtol=1e-5, atol=1e-7)
    assert np.abs(reversed_grad).sum() > 0
    head_grads = tape.gradient(loss, hidden.trainable_weights)
    step = [w - 0.1 * g for w, g in zip(hidden.trainable_weights, head_grads)]
    for w, new in zip(hidden.trainable_weights, step):
        w.assign(new)
    after = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(codes, heads(features)[0], from_logits=True))
    assert float(after) < float(loss)


def test_input_gradient_penalty_is_zero_inside_the_mask_and_positive_outside() -> None:
    allowed = np.zeros((2, 8, 8), np.float32)
    allowed[:, 2:6, 2:6] = 1
    inside = np.zeros((2, 8, 8, 1), np.float32)
    inside[:, 3, 3, 0] = 5.0
    assert float(input_gradient_penalty(tf.constant(inside), tf.constant(allowed))) == 0.0
    outside = inside.copy()
    outside[1, 0, 0, 0] = 5.0
    value = float(input_gradient_penalty(tf.constant(outside), tf.constant(allowed)))
    assert value == pytest.approx(0.25)
    assert float(input_gradient_penalty(tf.constant(np.zeros_like(inside)), tf.constant(allowed))) == 0.0


def test_source_codes_index_sources_within_each_class() -> None:
    labels = np.array([COVID, COVID, NORMAL, NORMAL, NORMAL])
    codes, by_class = source_codes(labels, np.array(["b", "a", "z", "x", "z"]))
    assert by_class[COVID] == ("a", "b") and by_class[NORMAL] == ("x", "z")
    assert codes.tolist() == [1, 0, 1, 0, 1]


def test_training_batches_carry_sources_and_a_mask_that_moves_with_the_image() -> None:
    """With an allowed mask the geometric augmentation moves the mask exactly like the image."""
    from cxr_core.train.pipeline import Augmentation

    n = 8
    images = np.zeros((n, SIZE, SIZE), np.uint8)
    images[:, 8:24, 8:24] = 255
    allowed = images > 0
    args = dict(batch=4, training=True, seed=5, augment=Augmentation(rotation=20, zoom=0.1, shift=0.1, shear=0.0))
    kwargs = dict(args, source_codes=np.arange(n, dtype=np.int32) % 2, allowed=allowed, epochs=range(0, 1))
    batches = list(make_dataset(images, np.zeros(n, int), **kwargs))
    again = list(make_dataset(images, np.zeros(n, int), **kwargs))
    for (x, _), (x2, _) in zip(batches, again):
        np.testing.assert_array_equal(x["image"].numpy(), x2["image"].numpy())
        np.testing.assert_array_equal(x["allowed"].numpy(), x2["allowed"].numpy())
    x = batches[0][0]
    assert set(x) == {"image", "source", "allowed"}
    bright = x["image"].numpy()[..., 0] >= 128
    mask = x["allowed"].numpy() > 0
    assert not np.array_equal(mask, allowed[:4])
    assert (bright == mask).mean() > 0.99


def _shortcut_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training: COVID from a source that stamps a bright corner square, Normal from one that does not; the disease
    is a faint brighter patch in the middle ("lungs"). Held out: COVID from a source without the square."""

    def films(n: int, covid: bool, square: bool) -> np.ndarray:
        x = rng.normal(100, 25, (n, SIZE, SIZE)).clip(0, 255)
        if covid:
            x[:, 10:22, 10:22] += 25
        if square:
            x[:, :6, :6] = 255
        return x.astype(np.uint8)

    x = np.concatenate([films(200, True, True), films(200, False, False)])
    y = np.array([COVID] * 200 + [NORMAL] * 200)
    allowed = np.zeros((len(x), SIZE, SIZE), bool)
    allowed[:, 8:24, 8:24] = True
    return x, y, allowed, films(100, True, False)


def test_gradient_penalty_beats_the_plain_recipe_on_a_source_without_the_shortcut() -> None:
    x, y, allowed, held_out = _shortcut_data(np.random.default_rng(0))

    def held_out_sensitivity(penalty: float) -> float:
        keras.utils.set_random_seed(1)
        classifier = build_tiny_model(SIZE)
        model = RobustModel(classifier, (1, 1), gradient_penalty=penalty) if penalty else classifier
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy")
        robust = {"source_codes": np.zeros(len(y), np.int32), "allowed": allowed} if penalty else {}
        data = make_dataset(x, y, batch=32, training=True, seed=1, epochs=range(0, 10), **robust)
        model.fit(data, epochs=10, steps_per_epoch=-(-len(y) // 32), verbose=0)
        p = classifier.predict(held_out[..., None].astype(np.float32), verbose=0)
        return float((p.argmax(axis=1) == COVID).mean())

    plain, penalised = held_out_sensitivity(0.0), held_out_sensitivity(1.0)
    assert penalised >= plain + 0.3, (plain, penalised)


def test_robust_model_saves_loads_and_predicts_like_its_classifier(tmp_path) -> None:
    classifier = build_tiny_model(SIZE)
    model = RobustModel(classifier, (2, 3), adversary=0.3, gradient_penalty=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (16, SIZE, SIZE)).astype(np.uint8)
    labels = np.array([COVID, NORMAL] * 8)
    codes = np.array([0, 2, 1, 1] * 4, np.int32)
    data = make_dataset(
        images, labels, batch=8, training=True, seed=0, source_codes=codes, allowed=images > 100, epochs=range(0, 1)
    )
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
    model.save(tmp_path / "robust.keras")
    loaded = keras.saving.load_model(tmp_path / "robust.keras", compile=True)
    assert isinstance(loaded, RobustModel) and loaded.n_sources == (2, 3)
    inputs = images[:4, ..., None].astype(np.float32)
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), classifier.predict(inputs, verbose=0), atol=1e-6)
    loaded.fit(data, epochs=1, steps_per_epoch=2, verbose=0)


def test_options_are_checked() -> None:
    with pytest.raises(TrainingError, match="adversary must be at least 0"):
        TrainConfig(adversary=-1).validate()
    with pytest.raises(TrainingError, match="need --pipeline ours"):
        TrainConfig(gradient_penalty=1.0, pipeline="paper").validate()


def test_cli_trains_both_recipes_and_records_them(tmp_path, tiny_dataset, app_env, capsys) -> None:
    """``cxr train --adversary --gradient-penalty`` trains, exports the plain classifier and records the options."""
    import json

    app_env(tiny_dataset)
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        *[
            "train",
            "--data",
            str(tiny_dataset),
            "--size",
            "32",
            "--epochs",
            "1",
            "--adversary",
            "0.3",
            "--gradient-penalty",
            "1",
            "--hparams",
            '{"width": 8, "depth": 1}',
            "--run-dir",
            str(run),
        ],
    )
    assert code == 0, err
    recipe = json.loads((run / "model" / "train_config.json").read_text())
    assert recipe["adversary"] == 0.3 and recipe["gradient_penalty"] == 1.0
    card = json.loads((run / "model" / "card.json").read_text())
    assert card["training"]["adversary"] == 0.3
    model = keras.saving.load_model(run / "model" / "model.keras", safe_mode=True)
    assert not isinstance(model, RobustModel)
