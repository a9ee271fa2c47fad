"""The client's models name the same fields as the service's OpenAPI schema of the records
they parse: a field added to (or renamed in) a record fails here until the client has it.
The client's own required fields are required by the schema too, so a record the service
may send always parses; and its status choices are the service's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args

import pytest
from pydantic import BaseModel

import client.models
from api.main import create_app
from core.settings import get_settings

#: Each client model and the schema (``components.schemas``) of what it parses; a model
#: that parses either of several schemas (a union) names them all.
PARSES: dict[type[BaseModel], str | tuple[str, ...]] = {
    client.models.Dataset: "DatasetRecord",
    client.models.Run: "RunRecord",
    client.models.Transition: "TransitionOut",
    client.models.Progress: "Progress",
    client.models.MetricItem: "MetricItem",
    client.models.Prediction: "PredictOut",
    client.models.ModelWeights: "WeightsOut",
    client.models.LayerWeights: "LayerWeights-Output",
    client.models.Preprocessing: "Preprocessing",
    client.models.Evaluation: ("ClassificationEvaluation", "RegressionEvaluation"),
    client.models.ClassMetrics: "ClassMetrics",
    client.models.TargetMetrics: "TargetMetrics",
    client.models.Sweep: "SweepRecord",
    client.models.SweepProgress: "SweepProgress",
    client.models.RegisteredModel: "ModelRecord",
    client.models.RegisteredModelDetail: "ModelDetailRecord",
    client.models.ModelVersion: "ModelVersionRecord",
    client.models.ModelPrediction: "ModelPredictOut",
}


def _names(model: type[BaseModel]) -> tuple[str, ...]:
    parsed = PARSES[model]
    return parsed if isinstance(parsed, tuple) else (parsed,)


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BACKPROP_AUTH", "off")
        env.setenv("BACKPROP_DATABASE_URL", f"sqlite:///{tmp_path_factory.mktemp('db')}/x.db")
        get_settings.cache_clear()
        yield create_app().openapi()["components"]["schemas"]
    get_settings.cache_clear()


def test_every_record_the_client_parses_is_covered(schemas: dict[str, Any]) -> None:
    """Every record model of ``client.models`` is in PARSES (``Event`` is the SSE item)."""
    models = {
        obj
        for name, obj in vars(client.models).items()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and not name.startswith("_")
        and obj.__module__ == "client.models"
    }  # fmt: skip
    assert models - set(PARSES) == {client.models.Event}
    parsed = {name for model in PARSES for name in _names(model)}
    assert parsed <= set(schemas)
    # ...and every record a route answers with (the lists hold the records above).
    records = {name for name in schemas if name.endswith(("Record", "Out"))}
    assert records - parsed == {"ErrorOut", "HealthOut", "MetricsOut"}


@pytest.mark.parametrize("model", list(PARSES), ids=lambda m: m.__name__)
def test_the_client_model_names_the_schemas_fields(
    schemas: dict[str, Any], model: type[BaseModel]
) -> None:
    parsed = [schemas[name] for name in _names(model)]
    ours = set(model.model_fields)
    theirs = {prop for schema in parsed for prop in schema["properties"]}
    assert ours == theirs, f"only in the client: {ours - theirs}; only in the API: {theirs - ours}"
    required_here = {name for name, field in model.model_fields.items() if field.is_required()}
    required_there = set.intersection(*(set(schema.get("required", [])) for schema in parsed))
    assert required_here <= required_there, required_here - required_there


@pytest.mark.parametrize("model", [client.models.Run, client.models.Sweep], ids=str)
def test_status_choices_are_the_services(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    (name,) = _names(model)
    status = schemas[name]["properties"]["status"]
    choices = status.get("enum") or schemas[status["$ref"].rsplit("/", 1)[1]]["enum"]
    assert set(get_args(model.model_fields["status"].annotation)) == set(choices)
    assert set(choices) - client.models.TERMINAL_STATUSES == {"queued", "running"}


def test_a_sample_record_of_each_schema_parses(schemas: dict[str, Any]) -> None:
    """Built from the schema's required fields alone, with values of their declared types."""
    samples = {"string": "x", "integer": 1, "number": 0.5, "boolean": True, "object": {},
               "array": []}  # fmt: skip

    def value(prop: dict[str, Any]) -> Any:
        if "$ref" in prop:
            return record(schemas[prop["$ref"].rsplit("/", 1)[1]])
        if "const" in prop:
            return prop["const"]
        if "enum" in prop:
            return prop["enum"][0]
        if prop.get("format") == "date-time":
            return "2024-01-01T00:00:00Z"
        if "anyOf" in prop:
            return value(prop["anyOf"][0])
        return samples[prop["type"]] if "type" in prop else "x"  # Any: any value

    def record(schema: dict[str, Any]) -> dict[str, Any]:
        return {k: value(schema["properties"][k]) for k in schema.get("required", [])}

    for model in PARSES:
        for name in _names(model):
            model.model_validate(record(schemas[name]))
