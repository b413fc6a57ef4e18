"""Regenerates the vendored CRD schemas used by tests/k8s.rs to validate the manifests.

The schemas come from PyPI packages that are generated from the upstream CRDs
(prometheus-operator and KEDA, both Apache-2.0):

    python3 -m venv /tmp/crd && /tmp/crd/bin/pip install \
        cloudcoil-models-prometheus-operator==0.80.1.0 cloudcoil-models-keda==2.16.1.0
    /tmp/crd/bin/python k8s/schemas/generate.py

Every object schema is made strict (`additionalProperties: false` unless it is a free-form
map), like `kubectl apply --validate=strict`: a misspelled field is an error, not a
silently pruned one.
"""
import json
import pathlib

from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

OUT = pathlib.Path(__file__).parent


def strict(node):
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            strict(v)
    elif isinstance(node, list):
        for v in node:
            strict(v)
    return node


for cls, name in [(ServiceMonitor, "servicemonitor_v1.json"), (ScaledObject, "scaledobject_v1alpha1.json")]:
    schema = strict(cls.model_json_schema(by_alias=True))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    (OUT / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print("wrote", OUT / name)
