"""The writers' handling of API answers (409, 429, 404, transport errors), with fake API objects."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from sunblend.actuate import drain, workloads
from sunblend.core import snapshot


class FakeApps:
    """Answers the scale subresource calls from a script of results."""

    def __init__(self, patch_answers, replicas_on_read=1, version_on_read="9"):
        self.patch_answers = list(patch_answers)
        self.patches = []
        self.read = SimpleNamespace(
            spec=SimpleNamespace(replicas=replicas_on_read), metadata=SimpleNamespace(resource_version=version_on_read)
        )

    def patch_namespaced_deployment_scale(self, name, namespace, body, **kwargs):
        assert kwargs["_request_timeout"] == 10 and kwargs["field_manager"] == "sunblend"
        self.patches.append(body)
        answer = self.patch_answers.pop(0)
        if isinstance(answer, Exception):
            raise answer

    def read_namespaced_deployment_scale(self, name, namespace, **kwargs):
        return self.read


def _writer(apps) -> workloads.WorkloadWriter:
    return workloads.WorkloadWriter(apps, policy=None)


CONFLICT = ApiException(status=409, reason="Conflict")


def test_a_scale_that_meets_a_conflict_is_retried_once_testing_the_freshly_read_replicas():
    apps = FakeApps([CONFLICT, None], replicas_on_read=1)
    _writer(apps).scale("ns", "Deployment", "web", 3, expected_resource_version="5", expected_replicas=1)
    assert apps.patches == [
        {"spec": {"replicas": 3}, "metadata": {"resourceVersion": "5"}},
        [
            {"op": "test", "path": "/spec", "value": {"replicas": 1}},
            {"op": "add", "path": "/spec/replicas", "value": 3},
        ],
    ]


def test_zero_replicas_are_tested_as_an_empty_spec():
    apps = FakeApps([CONFLICT, None], replicas_on_read=None)
    _writer(apps).scale("ns", "Deployment", "web", 2, expected_resource_version="5")
    assert apps.patches[1][0] == {"op": "test", "path": "/spec", "value": {}}


def test_a_conflict_over_replicas_already_at_the_target_needs_no_second_write():
    apps = FakeApps([CONFLICT], replicas_on_read=3)
    _writer(apps).scale("ns", "Deployment", "web", 3, expected_resource_version="5")
    assert len(apps.patches) == 1


def test_replicas_someone_else_changed_are_a_scale_conflict_without_a_second_write():
    apps = FakeApps([CONFLICT], replicas_on_read=4)
    with pytest.raises(workloads.ScaleConflict, match="4 replicas now, not 1"):
        _writer(apps).scale("ns", "Deployment", "web", 3, expected_resource_version="5", expected_replicas=1)
    assert len(apps.patches) == 1


def test_a_failed_test_on_the_second_write_is_a_scale_conflict():
    apps = FakeApps([CONFLICT, ApiException(status=422, reason="Invalid")])
    with pytest.raises(workloads.ScaleConflict):
        _writer(apps).scale("ns", "Deployment", "web", 3, expected_resource_version="5")


def test_api_and_transport_errors_become_actuation_failed():
    for error in (ApiException(status=403, reason="Forbidden"), urllib3.exceptions.MaxRetryError(None, "/", None)):
        with pytest.raises(workloads.ActuationFailed) as raised:
            _writer(FakeApps([error])).scale("ns", "Deployment", "web", 3, expected_resource_version=None)
        assert raised.value.__cause__ is error


def test_only_deployments_and_stateful_sets_are_scaled():
    with pytest.raises(workloads.UnknownWorkloadKind):
        _writer(FakeApps([])).scale("ns", "DaemonSet", "x", 1, None)


class FakeCore:
    """Answers evictions per pod name: None (accepted) or an ApiException."""

    def __init__(self, answers):
        self.answers = answers
        self.evicted = []

    def create_namespaced_pod_eviction(self, name, namespace, body, **kwargs):
        assert body.metadata.name == name and kwargs["_request_timeout"] == 10
        self.evicted.append(name)
        answer = self.answers.get(name)
        if answer is not None:
            raise answer


def _pod(name, node="gpu-1", **fields) -> snapshot.PodView:
    return snapshot.PodView(name, node, "slice", ready=True, **fields)


def test_a_drain_evicts_what_it_may_and_reports_the_rest():
    core = FakeCore({"blocked": ApiException(status=429, reason="Too Many Requests"), "gone": ApiException(status=404)})
    pods = [
        _pod("ok"),
        _pod("blocked"),
        _pod("gone"),
        _pod("keep", do_not_disrupt=True),
        _pod("leaving", deleting=True),
        _pod("elsewhere", node="gpu-2"),
    ]
    outcome = drain.Drainer(core).drain("ns", "gpu-1", pods)
    assert core.evicted == ["ok", "blocked", "gone"]
    assert outcome.evicted == ("ok",)
    assert outcome.blocked == ("blocked",)
    assert outcome.protected == ("keep",)
    assert outcome.gone == ("gone", "leaving")
    assert not outcome.complete


def test_an_eviction_refused_for_another_reason_is_a_drain_failure():
    core = FakeCore({"p": ApiException(status=500, reason="Internal Server Error")})
    with pytest.raises(drain.DrainFailed):
        drain.Drainer(core).evict("ns", "p")


class FakeNodes:
    """Records node patches."""

    def __init__(self):
        self.patched = []

    def patch_node(self, name, body, **kwargs):
        self.patched.append((name, body))


def test_a_cordon_labels_the_node_with_the_draining_pool_in_the_same_write():
    nodes = FakeNodes()
    drain.Drainer(nodes).cordon("gpu-1", "uid-1")
    drain.Drainer(nodes).cordon("gpu-2")
    assert nodes.patched == [
        ("gpu-1", {"spec": {"unschedulable": True}, "metadata": {"labels": {drain.DRAINING_LABEL: "uid-1"}}}),
        ("gpu-2", {"spec": {"unschedulable": True}}),
    ]
