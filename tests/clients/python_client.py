"""Issue 11: the official Python client (kubernetes on PyPI) as a real client of k8slite.

Run by tests/tests/e2e_python_client.rs with KUBECONFIG set, against a cluster where pod
`web` (the nginx stand-in) runs in `default`. Prints one line per check; exits non-zero with
the reason on the first failure.
"""
import os
import sys
import tempfile
import time

from kubernetes import client, config, dynamic, utils
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward, stream

NS = "default"


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def interactive_exec(core):
    # stdin kept open; `str` data goes out as WebSocket text messages.
    resp = stream(core.connect_get_namespaced_pod_exec, "web", NS, command=["/bin/sh"],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    out = ""
    resp.write_stdin("echo test string 1\n")
    deadline = time.time() + 30
    while "test string 1" not in out and time.time() < deadline and resp.is_open():
        resp.update(timeout=1)
        if resp.peek_stdout():
            out += resp.read_stdout()
    check("test string 1" in out, f"interactive exec echoes a line written as text ({out!r})")
    resp.write_stdin(b"echo test string 2\n")
    deadline = time.time() + 30
    while "test string 2" not in out and time.time() < deadline and resp.is_open():
        resp.update(timeout=1)
        if resp.peek_stdout():
            out += resp.read_stdout()
    check("test string 2" in out, "interactive exec echoes a line written as bytes")
    resp.write_stdin("exit\n")
    resp.close()


def port_forward(core):
    pf = portforward(core.connect_get_namespaced_pod_portforward, "web", NS, ports="80")
    sock = pf.socket(80)
    sock.setblocking(True)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
    data = b""
    deadline = time.time() + 30
    while time.time() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    check(b"<h1>Welcome to nginx!</h1>" in data, "port-forward reaches the pod's port 80")
    err = pf.error(80)
    check(err is None, f"port-forward reports no error ({err!r})")
    pf.close()


SERVICE_YAML = """apiVersion: v1
kind: Service
metadata:
  name: mock-2
spec:
  selector:
    app: mock
  ports:
  - port: 80
    targetPort: 8080
"""

EXPECTED_ALREADY_EXISTS = (
    '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
    '"message":"services \\"mock-2\\" already exists","reason":"AlreadyExists",'
    '"details":{"name":"mock-2","kind":"services"},"code":409}\n'
)


def create_from_yaml_twice(api_client, core):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(SERVICE_YAML)
        path = f.name
    utils.create_from_yaml(api_client, path, namespace=NS)
    try:
        utils.create_from_yaml(api_client, path, namespace=NS)
        check(False, "the second create_from_yaml fails")
    except utils.FailToCreateError as e:
        exc = e.api_exceptions[0]
        check(exc.status == 409, f"second create: 409 ({exc.status})")
        check(exc.body == EXPECTED_ALREADY_EXISTS,
              f"second create: upstream's exact body ({exc.body!r})")
    svc = core.read_namespaced_service("mock-2", NS)
    check(svc.status is not None and svc.status.load_balancer is not None,
          f"a created Service has status.loadBalancer ({svc.status!r})")


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "ssa", "labels": {"app": "ssa"}},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "ssa"}},
        "template": {
            "metadata": {"labels": {"app": "ssa"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                     "ports": [{"containerPort": 80}]}]},
        },
    },
}


def server_side_apply(api_client):
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(NS, DEPLOYMENT)
    dyn = dynamic.DynamicClient(api_client)
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    for attempt in (1, 2):
        try:
            res.server_side_apply(body=DEPLOYMENT, namespace=NS, field_manager="pytest")
        except ApiException as e:
            check(False, f"apply #{attempt} of the created values conflicts: {e.status} {e.body}")
        check(True, f"server-side apply #{attempt} of unchanged values: no conflict")
    live = apps.read_namespaced_deployment("ssa", NS)
    managers = sorted({m.manager for m in live.metadata.managed_fields or []})
    check("pytest" in managers, f"the applier shares ownership ({managers})")


def main():
    config.load_kube_config(os.environ["KUBECONFIG"])
    api_client = client.ApiClient()
    core = client.CoreV1Api(api_client)
    interactive_exec(core)
    port_forward(core)
    create_from_yaml_twice(api_client, core)
    server_side_apply(api_client)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main()
