"""Python client of the Backprop Service: ``BackpropClient`` and its typed results.

Depends on ``httpx``, ``httpx-sse`` and ``pydantic`` only::

    from client import BackpropClient

    with BackpropClient("http://127.0.0.1:8000") as bp:
        ds = bp.upload_dataset("iris.csv", target="species")
        run = bp.submit_run(ds.id, network, training)
        for event in bp.events(run.id):
            ...
"""

from client.client import DEFAULT_URL, UNSET, BackpropClient, EventStream
from client.errors import BackpropConnectionError, BackpropError
from client.models import (
    ClassMetrics,
    Dataset,
    Evaluation,
    Event,
    MetricItem,
    ModelPrediction,
    ModelVersion,
    ModelWeights,
    Prediction,
    Progress,
    RegisteredModel,
    RegisteredModelDetail,
    Run,
    Sweep,
    TargetMetrics,
    Transition,
)

__all__ = [
    "DEFAULT_URL",
    "UNSET",
    "BackpropClient",
    "BackpropConnectionError",
    "BackpropError",
    "ClassMetrics",
    "Dataset",
    "Evaluation",
    "Event",
    "EventStream",
    "MetricItem",
    "ModelPrediction",
    "ModelVersion",
    "ModelWeights",
    "Prediction",
    "Progress",
    "RegisteredModel",
    "RegisteredModelDetail",
    "Run",
    "Sweep",
    "TargetMetrics",
    "Transition",
]
