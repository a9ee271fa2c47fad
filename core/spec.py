"""Pydantic models of the network spec (API.md §2) and the training config (API.md §3).

These models are the single validation point for what a client may ask the engine to build and
train. Every model forbids unknown fields, so a misspelt field is an error that names it, and
every cross-field rule raises a message that starts with the path of the offending field.
Numbers and flags are strict, nothing is coerced: an integer field takes only integers (not
``"10"``, ``true`` or ``10.5``), a number field takes integers or floats (not ``"0.1"`` or
``true``), and a flag only ``true``/``false``.
A near-miss name (an activation, loss, init, optimizer or field name one typo away from a
real one) gets "; did you mean 'tanh'?" in its error message and ``did_you_mean`` in its
``ctx`` (:class:`Hinted`), so the API's 422, a sweep's trial error and the Python API all say
it. ``"optimizer": "adam"`` is shorthand for ``{"name": "adam"}``.
The models hold plain Python data only; turning them into arrays is the engine's job.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

ActivationName = Literal[
    "identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "softmax"
]
InitName = Literal["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "zeros"]
LossName = Literal["mse", "mae", "binary_crossentropy", "categorical_crossentropy"]
DTypeName = Literal["float32", "float64"]

ACTIVATIONS: tuple[str, ...] = get_args(ActivationName)
INITS: tuple[str, ...] = get_args(InitName)
LOSSES: tuple[str, ...] = get_args(LossName)

# A quoted choice in pydantic's ``ctx`` ("'sgd', 'adam' or 'rmsprop'").
_QUOTED = re.compile(r"'([^']*)'")


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` most likely meant (case aside, or ``difflib`` similarity >= 0.6);
    None when none is close or ``word`` is one of them."""
    options = list(choices)
    if word in options:
        return None
    by_lower = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def _suggestion(error: ErrorDetails, fields: Collection[str] | None) -> str | None:
    """The name a near miss meant: a value among the choices of a ``literal_error`` or
    ``enum``, an optimizer ``name`` (``union_tag_invalid``), or, given the model's
    ``fields``, an unknown field one level down (``extra_forbidden``)."""
    ctx = error.get("ctx") or {}
    if "did_you_mean" in ctx:
        return None
    kind, value, loc = error["type"], error.get("input"), error["loc"]
    if kind in ("literal_error", "enum") and isinstance(value, str):
        return did_you_mean(value, _QUOTED.findall(str(ctx.get("expected", ""))))
    if kind == "union_tag_invalid" and isinstance(ctx.get("tag"), str):
        return did_you_mean(ctx["tag"], _QUOTED.findall(str(ctx.get("expected_tags", ""))))
    if kind == "extra_forbidden" and fields is not None and len(loc) == 1:
        return did_you_mean(str(loc[0]), fields)
    return None


def with_hints(
    errors: Sequence[ErrorDetails], fields: Collection[str] | None = None
) -> list[ErrorDetails] | None:
    """``errors`` with "; did you mean 'x'?" added to the message and ``did_you_mean`` to
    the ``ctx`` of each near-miss name (see :func:`_suggestion`); None when none has one."""
    result: list[ErrorDetails] = []
    hinted = False
    for error in errors:
        suggestion = _suggestion(error, fields)
        if suggestion is not None:
            hinted = True
            error = {
                **error,
                "msg": f"{error['msg']}; did you mean '{suggestion}'?",
                "ctx": {**(error.get("ctx") or {}), "did_you_mean": suggestion},
            }
        result.append(error)
    return result if hinted else None


class Hinted(BaseModel):
    """A model whose validation errors suggest the name a near miss meant (see
    :func:`with_hints`): a misspelt field of this model, and misspelt choices below it."""

    @model_validator(mode="wrap")
    @classmethod
    def _suggest_names(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        try:
            return handler(data)
        except ValidationError as exc:
            given = set(data) if isinstance(data, dict) else set()
            fields = [name for name in cls.model_fields if name not in given]
            hinted = with_hints(exc.errors(), fields)
            if hinted is None:
                raise
            # Rebuilt as custom errors: each keeps its type, message and ctx.
            details = [
                InitErrorDetails(
                    type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")),
                    loc=e["loc"],
                    input=e.get("input"),
                )
                for e in hinted
            ]
            raise ValidationError.from_exception_data(exc.title, details) from None


class StrictModel(Hinted):
    """Unknown fields are errors (with a hint when near a real one); no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LayerSpec(StrictModel):
    """One dense layer: ``a_out = activation(a_in @ W + b)``."""

    units: StrictInt = Field(ge=1)
    activation: ActivationName


class LayerWeights(StrictModel):
    """Given weights of one layer; ``W`` is ``(inputs, units)``, ``b`` is ``(units,)``."""

    W: list[list[StrictFloat]]
    b: list[StrictFloat] | None = None


class NetworkSpec(StrictModel):
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


class SGDConfig(StrictModel):
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


class AdamConfig(StrictModel):
    """Adam with bias correction; ``weight_decay`` is L2 added to the gradient (as in PyTorch)."""

    name: Literal["adam"]
    learning_rate: StrictFloat = Field(0.001, gt=0)
    beta1: StrictFloat = Field(0.9, ge=0, lt=1)
    beta2: StrictFloat = Field(0.999, ge=0, lt=1)
    eps: StrictFloat = Field(1e-8, gt=0)
    weight_decay: StrictFloat = Field(0.0, ge=0)


class RMSPropConfig(StrictModel):
    """RMSProp, PyTorch conventions (``eps`` added outside the square root)."""

    name: Literal["rmsprop"]
    learning_rate: StrictFloat = Field(0.001, gt=0)
    rho: StrictFloat = Field(0.9, ge=0, lt=1)
    eps: StrictFloat = Field(1e-8, gt=0)
    momentum: StrictFloat = Field(0.0, ge=0, lt=1)
    weight_decay: StrictFloat = Field(0.0, ge=0)


DEFAULT_OPTIMIZER = "sgd"
OptimizerName = Literal["sgd", "adam", "rmsprop"]
OptimizerConfig = Annotated[SGDConfig | AdamConfig | RMSPropConfig, Field(discriminator="name")]


def optimizer_shorthand(value: Any) -> Any:
    """``"adam"`` is short for ``{"name": "adam"}``; anything else is returned as it is."""
    return {"name": value} if isinstance(value, str) else value


class EarlyStopping(StrictModel):
    """Stop when the monitored loss has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: StrictInt = Field(10, ge=1)
    min_delta: StrictFloat = Field(0.0, ge=0)
    restore_best: StrictBool = True


class ValidationFold(StrictModel):
    """Hold out fold ``index`` of ``k`` (of a seeded permutation) for k-fold cross-validation."""

    k: StrictInt = Field(ge=2)
    index: StrictInt = Field(ge=0)

    @model_validator(mode="after")
    def _index_in_range(self) -> ValidationFold:
        if self.index >= self.k:
            raise ValueError(f"validation_fold.index: must be below k={self.k}")
        return self


class WarmStart(StrictModel):
    """Start from the weights (and standardisation) of an earlier run of the same owner:
    a succeeded one's model, or the weights a cancelled one had when it stopped."""

    run_id: str = Field(min_length=1, max_length=100)


class TrainingConfig(StrictModel):
    """How to train (API.md §3)."""

    loss: LossName = "mse"
    optimizer: OptimizerConfig = Field(default_factory=SGDConfig)
    epochs: StrictInt = Field(10, ge=1)
    batch_size: StrictInt = Field(32, ge=1)
    shuffle: StrictBool = True
    seed: StrictInt = Field(0, ge=0)
    validation_split: StrictFloat = Field(0.0, ge=0, lt=1)
    #: Rows held out of training and validation, scored once at the end (``test_metrics``).
    test_split: StrictFloat = Field(0.0, ge=0, lt=1)
    standardize: StrictBool = False
    dtype: DTypeName = "float32"
    early_stopping: EarlyStopping | None = None
    max_runtime_s: StrictFloat | None = Field(None, gt=0)
    validation_fold: ValidationFold | None = None
    #: The explicit opt-in to fit a softmax output or one-hot classes with a regression loss
    #: (``mse``, ``mae``), which is refused otherwise: see ``check_compatible``.
    regression_on_classes: StrictBool = False
    warm_start: WarmStart | None = None

    @model_validator(mode="after")
    def _one_validation_scheme(self) -> TrainingConfig:
        if self.validation_fold is not None and self.validation_split > 0:
            raise ValueError(
                "validation_fold: cannot be combined with validation_split > 0 (the fold is "
                "the validation set)"
            )
        return self

    @field_validator(
        "optimizer", mode="before", json_schema_input_type=OptimizerConfig | OptimizerName
    )
    @classmethod
    def _optimizer_name(cls, value: Any) -> Any:
        """A name alone is the optimizer with its defaults (``"adam"``); names are
        case-insensitive, and an optimizer without one is the default (sgd).

        So ``{"learning_rate": 0.1}`` tunes the default optimizer, as a sweep over
        ``training.optimizer.learning_rate`` does when its base sets no optimizer.
        """
        value = optimizer_shorthand(value)
        if isinstance(value, dict):
            name = value.get("name", DEFAULT_OPTIMIZER)
            if isinstance(name, str):
                value = {**value, "name": name.lower()}
        return value


_OUTPUT_FOR_LOSS = {"categorical_crossentropy": "softmax", "binary_crossentropy": "sigmoid"}
REGRESSION_LOSSES = frozenset({"mse", "mae"})


def regression_on_classes_problem(training: TrainingConfig, what: str) -> str | None:
    """Why ``training.loss`` must not fit ``what`` (class probabilities or one-hot classes),
    or None when the loss is no regression loss or the config opts in explicitly.

    The loss decides the task: a regression loss on classes trains a model whose accuracy is
    never reported, which is seldom what was meant, so it must be asked for by name.
    """
    if training.loss not in REGRESSION_LOSSES or training.regression_on_classes:
        return None
    return (
        f"training.loss: {training.loss} is a regression loss, but {what}; train classes with "
        "categorical_crossentropy (softmax output) or binary_crossentropy (sigmoid output), "
        f"which report accuracy, or set training.regression_on_classes: true to fit them with "
        f"{training.loss} anyway"
    )


def check_compatible(network: NetworkSpec, training: TrainingConfig) -> None:
    """Raise ``ValueError`` naming the field when ``training.loss`` does not fit the output layer.

    Cross-entropy losses are computed in their fused, numerically stable form, which needs the
    matching output activation: softmax for categorical, sigmoid for binary cross-entropy. A
    regression loss on a softmax output (class probabilities) needs
    ``training.regression_on_classes: true``.
    """
    needed = _OUTPUT_FOR_LOSS.get(training.loss)
    last = len(network.layers) - 1
    actual = network.layers[last].activation
    if needed is not None and actual != needed:
        raise ValueError(
            f"training.loss: {training.loss} needs a {needed} output layer "
            f"(network.layers[{last}].activation is '{actual}')"
        )
    if actual == "softmax":
        problem = regression_on_classes_problem(
            training,
            f"network.layers[{last}] is a softmax, whose outputs are class probabilities",
        )
        if problem is not None:
            raise ValueError(problem)
