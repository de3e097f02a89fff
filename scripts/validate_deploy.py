#!/usr/bin/env python3
"""Static checks of deploy/, run by scripts/validate-deploy.sh inside .tools/venv. All offline.

1. Kubernetes (deploy/k8s):
   - every kustomization.yaml: each resource, patch and generator file it names exists and
     parses; strategic-merge patches, `replicas`, `images` and merging generators name objects
     the kustomization actually has; no remote bases; no YAML file is left unreferenced;
   - every manifest named as a resource, document by document, against the Kubernetes
     schemas of K8S_VERSION with `kubernetes-validate --strict` (unknown fields are errors);
   - with `kubectl` (or `kustomize`) installed: base and every overlay rendered (git-ignored
     secret files replaced by their committed *.example) and the output validated likewise;
   - consistency of the objects (rendered, else the base as written): selectors, ports, probes,
     security context, resources, ConfigMap/Secret references, migration Jobs, the gateway's
     Ingress (backend, host and path of CQRS_PUBLIC_BASE_URL), and that the NetworkPolicies
     allow exactly the service-to-service calls of the design (the gateway's included).
2. Compose (deploy/compose.yaml): `docker compose config -q` when Compose v2 is installed; always
   a structural check (image or build, depends_on targets and conditions, unique host ports,
   env files, interpolation defaults).
3. Dockerfile (deploy/docker/Dockerfile): stages per service, SERVICE argument, cached --locked
   release build of one package, distroless non-root runtime, exec-form ENTRYPOINT, ports.
4. Configuration names: every variable set under deploy/ is documented in docs/configuration.md
   (a misspelt name is silently ignored by the services); real secret files are git-ignored and
   the committed examples hold no key material.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
K8S_VERSION = "1.30.0"

# gRPC service -> (default port, gRPC service name) from shared/API.md.
SERVICES = {
    "identity": (50051, "cqrs.identity.v1.IdentityService"),
    "directory": (50052, "cqrs.directory.v1.DirectoryService"),
    "access": (50053, "cqrs.access.v1.AccessService"),
    "notifications": (50054, "cqrs.notifications.v1.NotificationService"),
}
# HTTP services -> (port, probe path): the web gateway. No database, so no migration Job; it is
# reached through an Ingress and calls the four services over gRPC.
WEB_SERVICES = {
    "gateway": (8080, "/healthz"),
}
# Every deployable: name -> the port it serves on (and its image, its Dockerfile stage).
PORTS = {name: port for name, (port, _) in {**SERVICES, **WEB_SERVICES}.items()}
# Who calls whom (DESIGN.md, the services' config tables). NetworkPolicies must allow exactly this.
# Identity also reads access's audit chain to keep its checkpoints (CQRS_AUDIT_WITNESS_URLS).
CALLS = {
    "identity": {"directory", "notifications", "access"},
    "directory": {"identity"},
    "access": {"identity", "directory", "notifications"},
    "notifications": set(),
    "gateway": {"identity", "directory", "access", "notifications"},
}
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "metadata", "resources", "components", "patches", "patchesStrategicMerge",
    "patchesJson6902", "configMapGenerator", "secretGenerator", "generatorOptions", "images",
    "replicas", "namespace", "namePrefix", "nameSuffix", "labels", "commonLabels",
    "commonAnnotations", "crds", "configurations", "transformers", "generators", "validators",
    "replacements", "vars", "buildMetadata", "openapi", "sortOptions", "helmCharts",
}
# 32 bytes in unpadded base64url: what a real key (seed or public key) looks like.
KEY_MATERIAL = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


class Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.notes: list[str] = []

    def error(self, where: object, message: str) -> None:
        self.errors.append(f"{rel(where)}: {message}")

    def note(self, message: str) -> None:
        self.notes.append(message)


def rel(path: object) -> str:
    if isinstance(path, Path):
        try:
            return str(path.resolve().relative_to(ROOT))
        except ValueError:
            return str(path)
    return str(path)


# libyaml's loader when PyYAML has it (it does in the wheels): several times faster.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PARSED: dict[Path, tuple[list[dict] | None, str | None]] = {}


def parse_yaml(text: str) -> list:
    return [d for d in yaml.load_all(text, Loader=LOADER) if d is not None]


def load_docs(path: Path, ck: Checker) -> list[dict] | None:
    """The YAML documents of `path` (empty ones dropped), or None after reporting an error.
    Parsed once per run."""
    path = path.resolve()
    if path not in _PARSED:
        docs, problem = None, None
        try:
            docs = parse_yaml(path.read_text())
            for i, doc in enumerate(docs):
                if not isinstance(doc, dict):
                    docs, problem = None, f"document {i + 1} is not a mapping"
                    break
        except (OSError, yaml.YAMLError) as e:
            problem = f"does not parse: {e}"
        _PARSED[path] = (docs, problem)
    docs, problem = _PARSED[path]
    if problem:
        ck.error(path, problem)
    return docs


def obj_id(doc: dict) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def is_object(doc: dict) -> bool:
    meta = doc.get("metadata")
    return bool(doc.get("apiVersion") and doc.get("kind") and isinstance(meta, dict) and meta.get("name"))


def git_ignored(path: Path) -> bool | None:
    """Whether git ignores `path` (it need not exist); None without git or a work tree."""
    if shutil.which("git") is None:
        return None
    r = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", str(path)],
                       capture_output=True)
    if r.returncode in (0, 1):
        return r.returncode == 0
    return None


# ----------------------------------------------------------------------------------------------
# Kustomizations


class Kustomization:
    def __init__(self, directory: Path, data: dict) -> None:
        self.dir = directory
        self.data = data


def kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def generator_paths(gen: dict) -> list[str]:
    paths = []
    for key in ("files", "envs"):
        for entry in gen.get(key) or []:
            # files entries may be `key=path`.
            paths.append(str(entry).split("=", 1)[-1] if key == "files" else str(entry))
    if gen.get("env"):
        paths.append(str(gen["env"]))
    return paths


class K8sTree:
    """Every kustomization under deploy/k8s, what each references, and their object closures."""

    def __init__(self, ck: Checker) -> None:
        self.ck = ck
        self.kustomizations: dict[Path, Kustomization] = {}
        self.referenced: set[Path] = set()
        self.resource_files: set[Path] = set()
        self.placeholder_files: dict[Path, Path] = {}  # git-ignored file -> its .example
        self._closures: dict[Path, list[dict]] = {}

    def load(self) -> None:
        for path in sorted(K8S.rglob("*")):
            if path.is_file() and path.name in KUSTOMIZATION_NAMES:
                docs = load_docs(path, self.ck)
                if docs is None:
                    continue
                if len(docs) != 1:
                    self.ck.error(path, "must hold exactly one document")
                    continue
                self.kustomizations[path.parent.resolve()] = Kustomization(path.parent.resolve(), docs[0])
        if not self.kustomizations:
            self.ck.error(K8S, "no kustomization.yaml found")
        for k in self.kustomizations.values():
            self.check_references(k)
        self.check_orphans()
        for k in self.kustomizations.values():
            self.check_targets(k)

    def check_references(self, k: Kustomization) -> None:
        ck, d, data = self.ck, k.dir, k.data
        where = kustomization_file(d)
        for key in data:
            if key not in KUSTOMIZATION_KEYS:
                ck.error(where, f"unknown field {key!r}")
        if data.get("kind", "Kustomization") != "Kustomization":
            ck.error(where, "kind must be Kustomization")
        for entry in (data.get("resources") or []) + (data.get("components") or []):
            entry = str(entry)
            if "://" in entry or entry.startswith("github.com/"):
                ck.error(where, f"remote resource {entry!r}: keep builds offline and pinned")
                continue
            target = (d / entry).resolve()
            if target.is_dir():
                if kustomization_file(target) is None:
                    ck.error(where, f"resource directory {entry!r} has no kustomization.yaml")
                continue
            if not target.is_file():
                ck.error(where, f"resource {entry!r} does not exist")
                continue
            self.referenced.add(target)
            self.resource_files.add(target)
            docs = load_docs(target, ck)
            for doc in docs or []:
                if not is_object(doc):
                    ck.error(target, "every document needs apiVersion, kind and metadata.name")
                elif doc.get("kind") == "Secret":
                    ck.error(target, f"{obj_id(doc)}: Secrets are generated from git-ignored files, never committed")
        patches = list(data.get("patchesStrategicMerge") or [])
        patches += [p.get("path") for p in data.get("patches") or [] if isinstance(p, dict) and p.get("path")]
        for entry in patches:
            target = (d / str(entry)).resolve()
            if not target.is_file():
                ck.error(where, f"patch {entry!r} does not exist")
                continue
            self.referenced.add(target)
            load_docs(target, ck)
        for p in data.get("patches") or []:
            if not isinstance(p, dict) or not (p.get("path") or p.get("patch")):
                ck.error(where, f"patch entry {p!r} needs `path` or `patch`")
            elif p.get("patch"):
                try:
                    parse_yaml(p["patch"])
                except yaml.YAMLError as e:
                    ck.error(where, f"inline patch does not parse: {e}")
        for p in data.get("patchesJson6902") or []:
            if p.get("path"):
                target = (d / p["path"]).resolve()
                if not target.is_file():
                    ck.error(where, f"patch {p['path']!r} does not exist")
                else:
                    self.referenced.add(target)
                    load_docs(target, ck)
        for kind in ("configMapGenerator", "secretGenerator"):
            for gen in data.get(kind) or []:
                for entry in generator_paths(gen):
                    target = (d / entry).resolve()
                    example = target.with_name(target.name + ".example")
                    if target.is_file():
                        self.referenced.add(target)
                        if example.is_file() and git_ignored(target) is False:
                            ck.error(target, "holds secrets but is not git-ignored")
                    elif example.is_file():
                        # A secret file that is not committed: its example stands in.
                        self.placeholder_files[target] = example
                        if git_ignored(target) is False:
                            ck.error(target, "must be git-ignored (it will hold secrets)")
                    else:
                        ck.error(where, f"{kind} {gen.get('name')!r}: {entry!r} does not exist (nor {entry}.example)")

    def check_orphans(self) -> None:
        for path in sorted(K8S.rglob("*")):
            if path.suffix in (".yaml", ".yml") and path.name not in KUSTOMIZATION_NAMES:
                if path.resolve() not in self.referenced:
                    self.ck.error(path, "not referenced by any kustomization (dead file?)")

    def closure(self, directory: Path) -> list[dict]:
        """Objects a kustomization holds as written: resources (recursively) plus stubs for
        generated ConfigMaps/Secrets. Patches and transformers are not applied."""
        directory = directory.resolve()
        if directory in self._closures:
            return self._closures[directory]
        self._closures[directory] = []
        k = self.kustomizations.get(directory)
        if k is None:
            return []
        objects: list[dict] = []
        for entry in (k.data.get("resources") or []) + (k.data.get("components") or []):
            target = (directory / str(entry)).resolve()
            if target.is_dir():
                objects += self.closure(target)
            elif target.is_file():
                objects += [d for d in (load_docs(target, Checker()) or []) if is_object(d)]
        for kind, gen_kind in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
            for gen in k.data.get(gen_kind) or []:
                if gen.get("behavior") in ("merge", "replace"):
                    continue
                data = {}
                for lit in gen.get("literals") or []:
                    key, _, value = str(lit).partition("=")
                    data[key] = value
                objects.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": gen.get("name")},
                                "data": data, "_generated": True})
        self._closures[directory] = objects
        return objects

    def check_targets(self, k: Kustomization) -> None:
        ck, where = self.ck, kustomization_file(k.dir)
        objects = self.closure(k.dir)
        ids = {(o["kind"], o["metadata"]["name"]) for o in objects}
        patch_paths = list(k.data.get("patchesStrategicMerge") or [])
        patch_paths += [p["path"] for p in k.data.get("patches") or []
                        if isinstance(p, dict) and p.get("path") and not p.get("target")]
        for entry in patch_paths:
            target = (k.dir / entry).resolve()
            for doc in (load_docs(target, Checker()) or []) if target.is_file() else []:
                if not is_object(doc):
                    ck.error(target, "a strategic-merge patch needs apiVersion, kind and metadata.name")
                elif (doc["kind"], doc["metadata"]["name"]) not in ids:
                    ck.error(target, f"patches {obj_id(doc)}, which {rel(where)} does not have")
        for r in k.data.get("replicas") or []:
            if not any(o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] == r.get("name")
                       for o in objects):
                ck.error(where, f"replicas: no Deployment named {r.get('name')!r}")
        images = {image_name(c.get("image", "")) for o in objects for c in containers(o)}
        for img in k.data.get("images") or []:
            if img.get("name") not in images:
                ck.error(where, f"images: no container uses image {img.get('name')!r}")
        for kind, gen_kind in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
            for gen in k.data.get(gen_kind) or []:
                if gen.get("behavior") in ("merge", "replace") and (kind, gen.get("name")) not in ids:
                    ck.error(where, f"{gen_kind} {gen.get('name')!r} merges into a {kind} that does not exist")

    def roots(self) -> list[Path]:
        """Kustomizations to render: the base and every overlay."""
        return sorted(d for d in self.kustomizations
                      if d == (K8S / "base").resolve() or d.parent == (K8S / "overlays").resolve())


def image_name(image: str) -> str:
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return image.rsplit(":", 1)[0] if ":" in last else image


def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return ((obj.get("spec") or {}).get("template") or {}).get("spec")
    return None


def pod_labels(obj: dict) -> dict:
    return (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj) or {}
    return list(spec.get("containers") or []) + list(spec.get("initContainers") or [])


def selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# ----------------------------------------------------------------------------------------------
# Kubernetes schema validation and rendering


# Operator resources the overlays may use: Kubernetes' schemas do not know them, so they get
# the checks below instead (what the suite relies on, not the operator's whole schema).
OPERATOR_APIS = {"postgresql.cnpg.io/v1"}


def check_operator_resource(where: str, doc: dict, items: list[tuple[str, dict]], ck: Checker) -> None:
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind == "Cluster":
        if (spec.get("instances") or 0) < 2:
            ck.error(where, f"{obj_id(doc)}: needs at least 2 instances (a standby to fail over to)")
        if (spec.get("minSyncReplicas") or 0) < 1:
            ck.error(where, f"{obj_id(doc)}: minSyncReplicas must be at least 1, or a failover can "
                            "lose acknowledged writes")
    elif kind == "Database":
        clusters = {d["metadata"]["name"] for _, d in items
                    if d.get("apiVersion") in OPERATOR_APIS and d.get("kind") == "Cluster"}
        if (spec.get("cluster") or {}).get("name") not in clusters or not spec.get("name"):
            ck.error(where, f"{obj_id(doc)}: spec.cluster.name must name a Cluster of the same render, "
                            "and spec.name the database")
    else:
        ck.error(where, f"{obj_id(doc)}: unknown {doc.get('apiVersion')} kind")


def kubernetes_validate(items: list[tuple[str, dict]], ck: Checker) -> None:
    """Validates each (where, object) as `kubernetes-validate --strict -k K8S_VERSION` would,
    in-process: the CLI re-reads the 1.2 MB schema definitions for every object, which made
    this step take seconds."""
    import functools

    import kubernetes_validate.utils as kv

    if not getattr(kv.schema_contents, "cache_info", None):
        kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)
    for where, doc in items:
        if doc.get("apiVersion") in OPERATOR_APIS:
            check_operator_resource(where, doc, items, ck)
            continue
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            ck.error(where, f"{obj_id(doc)} is not valid for Kubernetes {e.version}: {path}: {e.message}")
        except (kv.SchemaNotFoundError, kv.VersionNotSupportedError, kv.InvalidSchemaError) as e:
            ck.error(where, f"{obj_id(doc)}: {e.message}")
        except Exception as e:  # noqa: BLE001 - a malformed object must not stop the run
            ck.error(where, f"{obj_id(doc)}: cannot validate: {e!r}")


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        r = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True)
        if r.returncode == 0:
            return ["kubectl", "kustomize"]
    return None


def render(tree: K8sTree, tmp: Path, ck: Checker) -> dict[str, list[dict]] | None:
    """Renders every root kustomization in a copy of deploy/k8s with placeholder secret files.
    None when no kustomize is installed."""
    cmd = kustomize_command()
    if cmd is None:
        ck.note("kubectl/kustomize not installed: overlays not rendered (patches checked statically only)")
        return None
    copy = tmp / "k8s"
    shutil.copytree(K8S, copy)
    for target, example in tree.placeholder_files.items():
        dest = copy / target.relative_to(K8S.resolve())
        if not dest.exists():
            shutil.copyfile(example, dest)
    rendered: dict[str, list[dict]] = {}
    for root in tree.roots():
        name = str(root.relative_to(K8S.resolve()))
        r = subprocess.run(cmd + [str(copy / name)], capture_output=True, text=True)
        if r.returncode != 0:
            ck.error(root, f"kustomize build failed: {r.stderr.strip()}")
            continue
        rendered[name] = parse_yaml(r.stdout)
    return rendered


# ----------------------------------------------------------------------------------------------
# Consistency of the objects


def check_objects(label: str, objects: list[dict], ck: Checker, rendered: bool) -> None:
    by_kind: dict[str, list[dict]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    workloads = [o for o in objects if pod_spec(o) is not None]
    deployments = {o["metadata"]["name"]: o for o in by_kind.get("Deployment", [])}
    where = f"{label}"

    if not by_kind.get("Namespace"):
        ck.error(where, "no Namespace object")
    for svc in PORTS:
        wanted = [("Deployment", svc), ("Service", svc), ("PodDisruptionBudget", svc),
                  ("HorizontalPodAutoscaler", svc), ("NetworkPolicy", svc)]
        wanted += [("Job", f"{svc}-migrate")] if svc in SERVICES else [("Ingress", svc)]
        for kind, name in wanted:
            if (kind, name) not in names:
                ck.error(where, f"{kind}/{name} is missing")
        if svc in WEB_SERVICES and ("Job", f"{svc}-migrate") in names:
            ck.error(where, f"Job/{svc}-migrate: {svc} has no database, nothing to migrate")

    for o in workloads:
        oid = f"{where}: {obj_id(o)}"
        spec = pod_spec(o) or {}
        psc = spec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True or not isinstance(psc.get("runAsUser"), int) or psc.get("runAsUser") == 0:
            ck.error(oid, "pod securityContext needs runAsNonRoot: true and a numeric non-zero runAsUser")
        if spec.get("automountServiceAccountToken") is not False:
            ck.error(oid, "automountServiceAccountToken should be false (the services never call the API server)")
        for c in containers(o):
            csc = c.get("securityContext") or {}
            if csc.get("readOnlyRootFilesystem") is not True or csc.get("allowPrivilegeEscalation") is not False \
                    or "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                ck.error(oid, f"container {c.get('name')}: needs readOnlyRootFilesystem, no privilege escalation, drop ALL")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set((res.get(part) or {})):
                    ck.error(oid, f"container {c.get('name')}: resources.{part} needs cpu and memory")
            for src in c.get("envFrom") or []:
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    ref = src.get(key)
                    if ref and not ref.get("optional") and (rendered or kind == "ConfigMap") \
                            and (kind, ref.get("name")) not in names:
                        ck.error(oid, f"container {c.get('name')}: envFrom {kind} {ref.get('name')!r} does not exist")
            for env in c.get("env") or []:
                vf = env.get("valueFrom") or {}
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = vf.get(key)
                    if ref and (rendered or kind == "ConfigMap") and (kind, ref.get("name")) not in names:
                        ck.error(oid, f"env {env.get('name')}: {kind} {ref.get('name')!r} does not exist")

    for name, d in deployments.items():
        oid = f"{where}: Deployment/{name}"
        spec = d.get("spec") or {}
        if not selects(spec.get("selector"), pod_labels(d)):
            ck.error(oid, "selector does not match the pod template's labels")
        ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        if (spec.get("strategy") or {}).get("type") != "RollingUpdate" or ru.get("maxUnavailable") != 0 \
                or ru.get("maxSurge") != 1:
            ck.error(oid, "strategy must be RollingUpdate with maxUnavailable 0, maxSurge 1")
        if (spec.get("replicas") or 1) < 2:
            ck.error(oid, "needs at least 2 replicas")
        if name not in PORTS:
            continue
        port = PORTS[name]
        c = (containers(d) or [{}])[0]
        ports = {p.get("containerPort") for p in c.get("ports") or []}
        # The gRPC services also serve /metrics on their admin port (gRPC port + 1000).
        expected = {port, port + 1000} if name in SERVICES else {port}
        if ports != expected:
            ck.error(oid, f"container ports must be {sorted(expected)} (the service's defaults), found {sorted(ports)}")
        if name in SERVICES:
            notes = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
            if notes.get("prometheus.io/scrape") != "true" or notes.get("prometheus.io/port") != str(port + 1000):
                ck.error(oid, f"pod must be annotated for scraping /metrics on {port + 1000}")
        if name in SERVICES:
            grpc_name = SERVICES[name][1]
            grpc = (c.get("readinessProbe") or {}).get("grpc") or {}
            if grpc.get("port") != port or grpc.get("service") != grpc_name:
                ck.error(oid, f"readinessProbe must be grpc on {port} for service {grpc_name}")
        else:
            path = WEB_SERVICES[name][1]
            named = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = (c.get(probe) or {}).get("httpGet")
                if probe != "readinessProbe" and get is None:
                    continue
                get = get or {}
                if get.get("path") != path or named.get(get.get("port"), get.get("port")) != port:
                    ck.error(oid, f"{probe} must be httpGet {path} on {port}")
            env = container_env(c, objects)
            if env.get(f"{name.upper()}_LISTEN", "").rsplit(":", 1)[0] not in ("0.0.0.0", "[::]"):
                ck.error(oid, f"{name.upper()}_LISTEN must listen on every interface (0.0.0.0:{port}); "
                              "the binary's default is loopback")
        if not c.get("livenessProbe"):
            ck.error(oid, "no livenessProbe")

    for s in by_kind.get("Service", []):
        oid = f"{where}: {obj_id(s)}"
        sel = {"matchLabels": (s.get("spec") or {}).get("selector") or {}}
        targets = [d for d in deployments.values() if selects(sel, pod_labels(d))]
        if not targets:
            ck.error(oid, "selector matches no Deployment")
            continue
        named = {p.get("name") for d in targets for c in containers(d) for p in c.get("ports") or []}
        numbers = {p.get("containerPort") for d in targets for c in containers(d) for p in c.get("ports") or []}
        for p in (s.get("spec") or {}).get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            if (isinstance(tp, str) and tp not in named) or (isinstance(tp, int) and tp not in numbers):
                ck.error(oid, f"targetPort {tp!r} is not a port of {targets[0]['metadata']['name']}")
            if s["metadata"]["name"] in PORTS and p.get("port") != PORTS[s["metadata"]["name"]]:
                ck.error(oid, f"port must be {PORTS[s['metadata']['name']]}")

    for p in by_kind.get("PodDisruptionBudget", []):
        if not any(selects((p.get("spec") or {}).get("selector"), pod_labels(d)) for d in deployments.values()):
            ck.error(f"{where}: {obj_id(p)}", "selector matches no Deployment")
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        spec = h.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        if (ref.get("kind"), ref.get("name")) not in names:
            ck.error(f"{where}: {obj_id(h)}", f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} does not exist")
        target = deployments.get(ref.get("name"))
        if spec.get("minReplicas", 1) > spec.get("maxReplicas", 0):
            ck.error(f"{where}: {obj_id(h)}", "minReplicas above maxReplicas")
        if target and (target.get("spec") or {}).get("replicas", 1) < spec.get("minReplicas", 1):
            ck.error(f"{where}: {obj_id(h)}", "the Deployment's replicas are below the autoscaler's minReplicas")

    for j in by_kind.get("Job", []):
        oid = f"{where}: {obj_id(j)}"
        spec = pod_spec(j) or {}
        if spec.get("restartPolicy") not in ("Never", "OnFailure"):
            ck.error(oid, "restartPolicy must be Never or OnFailure")
        if j["metadata"]["name"].endswith("-migrate"):
            svc = j["metadata"]["name"][: -len("-migrate")]
            c = (containers(j) or [{}])[0]
            if c.get("args") != ["migrate"]:
                ck.error(oid, 'a migration Job runs the image with args: ["migrate"]')
            if svc in deployments:
                dc = (containers(deployments[svc]) or [{}])[0]
                if image_name(c.get("image", "")) != image_name(dc.get("image", "")) or c.get("image") != dc.get("image"):
                    ck.error(oid, f"image differs from Deployment/{svc}'s")
                if c.get("envFrom") != dc.get("envFrom"):
                    ck.error(oid, f"envFrom differs from Deployment/{svc}'s")

    check_ingresses(where, by_kind.get("Ingress", []), by_kind.get("Service", []), deployments, objects, ck)
    check_network_policies(where, by_kind.get("NetworkPolicy", []), workloads, deployments, ck)


def container_env(c: dict, objects: list[dict]) -> dict[str, str]:
    """The environment a container gets from its ConfigMaps (envFrom, later wins) and literal
    `env` values, as far as the objects show it (Secrets are not read)."""
    maps = {o["metadata"]["name"]: o.get("data") or {} for o in objects if o.get("kind") == "ConfigMap"}
    env: dict[str, str] = {}
    for src in c.get("envFrom") or []:
        ref = src.get("configMapRef")
        if ref:
            env.update({f"{src.get('prefix', '')}{k}": str(v) for k, v in maps.get(ref.get("name"), {}).items()})
    for e in c.get("env") or []:
        if "value" in e:
            env[e.get("name")] = str(e["value"])
    return env


def check_ingresses(where: str, ingresses: list[dict], services: list[dict], deployments: dict[str, dict],
                    objects: list[dict], ck: Checker) -> None:
    """Ingress backends name existing Services and ports; a web service's Ingress serves the host
    and path of its CQRS_PUBLIC_BASE_URL, which must also be the base of the mailed links."""
    from urllib.parse import urlsplit

    svc_ports = {s["metadata"]["name"]: {(p.get("name"), p.get("port")) for p in (s.get("spec") or {}).get("ports") or []}
                 for s in services}
    public = {}
    for name in ("notifications", *WEB_SERVICES):
        if name in deployments:
            value = container_env((containers(deployments[name]) or [{}])[0], objects).get("CQRS_PUBLIC_BASE_URL")
            if value is not None:
                public[name] = value
    for name in WEB_SERVICES:
        if "notifications" in public and name in public and public[name] != public["notifications"]:
            ck.error(where, f"CQRS_PUBLIC_BASE_URL of {name} ({public[name]}) differs from notifications' "
                            f"({public['notifications']}): mailed links would miss the {name}")
    for ing in ingresses:
        oid = f"{where}: {obj_id(ing)}"
        spec = ing.get("spec") or {}
        backends = []  # (host, path, service)
        default = (spec.get("defaultBackend") or {}).get("service")
        if default:
            backends.append((None, None, default))
        for rule in spec.get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                backends.append((rule.get("host"), path.get("path"), (path.get("backend") or {}).get("service") or {}))
        for _, _, backend in backends:
            target, port = backend.get("name"), backend.get("port") or {}
            if target not in svc_ports:
                ck.error(oid, f"backend Service {target!r} does not exist")
            elif not any(port.get("name") == n or port.get("number") == p for n, p in svc_ports[target]):
                ck.error(oid, f"backend port {port} is not a port of Service/{target}")
        tls_hosts = {h for t in spec.get("tls") or [] for h in t.get("hosts") or []}
        for host, _, _ in backends:
            if host and tls_hosts and host not in tls_hosts:
                ck.error(oid, f"host {host} has no TLS entry")
        for name in WEB_SERVICES:
            if name not in public or not any(b.get("name") == name for _, _, b in backends):
                continue
            url = urlsplit(public[name])
            prefix = url.path.rstrip("/") or "/"
            served = [(h, p) for h, p, b in backends if b.get("name") == name]
            if not any(h == url.hostname and (p or "/").rstrip("/") in ("", prefix.rstrip("/")) for h, p in served):
                ck.error(oid, f"does not route host {url.hostname} path {prefix} (CQRS_PUBLIC_BASE_URL "
                              f"{public[name]}) to Service/{name}; it has {served}")
            if url.scheme == "https" and url.hostname not in tls_hosts:
                ck.error(oid, f"CQRS_PUBLIC_BASE_URL is https, but the Ingress has no TLS for {url.hostname}")


def check_network_policies(where: str, policies: list[dict], workloads: list[dict],
                           deployments: dict[str, dict], ck: Checker) -> None:
    if not any((p.get("spec") or {}).get("podSelector") == {} and
               set((p.get("spec") or {}).get("policyTypes") or []) == {"Ingress", "Egress"} and
               not (p.get("spec") or {}).get("ingress") and not (p.get("spec") or {}).get("egress")
               for p in policies):
        ck.error(where, "no default-deny NetworkPolicy (podSelector {}, Ingress+Egress, no rules)")
    suite = {n: d for n, d in deployments.items() if n in PORTS}
    egress: dict[str, set[str]] = {n: set() for n in suite}
    ingress: dict[str, set[str]] = {n: set() for n in suite}
    for p in policies:
        oid = f"{where}: {obj_id(p)}"
        spec = p.get("spec") or {}
        selected = [w for w in workloads if selects(spec.get("podSelector"), pod_labels(w))]
        if spec.get("podSelector") != {} and not selected:
            ck.error(oid, "podSelector selects no pod of the suite")
        sel_services = [n for n, d in suite.items() if selects(spec.get("podSelector"), pod_labels(d))]
        for direction, key in (("egress", "to"), ("ingress", "from")):
            for rule in spec.get(direction) or []:
                ports = {pp.get("port") for pp in rule.get("ports") or []}
                for peer in rule.get(key) or []:
                    if "namespaceSelector" in peer or "ipBlock" in peer or "podSelector" not in peer:
                        continue
                    peers = [n for n, d in suite.items() if selects(peer["podSelector"], pod_labels(d))]
                    if not peers and any(k.startswith("app.kubernetes.io/") for k in
                                         (peer["podSelector"].get("matchLabels") or {})):
                        ck.error(oid, f"{direction} peer {peer['podSelector']} selects no pod of the suite")
                    for other in peers:
                        for me in sel_services:
                            if direction == "egress":
                                want = PORTS[other]
                                egress[me].add(other)
                            else:
                                want = PORTS[me]
                                ingress[me].add(other)
                            if ports and want not in ports:
                                ck.error(oid, f"{direction} {me}<->{other} allows ports {sorted(ports)}, "
                                              f"not the gRPC port {want}")
    for me in suite:
        if egress[me] != CALLS[me]:
            ck.error(where, f"NetworkPolicies let {me} call {sorted(egress[me])}; the design needs {sorted(CALLS[me])}")
        callers = {c for c, callees in CALLS.items() if me in callees and c in suite}
        if ingress[me] != callers:
            ck.error(where, f"NetworkPolicies admit {sorted(ingress[me])} to {me}; its callers are {sorted(callers)}")
    # A web service is reached only through its Ingress: some policy must admit the controller.
    for me in (n for n in suite if n in WEB_SERVICES):
        admitted = any(
            selects((p.get("spec") or {}).get("podSelector"), pod_labels(suite[me]))
            and any(PORTS[me] in {pp.get("port") for pp in rule.get("ports") or []}
                    for rule in (p.get("spec") or {}).get("ingress") or [])
            for p in policies)
        if not admitted:
            ck.error(where, f"no NetworkPolicy admits anyone to {me} on {PORTS[me]}: its Ingress cannot reach it")


# ----------------------------------------------------------------------------------------------
# Compose

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    env = env or {}

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env:
            return env[name]
        return arg if op in (":-", "-") else ""
    return INTERPOLATION.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def compose_command() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        r = subprocess.run(cmd + ["version", "--short"], capture_output=True, text=True)
        m = re.match(r"v?(\d+)\.", r.stdout.strip()) if r.returncode == 0 else None
        if m and int(m.group(1)) >= 2:  # Compose v1 (Python) does not know the current spec
            return cmd
    return None


def compose_env_override() -> dict[str, str]:
    """Without the git-ignored deploy/compose.env, check against its example."""
    if (DEPLOY / "compose.env").is_file():
        return {}
    return {"CQRS_COMPOSE_ENV_FILE": "compose.env.example"}


def check_compose(ck: Checker) -> dict | None:
    docs = load_docs(COMPOSE, ck)
    if docs is None:
        return None
    if len(docs) != 1:
        ck.error(COMPOSE, "must hold one document")
        return None
    data = docs[0]
    for m in INTERPOLATION.finditer(COMPOSE.read_text()):
        if m.group(2) is None:
            ck.error(COMPOSE, f"${{{m.group(1)}}} has no default: use ${{{m.group(1)}:-...}}")
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        ck.error(COMPOSE, "no services")
        return None
    volumes = set((data.get("volumes") or {}).keys())
    env_override = compose_env_override()
    host_ports: dict[str, str] = {}
    for name, svc in services.items():
        where = f"{rel(COMPOSE)}: services.{name}"
        if not isinstance(svc, dict):
            ck.error(where, "is not a mapping")
            continue
        if not svc.get("image") and not svc.get("build"):
            ck.error(where, "needs image or build")
        build = svc.get("build")
        if build is not None:
            build = {"context": build} if isinstance(build, str) else build
            context = (DEPLOY / interpolate(str(build.get("context", ".")))).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not context.is_dir():
                ck.error(where, f"build context {build.get('context')!r} does not exist")
            elif not dockerfile.is_file():
                ck.error(where, f"dockerfile {build.get('dockerfile')!r} does not exist in the context")
            args = build.get("args") or {}
            if isinstance(args, list):
                args = dict(str(a).split("=", 1) for a in args)
            if dockerfile.resolve() == DOCKERFILE.resolve():
                if args.get("SERVICE") not in PORTS:
                    ck.error(where, f"build arg SERVICE must be one of {sorted(PORTS)}")
                elif name in PORTS and args["SERVICE"] != name:
                    ck.error(where, f"builds SERVICE={args['SERVICE']}")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            if dep not in services:
                ck.error(where, f"depends_on {dep!r}, which is not a service")
                continue
            cond = (spec or {}).get("condition", "service_started")
            if cond not in ("service_started", "service_healthy", "service_completed_successfully"):
                ck.error(where, f"depends_on {dep}: unknown condition {cond!r}")
            hc = (services[dep] or {}).get("healthcheck") or {}
            if cond == "service_healthy" and (not hc.get("test") or hc.get("disable")):
                ck.error(where, f"waits for {dep} to be healthy, but {dep} has no healthcheck")
        for port in svc.get("ports") or []:
            text = interpolate(str(port["published"]) + ":" + str(port["target"])) if isinstance(port, dict) \
                else interpolate(str(port))
            parts = text.split(":")
            if len(parts) < 2:
                continue
            host = ":".join(parts[:-1])
            if host in host_ports:
                ck.error(where, f"host port {host} also published by {host_ports[host]}")
            host_ports[host] = name
            container = parts[-1].split("/")[0]
            if name in PORTS and container != str(PORTS[name]):
                ck.error(where, f"publishes container port {container}; the service listens on {PORTS[name]}")
        env_files = svc.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, (str, dict)) else env_files:
            path = entry.get("path") if isinstance(entry, dict) else entry
            required = entry.get("required", True) if isinstance(entry, dict) else True
            resolved = DEPLOY / interpolate(str(path), env_override)
            if required and not resolved.is_file():
                ck.error(where, f"env_file {path!r} ({rel(resolved)}) does not exist")
        for vol in svc.get("volumes") or []:
            source = vol.get("source") if isinstance(vol, dict) else str(vol).split(":", 1)[0]
            if source and not source.startswith((".", "/", "~", "$")) and source not in volumes:
                ck.error(where, f"volume {source!r} is not declared under volumes:")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(str(e).split("=", 1) if "=" in str(e) else (str(e), "") for e in env)
        for var in ("IDENTITY_URL", "DIRECTORY_URL", "ACCESS_URL", "NOTIFICATIONS_URL"):
            if var in env:
                m = re.match(r"https?://([^:/]+):(\d+)", interpolate(str(env[var])))
                target = var.split("_")[0].lower()
                if not m or m.group(1) not in services or int(m.group(2)) != SERVICES[target][0]:
                    ck.error(where, f"{var}={env[var]} does not point at service {target}:{SERVICES[target][0]}")
        if name in WEB_SERVICES:
            listen = interpolate(str(env.get(f"{name.upper()}_LISTEN", "")))
            if listen.rsplit(":", 1)[0] not in ("0.0.0.0", "[::]"):
                ck.error(where, f"{name.upper()}_LISTEN must be 0.0.0.0:{PORTS[name]} (the binary's default is loopback)")
    missing = set(PORTS) - set(services)
    if missing:
        ck.error(COMPOSE, f"services missing: {sorted(missing)}")
    example = DEPLOY / "compose.env.example"
    if not example.is_file():
        ck.error(example, "missing")
    if git_ignored(DEPLOY / "compose.env") is False:
        ck.error(DEPLOY / "compose.env", "must be git-ignored (it holds the signing key)")
    cmd = compose_command()
    if cmd is None:
        ck.note("Docker Compose v2 not installed: compose file checked structurally only")
    else:
        r = subprocess.run(cmd + ["-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                           env={**os.environ, **env_override})
        if r.returncode != 0:
            ck.error(COMPOSE, f"{' '.join(cmd)} config: {r.stderr.strip()}")
    return data


# ----------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, buf, start = [], "", 0
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def check_dockerfile(ck: Checker) -> None:
    where = DOCKERFILE
    if not DOCKERFILE.is_file():
        ck.error(where, "missing")
        return
    ins = dockerfile_instructions(DOCKERFILE.read_text())
    global_args: dict[str, str | None] = {}
    stages: dict[str, dict] = {}
    order: list[dict] = []
    current: dict | None = None
    for line, word, args in ins:
        if word == "ARG" and current is None:
            name, _, default = args.partition("=")
            global_args[name] = default or None
        elif word == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", args, re.I)
            if not m:
                ck.error(where, f"line {line}: cannot read FROM {args!r}")
                continue
            current = {"line": line, "base": m.group(1), "name": m.group(2), "ins": []}
            order.append(current)
            if m.group(2):
                stages[m.group(2)] = current
        elif current is None:
            ck.error(where, f"line {line}: {word} before the first FROM")
        else:
            current["ins"].append((line, word, args))
    if "SERVICE" not in global_args:
        ck.error(where, "no global ARG SERVICE")
    if global_args.get("SERVICE"):
        ck.error(where, "ARG SERVICE must have no default (an image must name its service)")
    if not order or order[-1]["base"] != "${SERVICE}":
        ck.error(where, "the last stage must be FROM ${SERVICE} (the service's stage)")

    def resolve(base: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1)) or m.group(0), base)

    def chain(stage: dict) -> list[dict]:
        seen = [stage]
        while stage["base"] in stages and stages[stage["base"]] not in seen:
            stage = stages[stage["base"]]
            seen.append(stage)
        return seen

    build = stages.get("build")
    if build is None:
        ck.error(where, "no `build` stage")
    else:
        if not re.match(r"rust:1\.95\b", resolve(build["base"])):
            ck.error(where, f"builder must be Rust 1.95, is {resolve(build['base'])}")
        runs = " ".join(a for _, w, a in build["ins"] if w == "RUN")
        for needle in ("--locked", "--release", '-p "cqrs-${SERVICE}"', "type=cache", "target=/src/target",
                       "/usr/local/cargo/registry"):
            if needle not in runs:
                ck.error(where, f"build stage: the cargo build should use {needle}")
    for svc, port in PORTS.items():
        stage = stages.get(svc)
        if stage is None:
            ck.error(where, f"no stage named {svc}")
            continue
        links = chain(stage)
        root = resolve(links[-1]["base"])
        if not re.match(r"gcr\.io/distroless/cc-debian\d+:nonroot$", root):
            ck.error(where, f"{svc}: runtime image must be distroless cc (nonroot), is {root}")
        all_ins = [i for s in links for i in s["ins"]]
        users = [a for _, w, a in all_ins if w == "USER"]
        if "nonroot" not in users:
            ck.error(where, f"{svc}: no USER nonroot")
        exposes = [a for _, w, a in stage["ins"] if w == "EXPOSE"]
        if exposes != [str(port)]:
            ck.error(where, f"{svc}: must EXPOSE {port}, has {exposes}")
        entry = [a for _, w, a in all_ins if w == "ENTRYPOINT"]
        try:
            ep = json.loads(entry[0]) if entry else None
        except json.JSONDecodeError:
            ep = None
        if ep != [f"/usr/local/bin/cqrs-{svc}"]:
            ck.error(where, f'{svc}: ENTRYPOINT must be the exec form ["/usr/local/bin/cqrs-{svc}"]')
        for _, w, a in all_ins:
            if w == "COPY" and "--from=" in a:
                src = re.search(r"--from=(\S+)", a).group(1)
                if src not in stages:
                    ck.error(where, f"{svc}: COPY --from={src}: no such stage")
    build_deb = re.search(r"-(bookworm|trixie)\b", resolve(build["base"]) if build else "")
    run_deb = re.search(r"cc-debian(\d+)", resolve(stages["runtime"]["base"]) if "runtime" in stages else "")
    if build_deb and run_deb and {"bookworm": "12", "trixie": "13"}[build_deb.group(1)] != run_deb.group(1):
        ck.error(where, "builder and runtime Debian releases differ (glibc mismatch)")
    ignore = ROOT / ".dockerignore"
    if not ignore.is_file():
        ck.error(ignore, "missing")
    else:
        entries = {line.strip().rstrip("/") for line in ignore.read_text().splitlines()}
        for needed in ("target", ".git", ".run", ".tools"):
            if needed not in entries:
                ck.error(ignore, f"should exclude {needed}/")


# ----------------------------------------------------------------------------------------------
# Configuration names and secret hygiene


def documented_variables(ck: Checker) -> set[str]:
    if not CONFIG_DOC.is_file():
        ck.error(CONFIG_DOC, "missing")
        return set()
    names: set[str] = set()
    for token in re.findall(r"`([A-Z<][A-Za-z0-9_<>]*)`", CONFIG_DOC.read_text()):
        if "<SERVICE>" in token:
            names |= {token.replace("<SERVICE>", s.upper()) for s in SERVICES}
        elif re.fullmatch(r"[A-Z][A-Z0-9_]+", token):
            names.add(token)
    return names


def env_file_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            names.append(line.split("=", 1)[0].strip())
    return names


def check_configuration(tree: K8sTree, compose: dict | None, ck: Checker) -> int:
    known = documented_variables(ck)
    used: list[tuple[str, str]] = []
    if compose:
        for name, svc in (compose.get("services") or {}).items():
            if name in PORTS:
                env = (svc or {}).get("environment") or {}
                keys = env.keys() if isinstance(env, dict) else [str(e).split("=", 1)[0] for e in env]
                used += [(f"{rel(COMPOSE)}: services.{name}", k) for k in keys]
    for example in sorted(DEPLOY.rglob("*.example")):
        used += [(rel(example), k) for k in env_file_names(example)]
        for n, line in enumerate(example.read_text().splitlines(), 1):
            if not line.lstrip().startswith("#") and KEY_MATERIAL.search(line):
                ck.error(example, f"line {n} looks like real key material; commit placeholders only")
    for k in tree.kustomizations.values():
        for gen in (k.data.get("configMapGenerator") or []) + (k.data.get("secretGenerator") or []):
            used += [(rel(kustomization_file(k.dir)), str(lit).split("=", 1)[0]) for lit in gen.get("literals") or []]
    for f in tree.resource_files:
        for doc in load_docs(f, Checker()) or []:
            for c in containers(doc):
                used += [(rel(f), e.get("name")) for e in c.get("env") or []]
    for where, name in used:
        if name not in known:
            ck.error(where, f"sets {name}, which no service reads (not in {rel(CONFIG_DOC)})")
    return len(used)


# ----------------------------------------------------------------------------------------------


def main() -> int:
    started = time.monotonic()
    ck = Checker()
    summary = []

    tree = K8sTree(ck)
    tree.load()
    files = sorted(tree.resource_files)
    objects = sum(len(load_docs(f, Checker()) or []) for f in files)
    base = (K8S / "base").resolve()
    check_objects("deploy/k8s/base (as written)", tree.closure(base), ck, rendered=False)

    kubernetes_validate([(rel(f), d) for f in files for d in load_docs(f, Checker()) or []], ck)
    with tempfile.TemporaryDirectory(prefix="validate-deploy-") as tmp:
        rendered = render(tree, Path(tmp), ck)
    for name, docs in (rendered or {}).items():
        kubernetes_validate([(f"deploy/k8s/{name} (rendered)", d) for d in docs], ck)
    summary.append(f"{len(tree.kustomizations)} kustomizations, {len(files)} manifest files "
                   f"({objects} objects) valid for Kubernetes {K8S_VERSION}")
    if rendered is not None:
        for name, docs in rendered.items():
            check_objects(f"deploy/k8s/{name} (rendered)", docs, ck, rendered=name != "base")
        summary.append(f"rendered {', '.join(sorted(rendered))} "
                       f"({sum(len(d) for d in rendered.values())} objects), valid and consistent")

    compose = check_compose(ck)
    summary.append(f"compose file ({len((compose or {}).get('services') or {})} services)")
    check_dockerfile(ck)
    summary.append("Dockerfile")
    n = check_configuration(tree, compose, ck)
    summary.append(f"{n} settings use documented variables")

    for note in ck.notes:
        print(f"validate-deploy: note: {note}")
    if ck.errors:
        for e in ck.errors:
            print(f"validate-deploy: ERROR {e}", file=sys.stderr)
        print(f"validate-deploy: {len(ck.errors)} error(s)", file=sys.stderr)
        return 1
    print(f"validate-deploy: ok in {time.monotonic() - started:.1f}s: " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
