"""Offline check of the KServe manifests against KServe's own API types, strict on unknown fields.

The types are those of the `kserve` SDK from PyPI (server/tests/clients/requirements.txt pins the version):
its models are generated from KServe's OpenAPI definitions of the CRDs (`openapi_types`, `attribute_map`), and
the Kubernetes types inside them (containers, probes, resources) from the `kubernetes` client's. Every field of
a manifest must be a field of its type, of the right kind (object, list, map, string, number, boolean), all the
way down; the generated models' own checks (required fields, allowed values) run on each object too.

Usage: validate.py FILE...   (exit 1 if any file fails, after printing every error)
       validate.py --self-test (the check refuses a manifest with an unknown field, a wrong kind of value and a
                                missing required field; exit 1 if it does not)"""
import importlib.metadata
import re
import sys

import kserve
import kubernetes.client
import yaml

KINDS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool}


def model_class(name):
    for module in (kserve, kserve.models, kubernetes.client):
        if hasattr(module, name):
            return getattr(module, name)
    return None


def check(value, type_name, path, errors):
    """Appends to `errors` every way `value` is not a `type_name` (an OpenAPI generator type string)."""
    if m := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name):
        if not isinstance(value, list):
            errors.append(f"{path}: a list is expected")
            return
        for i, item in enumerate(value):
            check(item, m[1], f"{path}[{i}]", errors)
    elif m := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            errors.append(f"{path}: a map is expected")
            return
        for key, item in value.items():
            check(item, m[1] or m[2], f"{path}.{key}", errors)
    elif type_name in PRIMITIVES:
        if not isinstance(value, PRIMITIVES[type_name]) or (type_name != "bool" and isinstance(value, bool)):
            errors.append(f"{path}: a {type_name} is expected, not {value!r}")
    elif type_name == "object" or type_name in ("ResourceQuantity", "IntOrString"):
        pass  # free-form in the schema (a quantity or int-or-string is a string or a number)
    else:
        cls = model_class(type_name)
        if cls is None:
            errors.append(f"{path}: no type {type_name} in kserve or kubernetes")
            return
        if not isinstance(value, dict):
            errors.append(f"{path}: an object ({type_name}) is expected")
            return
        by_key = {key: attr for attr, key in cls.attribute_map.items()}
        for key, item in value.items():
            if key not in by_key:
                errors.append(f"{path}.{key}: not a field of {type_name}")
            else:
                check(item, cls.openapi_types[by_key[key]], f"{path}.{key}", errors)
        try:  # the generated setters refuse a missing required field or a value outside an enum
            cls(**{by_key[k]: v for k, v in value.items() if k in by_key})
        except (ValueError, TypeError) as error:
            errors.append(f"{path}: {type_name}: {error}")


def validate(path):
    errors = []
    for n, document in enumerate(d for d in yaml.safe_load_all(open(path)) if d):
        kind = KINDS.get((document.get("apiVersion"), document.get("kind")))
        if kind is None:
            errors.append(f"document {n}: {document.get('apiVersion')} {document.get('kind')} is not a KServe kind "
                          "this check knows")
            continue
        check(document, kind, f"{document['kind']}", errors)
    return errors


def self_test():
    """The check must be able to fail: three faults, each must be reported."""
    broken = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime", "metadata": {"name": "x"},
              "spec": {"supportedModelFormats": [{"name": "f", "autoselect": True}],
                       "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "8080"}]}],
                       "multiModel": "no"}}
    errors = []
    check(broken, KINDS[("serving.kserve.io/v1alpha1", "ServingRuntime")], "ServingRuntime", errors)
    wanted = ["autoselect: not a field", "containerPort: a int is expected", "multiModel: a bool is expected"]
    missing = [w for w in wanted if not any(w in e for e in errors)]
    valid_port, no_port = [], []
    check({"containerPort": 80, "protocol": "TCP"}, "V1ContainerPort", "port", valid_port)
    check({}, "V1ContainerPort", "port", no_port)  # containerPort is required
    if valid_port or not any("containerPort" in e or "container_port" in e for e in no_port):
        missing.append("a missing required field")
    print(f"  self-test: {'FAILED, not reported: ' + ', '.join(missing) if missing else 'every fault reported'}")
    return 1 if missing else 0


def main(args):
    if args == ["--self-test"]:
        return self_test()
    version = importlib.metadata.version("kserve")
    failed = False
    for path in args:
        errors = validate(path)
        for error in errors:
            print(f"  {path}: {error}")
        print(f"  {path}: {'FAILED' if errors else 'valid'} against the kserve {version} SDK's types")
        failed |= bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
