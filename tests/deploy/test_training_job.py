"""deploy/kubernetes/training-job.yaml: torchrun arguments, GPUs, rendezvous and the train command."""

from __future__ import annotations

import argparse
import importlib

import pytest
from torch.distributed.run import get_args_parser

from deploy.manifests import IMAGE_NAME, KUBERNETES, find_objects, load_yaml_documents, pod_containers
from training.cli import COMMANDS

DOCUMENTS = load_yaml_documents(KUBERNETES / "training-job.yaml")
(JOB,) = find_objects(DOCUMENTS, "Job")
(SERVICE,) = find_objects(DOCUMENTS, "Service")
(CONTAINER,) = pod_containers(JOB)


def torchrun_args() -> argparse.Namespace:
    assert CONTAINER["command"] == ["torchrun"]
    return get_args_parser().parse_args(CONTAINER["args"])


def test_uses_gpu_image():
    assert CONTAINER["image"] == f"{IMAGE_NAME}:gpu"


def test_one_process_per_gpu():
    gpus = CONTAINER["resources"]["limits"]["nvidia.com/gpu"]
    assert CONTAINER["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert int(torchrun_args().nproc_per_node) == gpus


def test_one_node_per_pod():
    spec = JOB["spec"]
    assert spec["completionMode"] == "Indexed"
    assert int(torchrun_args().nnodes) == spec["completions"] == spec["parallelism"]


def test_rendezvous_endpoint_is_pod_zero():
    args = torchrun_args()
    host, port = args.rdzv_endpoint.rsplit(":", 1)
    pod_spec = JOB["spec"]["template"]["spec"]
    # An Indexed Job names pod i `<job>-i`; with `subdomain` it resolves as `<job>-i.<service>`.
    assert host == f"{JOB['metadata']['name']}-0.{pod_spec['subdomain']}"
    assert SERVICE["metadata"]["name"] == pod_spec["subdomain"]
    assert SERVICE["spec"]["clusterIP"] == "None"
    assert SERVICE["spec"]["selector"].items() <= JOB["spec"]["template"]["metadata"]["labels"].items()
    assert int(port) in {p["port"] for p in SERVICE["spec"]["ports"]}
    assert int(port) in {p["containerPort"] for p in CONTAINER["ports"]}


def test_runs_training_cli_module():
    args = torchrun_args()
    assert args.module is True
    assert args.training_script == "training.cli"
    assert hasattr(importlib.import_module(args.training_script), "main")


def test_train_arguments_parse():
    subcommand, *rest = torchrun_args().training_script_args
    if subcommand not in COMMANDS:
        pytest.skip(f"`radapter {subcommand}` is not in training/cli.py yet, so its flags cannot be checked")
    module = importlib.import_module(COMMANDS[subcommand][0])
    parser = argparse.ArgumentParser(prog=f"radapter {subcommand}")
    module.add_arguments(parser)
    _, unknown = parser.parse_known_args(rest)
    assert not unknown, f"`radapter {subcommand}` has no flags {unknown}; see `radapter {subcommand} --help`"


def test_shared_memory_is_enlarged():
    volumes = {v["name"]: v for v in JOB["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in CONTAINER["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
