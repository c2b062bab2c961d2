"""Schemas for the custom resources in deploy/kubernetes/, which Kubernetes' own schemas lack.

Written from the projects' documentation (URLs beside each), for the fields those documents
list; anything else is an error, so a misspelt field fails here instead of being silently
ignored (KEDA ignores unknown trigger metadata) or refused by the cluster at apply time.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from kubernetes_validate import utils as kubernetes_schemas

Schema = dict[str, Any]

_INT_STRING = {"type": "string", "pattern": "^[0-9]+$"}
_BOOL_STRING = {"type": "string", "enum": ["true", "false"]}
_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
_COUNT = {"type": "integer", "minimum": 0}
_METADATA: Schema = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": _NAME, "namespace": _NAME,
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                   "annotations": {"type": "object",
                                   "additionalProperties": {"type": "string"}}},
    "additionalProperties": False,
}


def _closed(required: list[str], **properties: Any) -> Schema:
    return {"type": "object", "required": required, "properties": properties,
            "additionalProperties": False}


def _resource(api_version: str, kind: str, spec: Schema) -> Schema:
    return _closed(["apiVersion", "kind", "metadata", "spec"],
                   apiVersion={"const": api_version}, kind={"const": kind},
                   metadata=_METADATA, spec=spec)


# https://keda.sh/docs/latest/scalers/aws-sqs/ : the trigger's metadata, every value a string.
AWS_SQS_QUEUE_METADATA: Schema = {
    **_closed(
        ["awsRegion"],
        queueURL={"type": "string", "minLength": 1},
        queueURLFromEnv={"type": "string", "minLength": 1},
        queueLength=_INT_STRING,
        activationQueueLength=_INT_STRING,
        scaleOnInFlight=_BOOL_STRING,
        scaleOnDelayed=_BOOL_STRING,
        awsRegion={"type": "string", "pattern": "^[a-z]{2}(-[a-z]+)+-[0-9]+$"},
        awsEndpoint={"type": "string"},
        # Deprecated since KEDA 2.13 for TriggerAuthentication's podIdentity.identityOwner.
        identityOwner={"enum": ["pod", "operator"]},
    ),
    "anyOf": [{"required": ["queueURL"]}, {"required": ["queueURLFromEnv"]}],
}

# https://keda.sh/docs/latest/reference/scaledobject-spec/
_TRIGGER: Schema = {
    **_closed(
        ["type", "metadata"],
        type={"type": "string"},
        name={"type": "string"},
        metadata={"type": "object", "additionalProperties": {"type": "string"}},
        authenticationRef=_closed(
            ["name"], name=_NAME,
            kind={"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}),
        metricType={"enum": ["AverageValue", "Value", "Utilization"]},
        useCachedMetrics={"type": "boolean"},
    ),
    # The one scaler these manifests use gets its documented metadata checked too.
    "if": {"properties": {"type": {"const": "aws-sqs-queue"}}},
    "then": {"properties": {"metadata": AWS_SQS_QUEUE_METADATA}},
}
SCALED_OBJECT: Schema = _resource("keda.sh/v1alpha1", "ScaledObject", _closed(
    ["scaleTargetRef", "triggers"],
    scaleTargetRef=_closed(["name"], name=_NAME, apiVersion={"type": "string"},
                           kind={"type": "string"}, envSourceContainerName={"type": "string"}),
    pollingInterval={"type": "integer", "minimum": 1},
    cooldownPeriod=_COUNT,
    initialCooldownPeriod=_COUNT,
    idleReplicaCount=_COUNT,
    minReplicaCount=_COUNT,
    maxReplicaCount={"type": "integer", "minimum": 1},
    fallback=_closed(["failureThreshold", "replicas"], failureThreshold=_COUNT,
                     replicas=_COUNT, behavior={"type": "string"}),
    advanced=_closed(
        [],
        restoreToOriginalReplicaCount={"type": "boolean"},
        # `behavior` goes to the HPA as it is: checked against the HPA's own schema below.
        horizontalPodAutoscalerConfig=_closed([], name={"type": "string"},
                                              behavior={"type": "object"}),
        scalingModifiers=_closed(["target", "formula"], target={"type": "string"},
                                 activationTarget={"type": "string"},
                                 metricType={"enum": ["AverageValue", "Value"]},
                                 formula={"type": "string"})),
    triggers={"type": "array", "minItems": 1, "items": _TRIGGER},
))

# https://keda.sh/docs/latest/concepts/authentication/ and
# https://keda.sh/docs/latest/authentication-providers/aws/ : podIdentity for AWS takes roleArn
# or identityOwner, not both.
TRIGGER_AUTHENTICATION: Schema = _resource("keda.sh/v1alpha1", "TriggerAuthentication", _closed(
    [],
    podIdentity={
        **_closed(["provider"],
                  provider={"enum": ["none", "azure-workload", "gcp", "aws", "aws-eks"]},
                  roleArn={"type": "string", "pattern": "^arn:aws[-a-z]*:iam::[0-9]{12}:role/"},
                  identityOwner={"enum": ["keda", "workload"]},
                  identityId={"type": "string"},
                  identityTenantId={"type": "string"},
                  identityAuthorityHost={"type": "string"}),
        "not": {"required": ["roleArn", "identityOwner"]},
    },
    secretTargetRef={"type": "array"},
    configMapTargetRef={"type": "array"},
    env={"type": "array"},
    hashiCorpVault={"type": "object"},
    azureKeyVault={"type": "object"},
    awsSecretManager={"type": "object"},
    gcpSecretManager={"type": "object"},
    boundServiceAccountToken={"type": "array"},
))

# https://prometheus-operator.dev/docs/api-reference/api/#monitoring.coreos.com/v1.ServiceMonitor
# The basic shape: whom it selects, and each endpoint's commonly used fields.
_DURATION = {"type": "string", "pattern": "^(0|([0-9]+(ms|s|m|h))+)$"}
SERVICE_MONITOR: Schema = _resource("monitoring.coreos.com/v1", "ServiceMonitor", _closed(
    ["selector", "endpoints"],
    selector={"type": "object", "minProperties": 1},
    namespaceSelector={"type": "object"},
    jobLabel={"type": "string"},
    endpoints={"type": "array", "minItems": 1, "items": {
        **_closed([], port={"type": "string"}, targetPort={"type": ["string", "integer"]},
                  path={"type": "string", "pattern": "^/"}, scheme={"enum": ["http", "https"]},
                  interval=_DURATION, scrapeTimeout=_DURATION, honorLabels={"type": "boolean"},
                  relabelings={"type": "array"}, metricRelabelings={"type": "array"}),
        "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
    }},
))

CUSTOM_SCHEMAS: dict[str, dict[str, Schema]] = {
    "keda.sh/v1alpha1": {"ScaledObject": SCALED_OBJECT,
                         "TriggerAuthentication": TRIGGER_AUTHENTICATION},
    "monitoring.coreos.com/v1": {"ServiceMonitor": SERVICE_MONITOR},
}


def custom_problems(obj: dict[str, Any]) -> list[str]:
    schema = CUSTOM_SCHEMAS[obj["apiVersion"]].get(obj["kind"])
    if schema is None:
        return [f"no schema for {obj['apiVersion']} {obj['kind']}"]
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{e.message} at {'/'.join(str(p) for p in e.absolute_path)}"
                for e in validator.iter_errors(obj)]
    behavior = (obj.get("spec", {}).get("advanced", {})
                .get("horizontalPodAutoscalerConfig", {}).get("behavior"))
    if behavior is not None and not problems:
        problems += _hpa_behavior_problems(behavior)
    return problems


def _hpa_behavior_problems(behavior: dict[str, Any]) -> list[str]:
    """KEDA copies this into the HPA it creates: an autoscaling/v2 HPA's schema judges it."""
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "check"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": "check"},
                    "maxReplicas": 1, "behavior": behavior}}
    try:
        kubernetes_schemas.validate(hpa, kubernetes_schemas.latest_version(), strict=True)
    except kubernetes_schemas.ValidationError as error:
        return [f"advanced.horizontalPodAutoscalerConfig.behavior: {error.message}"]
    return []
