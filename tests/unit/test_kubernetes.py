"""packaging/kubernetes/ (issue 21), checked offline: no cluster is needed.

Every resource is validated against the Kubernetes JSON schemas that
kubernetes-validate (PyPI) bundles, strictly (a field the API does not know
fails), for the oldest Kubernetes the DaemonSet needs (1.30, for
securityContext.appArmorProfile) and the newest the package knows. The
ConfigMap is built from memguard.yaml as kustomize's configMapGenerator
builds it, and validated the same way.

The ServiceMonitor is a custom resource of the Prometheus Operator, for
which kubernetes-validate has no schema, and none is vendored here in its
place: the test checks its fields against those prometheus-operator
documents for monitoring.coreos.com/v1 (its CRD,
example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml):
apiVersion, kind, spec.selector, and spec.endpoints[] with port, path,
scheme, interval, scrapeTimeout and relabelings[] (sourceLabels,
targetLabel, action), and that it selects the Service and its port.

What the schemas cannot know is checked against memguard itself: the
config parses with memguard's own loader and its rule files with the rule
loader; the DaemonSet's metrics port is the port the config listens on, its
liveness probe asks a path memguard's HTTP server answers, it mounts every
path the config names, it is not privileged, and each capability it adds
says which feature needs it. `kubectl kustomize`, where kubectl is
installed, renders the whole and the result validates too.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from memguard.config import load_config
from memguard.export.http import MetricsServer, parse_listen
from memguard.rules.load import load_rules

REPO = Path(__file__).resolve().parent.parent.parent
KUBE = REPO / "packaging" / "kubernetes"
# Where the image keeps the shipped rules (make install PREFIX=/usr), which
# are rules/ of this repository.
IMAGE_RULES = "/usr/share/memguard/rules/"
OLDEST = "1.30"                 # securityContext.appArmorProfile is new in 1.30
# Fields of monitoring.coreos.com/v1 ServiceMonitor that prometheus-operator
# documents (its CRD's openAPIV3Schema), for the parts these manifests use.
SERVICEMONITOR_SPEC = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels",
                       "podTargetLabels", "sampleLimit", "attachMetadata"}
ENDPOINT_FIELDS = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                   "relabelings", "metricRelabelings", "params", "tlsConfig", "authorization", "basicAuth"}
RELABEL_FIELDS = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}
RELABEL_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                   "lowercase", "uppercase", "keepequal", "dropequal"}   # either case
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def _load(name: str) -> dict:
    with open(KUBE / name, encoding="utf-8") as f:
        return yaml.safe_load(f)


KUSTOMIZATION = _load("kustomization.yaml")
RESOURCES = {name: _load(name) for name in KUSTOMIZATION["resources"]}
BY_KIND = {r["kind"]: r for r in RESOURCES.values()}
DAEMONSET, SERVICE, SERVICEMONITOR = BY_KIND["DaemonSet"], BY_KIND["Service"], BY_KIND["ServiceMonitor"]
POD = DAEMONSET["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]
CONFIG_FILE = KUBE / "memguard.yaml"


def configmaps() -> list[dict]:
    """The ConfigMaps kustomize's configMapGenerator makes (without the hash
    suffix it adds to the name)."""
    out = []
    for gen in KUSTOMIZATION.get("configMapGenerator", []):
        data = {os.path.basename(f): (KUBE / f).read_text() for f in gen["files"]}
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": gen["name"], "namespace": KUSTOMIZATION["namespace"]}, "data": data})
    return out


def schema_checked() -> list[dict]:
    """Every resource the Kubernetes schemas cover: all but the ServiceMonitor."""
    return [r for r in RESOURCES.values() if r["kind"] != "ServiceMonitor"] + configmaps()


@pytest.fixture(scope="module")
def kv():
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed: pip install kubernetes-validate "
               "(make test installs it with the test extra)")


def _versions():
    try:
        import kubernetes_validate
    except ImportError:
        return [OLDEST]
    newest = ".".join(kubernetes_validate.latest_version().split(".")[:2])
    return [OLDEST, newest]


def test_the_kustomization_names_every_file_here():
    generated = {f for gen in KUSTOMIZATION.get("configMapGenerator", []) for f in gen["files"]}
    on_disk = {p.name for p in KUBE.iterdir() if p.is_file()} - {"kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) | generated == on_disk
    assert {r["kind"] for r in RESOURCES.values()} == {"Namespace", "DaemonSet", "Service", "ServiceMonitor"}
    namespaced = [r for r in RESOURCES.values() if r["kind"] != "Namespace"]
    assert {r["metadata"]["namespace"] for r in namespaced} == {KUSTOMIZATION["namespace"]}
    assert BY_KIND["Namespace"]["metadata"]["name"] == KUSTOMIZATION["namespace"]


@pytest.mark.parametrize("version", _versions())
@pytest.mark.parametrize("resource", schema_checked(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_each_resource_validates_against_the_kubernetes_schema(kv, resource, version):
    assert kv.validate(resource, version, strict=True) == version


def test_the_validator_refuses_what_the_api_would(kv):
    """A field the API does not know, and a wrong type, fail: the schemas
    are really applied, strictly."""
    unknown = copy.deepcopy(DAEMONSET)
    unknown["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privilegd"] = False
    wrong = copy.deepcopy(DAEMONSET)
    wrong["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9717"
    for bad in (unknown, wrong):
        with pytest.raises(kv.ValidationError):
            kv.validate(bad, OLDEST, strict=True)


def test_the_servicemonitor_has_the_fields_prometheus_operator_documents():
    sm = SERVICEMONITOR
    assert (sm["apiVersion"], sm["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert set(sm["spec"]) <= SERVICEMONITOR_SPEC
    # It selects the Service, in the Service's namespace, by the Service's own labels...
    assert sm["metadata"]["namespace"] == SERVICE["metadata"]["namespace"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= SERVICE["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert set(endpoint) <= ENDPOINT_FIELDS
    # ...and scrapes its port by name, at the path memguard serves metrics on.
    assert endpoint["port"] in {p["name"] for p in SERVICE["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and endpoint["scheme"] in ("http", "https")
    for key in ("interval", "scrapeTimeout"):
        assert DURATION.match(endpoint[key]), (key, endpoint[key])
    relabel = {}
    for r in endpoint["relabelings"]:
        assert set(r) <= RELABEL_FIELDS and r.get("action", "replace").lower() in RELABEL_ACTIONS
        relabel[r["targetLabel"]] = r
    assert relabel["node"]["sourceLabels"] == ["__meta_kubernetes_pod_node_name"]
    assert relabel["node"]["action"] == "replace"


def test_the_config_is_valid_for_memguards_own_loaders():
    config = load_config(str(CONFIG_FILE))
    shipped = [p for p in config.rules.files if p.startswith(IMAGE_RULES)]
    assert shipped, "the config names none of the image's shipped rules"
    ours = [str(REPO / "rules" / p[len(IMAGE_RULES):]) for p in shipped]
    ours += [p for p in config.rule_files() if not p.startswith(IMAGE_RULES)]   # rules-*.yaml beside it
    assert load_rules(ours), ours


def test_the_metrics_port_is_the_one_memguard_listens_on():
    host, port = parse_listen(load_config(str(CONFIG_FILE)).metrics.listen)
    # On the node's network, Prometheus reaches the node's address: not loopback.
    assert POD["hostNetwork"] is True and host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    assert ports["metrics"] == port
    (service_port,) = SERVICE["spec"]["ports"]
    assert service_port["port"] == port and service_port["targetPort"] == "metrics"
    assert SERVICE["spec"]["clusterIP"] == "None"
    assert SERVICE["spec"]["selector"].items() <= DAEMONSET["spec"]["template"]["metadata"]["labels"].items()
    assert CONTAINER["livenessProbe"]["httpGet"]["port"] in ("metrics", port)


def test_the_liveness_probe_asks_a_path_memguard_answers():
    path = CONTAINER["livenessProbe"]["httpGet"]["path"]

    async def ask() -> bytes:
        server = MetricsServer("127.0.0.1:0", lambda: b"memguard_build_info 1\n")
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: kubelet\r\n\r\n".encode())
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return answer
        finally:
            await server.stop()

    assert asyncio.run(ask()).startswith(b"HTTP/1.1 200 ")


def test_the_daemonset_is_a_node_agent():
    assert POD["hostPID"] is True                       # the node's /proc and NVML's host pids
    assert POD["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in POD["tolerations"]  # every node, whatever its taints
    env = {e["name"]: e for e in CONTAINER["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    limits, requests = CONTAINER["resources"]["limits"], CONTAINER["resources"]["requests"]
    assert set(limits) == set(requests) == {"cpu", "memory"}


def test_it_runs_with_named_capabilities_not_privileged():
    sc = CONTAINER["securityContext"]
    assert sc["privileged"] is False and sc["readOnlyRootFilesystem"] is True
    caps = sc["capabilities"]
    assert caps["drop"] == ["ALL"]
    added = caps["add"]
    assert added and "ALL" not in added and all(c == c.upper() and not c.startswith("CAP_") for c in added)
    # Each capability says, on its line, which feature needs it.
    text = (KUBE / "daemonset.yaml").read_text()
    for cap in added:
        line = re.search(rf"^\s*- {cap}\b(.*)$", text, re.M)
        assert line and "#" in line.group(1) and len(line.group(1).split("#", 1)[1].strip()) > 10, cap
    # CAP_SYS_ADMIN (to join the node's cgroup namespace) and CAP_SETPCAP
    # (to drop it) never reach memguardd: setpriv takes them out of the
    # bounding set before it is executed.
    command = CONTAINER["command"]
    assert command[:2] == ["nsenter", "--cgroup=/proc/1/ns/cgroup"]
    setpriv = command.index("setpriv")
    dropped = {c for arg in command[setpriv:] if arg.startswith("--bounding-set=")
               for c in arg.split("=", 1)[1].split(",")}
    assert {"-sys_admin", "-setpcap"} <= dropped
    assert command.index("memguardd") > setpriv


def test_it_mounts_every_path_the_config_names():
    config = load_config(str(CONFIG_FILE))
    mounts = {m["mountPath"]: m for m in CONTAINER["volumeMounts"]}
    volumes = {v["name"]: v for v in POD["volumes"]}
    assert {m["name"] for m in mounts.values()} == set(volumes)
    command = CONTAINER["command"]
    config_path = command[command.index("--config") + 1]
    config_mount = mounts[os.path.dirname(config_path)]
    generated = volumes[config_mount["name"]]["configMap"]["name"]
    assert generated in {g["name"] for g in KUSTOMIZATION["configMapGenerator"]}
    assert os.path.basename(config_path) in {os.path.basename(f) for g in KUSTOMIZATION["configMapGenerator"]
                                             for f in g["files"]}
    # The socket's directory and the state directory are the node's, at the
    # same paths: memguardctl on the node, and the next pod, find them.
    for path in (os.path.dirname(config.socket), config.state_dir):
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path, path
        assert not mounts[path].get("readOnly")
    # The node's cgroups and tracefs, where memguard reads and writes them.
    for path in ("/sys/fs/cgroup", "/sys/kernel/tracing"):
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]   # the root file system is read-only


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl is not installed: the kustomization is checked field by field only")
def test_kubectl_kustomize_renders_it(tmp_path):
    r = subprocess.run(["kubectl", "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rendered = [d for d in yaml.safe_load_all(r.stdout) if d]
    kinds = {d["kind"]: d for d in rendered}
    assert set(kinds) == {"Namespace", "ConfigMap", "DaemonSet", "Service", "ServiceMonitor"}
    cm_name = kinds["ConfigMap"]["metadata"]["name"]           # memguard-config-<hash>
    assert cm_name.startswith("memguard-config-")
    volumes = kinds["DaemonSet"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": cm_name} in [v.get("configMap") for v in volumes]
    image = kinds["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["image"]
    (entry,) = KUSTOMIZATION["images"]
    assert image == f"{entry['newName']}:{entry['newTag']}"
    try:
        import kubernetes_validate
    except ImportError:
        return
    for doc in rendered:
        if doc["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(doc, OLDEST, strict=True)
