"""Pydantic models of the network spec (API.md §2) and the training config (API.md §3).

These models are the single validation point for what a client may ask the engine to build and
train. Every model forbids unknown fields, so a misspelt field is an error that names it, and
every cross-field rule raises a message that starts with the path of the offending field.
Numbers and flags are strict, nothing is coerced: an integer field takes only integers (not
``"10"``, ``true`` or ``10.5``), a number field takes integers or floats (not ``"0.1"`` or
``true``), and a flag only ``true``/``false``.
The models hold plain Python data only; turning them into arrays is the engine's job.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

ActivationName = Literal[
    "identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "softmax"
]
InitName = Literal["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "zeros"]
LossName = Literal["mse", "mae", "binary_crossentropy", "categorical_crossentropy"]
DTypeName = Literal["float32", "float64"]

ACTIVATIONS: tuple[str, ...] = get_args(ActivationName)
INITS: tuple[str, ...] = get_args(InitName)
LOSSES: tuple[str, ...] = get_args(LossName)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LayerSpec(_Strict):
    """One dense layer: ``a_out = activation(a_in @ W + b)``."""

    units: StrictInt = Field(ge=1)
    activation: ActivationName


class LayerWeights(_Strict):
    """Given weights of one layer; ``W`` is ``(inputs, units)``, ``b`` is ``(units,)``."""

    W: list[list[StrictFloat]]
    b: list[StrictFloat] | None = None


class NetworkSpec(_Strict):
    """A feed-forward network of dense layers (API.md §2)."""

    input_dim: StrictInt = Field(ge=1)
    layers: list[LayerSpec] = Field(min_length=1)
    init: InitName = "glorot_uniform"
    initial_weights: list[LayerWeights] | None = None

    @field_validator("layers")
    @classmethod
    def _softmax_placement(cls, layers: list[LayerSpec]) -> list[LayerSpec]:
        last = len(layers) - 1
        for i, layer in enumerate(layers):
            if layer.activation != "softmax":
                continue
            if layer.units < 2:
                raise ValueError(
                    f"layers[{i}].activation: softmax needs at least 2 units "
                    f"(layers[{i}].units is {layer.units}); use sigmoid for one output"
                )
            if i != last:
                raise ValueError(
                    f"layers[{i}].activation: softmax is only allowed on the last layer"
                )
        return layers

    @model_validator(mode="after")
    def _weights_match_layers(self) -> NetworkSpec:
        if self.initial_weights is None:
            return self
        if len(self.initial_weights) != len(self.layers):
            raise ValueError(
                f"initial_weights: has {len(self.initial_weights)} layers but "
                f"layers has {len(self.layers)}"
            )
        n_in = self.input_dim
        for i, (given, layer) in enumerate(zip(self.initial_weights, self.layers, strict=True)):
            expected = (n_in, layer.units)
            rows = len(given.W)
            widths = {len(row) for row in given.W}
            if rows != n_in or widths != {layer.units}:
                got = f"({rows}, {widths.pop()})" if len(widths) == 1 else "a ragged list"
                raise ValueError(
                    f"initial_weights[{i}].W: expected shape {expected} (inputs, units), got {got}"
                )
            if given.b is not None and len(given.b) != layer.units:
                raise ValueError(
                    f"initial_weights[{i}].b: expected shape ({layer.units},), "
                    f"got ({len(given.b)},)"
                )
            n_in = layer.units
        return self

    @property
    def output_dim(self) -> int:
        return self.layers[-1].units


class SGDConfig(_Strict):
    """Stochastic gradient descent, PyTorch conventions (``v = momentum*v + g``)."""

    name: Literal["sgd"] = "sgd"
    learning_rate: StrictFloat = Field(0.01, gt=0)
    momentum: StrictFloat = Field(0.0, ge=0, lt=1)
    nesterov: StrictBool = False
    weight_decay: StrictFloat = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDConfig:
        if self.nesterov and self.momentum == 0:
            raise ValueError("optimizer.nesterov: Nesterov momentum needs optimizer.momentum > 0")
        return self


class AdamConfig(_Strict):
    """Adam with bias correction; ``weight_decay`` is L2 added to the gradient (as in PyTorch)."""

    name: Literal["adam"]
    learning_rate: StrictFloat = Field(0.001, gt=0)
    beta1: StrictFloat = Field(0.9, ge=0, lt=1)
    beta2: StrictFloat = Field(0.999, ge=0, lt=1)
    eps: StrictFloat = Field(1e-8, gt=0)
    weight_decay: StrictFloat = Field(0.0, ge=0)


class RMSPropConfig(_Strict):
    """RMSProp, PyTorch conventions (``eps`` added outside the square root)."""

    name: Literal["rmsprop"]
    learning_rate: StrictFloat = Field(0.001, gt=0)
    rho: StrictFloat = Field(0.9, ge=0, lt=1)
    eps: StrictFloat = Field(1e-8, gt=0)
    momentum: StrictFloat = Field(0.0, ge=0, lt=1)
    weight_decay: StrictFloat = Field(0.0, ge=0)


DEFAULT_OPTIMIZER = "sgd"
OptimizerConfig = Annotated[SGDConfig | AdamConfig | RMSPropConfig, Field(discriminator="name")]


class EarlyStopping(_Strict):
    """Stop when the monitored loss has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: StrictInt = Field(10, ge=1)
    min_delta: StrictFloat = Field(0.0, ge=0)
    restore_best: StrictBool = True


class ValidationFold(_Strict):
    """Hold out fold ``index`` of ``k`` (of a seeded permutation) for k-fold cross-validation."""

    k: StrictInt = Field(ge=2)
    index: StrictInt = Field(ge=0)

    @model_validator(mode="after")
    def _index_in_range(self) -> ValidationFold:
        if self.index >= self.k:
            raise ValueError(f"validation_fold.index: must be below k={self.k}")
        return self


class WarmStart(_Strict):
    """Start from the weights (and standardisation) of an earlier run of the same owner:
    a succeeded one's model, or the weights a cancelled one had when it stopped."""

    run_id: str = Field(min_length=1, max_length=100)


class TrainingConfig(_Strict):
    """How to train (API.md §3)."""

    loss: LossName = "mse"
    optimizer: OptimizerConfig = Field(default_factory=SGDConfig)
    epochs: StrictInt = Field(10, ge=1)
    batch_size: StrictInt = Field(32, ge=1)
    shuffle: StrictBool = True
    seed: StrictInt = Field(0, ge=0)
    validation_split: StrictFloat = Field(0.0, ge=0, lt=1)
    standardize: StrictBool = False
    dtype: DTypeName = "float32"
    early_stopping: EarlyStopping | None = None
    max_runtime_s: StrictFloat | None = Field(None, gt=0)
    validation_fold: ValidationFold | None = None
    warm_start: WarmStart | None = None

    @model_validator(mode="after")
    def _one_validation_scheme(self) -> TrainingConfig:
        if self.validation_fold is not None and self.validation_split > 0:
            raise ValueError(
                "validation_fold: cannot be combined with validation_split > 0 (the fold is "
                "the validation set)"
            )
        return self

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_name(cls, value: Any) -> Any:
        """Names are case-insensitive, and an optimizer without one is the default (sgd).

        So ``{"learning_rate": 0.1}`` tunes the default optimizer, as a sweep over
        ``training.optimizer.learning_rate`` does when its base sets no optimizer.
        """
        if isinstance(value, dict):
            name = value.get("name", DEFAULT_OPTIMIZER)
            if isinstance(name, str):
                value = {**value, "name": name.lower()}
        return value


_OUTPUT_FOR_LOSS = {"categorical_crossentropy": "softmax", "binary_crossentropy": "sigmoid"}


def check_compatible(network: NetworkSpec, training: TrainingConfig) -> None:
    """Raise ``ValueError`` naming the field when ``training.loss`` does not fit the output layer.

    Cross-entropy losses are computed in their fused, numerically stable form, which needs the
    matching output activation: softmax for categorical, sigmoid for binary cross-entropy.
    """
    needed = _OUTPUT_FOR_LOSS.get(training.loss)
    last = len(network.layers) - 1
    actual = network.layers[last].activation
    if needed is not None and actual != needed:
        raise ValueError(
            f"training.loss: {training.loss} needs a {needed} output layer "
            f"(network.layers[{last}].activation is '{actual}')"
        )
