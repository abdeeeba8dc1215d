"""The one definition of a training run: :class:`TrainConfig` and the option specs that the CLI, jobs and page use.

Every field of :class:`TrainConfig` carries an :class:`Option` in its metadata (the fields of the nested
:class:`~cxr_core.train.pipeline.Augmentation` take theirs from :data:`AUGMENTATION_OPTIONS`): help text, allowed values,
a label and a group. :func:`train_options` turns them
into flat :class:`OptionSpec` rows, so that ``cxr train`` generates its arguments from them, the Training page its
widgets, and :func:`config_from_options` builds a config from any flat mapping of option names (a page request,
parsed arguments). A new training option is one field here. This module imports no TensorFlow.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cxr_core.preprocess.normalise import METHODS
from cxr_core.preprocess.recipe import RESIZE_POLICIES, ROI_MODES, PreprocessConfig, PreprocessError
from cxr_core.preprocess.roi import LUNG_STANDARDISATION
from cxr_core.train.appearance import Appearance
from cxr_core.train.architectures import ARCHITECTURES, get_architecture
from cxr_core.train.pipeline import Augmentation

PIPELINES = ("ours", "paper")
SAMPLINGS = ("class_weight", "balanced", "source_balanced", "none")
TRAIN_CONFIG_FILE = "train_config.json"
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
MONITORS = {"val_auc": "max", "val_loss": "min"}
GROUPS = ("model", "preprocessing", "optimisation", "sampling", "augmentation", "robustness", "advanced")


class TrainingError(ValueError):
    """A training request is invalid or a run cannot be resumed; ``str(exc)`` is one clear line."""


@dataclass(frozen=True)
class Option:
    """How one configuration field is offered: help, allowed values, widget label and page group."""

    help: str
    label: str
    group: str
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    choice_labels: Mapping[str, str] = field(default_factory=dict)
    flag: str | None = None
    on_page: bool = True


def option(default: Any = MISSING, *, factory: Callable[[], Any] | None = None, **spec: Any) -> Any:
    """A dataclass field whose metadata holds its :class:`Option`."""
    meta = {"option": Option(**spec)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """One flat training option: its name, where it lives in the config, its type and default, and its Option."""

    name: str
    path: tuple[str, ...]
    kind: type
    optional: bool
    default: Any
    option: Option

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--mixed-precision``."""
        return "--" + self.name.replace("_", "-")

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The allowed values, or None when any value of the type is allowed."""
        choices = self.option.choices
        if choices is None:
            return None
        return tuple(choices() if callable(choices) else choices)

    def value_in(self, values: Mapping[str, Any]) -> Any:
        """This option's value in a nested config dict such as :meth:`TrainConfig.to_dict` returns."""
        for key in self.path:
            values = values[key]
        return values

    def check(self, value: Any) -> Any:
        """``value`` checked against the type and choices (ints accepted for floats); :class:`TrainingError` if not."""
        if value is None and self.optional:
            return None
        kinds = {bool: "true or false", int: "a whole number", float: "a number", str: "text", dict: "a JSON object"}
        ok = isinstance(value, self.kind) and not (self.kind is not bool and isinstance(value, bool))
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise TrainingError(f"{self.name} must be {kinds[self.kind]}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise TrainingError(f"{self.name} must be one of {list(self.choices)}, got {value!r}")
        return value


def _field_spec(name: str, path: tuple[str, ...], item: Field, hint: Any, spec: Option) -> OptionSpec:
    """The OptionSpec of one dataclass field from its type hint."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = len(args) < len(typing.get_args(hint))
    base = args[0] if optional else hint
    default = item.default_factory() if item.default is MISSING else item.default
    return OptionSpec(name, path, typing.get_origin(base) or base, optional, default, spec)


def _specs(cls: type, prefix: tuple[str, ...] = (), options: Mapping[str, Option] | None = None) -> list[OptionSpec]:
    """The OptionSpecs of a config dataclass (Options from field metadata or ``options``), nested ones flattened."""
    hints = typing.get_type_hints(cls)
    out: list[OptionSpec] = []
    for item in fields(cls):
        if "nested" in item.metadata:
            out += _specs(item.metadata["nested"], prefix + (item.name,), item.metadata["options"])
            continue
        spec = options[item.name] if options is not None else item.metadata["option"]
        out.append(_field_spec(spec.flag or item.name, prefix + (item.name,), item, hints[item.name], spec))
    return out


AUGMENTATION_OPTIONS = {
    "rotation": Option("max rotation in degrees", "rotation (deg)", "augmentation"),
    "zoom": Option("max zoom fraction", "zoom", "augmentation"),
    "shift": Option("max shift fraction", "shift", "augmentation"),
    "shear": Option("max shear fraction", "shear", "augmentation"),
    "flip": Option(
        "horizontal flips (off by default: chest X-rays are not left-right symmetric)",
        "horizontal flip",
        "augmentation",
        flag="hflip",
    ),
}
APPEARANCE_LABELS = {
    "gamma": "gamma (max |log gamma|)",
    "contrast": "contrast (max change, fraction)",
    "brightness": "brightness (max shift, fraction of 255)",
    "blur": "blur (max Gaussian sigma, px)",
    "sharpen": "sharpening (max amount)",
    "noise": "Gaussian noise (max sigma, gray levels)",
    "poisson": "Poisson-like noise (max strength)",
    "jpeg": "JPEG re-compression (lowest quality)",
    "resample": "down- and up-sampling (smallest scale)",
    "frame": "black frame (max width, fraction of the side)",
    "window": "windowing (max clipped fraction at each end)",
}
APPEARANCE_OPTIONS = {
    **{
        name: Option(
            f"appearance augmentation: {text}",
            text.split(" (")[0].capitalize(),
            "robustness",
            flag=f"appearance_{name}",
        )
        for name, text in APPEARANCE_LABELS.items()
    },
    **{
        f"{name}_p": Option(
            f"appearance augmentation: probability of {text.split(' (')[0]}",
            f"P({text.split(' (')[0]})",
            "robustness",
            flag=f"appearance_{name}_p",
        )
        for name, text in APPEARANCE_LABELS.items()
    },
}
ROI_LABELS = {
    "none": "none (whole film)",
    "lung_crop": "lung_crop (crop to the lungs)",
    "lung_mask": "lung_mask (blank everything outside the lungs)",
}
SAMPLING_LABELS = {
    "class_weight": "class weights (inverse frequency)",
    "balanced": "balanced sampling",
    "source_balanced": "source-balanced sampling (classes, then sources within a class)",
    "none": "none",
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json["train"]``; resume reads it back)."""

    arch: str = option(
        "cxr_net", help="architecture", label="Architecture", group="model", choices=lambda: sorted(ARCHITECTURES)
    )
    epochs: int = option(
        30, help="maximum epochs (with --resume: train on to this many)", label="Epochs", group="optimisation"
    )
    size: int | None = option(
        None, help="image size in px (default: the architecture's)", label="Image size (px)", group="model"
    )
    method: str = option(
        "clahe",
        help="normalisation method",
        label="Normalisation",
        group="preprocessing",
        choices=lambda: sorted(METHODS),
    )
    method_params: dict[str, Any] = option(
        factory=dict, help="normalisation parameters as JSON", label="Normalisation parameters", group="preprocessing"
    )
    resize: str = option(
        "squash",
        help="squash to a square, or pad to one first",
        label="Resize",
        group="preprocessing",
        choices=RESIZE_POLICIES,
    )
    roi: str = option(
        "none",
        help="region of interest (lung_crop and lung_mask use the lung segmenter)",
        label="Region of interest",
        group="preprocessing",
        choices=ROI_MODES,
        choice_labels=ROI_LABELS,
    )
    lr: float | None = option(
        None, help="Adam learning rate (default: the architecture's)", label="Learning rate", group="optimisation"
    )
    batch: int = option(32, help="batch size", label="Batch size", group="optimisation")
    limit: int | None = option(
        None,
        help="train on N images only (smoke runs; val/test capped at max(16, N/4))",
        label="Limit training images (empty = all)",
        group="sampling",
    )
    seed: int | None = option(None, help="random seed (default: the configured seed)", label="Seed", group="sampling")
    patience: int = option(
        8, help="early-stopping patience in epochs", label="Early-stopping patience (epochs)", group="optimisation"
    )
    lr_patience: int = option(
        3,
        help="epochs without improvement before the learning rate is halved",
        label="Learning-rate patience (epochs)",
        group="optimisation",
    )
    monitor: str = option(
        "val_auc",
        help="the validation metric for early stopping and the best model",
        label="Best model by",
        group="optimisation",
        choices=tuple(MONITORS),
    )
    mixed_precision: bool = option(
        False, help="bfloat16 mixed precision", label="Mixed precision (bf16)", group="advanced"
    )
    ema: bool = option(
        True,
        help="validate and keep an exponential moving average of the weights (Polyak averaging)",
        label="EMA of weights",
        group="optimisation",
    )
    pipeline: str = option(
        "ours",
        help="tf.data (ours) or the paper's ImageDataGenerator",
        label="Input pipeline",
        group="advanced",
        choices=PIPELINES,
    )
    sampling: str = option(
        "class_weight",
        help="class_weight, balanced (classes equally likely), source_balanced "
        "(classes equally likely and, within a class, every source equally likely) or none",
        label="Class imbalance",
        group="sampling",
        choices=SAMPLINGS,
        choice_labels=SAMPLING_LABELS,
    )
    augment: bool = option(True, help="geometric augmentation", label="Augmentation", group="augmentation")
    augmentation: dict[str, Any] = field(
        default_factory=lambda: Augmentation().to_dict(),
        metadata={"nested": Augmentation, "options": AUGMENTATION_OPTIONS},
    )
    appearance: bool = option(
        False,
        help="appearance augmentation that erases source signatures: random gamma, contrast, brightness, blur, "
        "sharpening, noise, JPEG, resampling, black frames and windowing, each with its probability and range",
        label="Appearance augmentation",
        group="robustness",
    )
    lung_standardise: str = option(
        "none",
        help="per-image intensity standardisation inside the lungs (needs a lung roi): zscore, or histogram "
        "matching to a fixed reference",
        label="Lung intensity standardisation",
        group="robustness",
        choices=LUNG_STANDARDISATION,
    )
    normal_markings: float = option(
        0.0,
        help="probability that a Normal training image gets synthetic markings (arrows, boxes, captions), so that "
        "markings stop meaning COVID (0: off)",
        label="Markings on Normal images (probability)",
        group="robustness",
    )
    adversary: float = option(
        0.0,
        help="weight of the class-conditional source adversary: behind gradient reversal, one head predicts a Normal "
        "image's source among the Normal sources, another a COVID image's among the COVID sources (0: off)",
        label="Source adversary (weight)",
        group="robustness",
    )
    gradient_penalty: float = option(
        0.0,
        help="weight of the penalty on the share of input gradients outside the dilated lung mask, 'right for the "
        "right reasons' (0: off; about 3x the cost per step)",
        label="Penalty on gradients outside the lungs (weight)",
        group="robustness",
    )
    appearance_ops: dict[str, Any] = field(
        default_factory=lambda: Appearance().to_dict(),
        metadata={"nested": Appearance, "options": APPEARANCE_OPTIONS},
    )
    hparams: dict[str, Any] = option(
        factory=dict,
        help="architecture hyperparameters as JSON, e.g. '{\"width\": 48}'",
        label="Architecture hyperparameters (JSON)",
        group="advanced",
    )
    weights: str | None = option(
        None,
        help="pre-trained weights file (vgg19_frozen, densenet121); 'imagenet' downloads",
        label="Pre-trained weights",
        group="model",
    )
    data_dir: str | None = option(
        None,
        help="dataset folder (default: the configured data dir)",
        label="Dataset",
        group="sampling",
        flag="data",
        on_page=False,
    )
    strategy: str = option(
        "auto",
        help="distribution strategy (auto: mirrored over several GPUs, else default)",
        label="Distribution strategy",
        group="advanced",
        choices=STRATEGIES,
    )
    batch_log_every: int = option(
        5, help="record the training loss every N batches", label="Log the loss every N batches", group="advanced"
    )
    target_sensitivity: float = option(
        0.95,
        help="sensitivity the exported threshold aims at on validation",
        label="Target sensitivity",
        group="advanced",
    )

    def validate(self) -> TrainConfig:
        """Check every field (one-line :class:`TrainingError`); returns self."""
        values = self.to_dict()
        for spec in train_options():
            spec.check(spec.value_in(values))
        arch = get_architecture(self.arch)
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch >= 1, f"batch must be at least 1, got {self.batch}"),
            (self.size is None or self.size >= 16, f"size must be at least 16 px, got {self.size}"),
            (self.limit is None or self.limit >= 4, f"limit must be at least 4 images, got {self.limit}"),
            (self.lr is None or self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.patience >= 1 and self.lr_patience >= 1, "patience values must be at least 1"),
            (
                not (self.pipeline == "paper" and self.sampling in ("balanced", "source_balanced")),
                f"{self.sampling} sampling is available with --pipeline ours only",
            ),
            (self.batch_log_every >= 1, "batch_log_every must be at least 1"),
            (not (self.appearance and self.pipeline == "paper"), "appearance augmentation needs --pipeline ours"),
            (0 <= self.normal_markings <= 1, f"normal_markings must be a probability, got {self.normal_markings}"),
            (not (self.normal_markings and self.pipeline == "paper"), "normal_markings needs --pipeline ours"),
            (self.adversary >= 0, f"adversary must be at least 0, got {self.adversary}"),
            (self.gradient_penalty >= 0, f"gradient_penalty must be at least 0, got {self.gradient_penalty}"),
            (
                not (self.robust_objective and self.pipeline == "paper"),
                "adversary and gradient_penalty need --pipeline ours",
            ),
            (
                not (self.robust_objective and self.strategy == "multi_worker"),
                "adversary and gradient_penalty are not available with --strategy multi_worker",
            ),
            (0 < self.target_sensitivity <= 1, "target sensitivity must be in (0, 1]"),
            (not set(self.hparams) - set(arch.hparams), f"{self.arch} takes hyperparameters {sorted(arch.hparams)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(message)
        Augmentation(**self.augmentation)
        problems = Appearance(**self.appearance_ops).problems()
        if problems:
            raise TrainingError(f"appearance augmentation: {problems[0]}")
        try:
            self.preprocess()
        except PreprocessError as exc:
            raise TrainingError(str(exc)) from exc
        if self.strategy == "multi_worker":
            check_cluster()
        return self

    @property
    def robust_objective(self) -> bool:
        """Whether a recipe changes the training objective (source adversary, input-gradient penalty)."""
        return bool(self.adversary or self.gradient_penalty)

    @property
    def image_size(self) -> int:
        """The input size: ``size`` or the architecture's default."""
        return int(self.size or get_architecture(self.arch).default_size)

    @property
    def learning_rate(self) -> float:
        """The learning rate: ``lr`` or the architecture's default."""
        return float(self.lr or get_architecture(self.arch).default_lr)

    def preprocess(self) -> PreprocessConfig:
        """The PreprocessConfig applied to every image (saved with the model)."""
        return PreprocessConfig(
            method=self.method,
            params=tuple(self.method_params.items()),
            size=self.image_size,
            resize=self.resize,
            roi=self.roi,
            lung_standardise=self.lung_standardise,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored (older runs)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def train_options() -> list[OptionSpec]:
    """Every training option, flat and in TrainConfig's field order."""
    return _specs(TrainConfig)


def config_from_options(options: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: TrainConfig's defaults) with the given flat options (names of :func:`train_options`).

    Unknown names and values of the wrong type are one-line :class:`TrainingError`. A pre-trained architecture
    without weights given here or in ``base`` gets ``imagenet``.
    """
    specs = {spec.name: spec for spec in train_options()}
    unknown = sorted(set(options) - set(specs))
    if unknown:
        raise TrainingError(f"unknown training options {unknown}")
    values = (base or TrainConfig()).to_dict()
    values["augmentation"] = {**Augmentation().to_dict(), **values.get("augmentation", {})}
    values["appearance_ops"] = {**Appearance().to_dict(), **values.get("appearance_ops", {})}
    for name, value in options.items():
        spec = specs[name]
        target = values
        for key in spec.path[:-1]:
            target = target[key]
        target[spec.path[-1]] = spec.check(str(value) if isinstance(value, Path) else value)
    tc = TrainConfig.from_dict(values)
    if (
        tc.weights is None
        and "weights" not in options
        and tc.arch in ARCHITECTURES
        and ARCHITECTURES[tc.arch].pretrained
    ):
        tc.weights = "imagenet"
    return tc


def read_train_config(path: str | Path) -> TrainConfig:
    """The TrainConfig saved in ``path``: a model's ``train_config.json``, a run's ``config.json`` or a ``job.json``
    (their ``train``).

    A missing or unreadable file, or one with options this version does not know, is one-line :class:`TrainingError`.
    """
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TrainingError(f"no configuration file at {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{path} is not a readable JSON configuration: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        data = data["train"]
    if not isinstance(data, dict):
        raise TrainingError(f"{path} does not hold a training configuration (a JSON object)")
    unknown = sorted(set(data) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise TrainingError(f"{path}: unknown training options {unknown}")
    try:
        return TrainConfig(**data)
    except TypeError as exc:
        raise TrainingError(f"{path}: {exc}") from exc


def check_cluster(env: Mapping[str, str] | None = None) -> int:
    """The number of workers (chief included) in ``TF_CONFIG``; :class:`TrainingError` when there is no valid one."""
    text = (os.environ if env is None else env).get("TF_CONFIG", "")
    if not text:
        raise TrainingError("--strategy multi_worker needs the TF_CONFIG environment variable (cluster and task)")
    try:
        config = json.loads(text)
        workers = sum(len(config["cluster"].get(job) or []) for job in ("chief", "worker"))
        config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TrainingError(f"TF_CONFIG is not a JSON object with cluster and task: {exc}") from exc
    if workers < 1:
        raise TrainingError("TF_CONFIG lists no chief or worker")
    return workers
