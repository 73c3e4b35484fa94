"""The Cluster API provider: finding the labelled MachineDeployment, victim choice, autoscaler mode, 409s."""

from __future__ import annotations

import copy

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from sunblend.actuate.providers import base, clusterapi
from sunblend.api import load, spec
from sunblend.api.spec import CapacityType
from sunblend.core import commands, snapshot
from tests.unit import pools

SPOT = ("ap-south-1", "h100", CapacityType.SPOT)
MIN = clusterapi.AUTOSCALER_MIN_ANNOTATION
MAX = clusterapi.AUTOSCALER_MAX_ANNOTATION
DELETE = clusterapi.DELETE_MACHINE_ANNOTATION
CONFLICT = ApiException(status=409, reason="Conflict")


def _pool(name: str = "chat") -> spec.InferencePool:
    document = pools.document()
    document["metadata"] = {"name": name, "namespace": "serving"}
    return load.parse_pool(document)


def _deployment(name="gpu-spot", replicas=3, version="7", annotations=None, labels=None) -> dict:
    return {
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "MachineDeployment",
        "metadata": {
            "name": name,
            "namespace": "capi",
            "resourceVersion": version,
            "labels": {**clusterapi.owner_labels(SPOT), **(labels or {})},
            "annotations": dict(annotations or {}),
        },
        "spec": {"replicas": replicas},
    }


def _machine(name: str, node: str | None, annotations=None, deleting=False) -> dict:
    meta: dict = {"name": name, "namespace": "capi", "annotations": dict(annotations or {})}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-23T12:00:00Z"
    return {"metadata": meta, "status": {"nodeRef": {"name": node}} if node else {}}


class FakeObjects:
    """A CustomObjectsApi over one namespace's MachineDeployments and Machines, with scripted answers."""

    def __init__(self, deployments, machines=(), scale_answers=(), patch_answers=(), on_conflict=None):
        self.deployments = list(deployments)
        self.machines = {m["metadata"]["name"]: m for m in machines}
        self.scale_answers = list(scale_answers)
        self.patch_answers = list(patch_answers)
        self.on_conflict = on_conflict  # called after a scripted 409, to change what the next read sees
        self.selectors: list[str] = []
        self.scales: list[tuple[str, dict]] = []
        self.patches: list[tuple[str, str, dict]] = []

    def list_cluster_custom_object(self, group, version, plural, label_selector, _request_timeout):
        assert (group, version, plural) == ("cluster.x-k8s.io", "v1beta2", "machinedeployments")
        assert _request_timeout == 10
        self.selectors.append(label_selector)
        return {"items": copy.deepcopy(self.deployments)}

    def list_namespaced_custom_object(self, group, version, namespace, plural, label_selector, _request_timeout):
        assert (plural, label_selector) == ("machines", "cluster.x-k8s.io/deployment-name=gpu-spot")
        return {"items": copy.deepcopy(list(self.machines.values()))}

    def _answer(self, answers):
        answer = answers.pop(0) if answers else None
        if isinstance(answer, Exception):
            if getattr(answer, "status", None) == 409 and self.on_conflict:
                self.on_conflict(self)
            raise answer

    def patch_namespaced_custom_object_scale(self, group, version, namespace, plural, name, body, **options):
        assert options["_content_type"] == "application/merge-patch+json" and options["field_manager"] == "sunblend"
        self.scales.append((name, body))
        self._answer(self.scale_answers)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body, **options):
        assert options["_content_type"] == "application/merge-patch+json"
        self.patches.append((plural, name, body))
        self._answer(self.patch_answers)
        if plural == "machines":
            annotations = self.machines[name]["metadata"]["annotations"]
            for key, value in body["metadata"]["annotations"].items():
                if value is None:
                    annotations.pop(key, None)
                else:
                    annotations[key] = value


def _provider(objects: FakeObjects) -> clusterapi.ClusterApiProvider:
    return clusterapi.ClusterApiProvider(None, objects=objects)


def _set(objects: FakeObjects, nodes: int, fresh: snapshot.Snapshot | None = None, pool_name="chat") -> str:
    command = commands.SetNodes(SPOT, nodes=nodes, observed=3, reason="plan")
    return _provider(objects).set_nodes(_pool(pool_name), "uid-1", command, fresh or snapshot.Snapshot())


def _node(name: str, ready=True, unschedulable=False) -> snapshot.NodeView:
    return snapshot.NodeView(name, *SPOT, ready=ready, unschedulable=unschedulable, gpus=8)


def _pod(name: str, node: str, do_not_disrupt=False) -> snapshot.PodView:
    return snapshot.PodView(name, node, "chat-spot", ready=True, gpus=1, do_not_disrupt=do_not_disrupt)


# ---- finding the MachineDeployment ----------------------------------------------------------------


def test_the_deployment_is_found_by_the_offer_labels():
    objects = FakeObjects([_deployment(replicas=1)])
    _set(objects, 2)
    assert objects.selectors == [
        "app.kubernetes.io/managed-by=sunblend,sunblend.dev/capacity-type=spot,"
        "sunblend.dev/gpu-class=h100,sunblend.dev/region=ap-south-1"
    ]


def test_a_missing_deployment_names_the_labels_to_add():
    with pytest.raises(clusterapi.MachineDeploymentMissing) as raised:
        _set(FakeObjects([]), 2)
    message = str(raised.value)
    assert "no Cluster API MachineDeployment is labelled for offer ap-south-1/h100/spot" in message
    for label in (
        "app.kubernetes.io/managed-by=sunblend",
        "sunblend.dev/region=ap-south-1",
        "sunblend.dev/gpu-class=h100",
        "sunblend.dev/capacity-type=spot",
    ):
        assert label in message
    assert isinstance(raised.value, base.ProviderFailed)


def test_several_deployments_are_told_apart_by_the_pool_label_or_refused():
    other = _deployment(name="other", labels={"sunblend.dev/pool": "batch"})
    mine = _deployment(name="gpu-spot", replicas=1, labels={"sunblend.dev/pool": "chat"})
    objects = FakeObjects([other, mine])
    _set(objects, 2)
    assert objects.scales == [("gpu-spot", {"spec": {"replicas": 2}, "metadata": {"resourceVersion": "7"}})]
    with pytest.raises(clusterapi.MachineDeploymentMissing, match="2 MachineDeployments are labelled"):
        _set(FakeObjects([other, _deployment(name="third")]), 2)


def test_crds_not_installed_is_said_plainly():
    class NoCrds(FakeObjects):
        def list_cluster_custom_object(self, *args, **kwargs):
            raise ApiException(status=404, reason="Not Found")

    with pytest.raises(base.ProviderFailed, match="are Cluster API's CRDs"):
        _set(NoCrds([]), 2)


def test_transport_errors_are_provider_failures():
    class Down(FakeObjects):
        def list_cluster_custom_object(self, *args, **kwargs):
            raise urllib3.exceptions.MaxRetryError(None, "/apis", "refused")

    with pytest.raises(base.ProviderFailed, match="listing MachineDeployments"):
        _set(Down([]), 2)


# ---- replicas mode -------------------------------------------------------------------------------


def test_more_nodes_raise_replicas_through_scale_guarded_by_the_version_read():
    objects = FakeObjects([_deployment(replicas=1)])
    said = _set(objects, 3)
    assert objects.scales == [("gpu-spot", {"spec": {"replicas": 3}, "metadata": {"resourceVersion": "7"}})]
    assert objects.patches == []
    assert "MachineDeployment capi/gpu-spot replicas 1 -> 3" in said


def test_the_same_count_writes_nothing():
    objects = FakeObjects([_deployment(replicas=3)])
    assert "already has 3 replicas" in _set(objects, 3)
    assert objects.scales == [] and objects.patches == []


def test_fewer_nodes_mark_empty_machines_first_then_lower_replicas():
    machines = [_machine("m-busy", "n-busy"), _machine("m-empty", "n-empty"), _machine("m-cordoned", "n-cordoned")]
    fresh = snapshot.Snapshot(
        nodes=(_node("n-busy"), _node("n-empty"), _node("n-cordoned", unschedulable=True)),
        pods=(_pod("p1", "n-busy"),),
    )
    objects = FakeObjects([_deployment(replicas=3)], machines)
    said = _set(objects, 1, fresh)
    # The cordoned (drained) node goes before the merely empty one; marks come before the scale.
    assert [(plural, name) for plural, name, _ in objects.patches] == [
        ("machines", "m-cordoned"),
        ("machines", "m-empty"),
    ]
    assert objects.patches[0][2] == {"metadata": {"annotations": {DELETE: "yes"}}}
    assert objects.scales == [("gpu-spot", {"spec": {"replicas": 1}, "metadata": {"resourceVersion": "7"}})]
    assert "replicas 3 -> 1, releasing m-cordoned, m-empty" in said


def test_replicas_are_lowered_only_by_the_machines_that_could_be_marked():
    machines = [_machine("m-a", "n-a"), _machine("m-b", "n-b"), _machine("m-c", "n-c")]
    fresh = snapshot.Snapshot(
        nodes=(_node("n-a"), _node("n-b"), _node("n-c")),
        pods=(_pod("p1", "n-a"), _pod("p2", "n-b", do_not_disrupt=True)),
    )
    objects = FakeObjects([_deployment(replicas=3)], machines)
    said = _set(objects, 0, fresh)
    assert [name for _, name, _ in objects.patches] == ["m-c"]
    assert objects.scales[0][1]["spec"] == {"replicas": 2}
    assert "m-a: node n-a still runs 1 of the pool's pods (drain first)" in said
    assert "m-b: node n-b runs a do-not-disrupt pod" in said


def test_nothing_is_lowered_when_no_machine_can_go():
    fresh = snapshot.Snapshot(nodes=(_node("n-a"),), pods=(_pod("p1", "n-a"),))
    objects = FakeObjects([_deployment(replicas=1)], [_machine("m-a", "n-a")])
    said = _set(objects, 0, fresh)
    assert objects.scales == [] and objects.patches == []
    assert "kept at 1: no Machine can be released yet" in said


def test_no_scale_down_on_an_unreadable_snapshot():
    objects = FakeObjects([_deployment(replicas=2)], [_machine("m-a", "n-a")])
    with pytest.raises(base.ProviderFailed, match="the cluster read failed"):
        _set(objects, 1, snapshot.Snapshot(readable=False, reason="timeout"))
    assert objects.scales == [] and objects.patches == []


def test_victim_order_marked_then_nodeless_then_unsettled_then_by_name():
    machines = [
        clusterapi.MachineView("m-z", "n-z"),
        clusterapi.MachineView("m-a", "n-a"),
        clusterapi.MachineView("m-notready", "n-notready"),
        clusterapi.MachineView("m-booting", None),
        clusterapi.MachineView("m-marked", "n-marked", marked=True),
        clusterapi.MachineView("m-gone", "n-gone", deleting=True),
    ]
    fresh = snapshot.Snapshot(
        nodes=(_node("n-z"), _node("n-a"), _node("n-notready", ready=False), _node("n-marked"), _node("n-gone"))
    )
    victims = clusterapi.choose_victims(machines, 10, fresh)
    assert victims.chosen == ("m-marked", "m-booting", "m-notready", "m-a", "m-z")
    assert victims.held == ()
    assert clusterapi.choose_victims(machines, 2, fresh).chosen == ("m-marked", "m-booting")
    assert clusterapi.choose_victims(machines, 0, fresh).chosen == ()


def test_a_machine_marked_earlier_is_not_chosen_while_its_node_holds_pool_pods():
    machines = [clusterapi.MachineView("m-marked", "n-1", marked=True), clusterapi.MachineView("m-free", "n-2")]
    fresh = snapshot.Snapshot(nodes=(_node("n-1"), _node("n-2")), pods=(_pod("p", "n-1"),))
    assert clusterapi.choose_victims(machines, 1, fresh).chosen == ("m-free",)


def test_a_mark_on_a_machine_with_pool_pods_is_taken_off_before_replicas_are_lowered():
    machines = [_machine("m-busy", "n-busy", annotations={DELETE: "yes"}), _machine("m-free", "n-free")]
    fresh = snapshot.Snapshot(nodes=(_node("n-busy"), _node("n-free")), pods=(_pod("p", "n-busy"),))
    objects = FakeObjects([_deployment(replicas=2)], machines)
    _set(objects, 1, fresh)
    assert [(name, body["metadata"]["annotations"][DELETE]) for _, name, body in objects.patches] == [
        ("m-busy", None),
        ("m-free", "yes"),
    ]
    assert objects.scales[0][1]["spec"] == {"replicas": 1}


def test_victims_say_which_marks_to_add_and_remove():
    machines = [
        clusterapi.MachineView("m-1", "n-1", marked=True),
        clusterapi.MachineView("m-2", "n-2", marked=True),
        clusterapi.MachineView("m-3", "n-3"),
        clusterapi.MachineView("m-gone", None, marked=True, deleting=True),
    ]
    victims = clusterapi.choose_victims(machines, 1, snapshot.Snapshot(pods=(_pod("p", "n-1"),)))
    assert (victims.chosen, victims.mark, victims.unmark) == (("m-2",), (), ("m-1",))
    victims = clusterapi.choose_victims(machines, 2, snapshot.Snapshot())
    assert (victims.chosen, victims.mark, victims.unmark) == (("m-1", "m-2"), (), ())
    victims = clusterapi.choose_victims(machines, 3, snapshot.Snapshot())
    assert victims.mark == ("m-3",)


def test_machine_view_reads_node_ref_mark_and_deletion():
    view = clusterapi.machine_view(_machine("m", "n", annotations={DELETE: "yes"}, deleting=True))
    assert view == clusterapi.MachineView("m", "n", marked=True, deleting=True)
    assert clusterapi.machine_view(_machine("m", None)).node is None


# ---- conflicts -----------------------------------------------------------------------------------


def test_a_conflict_is_answered_by_reading_again_and_writing_once_more():
    def someone_else_wrote(objects: FakeObjects) -> None:
        objects.deployments[0]["metadata"]["resourceVersion"] = "8"

    objects = FakeObjects([_deployment(replicas=1)], scale_answers=[CONFLICT, None], on_conflict=someone_else_wrote)
    said = _set(objects, 3)
    assert [body for _, body in objects.scales] == [
        {"spec": {"replicas": 3}, "metadata": {"resourceVersion": "7"}},
        {"spec": {"replicas": 3}, "metadata": {"resourceVersion": "8"}},
    ]
    assert len(objects.selectors) == 2
    assert "replicas 1 -> 3" in said


def test_a_conflict_with_someone_who_already_scaled_writes_nothing_more():
    def someone_scaled(objects: FakeObjects) -> None:
        objects.deployments[0]["spec"]["replicas"] = 3

    objects = FakeObjects([_deployment(replicas=1)], scale_answers=[CONFLICT], on_conflict=someone_scaled)
    assert "already has 3 replicas" in _set(objects, 3)
    assert len(objects.scales) == 1


def test_a_scale_down_after_a_conflict_chooses_again_from_the_fresh_read():
    def someone_scaled_down(objects: FakeObjects) -> None:
        objects.deployments[0]["spec"]["replicas"] = 2
        objects.deployments[0]["metadata"]["resourceVersion"] = "8"

    machines = [_machine("m-a", "n-a"), _machine("m-b", "n-b"), _machine("m-c", "n-c")]
    objects = FakeObjects(
        [_deployment(replicas=3)], machines, scale_answers=[CONFLICT, None], on_conflict=someone_scaled_down
    )
    _set(objects, 1, snapshot.Snapshot(nodes=(_node("n-a"), _node("n-b"), _node("n-c"))))
    # First try marks two; the retry sees 2 replicas, keeps m-a's mark, takes m-b's off, lowers by one.
    assert [(name, body["metadata"]["annotations"][DELETE]) for _, name, body in objects.patches] == [
        ("m-a", "yes"),
        ("m-b", "yes"),
        ("m-b", None),
    ]
    assert DELETE in objects.machines["m-a"]["metadata"]["annotations"]
    assert DELETE not in objects.machines["m-b"]["metadata"]["annotations"]
    assert [body for _, body in objects.scales] == [
        {"spec": {"replicas": 1}, "metadata": {"resourceVersion": "7"}},
        {"spec": {"replicas": 1}, "metadata": {"resourceVersion": "8"}},
    ]


def test_two_conflicts_are_a_provider_failure():
    objects = FakeObjects([_deployment(replicas=1)], scale_answers=[CONFLICT, CONFLICT])
    with pytest.raises(clusterapi.MachineDeploymentConflict, match="changed while being written, twice"):
        _set(objects, 3)
    assert len(objects.scales) == 2


def test_other_api_errors_name_the_object():
    objects = FakeObjects([_deployment(replicas=1)], scale_answers=[ApiException(status=422, reason="Invalid")])
    with pytest.raises(base.ProviderFailed, match="scaling MachineDeployment capi/gpu-spot to 3: 422 Invalid"):
        _set(objects, 3)


# ---- autoscaler mode -----------------------------------------------------------------------------


def test_an_autoscaled_deployment_gets_only_its_min_size_and_never_replicas():
    objects = FakeObjects([_deployment(replicas=2, annotations={MIN: "1", MAX: "10"})])
    said = _set(objects, 4)
    assert objects.scales == []
    assert objects.patches == [
        ("machinedeployments", "gpu-spot", {"metadata": {"resourceVersion": "7", "annotations": {MIN: "4"}}})
    ]
    assert "min-size 1 -> 4, max-size 10 -> 10, replicas left to it" in said


def test_max_size_is_raised_only_when_below_the_target_and_never_lowered():
    deployment = _deployment(annotations={MIN: "1", MAX: "2"})
    assert clusterapi.autoscaler_patch(deployment, 5) == {
        "metadata": {"resourceVersion": "7", "annotations": {MIN: "5", MAX: "5"}}
    }
    assert clusterapi.autoscaler_patch(deployment, 0) == {
        "metadata": {"resourceVersion": "7", "annotations": {MIN: "0"}}
    }
    assert clusterapi.autoscaler_patch(_deployment(annotations={MIN: "3", MAX: "9"}), 3) is None


def test_an_autoscaled_scale_down_marks_no_machines():
    objects = FakeObjects([_deployment(replicas=3, annotations={MIN: "3", MAX: "6"})], [_machine("m-a", "n-a")])
    _set(objects, 1, snapshot.Snapshot(nodes=(_node("n-a"),)))
    assert [(plural, name) for plural, name, _ in objects.patches] == [("machinedeployments", "gpu-spot")]
    assert objects.scales == []


def test_autoscaler_annotations_already_right_write_nothing():
    objects = FakeObjects([_deployment(annotations={MIN: "2", MAX: "6"})])
    assert "min-size is already 2" in _set(objects, 2)
    assert objects.patches == [] and objects.scales == []


def test_an_autoscaler_conflict_is_retried_once_from_a_fresh_read():
    def moved(objects: FakeObjects) -> None:
        objects.deployments[0]["metadata"]["resourceVersion"] = "8"

    objects = FakeObjects(
        [_deployment(annotations={MIN: "1", MAX: "6"})], patch_answers=[CONFLICT, None], on_conflict=moved
    )
    _set(objects, 2)
    assert [body["metadata"]["resourceVersion"] for _, _, body in objects.patches] == ["7", "8"]


def test_half_the_autoscaler_annotations_is_refused_in_words():
    objects = FakeObjects([_deployment(annotations={MIN: "1"})])
    with pytest.raises(
        base.ProviderFailed, match=r"has .*min-size but not .*max-size: the cluster-autoscaler needs both"
    ):
        _set(objects, 2)
    assert objects.patches == [] and objects.scales == []


def test_autoscaler_sizes_that_are_not_numbers_are_refused():
    with pytest.raises(base.ProviderFailed, match="not whole numbers"):
        clusterapi.autoscaler_bounds(_deployment(annotations={MIN: "one", MAX: "3"}))


def test_the_provider_is_named_clusterapi():
    assert clusterapi.ClusterApiProvider.name is spec.NodeProviderName.CLUSTER_API
    assert clusterapi.ClusterApiProvider(None, objects=FakeObjects([])).name == "clusterapi"
