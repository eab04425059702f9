#!/usr/bin/env python3
"""Policy test of paystream's deployment files, offline.

  policy.py RENDERED.yaml...   (the output of `kustomize build` of each overlay)

Checks, on every rendered overlay: Pod Security "restricted" fields on every container,
probes (startup, liveness, readiness; liveness and readiness on different paths, on a
port the container has), requests set, memory request = limit for every workload, no
floating image tags, a PodDisruptionBudget and a NetworkPolicy (besides the namespace's
default deny) for every workload, selectors that match the pod labels, serviceName and
Service ports that exist, ServiceMonitor ports that exist and jobs PaystreamTargetDown
covers, KEDA's maxReplicaCount within the partition count, for Deployments a preStop
delay, one autoscaler and a PDB that lets drains proceed, HPA targets, Ingress backends
(the gateway) and TLS, env references defined before use, no literal secrets, every
namespaced object in a Namespace of the render that enforces "restricted".
And on what each paystream process is (`run`, `serve --service ...`): the embedded log
has one owner, a one-replica StatefulSet with its data on a volume claim, never
autoscaled; every Kafka process has its pod's name as transactional id; the views'
keeper on Kafka is one replica of a StatefulSet, never autoscaled, its definitions from a
ConfigMap, and no other process keeps them; every `serve`
names its trusted proxies; the auth and payments services alone share PostgreSQL (a
Secret) and a mounted key file; every gateway route reaches a Service whose pods run a
service, through NetworkPolicies that allow it at both ends, and the routes cover every
path of the API's OpenAPI document.
And on the repository: the PrometheusRule's groups equal rules.yaml's; every alert has
a severity, annotations, a runbook section and promtool tests where it fires and where
it does not; the Grafana dashboards are well formed, use the three variables and
$__rate_interval, and scope every selector to $namespace.
Prints one line per failure and ends with "N passed, N failed". Needs PyYAML.
"""

import json
import re
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
# The public API's paths: every one must be routed by a gateway to a service.
OPENAPI = DEPLOY.parent / "gateway" / "edge" / "api" / "openapi.json"
# Served by the gateway itself, not routed.
GATEWAY_PATHS = {"/openapi.json"}
WORKLOADS = {"StatefulSet", "Deployment", "DaemonSet"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass", "IngressClass"}
SECRET_NAME = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential", re.I)


class Report:
    def __init__(self):
        self.passed, self.failed = 0, 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {what}")
        return ok


def quantity(value):
    """Kubernetes quantity -> number (bytes or cores)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    if not match or match.group(2) not in units and match.group(2):
        raise ValueError(f"not a quantity: {value}")
    return float(match.group(1)) * units.get(match.group(2), 1)


def selects(selector, labels):
    """A label selector (matchLabels only) matches these labels."""
    selector = selector or {}
    if set(selector) - {"matchLabels"}:
        return False  # matchExpressions: not used here, so not supported
    return all(labels.get(key) == value for key, value in (selector.get("matchLabels") or {}).items())


def pod_of(workload):
    template = workload["spec"]["template"]
    return template.get("metadata", {}).get("labels", {}), template["spec"]


def check_container(r, where, pod_spec, container):
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    effective = lambda key: sc.get(key, pod_sc.get(key))
    r.check(effective("runAsNonRoot") is True, f"{where}: runAsNonRoot true")
    user = effective("runAsUser")
    r.check(isinstance(user, int) and user == 10001, f"{where}: numeric runAsUser 10001 (got {user!r})")
    r.check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
    caps = sc.get("capabilities") or {}
    r.check("ALL" in (caps.get("drop") or []), f"{where}: capabilities drop ALL")
    r.check(set(caps.get("add") or []) <= {"NET_BIND_SERVICE"}, f"{where}: adds no capability but NET_BIND_SERVICE")
    seccomp = (effective("seccompProfile") or {}).get("type")
    r.check(seccomp in ("RuntimeDefault", "Localhost"), f"{where}: seccompProfile RuntimeDefault (got {seccomp!r})")
    r.check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem true")
    r.check(not sc.get("privileged"), f"{where}: not privileged")
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    tmp = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
    r.check(bool(tmp) and "emptyDir" in volumes.get(tmp[0]["name"], {}), f"{where}: /tmp is an emptyDir")

    image = container.get("image", "")
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    r.check(tag and tag not in ("latest", "dev") or "@sha256:" in image, f"{where}: image {image!r} has a fixed tag")

    ports = {p.get("name") for p in container.get("ports") or []} | {p["containerPort"] for p in container.get("ports") or []}
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        spec = container.get(probe)
        if r.check(spec is not None, f"{where}: has a {probe}"):
            http = spec.get("httpGet")
            if http:
                paths[probe] = http.get("path")
                r.check(http.get("port") in ports, f"{where}: {probe} port {http.get('port')!r} is a container port")
    if "livenessProbe" in paths and "readinessProbe" in paths:
        r.check(paths["livenessProbe"] != paths["readinessProbe"],
                f"{where}: liveness and readiness probe different paths (both {paths['livenessProbe']!r})")

    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    r.check("cpu" in requests and "memory" in requests, f"{where}: cpu and memory requests set")
    r.check("memory" in limits, f"{where}: memory limit set")
    if "memory" in requests and "memory" in limits:
        r.check(quantity(requests["memory"]) == quantity(limits["memory"]),
                f"{where}: memory request {requests['memory']} = limit {limits['memory']}")

    defined = set()
    for env in container.get("env") or []:
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(env.get("value", ""))):
            r.check(ref in defined, f"{where}: env {env['name']} uses $({ref}) defined before it")
        if SECRET_NAME.search(env["name"]) and "value" in env:
            r.check(bool(re.search(r"\$\(", env["value"])), f"{where}: env {env['name']} is not a literal secret")
        defined.add(env["name"])


def env_of(container, configmaps):
    """The container's environment: its envFrom ConfigMaps, then env (which wins), as
    name -> env entry (a dict with `value` or `valueFrom`)."""
    env = {}
    for source in container.get("envFrom") or []:
        for key, value in configmaps.get((source.get("configMapRef") or {}).get("name"), {}).items():
            env[key] = {"name": key, "value": str(value)}
    for entry in container.get("env") or []:
        env[entry["name"]] = entry
    return env


def argv_of(container):
    """paystream's arguments in this container (the image's entrypoint is paystream, its
    default command `run`), or None if the container runs something else."""
    image = container.get("image", "").rsplit("/", 1)[-1].split("@")[0].split(":")[0]
    command = container.get("command")
    if image != "paystream" or command and not command[0].endswith("paystream"):
        return None
    return list((command or [""])[1:]) + list(container.get("args") or ([] if command else ["run"]))


def setting(argv, env, flag, variable):
    """How a paystream option is set: its command-line values (`--flag V`, `--flag=V`,
    repeatable, comma-joined) as {"value": ...}, else its environment variable's entry,
    else None (the default)."""
    values = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]
    values += [arg[len(flag) + 1:] for arg in argv if arg.startswith(flag + "=")]
    return {"value": ",".join(values)} if values else env.get(variable)


def literal(entry):
    """A setting's literal value, "" when it is unset or comes from elsewhere."""
    return str((entry or {}).get("value", ""))


def container_port(pod_spec, port):
    """(number, name) of the container port a Service's targetPort (name or number)
    names, or None."""
    for c in pod_spec["containers"]:
        for p in c.get("ports") or []:
            if port in (p.get("name"), p["containerPort"]):
                return p["containerPort"], p.get("name")
    return None


def peer_selects(peers, pod_labels, namespace_labels):
    """A NetworkPolicy rule's `from`/`to` peers include a pod with these labels in the
    policy's own namespace (an absent list means every peer). ipBlocks are not counted."""
    if peers is None:
        return True
    for peer in peers:
        if "ipBlock" in peer:
            continue
        if "namespaceSelector" in peer and not selects(peer["namespaceSelector"], namespace_labels):
            continue
        if selects(peer.get("podSelector"), pod_labels):
            return True
    return False


def port_allowed(ports, number, name):
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        port = p.get("port")
        if port is None or port in (number, name) or isinstance(port, int) and port <= number <= p.get("endPort", port):
            return True
    return False


def policy_allows(policies, direction, subject, peer, number, name, namespace_labels):
    """Some NetworkPolicy lets pods labelled `subject` receive (direction "Ingress") from,
    or send (direction "Egress") to, pods labelled `peer` on container port number/name
    (the destination's)."""
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in policies:
        spec = policy["spec"]
        types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
        if direction not in types or not selects(spec.get("podSelector"), subject):
            continue
        for rule in spec.get(key) or []:
            if peer_selects(rule.get(peers), peer, namespace_labels) and port_allowed(rule.get("ports"), number, name):
                return True
    return False


def check_processes(r, name, workloads, services, policies, by_kind, configmaps, namespaces):
    """What each paystream process is, from its arguments and environment, and what that
    asks of the deployment."""
    scalers = by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", [])
    log_owners, gateways = [], []
    for w in workloads:
        labels, pod_spec = pod_of(w)
        for c in pod_spec["containers"]:
            argv = argv_of(c)
            if argv is None:
                continue
            ident = f"{name}: {w['kind']}/{w['metadata']['name']} container {c['name']}"
            env = env_of(c, configmaps)
            command = next((a for a in argv if not a.startswith("-")), "")
            service = literal(setting(argv, env, "--service", "PAYSTREAM_SERVICE")) or "all" if command == "serve" else None
            on_kafka = setting(argv, env, "--kafka-brokers", "PAYSTREAM_KAFKA_BROKERS") is not None
            # On the embedded log `views` owns the log; on Kafka each view commits under an
            # id of its own (`paystream-view-<name>`), whatever the process's.
            uses_log = command == "run" or service in ("all", "payments") or (command == "views" and not on_kafka)
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
            volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
            ports = {p["containerPort"] for p in c.get("ports") or []}
            addresses = [("--metrics-addr", "PAYSTREAM_METRICS_ADDR")]
            if command == "serve":
                addresses.append(("--http-addr", "PAYSTREAM_HTTP_ADDR"))
            if command == "sql":
                addresses.append(("--sql-addr", "PAYSTREAM_SQL_ADDR"))
            for flag, variable in addresses:
                address = literal(setting(argv, env, flag, variable))
                host, _, port = address.rpartition(":")
                r.check(host not in ("", "127.0.0.1", "localhost", "[::1]") and port.isdigit() and int(port) in ports,
                        f"{ident}: {variable} {address!r} listens on the pod's address, on a container port")
            if uses_log and not on_kafka:
                log_owners.append(w)
                r.check(w["kind"] == "StatefulSet" and w["spec"].get("replicas", 1) == 1,
                        f"{ident}: owns the embedded log (`{' '.join(argv)}`), so runs in a one-replica StatefulSet")
                data_dir = literal(setting(argv, env, "--data-dir", "PAYSTREAM_DATA_DIR"))
                claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates") or []}
                r.check(mounts.get(data_dir) in claims, f"{ident}: its data directory {data_dir!r} is a volume claim's mount")
                autoscaled = [s["metadata"]["name"] for s in scalers if s["spec"]["scaleTargetRef"].get("kind") == w["kind"]
                              and s["spec"]["scaleTargetRef"]["name"] == w["metadata"]["name"]]
                r.check(not autoscaled, f"{ident}: owns the embedded log, so no autoscaler targets it (got {autoscaled})")
            if uses_log and on_kafka:
                tid = setting(argv, env, "--kafka-transactional-id", "PAYSTREAM_KAFKA_TRANSACTIONAL_ID") or {}
                r.check(((tid.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") == "metadata.name",
                        f"{ident}: on Kafka, its transactional id is its pod's name (one per replica)")
            if command == "views" and on_kafka:
                autoscaled = [s["metadata"]["name"] for s in scalers if s["spec"]["scaleTargetRef"].get("kind") == w["kind"]
                              and s["spec"]["scaleTargetRef"]["name"] == w["metadata"]["name"]]
                r.check(w["kind"] == "StatefulSet" and w["spec"].get("replicas", 1) == 1 and not autoscaled,
                        f"{ident}: keeps the continuous views, so one replica of a StatefulSet, never autoscaled "
                        "(a second keeper fences the first)")
                others = [o["metadata"]["name"] for o in workloads for oc in pod_of(o)[1]["containers"]
                          if o is not w and setting(argv_of(oc) or [], env_of(oc, configmaps), "--views", "PAYSTREAM_VIEWS")
                          and next((a for a in argv_of(oc) or [] if not a.startswith("-")), "") in ("run", "serve", "views")]
                r.check(not others, f"{ident}: the only process keeping the views on Kafka (also given --views: {others})")
                views = literal(setting(argv, env, "--views", "PAYSTREAM_VIEWS"))
                r.check("configMap" in volumes.get(mounts.get(views.rpartition("/")[0]), {}),
                        f"{ident}: reads its view definitions {views!r} from a mounted ConfigMap")
            if command == "serve":
                r.check(bool(literal(setting(argv, env, "--trusted-proxy", "PAYSTREAM_TRUSTED_PROXIES"))),
                        f"{ident}: names the proxies whose X-Forwarded-For it believes (PAYSTREAM_TRUSTED_PROXIES)")
            if service in ("auth", "payments"):
                url = setting(argv, env, "--postgres-url", "PAYSTREAM_POSTGRES_URL") or {}
                r.check(bool((url.get("valueFrom") or {}).get("secretKeyRef")),
                        f"{ident}: --service {service} keeps its state in PostgreSQL, the URL from a Secret")
                key_file = literal(setting(argv, env, "--auth-key-file", "PAYSTREAM_AUTH_KEY_FILE"))
                key_volume = volumes.get(mounts.get(key_file.rpartition("/")[0]), {})
                r.check("secret" in key_volume, f"{ident}: --service {service} reads the signing keys {key_file!r} from a mounted Secret")
            if command == "sql":
                password = setting(argv, env, "--sql-password", "PAYSTREAM_SQL_PASSWORD") or {}
                r.check(bool((password.get("valueFrom") or {}).get("secretKeyRef")),
                        f"{ident}: the analysts' SQL password comes from a Secret (PAYSTREAM_SQL_PASSWORD)")
                author = setting(argv, env, "--sql-author-password", "PAYSTREAM_SQL_AUTHOR_PASSWORD")
                r.check(author is None or bool((author.get("valueFrom") or {}).get("secretKeyRef")),
                        f"{ident}: the views author's SQL password, if any, comes from a Secret (PAYSTREAM_SQL_AUTHOR_PASSWORD)")
                for flag, variable in (("--sql-tls-cert", "PAYSTREAM_SQL_TLS_CERT"), ("--sql-tls-key", "PAYSTREAM_SQL_TLS_KEY")):
                    tls_file = literal(setting(argv, env, flag, variable))
                    tls_volume = volumes.get(mounts.get(tls_file.rpartition("/")[0]), {})
                    r.check("secret" in tls_volume,
                            f"{ident}: the SQL endpoint speaks TLS only, {variable} {tls_file!r} from a mounted Secret")
            if service == "gateway":
                gateways.append((w, c, ident, literal(setting(argv, env, "--route", "PAYSTREAM_ROUTES"))))
    r.check(len(log_owners) <= 1, f"{name}: at most one workload owns the embedded log (got {len(log_owners)})")

    # The gateway's routes: each to a Service whose pods run a service, allowed by the
    # NetworkPolicies at both ends; together they cover the API's paths.
    api_paths = []
    if gateways and r.check(OPENAPI.is_file(), f"{name}: the API's paths are in {OPENAPI.relative_to(DEPLOY.parent)}"):
        api_paths = [path for path in json.loads(OPENAPI.read_text())["paths"] if path not in GATEWAY_PATHS]
    for w, c, ident, routes in gateways:
        namespace = w["metadata"].get("namespace")
        ns_labels = {**(namespaces.get(namespace, {}).get("metadata", {}).get("labels") or {}),
                     "kubernetes.io/metadata.name": namespace}
        gateway_labels = pod_of(w)[0]
        prefixes = []
        r.check(bool(routes), f"{ident}: --service gateway has routes (PAYSTREAM_ROUTES)")
        for route in filter(None, (part.strip() for part in routes.split(","))):
            match = re.fullmatch(r"(/[^=]*)=http://([^/:]+):(\d+)/?", route)
            if not r.check(bool(match), f"{ident}: route {route!r} is PREFIX=http://HOST:PORT"):
                continue
            prefix, host, port = match.group(1).rstrip("/"), match.group(2), int(match.group(3))
            prefixes.append(prefix)
            service = [s for s in services if s["metadata"]["name"] == host.split(".")[0]]
            if not r.check(bool(service), f"{ident}: route {prefix} goes to a Service of the render ({host})"):
                continue
            service_port = [p for p in service[0]["spec"].get("ports", []) if p["port"] == port]
            if not r.check(bool(service_port), f"{ident}: route {prefix}: {port} is a port of Service {host}"):
                continue
            target = service_port[0].get("targetPort", port)
            backing = [b for b in workloads if b is not w and all(pod_of(b)[0].get(k) == v for k, v in (service[0]["spec"].get("selector") or {}).items())]
            r.check(bool(backing), f"{ident}: route {prefix}: Service {host} selects a workload's pods")
            for b in backing:
                b_labels, b_spec = pod_of(b)
                where = f"{ident}: route {prefix} to {b['kind']}/{b['metadata']['name']}"
                b_argv = argv_of(b_spec["containers"][0]) or []
                b_env = env_of(b_spec["containers"][0], configmaps)
                b_service = literal(setting(b_argv, b_env, "--service", "PAYSTREAM_SERVICE")) or "all"
                r.check(b_argv[:1] == ["serve"] and b_service != "gateway",
                        f"{where}: its pods serve a service (got `{' '.join(b_argv)}`)")
                resolved = container_port(b_spec, target)
                if not r.check(resolved is not None, f"{where}: targetPort {target!r} is a container port"):
                    continue
                number, port_name = resolved
                r.check(policy_allows(policies, "Egress", gateway_labels, b_labels, number, port_name, ns_labels),
                        f"{where}: a NetworkPolicy lets the gateway's pods connect to port {number}")
                r.check(policy_allows(policies, "Ingress", b_labels, gateway_labels, number, port_name, ns_labels),
                        f"{where}: a NetworkPolicy lets its pods accept the gateway's on port {number}")
        for path in api_paths:
            r.check(any(path == p or path.startswith(p + "/") for p in prefixes),
                    f"{ident}: API path {path} (gateway/edge/api/openapi.json) is under a route")


def check_render(r, path):
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    name = Path(path).stem
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    namespaces = {d["metadata"]["name"]: d for d in by_kind.get("Namespace", [])}
    for ns_name, ns in namespaces.items():
        labels = ns["metadata"].get("labels") or {}
        r.check(labels.get("pod-security.kubernetes.io/enforce") == "restricted",
                f"{name}: Namespace {ns_name} enforces Pod Security 'restricted'")
    for d in docs:
        ident = f"{name}: {d['kind']}/{d['metadata'].get('name')}"
        if d["kind"] not in CLUSTER_SCOPED:
            r.check(d["metadata"].get("namespace") in namespaces,
                    f"{ident} is in a Namespace of the render (got {d['metadata'].get('namespace')!r})")
        if d["kind"] == "Secret":
            r.check(not d.get("data") and not d.get("stringData"), f"{ident}: no literal Secret in the repository")
        if d["kind"] == "ConfigMap":
            for key, value in (d.get("data") or {}).items():
                r.check(not re.search(r"(password|secret)\s*[=:]\s*\S", str(value), re.I),
                        f"{ident}: {key} holds no password or secret")

    policies = by_kind.get("NetworkPolicy", [])
    r.check(any(p["spec"].get("podSelector") in ({}, None) and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
                and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies),
            f"{name}: a default-deny NetworkPolicy (all pods, ingress and egress)")
    services = by_kind.get("Service", [])
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    r.check(bool(workloads), f"{name}: renders at least one workload")
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind.get("ConfigMap", [])}

    for w in workloads:
        ident = f"{name}: {w['kind']}/{w['metadata']['name']}"
        labels, pod_spec = pod_of(w)
        r.check(bool(w["spec"].get("selector", {}).get("matchLabels")) and selects(w["spec"]["selector"], labels),
                f"{ident}: selector matches the pod template's labels")
        statefulset = w["kind"] == "StatefulSet"
        for c in pod_spec.get("initContainers", []) + pod_spec["containers"]:
            check_container(r, f"{ident} container {c['name']}", pod_spec, c)
        r.check(pod_spec.get("automountServiceAccountToken") is False, f"{ident}: no service account token mounted")
        grace = pod_spec.get("terminationGracePeriodSeconds")
        r.check(isinstance(grace, int) and grace > 30, f"{ident}: terminationGracePeriodSeconds above the default 30")
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", []) if selects(p["spec"].get("selector"), labels)]
        r.check(len(pdbs) == 1, f"{ident}: exactly one PodDisruptionBudget selects its pods (got {len(pdbs)})")
        own = [p for p in policies if p["spec"].get("podSelector") and selects(p["spec"]["podSelector"], labels)]
        r.check(bool(own), f"{ident}: a NetworkPolicy of its own allows its traffic")
        if statefulset:
            governing = [s for s in services if s["metadata"]["name"] == w["spec"].get("serviceName")]
            r.check(bool(governing), f"{ident}: serviceName {w['spec'].get('serviceName')!r} is a Service")
            if governing:
                r.check(governing[0]["spec"].get("clusterIP") == "None", f"{ident}: its governing Service is headless")
        if w["kind"] == "Deployment":
            for c in pod_spec["containers"]:
                r.check(bool((c.get("lifecycle") or {}).get("preStop")),
                        f"{ident} container {c['name']}: a preStop delay (endpoint removal races SIGTERM)")
            scalers = [h for h in by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", [])
                       if h["spec"]["scaleTargetRef"].get("kind") == "Deployment"
                       and h["spec"]["scaleTargetRef"]["name"] == w["metadata"]["name"]]
            r.check(len(scalers) == 1, f"{ident}: exactly one autoscaler (HPA or ScaledObject) targets it")
            for pdb in pdbs:
                minimum = min([h["spec"].get("minReplicas", 1) for h in scalers] or [w["spec"].get("replicas", 1)])
                if "minAvailable" in pdb["spec"]:
                    r.check(isinstance(pdb["spec"]["minAvailable"], int) and pdb["spec"]["minAvailable"] < minimum,
                            f"{ident}: its PDB's minAvailable is below its fewest replicas ({minimum}), so drains proceed")
        for source in pod_spec["containers"][0].get("envFrom") or []:
            ref = (source.get("configMapRef") or {}).get("name")
            if ref:
                r.check(ref in configmaps, f"{ident}: envFrom ConfigMap {ref!r} exists")

    check_processes(r, name, workloads, services, policies, by_kind, configmaps, namespaces)

    for s in services:
        ident = f"{name}: Service/{s['metadata']['name']}"
        backing = [w for w in workloads if all(pod_of(w)[0].get(k) == v for k, v in (s["spec"].get("selector") or {}).items())]
        if r.check(bool(s["spec"].get("selector")) and bool(backing), f"{ident}: selector matches a workload's pods"):
            container_ports = {p.get("name") for w in backing for c in pod_of(w)[1]["containers"] for p in c.get("ports", [])}
            container_ports |= {p["containerPort"] for w in backing for c in pod_of(w)[1]["containers"] for p in c.get("ports", [])}
            for port in s["spec"].get("ports", []):
                target = port.get("targetPort", port["port"])
                r.check(target in container_ports, f"{ident}: targetPort {target!r} is a container port")

    for h in by_kind.get("HorizontalPodAutoscaler", []):
        ident = f"{name}: HorizontalPodAutoscaler/{h['metadata']['name']}"
        ref = h["spec"]["scaleTargetRef"]
        r.check(any(w["kind"] == ref.get("kind") and w["metadata"]["name"] == ref.get("name") for w in workloads),
                f"{ident}: scaleTargetRef {ref.get('kind')}/{ref.get('name')} exists")
        r.check(1 <= h["spec"].get("minReplicas", 1) <= h["spec"]["maxReplicas"], f"{ident}: 1 <= minReplicas <= maxReplicas")

    for ingress in by_kind.get("Ingress", []):
        ident = f"{name}: Ingress/{ingress['metadata']['name']}"
        for rule in ingress["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                service = [s for s in services if s["metadata"]["name"] == backend["name"]]
                if r.check(bool(service), f"{ident}: backend Service {backend['name']!r} exists"):
                    port = backend["port"].get("name", backend["port"].get("number"))
                    ports = {p.get("name") for p in service[0]["spec"]["ports"]} | {p["port"] for p in service[0]["spec"]["ports"]}
                    r.check(port in ports, f"{ident}: backend port {port!r} is a port of Service {backend['name']}")
                    # The public entry is the gateway's stack: `serve` (all, or gateway).
                    backing = [w for w in workloads if all(pod_of(w)[0].get(k) == v for k, v in (service[0]["spec"].get("selector") or {}).items())]
                    kinds = []
                    for w in backing:
                        c = pod_of(w)[1]["containers"][0]
                        argv = argv_of(c) or []
                        kinds.append(argv[:1] == ["serve"] and (literal(setting(argv, env_of(c, configmaps), "--service", "PAYSTREAM_SERVICE")) or "all") in ("all", "gateway"))
                    r.check(bool(kinds) and all(kinds), f"{ident}: backend Service {backend['name']!r} selects gateway pods only")
        r.check(all(t.get("secretName") for t in ingress["spec"].get("tls", [])) and bool(ingress["spec"].get("tls")),
                f"{ident}: serves TLS from a Secret reference")

    # The job of a ServiceMonitor's targets is its Service's name (or the jobLabel's value).
    target_down = [rule["expr"] for group in yaml.safe_load((DEPLOY / "prometheus" / "rules.yaml").read_text())["groups"]
                   for rule in group["rules"] if rule.get("alert") == "PaystreamTargetDown"]
    jobs = re.search(r'\bjob=~?"([^"]*)"', target_down[0]) if target_down else None
    for m in by_kind.get("ServiceMonitor", []):
        ident = f"{name}: ServiceMonitor/{m['metadata']['name']}"
        matched = [s for s in services if selects(m["spec"].get("selector"), s["metadata"].get("labels") or {})]
        if r.check(bool(matched), f"{ident}: selects a Service"):
            names = {p.get("name") for s in matched for p in s["spec"].get("ports", [])}
            for endpoint in m["spec"].get("endpoints", []):
                r.check(endpoint.get("port") in names, f"{ident}: endpoint port {endpoint.get('port')!r} is a Service port")
            for s in matched:
                job = (s["metadata"].get("labels") or {}).get(m["spec"]["jobLabel"]) if m["spec"].get("jobLabel") else s["metadata"]["name"]
                r.check(bool(jobs) and re.fullmatch(jobs.group(1), job or "") is not None,
                        f"{ident}: PaystreamTargetDown covers its job {job!r}")

    for so in by_kind.get("ScaledObject", []):
        ident = f"{name}: ScaledObject/{so['metadata']['name']}"
        ref = so["spec"]["scaleTargetRef"]
        targets = [w for w in workloads if w["kind"] == ref.get("kind", "Deployment") and w["metadata"]["name"] == ref["name"]]
        if r.check(bool(targets), f"{ident}: scaleTargetRef {ref.get('kind')}/{ref['name']} exists"):
            env = {}
            for source in pod_of(targets[0])[1]["containers"][0].get("envFrom") or []:
                env.update(configmaps.get((source.get("configMapRef") or {}).get("name"), {}))
            partitions = str(env.get("PAYSTREAM_PARTITIONS", ""))
            maximum = so["spec"].get("maxReplicaCount", 100)
            r.check(partitions.isdigit() and isinstance(maximum, int) and 0 < maximum <= int(partitions),
                    f"{ident}: maxReplicaCount {maximum!r} <= partitions {partitions!r}")
            for trigger in so["spec"].get("triggers", []):
                if trigger["type"] == "kafka":
                    r.check(trigger["metadata"].get("allowIdleConsumers", "false") == "false",
                            f"{ident}: KEDA may not add consumers beyond the partitions")
        auth = [t.get("authenticationRef", {}).get("name") for t in so["spec"].get("triggers", [])]
        known = {t["metadata"]["name"] for t in by_kind.get("TriggerAuthentication", [])}
        for a in filter(None, auth):
            r.check(a in known, f"{ident}: TriggerAuthentication {a!r} exists")

    for rule in by_kind.get("PrometheusRule", []):
        groups = yaml.safe_load((DEPLOY / "prometheus" / "rules.yaml").read_text())["groups"]
        r.check(rule["spec"]["groups"] == groups,
                f"{name}: PrometheusRule/{rule['metadata']['name']} holds the groups of deploy/prometheus/rules.yaml")


def check_rules(r):
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yaml").read_text())
    tests = yaml.safe_load((DEPLOY / "prometheus" / "rules.test.yaml").read_text())
    runbook = (DEPLOY / "prometheus" / "runbook.md").read_text()
    headings = set(re.findall(r"^## (\S+)$", runbook, re.M))
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    for group in rules["groups"]:
        r.check("interval" not in group, f"rules: group {group['name']} uses the global evaluation interval")
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            alert = rule["alert"]
            r.check(rule.get("labels", {}).get("severity") in ("page", "ticket"), f"rules: {alert} has severity page or ticket")
            annotations = rule.get("annotations", {})
            r.check("summary" in annotations and "description" in annotations, f"rules: {alert} has a summary and a description")
            r.check(annotations.get("runbook_url") == f"deploy/prometheus/runbook.md#{alert.lower()}",
                    f"rules: {alert} links its runbook section")
            r.check(alert in headings, f"runbook.md: has a section '## {alert}'")
            mine = [c for c in cases if c["alertname"] == alert]
            r.check(any(c.get("exp_alerts") for c in mine), f"rules.test.yaml: a test where {alert} fires")
            r.check(any(not c.get("exp_alerts") for c in mine), f"rules.test.yaml: a test where {alert} does not fire")


def check_dashboards(r):
    uids = set()
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        ident = f"grafana: {path.name}"
        board = json.loads(path.read_text())
        r.check(board.get("uid") and board["uid"] not in uids, f"{ident}: a unique uid")
        uids.add(board.get("uid"))
        variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
        r.check(variables.get("datasource", {}).get("type") == "datasource", f"{ident}: a datasource variable")
        for name in ("namespace", "pod"):
            r.check(variables.get(name, {}).get("type") == "query", f"{ident}: a {name} variable")
        r.check(variables.get("pod", {}).get("multi") and variables["pod"].get("includeAll"), f"{ident}: pod is multi-value with All")
        ids = [p["id"] for p in board["panels"]]
        r.check(len(ids) == len(set(ids)), f"{ident}: unique panel ids")
        for p in board["panels"]:
            where = f"{ident}: panel {p['title']!r}"
            r.check(p.get("datasource", {}).get("uid") == "${datasource}", f"{where} uses $datasource")
            grid = p.get("gridPos", {})
            r.check(grid.get("x", 99) + grid.get("w", 99) <= 24, f"{where} fits the 24-column grid")
            refs = [t.get("refId") for t in p.get("targets", [])]
            r.check(refs and len(refs) == len(set(refs)), f"{where} has targets with unique refIds")
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                r.check(bool(expr.strip()), f"{where} target {t.get('refId')} has an expression")
                for window in re.findall(r"\[([^\]:]+)\]", expr):
                    r.check(window in ("$__rate_interval", "$__range"),
                            f"{where}: range [{window}] should be $__rate_interval (or $__range)")
                for selector in re.findall(r"\b([a-zA-Z_][\w:]*)\{([^}]*)\}", expr):
                    r.check('namespace="$namespace"' in selector[1] or 'namespace=~"$namespace|"' in selector[1],
                            f"{where}: {selector[0]} is scoped to $namespace")


def main(argv):
    r = Report()
    # A file too broken for a check (a missing key, a wrong type) fails that part, with
    # its reason, and the other parts still run.
    parts = [(f"render {path}", lambda path=path: check_render(r, path)) for path in argv[1:]]
    for name, part in parts + [("rules", lambda: check_rules(r)), ("dashboards", lambda: check_dashboards(r))]:
        try:
            part()
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            r.check(False, f"{name}: could not be checked: {type(error).__name__}: {error}")
    print(f"policy: {r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
