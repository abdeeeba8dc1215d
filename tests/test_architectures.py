"""Architecture registry: the paper CNN's exact size, every model's contract, one training step each, offline VGG19."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cxr_core.train import architectures
from cxr_core.train.architectures import (
    ARCHITECTURES,
    CLASSES,
    VGG19_NOTOP,
    ArchitectureError,
    build_model,
    flops_per_image,
    set_batchnorm_statistics,
)


def test_paper_cnn_has_exactly_the_papers_parameter_count() -> None:
    model = build_model("paper_cnn")
    assert model.input_shape == (None, 299, 299, 1)
    assert model.count_params() == 18_129_890
    assert flops_per_image(model) == pytest.approx(6.0e9, rel=0.01)


def test_cxr_net_is_small_and_cheap_compared_with_the_paper_cnn() -> None:
    ours, paper = build_model("cxr_net"), build_model("paper_cnn")
    assert ours.input_shape == (None, 224, 224, 1)
    assert ours.count_params() <= 1_000_000
    assert paper.count_params() / ours.count_params() >= 10
    assert flops_per_image(paper) / flops_per_image(ours) >= 10


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_keeps_the_model_contract_and_trains_one_step(name: str) -> None:
    model = build_model(name, size=64)
    assert isinstance(model, keras.Model) and model.__class__.__name__ == "Functional"
    assert model.input_shape == (None, 64, 64, 1)
    out = model.get_layer("predictions")
    assert out.units == len(CLASSES) and out.activation.__name__ == "softmax"
    assert model.output_shape == (None, 2)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 64, 64, 1)).astype("float32")
    y = np.eye(2, dtype="float32")[[0, 1, 0, 1]]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_vgg19_backbone_is_frozen() -> None:
    model = build_model("vgg19_frozen", size=64)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 512 * 128 + 128 + 128 * 2 + 2


def test_vgg19_offline_without_weights_names_the_file_and_where_to_put_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def no_network(*args: object, **kwargs: object) -> str:
        raise OSError("network is unreachable")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    with pytest.raises(ArchitectureError) as info:
        build_model("vgg19_frozen", size=64, weights="imagenet")
    message = str(info.value)
    assert VGG19_NOTOP.filename in message
    assert "--weights PATH" in message
    assert str(tmp_path / "keras" / "models") in message
    assert "\n" not in message


def test_weights_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError, match="does not exist"):
        build_model("vgg19_frozen", size=64, weights=tmp_path / "missing.h5")


def test_bad_names_and_hyperparameters_are_refused() -> None:
    with pytest.raises(ArchitectureError, match="unknown architecture"):
        build_model("resnet9000")
    with pytest.raises(ArchitectureError, match="takes no hyperparameter"):
        build_model("cxr_net", size=64, colour=3)
    with pytest.raises(ArchitectureError, match="no --weights"):
        build_model("paper_cnn", size=64, weights="imagenet")
    with pytest.raises(ArchitectureError, match="at least"):
        build_model("cxr_net", size=32, depth=6)


def test_cxr_net_width_and_depth_change_the_model() -> None:
    small = build_model("cxr_net", size=64, width=16, depth=3)
    large = build_model("cxr_net", size=64, width=48, depth=4)
    assert small.count_params() < large.count_params()
    assert small.get_layer(architectures.LAST_CONV_NAME).output.shape[-1] == 64


def test_batchnorm_statistics_are_set_to_the_average_over_the_images() -> None:
    from keras import layers

    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(3, 3, name="conv")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="bn")(x)
    frozen = layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    outputs = layers.Dense(2)(layers.GlobalAveragePooling2D()(frozen(x)))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).uniform(0, 255, (48, 8, 8, 1)).astype(np.float32)
    conv = keras.Model(inputs, model.get_layer("conv").output)(images).numpy()

    assert set_batchnorm_statistics(model, images, batch=16) == 1
    bn = model.get_layer("bn")
    batches = conv.reshape(3, -1, 3)
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv.reshape(-1, 3).mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), batches.var(axis=1).mean(axis=0), rtol=1e-3)
    assert bn.momentum == 0.9
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), np.zeros(3))
