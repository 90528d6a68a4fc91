"""cluster.yaml passes Ray's own autoscaler schema and validator, broken variants do not, and it keeps
the promises the README makes about it (node types, pinned versions, no head port open to the internet)."""

from __future__ import annotations

import copy
import re
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]


def _config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _validate(config: dict) -> dict:
    """What `ray up` does before it launches anything: fill in the provider's defaults, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_schema_and_validator():
    prepared = _validate(_config())
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and types["head"]["max_workers"] == 0
    assert types["head"]["resources"] == {"CPU": 0}, "tasks and actors must not land on the head"
    assert types["collector"]["resources"]["collector"] >= 1 and "GPU" not in types["collector"]["resources"]
    assert types["collector"]["min_workers"] == 0, "collector nodes start when a collection asks for them"
    assert types["gpu"]["resources"]["GPU"] >= 1 and types["gpu"]["min_workers"] == 0
    assert types["gpu"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert prepared["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("breakage, message", [
    (lambda c: c.__setitem__("idle_timout_minutes", c.pop("idle_timeout_minutes")),
     "'idle_timout_minutes' was unexpected"),
    (lambda c: c["available_node_types"]["gpu"].__setitem__("min_worker", 1), "'min_worker' was unexpected"),
    (lambda c: c["available_node_types"]["gpu"]["resources"].__setitem__("GPU", 0.5), "0.5 is not of type 'integer'"),
    (lambda c: c.__setitem__("head_node_type", "ray.head.default"), "head_node_type` must be one of"),
    (lambda c: c["available_node_types"]["collector"].__setitem__("min_workers", 100),
     "smaller than the sum of `min_workers`"),
], ids=["typo-top-level-key", "typo-node-type-key", "fractional-gpu", "wrong-head-node-type", "min-above-max"])
def test_broken_variants_are_rejected(breakage, message):
    config = _config()
    breakage(config)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(message)):
        _validate(config)


class _SecurityGroup:
    """Stands in for the boto3 SecurityGroup Ray's AWS provider configures: records the rules Ray authorizes."""

    def __init__(self, group_id: str, ip_permissions: list | None = None) -> None:
        self.id = group_id
        self.ip_permissions = list(ip_permissions or [])

    def authorize_ingress(self, IpPermissions):  # noqa: N803 (boto3's name)
        self.ip_permissions.extend(IpPermissions)


def _world_open_ports(rules: list) -> set:
    return {(r["FromPort"], r["ToPort"]) for r in rules
            if any(ip.get("CidrIp") == "0.0.0.0/0" for ip in r.get("IpRanges", []))
            or any(ip.get("CidrIpv6") == "::/0" for ip in r.get("Ipv6Ranges", []))}


def test_the_rules_ray_applies_open_only_ssh_and_the_file_says_so():
    """What `ray up` authorizes on the group it makes (Ray's own code): its default rules plus the file's
    IpPermissions. Only SSH is open to the world, because Ray opens it, and cluster.yaml says so and how to limit it."""
    from ray.autoscaler._private.aws.config import _upsert_security_group_rules

    config = _validate(_config())
    group = _SecurityGroup("sg-0000000000cluster")
    _upsert_security_group_rules(config, {name: group for name in config["available_node_types"]})
    assert group.ip_permissions, "Ray authorizes its default rules on a new group"
    assert _world_open_ports(group.ip_permissions) == {(22, 22)}, group.ip_permissions
    own = [r for r in group.ip_permissions if r.get("UserIdGroupPairs")]
    assert own and own[0]["IpProtocol"] == "-1", "nodes reach each other on every port"
    text = (REPO / "cluster.yaml").read_text()
    assert "SSH from 0.0.0.0/0" in text and "scripts/limit_ssh.sh" in text
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" not in start and "--dashboard-host=127.0.0.1" in start
    assert "ray-client-server-port" not in start


def test_limit_ssh_makes_a_group_ray_leaves_alone(tmp_path):
    """scripts/limit_ssh.sh against a stand-in `aws`: the group it makes admits SSH from the given range only and the
    cluster's own nodes; every node type then names it, and Ray's provider adds no rule of its own to it."""
    import os
    import shlex
    import subprocess

    from ray.autoscaler._private.aws.config import _configure_security_group

    fake = tmp_path / "bin" / "aws"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\037" "$a"; done >> "$(dirname "$0")/calls"; echo >> '
                    '"$(dirname "$0")/calls"\ncase "$*" in *describe-vpcs*) echo vpc-0abc;; '
                    '*create-security-group*) echo sg-0123456789abcdef0;; esac\n')
    fake.chmod(0o755)
    config = tmp_path / "cluster.yaml"
    config.write_text((REPO / "cluster.yaml").read_text())
    env = dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    script = str(REPO / "scripts" / "limit_ssh.sh")
    wide = subprocess.run(["bash", script, "0.0.0.0/0", str(config)], env=env, capture_output=True, text=True,
                          timeout=30)
    assert wide.returncode == 2 and "wider than a /8" in wide.stderr and not (fake.parent / "calls").exists()
    result = subprocess.run(["bash", script, "203.0.113.7/32", str(config)], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    calls = [line.split("\x1f")[:-1] for line in (fake.parent / "calls").read_text().splitlines()]
    ingress = [c for c in calls if "authorize-security-group-ingress" in c]
    assert len(ingress) == 2 and all("--region" in c and "us-west-2" in c for c in calls)
    flat = " ".join(shlex.join(c) for c in ingress)
    assert "0.0.0.0/0" not in flat and "--port 22 --cidr 203.0.113.7/32" in flat
    assert "IpProtocol=-1,UserIdGroupPairs=[{GroupId=sg-0123456789abcdef0}]" in flat
    limited = _validate(yaml.safe_load(config.read_text()))
    for name, node_type in limited["available_node_types"].items():
        assert node_type["node_config"]["SecurityGroupIds"] == ["sg-0123456789abcdef0"], name
    # with every node type naming its group, Ray's provider neither makes a group nor authorizes a rule (it would
    # need AWS for either, and there is none here)
    configured = _configure_security_group(copy.deepcopy(limited))
    assert all(t["node_config"]["SecurityGroupIds"] == ["sg-0123456789abcdef0"]
               for t in configured["available_node_types"].values())


def test_versions_are_pinned_to_the_project_and_storage_is_a_parameter():
    config = _config()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ray_pin = next(re.search(r"==([\d.]+)", d).group(1) for d in project["dependencies"] if d.startswith("ray["))
    torch_pin = next(re.search(r"==([\d.]+)", d).group(1) for d in project["dependencies"] if d.startswith("torch"))
    setup = " ".join(config["setup_commands"])
    assert f'"genie-redux=={project["version"]}"' in setup, "cluster.yaml installs another genie-redux version"
    # a wheel rebuilt at the same version must replace the installed one (pip would call it already satisfied)
    assert re.search(rf"--force-reinstall \S*genie-dist/genie_redux-{re.escape(project['version'])}-\*\.whl", setup)
    assert f"torch=={torch_pin} --index-url https://download.pytorch.org/whl/cu" in setup, "not the CUDA build of torch"
    images = [config["docker"]["head_image"], config["docker"]["worker_image"],
              config["available_node_types"]["gpu"]["docker"]["worker_image"]]
    assert all(f"rayproject/ray:{ray_pin}-py311" in image for image in images)
    assert config["available_node_types"]["gpu"]["docker"]["worker_image"].endswith("-gpu")
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert re.search(r"GENIE_STORAGE=s3://\S+", " ".join(config[commands])), f"{commands} must export GENIE_STORAGE"


def test_nodes_have_pinned_images_and_workers_their_own_bucket_profile():
    """Ray 2.60 creates ray-autoscaler-v1 for the head only (a `ray-head-v1` profile does not exist, and worker
    launches failed on it); without ImageId it picks an Ubuntu 18.04 / CUDA 11.2 AMI too old for torch's cu128."""
    text = (REPO / "cluster.yaml").read_text()
    types = _validate(_config())["available_node_types"]
    for name, node_type in types.items():
        image = node_type["node_config"].get("ImageId", "")
        family = "gpu" if "GPU" in node_type["resources"] else "cpu"
        assert re.fullmatch(rf"ami-(CHANGE-ME-{family}|[0-9a-f]{{8,17}})", image), f"{name}: ImageId {image!r}"
        assert re.search(rf"ImageId: {image} +# {family}-ami", text), f"{name}: its ImageId line lacks `# {family}-ami`"
    assert "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)" in text and ">= 570" in text
    assert "IamInstanceProfile" not in types["head"]["node_config"], "the head keeps Ray's own profile"
    for name in ("collector", "gpu"):
        assert types[name]["node_config"]["IamInstanceProfile"] == {"Name": "genie-redux-worker"}
    assert "ray-head-v1" not in text
    assert any("get-docker.sh" in c for c in _config()["initialization_commands"]), "Ubuntu images have no Docker"


def test_pin_amis_writes_the_newest_image_of_each_family(tmp_path):
    """scripts/pin_amis.sh against a stand-in `aws` that answers as `describe-images --output text` does."""
    import os
    import subprocess

    fake = tmp_path / "bin" / "aws"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\n'
                    'case "$*" in *Nvidia*) echo "ami-0123456789abcdef0\tDeep Learning Base GPU 20990101";;\n'
                    '*) echo "ami-0fedcba9876543210\tubuntu-jammy-22.04-amd64-server-20990101";; esac\n')
    fake.chmod(0o755)
    config = tmp_path / "cluster.yaml"
    config.write_text((REPO / "cluster.yaml").read_text())
    env = dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", str(REPO / "scripts" / "pin_amis.sh"), str(config)], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "--region us-west-2" in (fake.parent / "calls").read_text()
    types = _validate(yaml.safe_load(config.read_text()))["available_node_types"]
    assert types["gpu"]["node_config"]["ImageId"] == "ami-0123456789abcdef0"
    assert (types["head"]["node_config"]["ImageId"] == types["collector"]["node_config"]["ImageId"]
            == "ami-0fedcba9876543210")


def test_readmes_worker_role_reaches_the_bucket_and_nothing_else(tmp_path):
    """The README's IAM commands run against a stand-in `aws`: the worker profile cluster.yaml names may only use the
    bucket's objects, and the head may pass that one role and no other."""
    import json
    import os
    import subprocess

    lines = (REPO / "README.md").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("BUCKET="))
    end = next(i for i in range(first, len(lines)) if lines[i].startswith("```"))
    commands = "\n".join(line for line in lines[first:end] if not line.startswith(("scripts/", "ray up")))
    fake = tmp_path / "bin" / "aws"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\037" "$a"; done >> "$(dirname "$0")/calls"\n'
                    'printf "\\036" >> "$(dirname "$0")/calls"\n'  # arguments may span lines (JSON policies)
                    'case "$*" in *get-caller-identity*) echo 123456789012;; esac\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    calls = [call.split("\x1f")[:-1] for call in (fake.parent / "calls").read_text().split("\x1e")[:-1]]

    def policy(role):
        call = next(c for c in calls if c[:2] == ["iam", "put-role-policy"] and c[c.index("--role-name") + 1] == role)
        return json.loads(call[call.index("--policy-document") + 1])["Statement"]

    bucket = next(line.split("=", 1)[1] for line in lines[first:end] if line.startswith("BUCKET="))
    statements = policy("genie-redux-worker")
    assert len(statements) == 2, statements  # the bucket itself (list), its objects (read/write)
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert statement["Effect"] == "Allow" and all(a.startswith("s3:") and "*" not in a for a in actions), statement
        assert set(resources) <= {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}, statement
    passes = policy("ray-autoscaler-v1")
    assert passes == [{"Effect": "Allow", "Action": "iam:PassRole",
                       "Resource": "arn:aws:iam::123456789012:role/genie-redux-worker"}]
    profile = next(c for c in calls if c[:2] == ["iam", "create-instance-profile"])
    names = {t["node_config"].get("IamInstanceProfile", {}).get("Name")
             for t in _config()["available_node_types"].values()}
    assert names == {None, profile[profile.index("--instance-profile-name") + 1]}, "workers use the profile made here"


def test_gpu_nodes_keep_their_caches_on_the_instance_store(tmp_path):
    """The decoded-shard cache (12 KB a frame, ~100-200 GB at paper scale) goes to the GPU node's NVMe instance store:
    the host mounts it at /mnt/nvme with a marker, the GPU container sees it, and Ray starts with GENIE_CACHE_DIR there
    only when the marker is present (a collector node, or a GPU type without a store, keeps the default)."""
    config = _validate(_config())
    assert "-v /mnt/nvme:/mnt/nvme" in config["available_node_types"]["gpu"]["docker"]["worker_run_options"]
    assert "docker" not in config["available_node_types"]["collector"]
    mount = next(c for c in config["initialization_commands"] if "/mnt/nvme" in c)
    assert "Instance Storage" in mount and ".instance-store" in mount and mount.rstrip().endswith("true")
    start = " ".join(config["worker_start_ray_commands"])
    assert "if [ -e /mnt/nvme/.instance-store ]; then export GENIE_CACHE_DIR=/mnt/nvme/genie-redux/decoded; fi" in start
    # the command runs as written: with the marker it exports the cache folder, without it leaves it unset
    line = start[start.index("if [ -e"):start.index("fi;") + 3].replace("/mnt/nvme", str(tmp_path))
    for marker in (False, True):
        if marker:
            (tmp_path / ".instance-store").touch()
        shown = subprocess.run(["bash", "-c", f"unset GENIE_CACHE_DIR; {line} echo \"${{GENIE_CACHE_DIR:-unset}}\""],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert shown == (f"{tmp_path}/genie-redux/decoded" if marker else "unset"), shown
